//! The linker every app is instantiated against, and the host functions
//! wasmhost puts in front of wasmtime-wasi's where a grant or a bound must
//! be checked that wasmtime-wasi has no hook for: the names a guest looks
//! up (`sockets`), the links it makes (`granted_dirs`), and the files and
//! sockets it opens (`descriptors`). Each shadow checks, then calls
//! wasmtime-wasi's own implementation.

use crate::grants::descriptors::Held;
use crate::guest::engine::World;
use crate::guest::sandbox::Sandbox;
use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::{Accessor, Linker, Resource, ResourceTable};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::TrappableError;
use wasmtime_wasi::filesystem::{Descriptor as HostDescriptor, WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host as _, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
use wasmtime_wasi::sockets::WasiSocketsView;

/// The linker every app is instantiated against: all of WASI 0.2 (so that
/// components built by ordinary toolchains, which import `wasi:cli` and
/// `wasi:filesystem`, link) plus `wasi:http`, `wasi:config/store` and
/// `wasi:keyvalue`. What a guest may actually use is decided by its app's
/// grants, which name nothing by default.
pub fn linker(engine: &Engine, world: World) -> Result<Linker<Sandbox>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::guest::config::add_to_linker(&mut linker, Sandbox::config)?;
    crate::guest::keyvalue::add_to_linker(&mut linker, Sandbox::keyvalue)?;
    shadow_name_lookup(&mut linker)?;
    shadow_symlink_at(&mut linker)?;
    bound_p2_descriptors(&mut linker)?;
    if world == World::Http03 {
        // A 0.3 component built by an ordinary toolchain imports 0.2 too
        // (Rust's std does), so it gets both.
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        shadow_p3_symlink_at(&mut linker)?;
        bound_p3_descriptors(&mut linker)?;
    }
    Ok(linker)
}

/// Puts the grant check in front of wasmtime-wasi's `resolve-addresses`.
fn shadow_name_lookup(linker: &mut Linker<Sandbox>) -> Result<()> {
    linker.allow_shadowing(true);
    linker
        .instance(crate::grants::sockets::NAME_LOOKUP)?
        .func_wrap(
            "resolve-addresses",
            |mut store: StoreContextMut<'_, Sandbox>,
             (network, name): (Resource<Network>, String)|
             -> wasmtime::Result<(Result<Resource<ResolveAddressStream>, ErrorCode>,)> {
                if !store.data().socket_grants().may_look_up(&name) {
                    return Ok((Err(ErrorCode::AccessDenied),));
                }
                to_guest(store.data_mut().sockets().resolve_addresses(network, name))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The 0.2 filesystem interface, at the version wasmtime-wasi defines it.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// The 0.3 one.
const P3_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.3.0";
const SYMLINK_AT: &str = "[method]descriptor.symlink-at";

/// Puts the link-target check of `granted_dirs` in front of wasmtime-wasi's
/// `symlink-at`, which makes a link to whatever the guest names.
fn shadow_symlink_at(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, HostDescriptor};
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        SYMLINK_AT,
        |mut store: StoreContextMut<'_, Sandbox>,
         (fd, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                if !crate::grants::granted_dirs::link_target_stays_inside(&target) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut view = store.data_mut().filesystem();
                to_guest(HostDescriptor::symlink_at(&mut view, fd, target, link).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The same check for WASI 0.3 guests.
fn shadow_p3_symlink_at(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi::p3::bindings::filesystem::types::{
        Descriptor, ErrorCode, HostDescriptorWithStore,
    };
    linker.allow_shadowing(true);
    linker.instance(P3_FILESYSTEM_TYPES)?.func_wrap_concurrent(
        SYMLINK_AT,
        |store: &Accessor<Sandbox>, (fd, target, link): (Resource<Descriptor>, String, String)| {
            Box::pin(async move {
                if !crate::grants::granted_dirs::link_target_stays_inside(&target) {
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let store = store.with_getter::<WasiFilesystem>(|sandbox| sandbox.filesystem());
                to_guest(WasiFilesystem::symlink_at(&store, fd, target, link).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

const OPEN_AT: &str = "[method]descriptor.open-at";
/// The 0.2 interface that makes TCP sockets.
const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";
/// The 0.3 one.
const P3_SOCKET_TYPES: &str = "wasi:sockets/types@0.3.0";

/// Records a file or directory the guest opened by the shared handle
/// behind it, which its streams hold too.
fn keep_file(
    held: &mut Held,
    table: &ResourceTable,
    opened: &Resource<HostDescriptor>,
) -> wasmtime::Result<()> {
    held.opened_file(match table.get(opened)? {
        HostDescriptor::File(file) => Arc::downgrade(&file.file),
        HostDescriptor::Dir(dir) => Arc::downgrade(&dir.dir),
    });
    Ok(())
}

/// What a wasmtime-wasi call returned, as its interface gives it to the
/// guest: the value, or the error code; a trap stays a trap.
fn to_guest<T, E>(result: Result<T, TrappableError<E>>) -> wasmtime::Result<(Result<T, E>,)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(error.downcast()?),)),
    }
}

/// An open's outcome, settled with the instance's bound: the place
/// reserved for it is kept for what opened (`keep` records it), or given
/// back on an error, which goes to the guest as its interface's code.
fn settle<T, E>(
    (held, table): (&mut Held, &ResourceTable),
    opened: Result<T, TrappableError<E>>,
    keep: impl FnOnce(&mut Held, &ResourceTable, &T) -> wasmtime::Result<()>,
) -> wasmtime::Result<(Result<T, E>,)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match &opened {
        Ok(opened) => keep(held, table, opened)?,
        Err(_) => held.release(),
    }
    to_guest(opened)
}

/// Counts the files and TCP sockets a 0.2 guest opens against its
/// instance's bound (`descriptors`); past it `open-at` fails with `quota`
/// (WASI's filesystem has no code for "too many open files") and
/// `create-tcp-socket` with `new-socket-limit`.
fn bound_p2_descriptors(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode as FsErrorCode, HostDescriptor as _, OpenFlags,
        PathFlags,
    };
    use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;
    use wasmtime_wasi::p2::bindings::sockets::tcp::TcpSocket;
    use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        OPEN_AT,
        |mut store: StoreContextMut<'_, Sandbox>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let (held, table) = store.data_mut().descriptors();
                if !held.reserve(table) {
                    return Ok((Err(FsErrorCode::Quota),));
                }
                let mut view = store.data_mut().filesystem();
                let opened = view.open_at(fd, path_flags, path, open_flags, flags).await;
                settle(store.data_mut().descriptors(), opened, keep_file)
            })
        },
    )?;
    linker.instance(TCP_CREATE_SOCKET)?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, Sandbox>,
         (family,): (IpAddressFamily,)|
         -> wasmtime::Result<(Result<Resource<TcpSocket>, ErrorCode>,)> {
            let (held, table) = store.data_mut().descriptors();
            if !held.reserve(table) {
                return Ok((Err(ErrorCode::NewSocketLimit),));
            }
            let created = store.data_mut().sockets().create_tcp_socket(family);
            settle(
                store.data_mut().descriptors(),
                created,
                |held, _, socket| {
                    held.opened_p2_socket(socket);
                    Ok(())
                },
            )
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The same bound for WASI 0.3 guests.
fn bound_p3_descriptors(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi::p3::bindings::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode as FsErrorCode, HostDescriptorWithStore, OpenFlags,
        PathFlags,
    };
    use wasmtime_wasi::p3::bindings::sockets::types::{
        ErrorCode as SocketErrorCode, HostTcpSocket as _, IpAddressFamily,
    };
    use wasmtime_wasi::sockets::TcpSocket;
    linker.allow_shadowing(true);
    linker.instance(P3_FILESYSTEM_TYPES)?.func_wrap_concurrent(
        OPEN_AT,
        |store: &Accessor<Sandbox>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::pin(async move {
                let reserved = store.with(|mut access| {
                    let (held, table) = access.get().descriptors();
                    held.reserve(table)
                });
                if !reserved {
                    return Ok((Err(FsErrorCode::Quota),));
                }
                let filesystem =
                    store.with_getter::<WasiFilesystem>(|sandbox| sandbox.filesystem());
                let opened =
                    WasiFilesystem::open_at(&filesystem, fd, path_flags, path, open_flags, flags)
                        .await;
                store.with(|mut access| settle(access.get().descriptors(), opened, keep_file))
            })
        },
    )?;
    linker.instance(P3_SOCKET_TYPES)?.func_wrap(
        "[static]tcp-socket.create",
        |mut store: StoreContextMut<'_, Sandbox>,
         (family,): (IpAddressFamily,)|
         -> wasmtime::Result<(Result<Resource<TcpSocket>, SocketErrorCode>,)> {
            let (held, table) = store.data_mut().descriptors();
            if !held.reserve(table) {
                return Ok((Err(SocketErrorCode::Other(None)),));
            }
            let created = store.data_mut().sockets().create(family);
            settle(
                store.data_mut().descriptors(),
                created,
                |held, _, socket| {
                    held.opened_p3_socket(socket);
                    Ok(())
                },
            )
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
