//! The compile cache: compiled components on disk, so that a restart, or a
//! reload back to a version seen before, skips the compiler (seconds for an
//! interpreter-sized guest). An entry is named by the component's SHA-256 and
//! the engine's compatibility hash, and carries its own length and CRC-32: an
//! entry that is truncated, corrupt, or made by another build of wasmtime is
//! ignored and replaced, never loaded. (CRC-32 rather than SHA-256 because a
//! Python guest's entry is 35 MB, which SHA-256 took ~25 ms to check on a
//! reload budgeted at 200 ms; accidents are what it guards against.)
//!
//! The checksum guards against accidents, not against someone who can write
//! to the directory: loading an entry runs the machine code in it. The
//! directory is created private to the user (mode 0700).

use anyhow::{Context, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry; a new layout gets a new version here and in
/// [`SUFFIX`], so entries of another layout are never even opened.
const MAGIC: &[u8] = b"wasmhost compiled component v3\n";
const SUFFIX: &str = "v3.cwasm";

/// A component file's SHA-256: the cache's key, and the name of a version
/// in reload and log lines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// The first 12 hex digits, like a short git hash.
impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..6]
            .iter()
            .try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

pub struct Cache {
    dir: PathBuf,
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    Compiled,
    Cached,
}

impl Cache {
    /// `$XDG_CACHE_HOME/wasmhost/compiled`, else `~/.cache/wasmhost/compiled`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CACHE_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
        };
        Some(base.join("wasmhost").join("compiled"))
    }

    /// Opens (creating it if needed) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Cache> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The component from the cache, or compiled and then stored.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
    ) -> wasmtime::Result<(Component, Built)> {
        let entry = self.entry(engine, digest);
        if let Some(component) = self.load(engine, &entry, digest) {
            return Ok((component, Built::Cached));
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&entry, &component, digest) {
            tracing::warn!("not caching the compiled component: {error:#}");
        }
        Ok((component, Built::Compiled))
    }

    /// Whether an entry for `digest` and `engine` exists (it is checked
    /// only when loaded).
    pub fn contains(&self, engine: &Engine, digest: &Digest) -> bool {
        self.entry(engine, digest).is_file()
    }

    /// The entry's file name: what was compiled and by what.
    fn entry(&self, engine: &Engine, digest: &Digest) -> PathBuf {
        // Stable for one build of wasmhost, which is all the key needs: a
        // different build may only miss, and wasmtime checks again on load.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!(
            "{}-{:016x}.{SUFFIX}",
            digest.hex(),
            hasher.finish()
        ))
    }

    fn load(&self, engine: &Engine, entry: &Path, digest: &Digest) -> Option<Component> {
        let contents = match std::fs::read(entry) {
            Ok(contents) => contents,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!("ignoring cache entry {}: {error}", entry.display());
                return None;
            }
        };
        let Some(artifact) = verified(&contents, digest) else {
            tracing::warn!(
                "ignoring corrupt cache entry {}; it will be replaced",
                entry.display()
            );
            return None;
        };
        // SAFETY: the artifact is what `Component::serialize` wrote for an
        // engine with this compatibility hash, unchanged since as far as its
        // length and CRC tell; wasmtime checks its header against the engine
        // again.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(
                    "ignoring cache entry {} ({error:#}); it will be replaced",
                    entry.display()
                );
                None
            }
        }
    }

    /// Writes the entry beside its final name, then renames it into place,
    /// so a reader (another wasmhost too) never sees half an entry.
    fn store(&self, entry: &Path, component: &Component, digest: &Digest) -> Result<()> {
        let artifact = component.serialize()?;
        let contents = entry_bytes(digest, &artifact);
        let staging = entry.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&staging, &contents)
            .and_then(|()| std::fs::rename(&staging, entry))
            .with_context(|| format!("cannot write {}", entry.display()))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&staging);
            })
    }
}

/// An entry: the magic line, the component's SHA-256 (an entry copied or
/// renamed to another component's name is not that component), the
/// artifact's length and CRC-32 (little endian), the artifact.
fn entry_bytes(digest: &Digest, artifact: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(MAGIC.len() + 44 + artifact.len());
    contents.extend_from_slice(MAGIC);
    contents.extend_from_slice(digest.as_bytes());
    contents.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    contents.extend_from_slice(&crc32fast::hash(artifact).to_le_bytes());
    contents.extend_from_slice(artifact);
    contents
}

/// The artifact inside an entry, if the entry is whole and unchanged.
fn verified<'a>(contents: &'a [u8], digest: &Digest) -> Option<&'a [u8]> {
    let rest = contents.strip_prefix(MAGIC)?;
    let rest = rest.strip_prefix(digest.as_bytes())?;
    let (length, rest) = rest.split_at_checked(8)?;
    let (checksum, artifact) = rest.split_at_checked(4)?;
    let whole = u64::from_le_bytes(length.try_into().ok()?) == artifact.len() as u64;
    let unchanged = u32::from_le_bytes(checksum.try_into().ok()?) == crc32fast::hash(artifact);
    (whole && unchanged).then_some(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_unchanged_entries_verify() {
        let artifact = b"machine code".as_slice();
        let digest = Digest::of(b"component");
        let entry = entry_bytes(&digest, artifact);
        assert_eq!(verified(&entry, &digest), Some(artifact));
        assert_eq!(verified(&entry, &Digest::of(b"another")), None);

        let mut flipped = entry.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(verified(&flipped, &digest), None);
        assert_eq!(verified(&entry[..entry.len() - 1], &digest), None);
        assert_eq!(verified(&entry[..10], &digest), None);
        let mut longer = entry.clone();
        longer.push(0);
        assert_eq!(verified(&longer, &digest), None);
        assert_eq!(verified(b"", &digest), None);
    }
}
