//! An app's granted directories, opened once when the app loads (and again
//! at each reload) and handed to every instance as those same directories.
//!
//! An instance's preopen is opened by path, and wasmtime-wasi takes only a
//! path. Given the path of the host directory, a guest that may write a
//! directory above it could, between two instances, rename it away and put
//! a symbolic link climbing out in its place: the next instance would be
//! given `/etc`. So the path an instance gets is `/proc/self/fd/N` of the
//! directory opened here, which the kernel resolves to that open directory
//! itself, wherever it has been moved, never by its name.
//!
//! A grant inside another that an app may write ([`Within`]) is opened
//! through the outer directory one component at a time with `O_NOFOLLOW`:
//! a part of its path that a guest has swapped for a link refuses the
//! load, and the version serving goes on.

use crate::config::{DirGrant, Within};
use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// One granted directory, open.
struct Opened {
    /// Held open for as long as the app's version serves: `/proc/self/fd/N`
    /// names it only while it is.
    _dir: File,
    /// `/proc/self/fd/N` of `dir`.
    by_descriptor: PathBuf,
    /// Where the guest finds it.
    guest: String,
    perms: FsPerms,
    /// As configured, for log lines.
    host: PathBuf,
}

/// The directories an app's instances are given.
#[derive(Default)]
pub struct GrantedDirs(Vec<Opened>);

impl GrantedDirs {
    /// Opens every grant; the first that cannot be opened (gone, no longer
    /// a directory, or reached through a link where none may be) is the
    /// error, naming it.
    pub fn open(grants: &[DirGrant]) -> Result<Self> {
        let mut opened = Vec::with_capacity(grants.len());
        for grant in grants {
            let dir = match &grant.within {
                None => open_dir(&grant.host).map_err(anyhow::Error::from),
                Some(within) => open_within(within),
            }
            .with_context(|| {
                format!("cannot open the granted directory {}", grant.host.display())
            })?;
            let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            if !by_descriptor.is_dir() {
                bail!(
                    "cannot find the granted directory {} at {}: granting directories needs /proc mounted",
                    grant.host.display(),
                    by_descriptor.display()
                );
            }
            opened.push(Opened {
                _dir: dir,
                by_descriptor,
                guest: grant.guest.clone(),
                perms: match grant.writable {
                    true => FsPerms::ReadWrite,
                    false => FsPerms::ReadOnly,
                },
                host: grant.host.clone(),
            });
        }
        Ok(Self(opened))
    }

    /// Gives `wasi` each directory at its guest path.
    pub fn preopen(&self, wasi: &mut WasiCtxBuilder) {
        for opened in &self.0 {
            if let Err(error) =
                wasi.preopened_dir(&opened.by_descriptor, &opened.guest, opened.perms)
            {
                // Opened at load and held: only running out of descriptors
                // gets here, and the guest then finds the directory missing.
                crate::limited!(
                    warn,
                    "cannot give the granted directory {} to an instance: {error:#}; the guest runs without it",
                    opened.host.display()
                );
            }
        }
    }
}

/// Whether a symbolic link to `target` may be made: relative, and never
/// climbing above the directory that holds it. Inside its own grant a link
/// is resolved beneath the granted directory whatever it says, but the
/// host's other readers (another app's wider grant, a web server, backups)
/// follow it as written, so one climbing out would be an escape for them.
pub fn link_target_stays_inside(target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth = 0usize;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

/// Opens `path` as a directory, following links as the operator wrote it.
fn open_dir(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `within.outer`, then each component of `within.below` beneath
/// it, refusing a link, a `..` or anything but a directory at every step.
fn open_within(within: &Within) -> Result<File> {
    let mut dir = open_dir(&within.outer)
        .with_context(|| format!("cannot open {}", within.outer.display()))?;
    for component in within.below.components() {
        let Component::Normal(name) = component else {
            bail!(
                "{} is not a plain path below {}",
                within.below.display(),
                within.outer.display()
            );
        };
        let name = CString::new(name.as_bytes())
            .with_context(|| format!("{} holds a NUL byte", within.below.display()))?;
        // SAFETY: `dir` is an open directory and `name` a NUL-terminated
        // path component; the descriptor returned is owned by the File.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            if matches!(error.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                bail!(
                    "{} below {} is now a symbolic link or not a directory, so a guest may have \
                     replaced it; refused (put the directory back, then reload)",
                    name.to_string_lossy(),
                    within.outer.display()
                );
            }
            return Err(error).with_context(|| {
                format!(
                    "cannot open {} below {}",
                    name.to_string_lossy(),
                    within.outer.display()
                )
            });
        }
        // SAFETY: `fd` was just returned by openat and nothing else owns it.
        dir = unsafe { File::from_raw_fd(fd) };
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmhost-granted-dirs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data/cache")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/hostname"), "host\n").unwrap();
        std::fs::write(dir.join("data/cache/kept"), "cache\n").unwrap();
        dir
    }

    fn grant(host: PathBuf, within: Option<Within>) -> DirGrant {
        DirGrant {
            host,
            guest: "/g".into(),
            writable: true,
            within,
        }
    }

    #[test]
    fn a_link_may_point_at_or_below_its_own_directory_only() {
        for (target, allowed) in [
            ("a.txt", true),
            ("sub/b.txt", true),
            ("sub/../a.txt", true),
            ("./sub//b.txt", true),
            ("../a.txt", false),
            ("sub/../../a.txt", false),
            ("../../../../etc", false),
            ("/etc/hostname", false),
            ("", false),
        ] {
            assert_eq!(link_target_stays_inside(target), allowed, "{target}");
        }
    }

    #[test]
    fn an_instance_gets_the_directory_opened_even_after_it_is_swapped_for_a_link() {
        let root = temp();
        let dirs = GrantedDirs::open(&[grant(root.join("data/cache"), None)]).unwrap();
        std::fs::rename(root.join("data/cache"), root.join("data/moved")).unwrap();
        std::os::unix::fs::symlink("../etc", root.join("data/cache")).unwrap();
        let seen = &dirs.0[0].by_descriptor;
        assert_eq!(
            std::fs::read_to_string(seen.join("kept")).unwrap(),
            "cache\n"
        );
        assert!(!seen.join("hostname").exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_nested_grant_swapped_for_a_link_is_refused_and_a_plain_one_opens() {
        let root = temp();
        let within = Within {
            outer: root.join("data"),
            below: "cache".into(),
        };
        let host = root.join("data/cache");
        assert!(GrantedDirs::open(&[grant(host.clone(), Some(within.clone()))]).is_ok());
        std::fs::rename(&host, root.join("data/moved")).unwrap();
        std::os::unix::fs::symlink("../etc", &host).unwrap();
        let error = GrantedDirs::open(&[grant(host, Some(within))])
            .err()
            .unwrap();
        let error = format!("{error:#}");
        assert!(error.contains("cache below"), "{error}");
        assert!(error.contains("is now a symbolic link"), "{error}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
