//! Files: `.keel` model files (`Model::save`, `Model::load`), ONNX
//! export, and safe writes: everything keel writes goes through a temporary
//! file in the same directory, flushed to disk and renamed over the target, so
//! a crash never leaves a half-written file.

mod model_file;
mod onnx;

pub use model_file::{FORMAT, FORMAT_VERSION};
pub use onnx::OPSET as ONNX_OPSET;

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A file being written under a temporary name; removed unless committed.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates `.NAME.tmp-PID-N` next to `dest`.
    pub fn beside(dest: &Path) -> Result<Self> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keel".into());
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dest.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TempFile { path, file: Some(file) })
    }

    /// The open file to write to.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes to disk and renames over `dest`.
    pub fn commit(mut self, dest: &Path) -> Result<()> {
        let file = self.file.take().expect("open until committed");
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(file);
        std::fs::rename(&self.path, dest).map_err(|e| {
            let _ = std::fs::remove_file(&self.path);
            Error::io(dest, e)
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = TempFile::beside(path)?;
    tmp.file().write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.commit(path)
}
