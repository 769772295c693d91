//! The guest's sandbox: what a `Store` holds for its instance, the WASI and
//! wasi:http contexts, the resource table they share, and the meter of its
//! limits. A guest gets no environment variables, no files, no sockets, no
//! outbound HTTP, no config variables and no keyvalue bucket: nothing but
//! what its app's `Grants` name.

use crate::config::{ConfigVars, Grants, Limits};
use crate::grants::descriptors::Held;
use crate::grants::egress::Egress;
use crate::grants::granted_dirs::GrantedDirs;
use crate::grants::keyvalue::Buckets;
use crate::grants::outbound::Outbound;
use crate::grants::sockets::Sockets;
use crate::guest::config::Config;
use crate::guest::keyvalue::KeyValue;
use crate::guest::limits::{MemoryShare, Meter};
use crate::guest::output::{AppOutput, GuestOutput, Sink};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// What an app's instances are given, shared by all of them.
pub struct Reach {
    pub grants: Grants,
    /// The grants of hosts, as checked at run time.
    pub egress: Arc<Egress>,
    /// The app's pooled outbound HTTP client.
    pub outbound: Arc<Outbound>,
    /// Its granted directories, opened once for all its instances.
    pub dirs: GrantedDirs,
    /// Its `wasi:config` variables.
    pub config: Arc<ConfigVars>,
    /// Its `wasi:keyvalue` buckets.
    pub buckets: Arc<Buckets>,
}

impl Reach {
    /// Fails when a granted directory cannot be opened as granted.
    pub fn new(route: &str, grants: &Grants, limits: &Limits) -> anyhow::Result<Self> {
        let egress = Arc::new(Egress::new(route, &grants.outbound));
        Ok(Self {
            outbound: Arc::new(Outbound::new(route, egress.clone(), grants, limits)),
            config: Arc::new(grants.config.clone()),
            buckets: Arc::new(Buckets::new(route, &grants.keyvalue, &egress)),
            egress,
            dirs: GrantedDirs::open(&grants.dirs)?,
            grants: grants.clone(),
        })
    }
}

pub struct Sandbox {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Hooks,
    sockets: Sockets,
    /// The app's limits, applied to this store.
    meter: Meter,
    /// The files and sockets this instance holds open.
    held: Held,
    config: Arc<ConfigVars>,
    buckets: Arc<Buckets>,
    /// Keyvalue buckets this instance holds open.
    open_buckets: usize,
}

impl Sandbox {
    /// The meter of this store's limits.
    pub fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }

    /// What the instance holds open, and the table its handles are in.
    pub fn descriptors(&mut self) -> (&mut Held, &ResourceTable) {
        (&mut self.held, &self.table)
    }

    /// What `wasi:config/store` answers this instance.
    pub fn config(&mut self) -> Config<'_> {
        Config(&self.config)
    }

    /// What `wasi:keyvalue` calls of this instance reach.
    pub fn keyvalue(&mut self) -> KeyValue<'_> {
        KeyValue {
            table: &mut self.table,
            buckets: &self.buckets,
            open: &mut self.open_buckets,
        }
    }

    /// What this instance may do with wasi:sockets.
    pub fn socket_grants(&self) -> &Sockets {
        &self.sockets
    }

    /// `output` tags the guest's stdout and stderr lines with the app.
    pub fn new(
        output: &Arc<AppOutput>,
        limits: Limits,
        access: &Reach,
        memory: Arc<MemoryShare>,
    ) -> Self {
        let grants = &access.grants;
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(Sink::Stdout, output.clone()))
            .stderr(GuestOutput::new(Sink::Stderr, output.clone()))
            .envs(&grants.env);
        access.dirs.preopen(&mut wasi);
        let sockets = Sockets::new(&access.egress, &mut wasi);
        let wasi = wasi.build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Hooks(access.outbound.clone()),
            sockets,
            held: Held::new(limits.max_open_per_instance),
            meter: Meter::new(limits, memory),
            config: access.config.clone(),
            buckets: access.buckets.clone(),
            open_buckets: 0,
        }
    }
}

impl AsMut<Meter> for Sandbox {
    fn as_mut(&mut self) -> &mut Meter {
        &mut self.meter
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A guest's outbound requests go to its app's `Outbound`, which sends
/// only what a grant allows.
struct Hooks(Arc<Outbound>);

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let outbound = self.0.clone();
        Box::new(async move {
            let response = outbound.send(request, options).await?;
            let sent: Box<dyn Future<Output = _> + Send> = Box::new(async { Ok(()) });
            Ok((response, sent))
        })
    }

    /// Writes a guest may queue on a response body before it waits for the
    /// client. wasi:http guests write at most 4 KiB per call, so with the
    /// default of one chunk a 64 KiB body took sixteen round trips between
    /// the guest and hyper, and as many `writev` calls (bench/NOTES.md).
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }

    /// Largest single write a guest may make to a body. With the chunk count
    /// above this bounds what one request can buffer while its client is
    /// slow: 16 × 64 KiB = 1 MiB (the default, 1 MiB per write, would allow 16).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK_SIZE
    }
}

const OUTGOING_BODY_BUFFER_CHUNKS: usize = 16;
const OUTGOING_BODY_CHUNK_SIZE: usize = 64 * 1024;
