//! Datasets: where their files are found, how they are downloaded, and the
//! file formats they come in.
//!
//! A dataset's files are looked for, per file, in this order:
//! 1. `DIR/<name>/` then `DIR/` for an explicit data dir (`--data-dir`, or the
//!    `KEEL_DATA_DIR` environment variable);
//! 2. the system dataset dirs, `/usr/share/datasets/<name>/`;
//! 3. the cache, `~/.cache/keel/datasets/<name>/` (or `KEEL_CACHE_DIR/<name>/`);
//! 4. else downloaded from the public mirror (`KEEL_DATASETS_MIRROR` overrides
//!    it) into the cache, checked against its SHA-256, written under a
//!    temporary name and renamed, so a partial download is never used.
//!
//! Each file may be raw or gzip-compressed (`name` or `name.gz`).

pub mod catalog;
pub mod cifar;
pub mod download;
pub mod fashion_mnist;
pub mod idx;
pub mod image_folder;
pub mod kmnist;
pub mod mnist;

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's dataset packages (`dataset-fashion-mnist`, ...) install.
pub const SYSTEM_DATASETS: &str = "/usr/share/datasets";

/// A file of a published dataset.
#[derive(Clone, Copy, Debug)]
pub struct RemoteFile {
    /// File name as published (compressed), e.g. "train-images-idx3-ubyte.gz".
    pub name: &'static str,
    /// SHA-256 of the published file.
    pub sha256: &'static str,
    /// Size in bytes of the published file.
    pub size: u64,
    /// SHA-256 of the decompressed contents, where known: re-compressed or
    /// extracted copies can still be verified against it.
    pub content_sha256: Option<&'static str>,
}

impl RemoteFile {
    /// The name without its ".gz" suffix.
    pub fn stem(&self) -> &'static str {
        self.name.strip_suffix(".gz").unwrap_or(self.name)
    }
}

/// A published dataset: a name (its folder) and its files on a mirror.
#[derive(Clone, Copy, Debug)]
pub struct DatasetSpec {
    pub name: &'static str,
    pub mirror: &'static str,
    pub files: &'static [RemoteFile],
}

/// Where to look for and put dataset files.
#[derive(Clone, Debug, Default)]
pub struct DataSource {
    /// Explicit data dir: files under `data_dir/<name>/` or directly in it.
    pub data_dir: Option<PathBuf>,
    /// System-wide dataset roots, searched after the data dir: files under
    /// `<root>/<name>/` (default `/usr/share/datasets`, where Debian's dataset
    /// packages install).
    pub system_dirs: Vec<PathBuf>,
    /// Download cache root: files under `cache_dir/<name>/`.
    pub cache_dir: Option<PathBuf>,
    /// Base URL replacing the dataset's mirror.
    pub mirror: Option<String>,
    /// Whether missing files may be downloaded.
    pub allow_download: bool,
}

impl DataSource {
    /// From the environment: `KEEL_DATA_DIR`, `KEEL_CACHE_DIR` (default
    /// `~/.cache/keel/datasets`), `KEEL_DATASETS_MIRROR`; downloads allowed
    /// unless `KEEL_OFFLINE` is set.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        DataSource {
            data_dir: var("KEEL_DATA_DIR").map(PathBuf::from),
            system_dirs: vec![PathBuf::from(SYSTEM_DATASETS)],
            cache_dir: var("KEEL_CACHE_DIR")
                .map(PathBuf::from)
                .or_else(|| dirs::cache_dir().map(|d| d.join("keel").join("datasets"))),
            mirror: var("KEEL_DATASETS_MIRROR").and_then(|v| v.into_string().ok()),
            allow_download: var("KEEL_OFFLINE").is_none(),
        }
    }

    /// The same, with an explicit data dir taking the place of `KEEL_DATA_DIR`.
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Self {
        if dir.is_some() {
            self.data_dir = dir;
        }
        self
    }

    /// Where the files of dataset `name` are looked for, in order: the data
    /// dir's `name/` and the data dir itself, the system dirs' `name/`, then
    /// the cache's `name/`.
    pub fn search_dirs(&self, name: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = &self.data_dir {
            dirs.push(d.join(name));
            dirs.push(d.clone());
        }
        dirs.extend(self.system_dirs.iter().map(|d| d.join(name)));
        dirs.extend(self.cache_dir.as_ref().map(|c| c.join(name)));
        dirs
    }

    /// Paths of every file of `spec`, finding or downloading each.
    pub fn locate(&self, spec: &DatasetSpec) -> Result<Vec<PathBuf>> {
        let dirs = self.search_dirs(spec.name);
        let cache = self.cache_dir.as_ref().map(|c| c.join(spec.name));
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for file in spec.files {
            let hit = dirs.iter().flat_map(|d| [d.join(file.stem()), d.join(file.name)]).find(|p| p.is_file());
            match hit {
                Some(p) => found.push(p),
                None => {
                    found.push(PathBuf::new());
                    missing.push(*file);
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut failure = None;
        if let (true, Some(cache)) = (self.allow_download, &cache) {
            let base = self.mirror.as_deref().unwrap_or(spec.mirror);
            for file in &missing {
                let url = format!("{}/{}", base.trim_end_matches('/'), file.name);
                let dest = cache.join(file.name);
                match download::fetch_verified(&url, &dest, file.sha256) {
                    Ok(()) => {
                        let i = spec.files.iter().position(|f| f.name == file.name).expect("missing comes from files");
                        found[i] = dest;
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if failure.is_none() {
                return Ok(found);
            }
        }
        Err(Error::DatasetNotFound(not_found_message(spec, &missing, &dirs, failure, self.allow_download)))
    }
}

fn not_found_message(
    spec: &DatasetSpec,
    missing: &[RemoteFile],
    dirs: &[PathBuf],
    failure: Option<String>,
    allowed: bool,
) -> String {
    let mut msg = format!("dataset '{}' not found. Missing files:\n", spec.name);
    for f in missing {
        msg += &format!("  {} (or {})\n", f.stem(), f.name);
    }
    msg += "Looked in:\n";
    if dirs.is_empty() {
        msg += "  (no data dir given and no cache dir known)\n";
    }
    for d in dirs {
        msg += &format!("  {}\n", d.display());
    }
    match failure {
        Some(why) => msg += &format!("Downloading them failed: {why}\n"),
        None if !allowed => msg += "Downloading is off (KEEL_OFFLINE is set).\n",
        None => {}
    }
    msg += &format!(
        "Fix: put the files in DIR/{0}/ and pass --data-dir DIR (or set KEEL_DATA_DIR=DIR), or go online so keel can download them from {1}",
        spec.name, spec.mirror
    );
    msg
}

/// The whole file, gunzipped when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::CorruptFile {
        path: path.to_path_buf(),
        message: format!("not a valid gzip file ({e}); delete it and supply the file again"),
    })?;
    Ok(out)
}
