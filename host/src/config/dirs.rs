//! Granted host directories as configuration: each one checked to be a
//! directory, and placed relative to the others. A directory that lies
//! inside another one that some app may write can be moved by that app's
//! guest: it renames the inner directory away and puts a symbolic link
//! climbing out in its place. Such a grant is refused unless its app says it
//! is meant (`allow_nested_dirs`), and then it is marked [`Within`] the outer
//! one, so that the runtime opens it through the outer directory with no
//! symbolic link below it.

use super::settings::{DirGrant, Mount, Origin, Within};
use anyhow::{Result, bail};
use std::path::{Component, Path, PathBuf};

/// A granted host directory must be a directory now; a flag's path is
/// relative to where wasmhost runs, a file's to the file.
pub(crate) fn dir_grant(
    (host, guest, writable): (String, String, bool),
    base: &Path,
    origin: &Origin,
) -> Result<DirGrant> {
    let host = base.join(host);
    let shown = host.display();
    match std::fs::metadata(&host) {
        Ok(meta) if meta.is_dir() => Ok(DirGrant {
            host,
            guest,
            writable,
            within: None,
        }),
        Ok(_) => bail!("{origin}: {shown} is not a directory; grant a directory"),
        Err(error) => bail!("{origin}: cannot open the directory {shown}: {error}"),
    }
}

/// One granted directory as two paths: as written (made absolute, `.` and
/// `..` folded) and as the filesystem resolves it now.
struct Placed {
    written: PathBuf,
    resolved: Option<PathBuf>,
    writable: bool,
    route: String,
    origin: String,
}

/// Marks each grant that lies inside a writable grant (of its own app or of
/// another) as [`Within`] the outermost such one, and refuses it unless its
/// app allows nested grants. The same directory granted twice is not
/// nested: both open it whole.
pub(crate) fn place_nested(mounts: &mut [Mount]) -> Result<()> {
    let placed: Vec<Placed> = mounts
        .iter()
        .flat_map(|mount| {
            mount.grants.dirs.iter().map(|dir| Placed {
                written: lexical(&dir.host),
                resolved: std::fs::canonicalize(&dir.host).ok(),
                writable: dir.writable,
                route: mount.route.to_string(),
                origin: mount.origin.to_string(),
            })
        })
        .collect();
    // `placed` holds every grant in this same order: each is resolved once.
    let mut each = placed.iter();
    for mount in mounts.iter_mut() {
        for dir in &mut mount.grants.dirs {
            let this = each.next().expect("placed holds every grant, in order");
            let resolved = this.resolved.as_deref();
            let Some((outer, within)) = outermost(&placed, &this.written, resolved) else {
                continue;
            };
            if !mount.grants.allow_nested_dirs {
                bail!(
                    "{}: the granted directory {} lies inside {}, which app {} may write ({}): \
                     its guest could replace the inner one with a link out of both; grant \
                     directories apart, or set allow_nested_dirs = true for app {} \
                     (--allow-nested-dirs) to open it through the outer one, following no link",
                    mount.origin,
                    dir.host.display(),
                    outer.written.display(),
                    outer.route,
                    outer.origin,
                    mount.route
                );
            }
            dir.within = Some(within);
        }
    }
    Ok(())
}

/// The outermost writable grant that `written` (or, failing that,
/// `resolved`) lies strictly inside, and the way there from it.
fn outermost<'a>(
    placed: &'a [Placed],
    written: &Path,
    resolved: Option<&Path>,
) -> Option<(&'a Placed, Within)> {
    let below = |inner: &Path, outer: &Path| -> Option<PathBuf> {
        let rest = inner.strip_prefix(outer).ok()?;
        (rest != Path::new("")).then(|| rest.to_path_buf())
    };
    let mut found: Option<(&Placed, Within)> = None;
    for other in placed.iter().filter(|other| other.writable) {
        let within = below(written, &other.written)
            .map(|below| Within {
                outer: other.written.clone(),
                below,
            })
            .or_else(|| {
                let (inner, outer) = (resolved?, other.resolved.as_deref()?);
                below(inner, outer).map(|below| Within {
                    outer: outer.to_path_buf(),
                    below,
                })
            });
        let Some(within) = within else { continue };
        let outermost = found.as_ref().is_none_or(|(_, kept)| {
            within.below.components().count() > kept.below.components().count()
        });
        if outermost {
            found = Some((other, within));
        }
    }
    found
}

/// `path` made absolute against the working directory, with `.` dropped
/// and `..` taken back a step, without asking the filesystem.
fn lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut folded = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(path: &str, writable: bool) -> Placed {
        Placed {
            written: lexical(Path::new(path)),
            resolved: None,
            writable,
            route: "/".into(),
            origin: "--dir".into(),
        }
    }

    #[test]
    fn a_grant_inside_a_writable_one_is_within_the_outermost() {
        let grants = [
            placed("/srv/data", true),
            placed("/srv/data/cache", true),
            placed("/srv/data/cache/x", false),
            placed("/srv/other", true),
        ];
        let cases = [
            ("/srv/data/cache/x", Some(("/srv/data", "cache/x"))),
            ("/srv/data/cache", Some(("/srv/data", "cache"))),
            ("/srv/data/./cache/../cache", Some(("/srv/data", "cache"))),
            ("/srv/data", None),
            ("/srv/database", None),
            ("/srv/other/../data/y", Some(("/srv/data", "y"))),
            ("/srv", None),
        ];
        for (path, expected) in cases {
            let found =
                outermost(&grants, &lexical(Path::new(path)), None).map(|(_, within)| within);
            let expected = expected.map(|(outer, below)| Within {
                outer: outer.into(),
                below: below.into(),
            });
            assert_eq!(found, expected, "{path}");
        }
    }

    #[test]
    fn a_grant_inside_read_only_ones_only_is_not_nested() {
        let grants = [placed("/srv/site", false)];
        assert!(outermost(&grants, Path::new("/srv/site/current"), None).is_none());
    }

    #[test]
    fn nesting_is_also_found_where_the_filesystem_resolves_it() {
        let mut outer = placed("/srv/link", true);
        outer.resolved = Some("/data/real".into());
        let grants = [outer];
        let found = outermost(
            &grants,
            Path::new("/elsewhere/inner"),
            Some(Path::new("/data/real/inner")),
        );
        assert_eq!(
            found.map(|(_, within)| within),
            Some(Within {
                outer: "/data/real".into(),
                below: "inner".into()
            })
        );
    }
}
