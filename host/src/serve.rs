//! The `serve` command: build the engine, bind, load the app, serve until a
//! signal, drain, exit.

use crate::app;
use crate::cli::ServeArgs;
use crate::engine::{self, EpochTicker, PoolSize};
use crate::handler::Target;
use crate::server::{self, Drained};
use crate::signals;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub fn run(args: ServeArgs) -> Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("wasmhost-worker");
    if let Some(threads) = args.threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let signals = signals::install()?;
    let pool = PoolSize::default();
    let (engine, allocation) = engine::build(pool)?;
    let linker = app::linker(&engine)?;

    // Bind before compiling: a taken port is reported at once, and clients
    // that connect while a large app compiles wait in the backlog instead of
    // being refused.
    let listener = server::bind(SocketAddr::new(args.host, args.port)).await?;
    let local = listener.local_addr().context("reading the bound address")?;

    let path = args.app.clone();
    let app = tokio::task::spawn_blocking(move || app::load(&linker, "/", &path))
        .await
        .context("the compiler thread panicked")??;
    let _ticker = EpochTicker::start(engine.clone());

    tracing::debug!(
        ?allocation,
        instances = pool.instances,
        "instance allocation"
    );
    tracing::info!(
        "serving on http://{local}/ with {} ({} KiB, compiled in {} ms)",
        app.path.display(),
        app.size.div_ceil(1024),
        app.compile_time.as_millis(),
    );
    let target = Arc::new(Target {
        app: Arc::new(app),
        slots: Arc::new(Semaphore::new(pool.instances as usize)),
    });

    let first = async {
        let _ = signals.first.await;
    };
    let second = async {
        let _ = signals.second.await;
    };
    let drained = server::serve(listener, target, first, args.shutdown_timeout, second).await;
    match drained {
        Drained::Clean => tracing::info!("stopped"),
        Drained::Cut => tracing::info!("stopped; some requests were cut"),
    }
    Ok(())
}
