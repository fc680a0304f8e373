//! Resource versions on disk: the default set `up` creates, and the in-memory catalog
//! (manifest with sizes and sha256) that storage and the file nodes load at start.
//!
//! Layout: `DIR/resources/<version>/<files…>` plus `DIR/resources/current`, a one-line
//! file naming the version storage treats as current. Resources are immutable while a
//! topology runs, so loading them once keeps disk reads off the event loops.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The version `up` marks current in a new data folder.
pub const DEFAULT_CURRENT_VERSION: &str = "1.1.0";
/// The older version `up` creates so stale clients have something to update from.
pub const DEFAULT_PREVIOUS_VERSION: &str = "1.0.0";
/// Size of the large default file: above 1 MiB so downloads exercise Range and pacing.
const DEFAULT_PAK_BYTES: usize = 1536 * 1024;
/// Longest version name accepted anywhere; versions are short labels like `1.1.0`.
pub const VERSION_BYTES_MAX: usize = 64;
/// Total bytes a catalog may hold in memory; a file node serves all of them from RAM.
const CATALOG_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Errors loading or creating resources.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A file or folder could not be read or written.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    /// The folder content breaks the layout rules.
    #[error("{}: {}", .0.display(), .1)]
    Invalid(PathBuf, String),
}

/// One file of a version, as the update manifest lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the version folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// A loaded file: its manifest entry and its bytes.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// The manifest entry.
    pub entry: FileEntry,
    /// The content, shared by every response that serves it.
    pub bytes: Arc<[u8]>,
}

/// Every version with every file, loaded into memory.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The version storage answers as current.
    pub current: String,
    /// Files by version, then by relative path.
    pub versions: BTreeMap<String, BTreeMap<String, LoadedFile>>,
}

impl Catalog {
    /// Loads `root` (the `resources` folder).
    pub fn load(root: &Path) -> Result<Catalog, ResourceError> {
        let current_path = root.join("current");
        let current = fs::read_to_string(&current_path)
            .map_err(|e| ResourceError::Io(current_path.clone(), e))?
            .trim()
            .to_string();
        if !valid_version(&current) {
            return Err(ResourceError::Invalid(
                current_path,
                format!("not a valid version name: {current:?}"),
            ));
        }
        let mut versions = BTreeMap::new();
        let mut total = 0u64;
        for entry in read_dir(root)? {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_version(&name) {
                return Err(ResourceError::Invalid(
                    path,
                    "folder name is not a valid version".into(),
                ));
            }
            let mut files = BTreeMap::new();
            load_files(&path, &path, &mut files, &mut total)?;
            versions.insert(name, files);
        }
        if !versions.contains_key(&current) {
            return Err(ResourceError::Invalid(
                current_path,
                format!(
                    "names version {current} but {} has no such folder",
                    root.display()
                ),
            ));
        }
        Ok(Catalog { current, versions })
    }

    /// The manifest of the current version, sorted by path.
    pub fn current_manifest(&self) -> Vec<FileEntry> {
        self.versions[&self.current]
            .values()
            .map(|f| f.entry.clone())
            .collect()
    }

    /// A file of a version.
    pub fn file(&self, version: &str, path: &str) -> Option<&LoadedFile> {
        self.versions.get(version)?.get(path)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ResourceError> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| ResourceError::Io(dir.to_path_buf(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ResourceError::Io(dir.to_path_buf(), e))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn load_files(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, LoadedFile>,
    total: &mut u64,
) -> Result<(), ResourceError> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| ResourceError::Io(path.clone(), e))?;
        if kind.is_dir() {
            load_files(base, &path, out, total)?;
            continue;
        }
        if !kind.is_file() {
            // Symlinks could point outside the resource folder, so they are never served.
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| ResourceError::Io(path.clone(), e))?;
        *total += bytes.len() as u64;
        if *total > CATALOG_BYTES_MAX {
            return Err(ResourceError::Invalid(
                path,
                format!("resources exceed {CATALOG_BYTES_MAX} bytes"),
            ));
        }
        let rel = path
            .strip_prefix(base)
            .expect("walked under base")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let entry = FileEntry {
            path: rel.clone(),
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        };
        out.insert(
            rel,
            LoadedFile {
                entry,
                bytes: bytes.into(),
            },
        );
    }
    Ok(())
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::domain::token::hex(&Sha256::digest(bytes))
}

/// A version name: 1–64 bytes of ASCII letters, digits, `.`, `-` and `_`, not `.`/`..`.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= VERSION_BYTES_MAX
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Creates the default resource set under `root` unless `root/current` already exists.
pub fn ensure_default(root: &Path) -> Result<(), ResourceError> {
    if root.join("current").exists() {
        return Ok(());
    }
    for (version, seed) in [
        (DEFAULT_PREVIOUS_VERSION, 1u64),
        (DEFAULT_CURRENT_VERSION, 2u64),
    ] {
        let dir = root.join(version);
        write(
            &dir.join("catwar.pak"),
            &pseudo_random_bytes(seed, DEFAULT_PAK_BYTES),
        )?;
        let config = format!(
            "{{\"version\": \"{version}\", \"tick_hz\": 20, \"arena\": \"maps/arena.map\"}}\n"
        );
        write(&dir.join("config/game.json"), config.as_bytes())?;
        write(&dir.join("maps/arena.map"), &arena_map(seed))?;
        let notice = format!("CatWar resources {version}. Generated by catwar-server up.\n");
        write(&dir.join("NOTICE.txt"), notice.as_bytes())?;
    }
    write(
        &root.join("current"),
        format!("{DEFAULT_CURRENT_VERSION}\n").as_bytes(),
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ResourceError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| ResourceError::Io(parent.to_path_buf(), e))?;
    }
    fs::write(path, bytes).map_err(|e| ResourceError::Io(path.to_path_buf(), e))
}

/// Deterministic filler (xorshift64*): the same data folder content on every machine.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small text arena: walls on the border, a few obstacles placed by the seed.
fn arena_map(seed: u64) -> Vec<u8> {
    const SIDE: usize = 32;
    let noise = pseudo_random_bytes(seed + 100, SIDE * SIDE);
    let mut map = String::with_capacity(SIDE * (SIDE + 1));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let border = x == 0 || y == 0 || x == SIDE - 1 || y == SIDE - 1;
            let rock = noise[y * SIDE + x] < 12;
            map.push(if border {
                '#'
            } else if rock {
                'o'
            } else {
                '.'
            });
        }
        map.push('\n');
    }
    map.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_loads_with_two_versions_and_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        ensure_default(dir.path()).unwrap();
        let catalog = Catalog::load(dir.path()).unwrap();
        assert_eq!(catalog.current, DEFAULT_CURRENT_VERSION);
        assert_eq!(catalog.versions.len(), 2);
        let manifest = catalog.current_manifest();
        assert!(manifest.iter().any(|f| f.size >= 1024 * 1024));
        assert!(manifest.iter().any(|f| f.path == "config/game.json"));
        let old = catalog
            .file(DEFAULT_PREVIOUS_VERSION, "catwar.pak")
            .unwrap();
        let new = catalog.file(DEFAULT_CURRENT_VERSION, "catwar.pak").unwrap();
        assert_ne!(old.entry.sha256, new.entry.sha256);
        assert_eq!(new.entry.sha256, sha256_hex(&new.bytes));
    }

    #[test]
    fn ensure_default_keeps_an_existing_set() {
        let dir = tempfile::tempdir().unwrap();
        ensure_default(dir.path()).unwrap();
        fs::write(dir.path().join("current"), "1.0.0\n").unwrap();
        ensure_default(dir.path()).unwrap();
        assert_eq!(Catalog::load(dir.path()).unwrap().current, "1.0.0");
    }

    #[test]
    fn version_names_are_restricted() {
        assert!(valid_version("1.1.0"));
        assert!(valid_version("2026_rc-1"));
        for bad in ["", ".", "..", "1/2", "a b", "%2e", &"9".repeat(65)] {
            assert!(!valid_version(bad), "{bad:?}");
        }
    }
}
