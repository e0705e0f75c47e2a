//! Files: `.keel` model files (`Model::save`, `Model::load`), ONNX
//! export, and safe writes: everything keel writes goes through a temporary
//! file in the same directory, flushed to disk and renamed over the target, so
//! a crash never leaves a half-written file.

mod model_file;
mod onnx;

pub(crate) use model_file::{BASELINE_KEY, KeelFile, read_keel_file, read_keel_header, write_keel_file};
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

/// The prefix and suffix of temporary names: `.NAME.tmp-PID-N`.
fn temp_name(name: &str, pid: u32, n: usize) -> String {
    format!(".{name}.tmp-{pid}-{n}")
}

impl TempFile {
    /// Creates `.NAME.tmp-PID-N` next to `dest`, after removing such files
    /// left by writers that died (a kill during a save). Errors name `dest`.
    pub fn beside(dest: &Path) -> Result<Self> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keel".into());
        remove_stale_temp_files(dest, &name);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dest.with_file_name(temp_name(&name, std::process::id(), n));
        let file = File::create(&path).map_err(|e| cannot_write(dest, e))?;
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
        file.sync_all().map_err(|e| cannot_write(dest, e))?;
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

/// An error writing `dest`, naming it (not a temporary file) and, when its
/// folder is missing, saying so.
fn cannot_write(dest: &Path, e: std::io::Error) -> Error {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Error::InvalidArgument(format!(
            "cannot write {}: the folder {} does not exist; create it or choose another path",
            dest.display(),
            parent.display()
        ));
    }
    Error::io(dest, e)
}

/// Removes `.NAME.tmp-PID-N` files beside `dest` whose writer process is gone.
fn remove_stale_temp_files(dest: &Path, name: &str) {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(pid, n)| Some(pid.parse::<u32>().ok()?).filter(|_| n.parse::<usize>().is_ok()))
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a process with this id runs (Linux: it has a /proc entry; elsewhere assumed).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new("/proc").join(pid.to_string()).exists() } else { true }
}

/// Writes `bytes` to `path` safely. A regular file (or a new one) is replaced
/// atomically: temporary file, fsync, rename. A symbolic link is followed and
/// its target replaced, so the link stays. A device or FIFO (`/dev/null`) is
/// written directly, never replaced; a directory is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let target = resolve_links(path)?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => {
            Err(Error::InvalidArgument(format!("cannot write {}: it is a directory; give a file path", path.display())))
        }
        Ok(m) if !m.is_file() => {
            let mut file = std::fs::OpenOptions::new().write(true).open(&target).map_err(|e| Error::io(path, e))?;
            file.write_all(bytes).map_err(|e| Error::io(path, e))
        }
        _ => {
            let mut tmp = TempFile::beside(&target)?;
            tmp.file().write_all(bytes).map_err(|e| cannot_write(path, e))?;
            tmp.commit(&target)
        }
    }
}

/// `path`, or where its chain of symbolic links ends (which may not exist yet).
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&current).map_err(|e| Error::io(&current, e))?;
                current = match current.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(Error::InvalidArgument(format!("cannot write {}: too many levels of symbolic links", path.display())))
}

/// Checks, before long work, that `path` can be written as a file: its
/// folder exists and it is not a directory. Names the user's path and the fix.
pub fn check_output_file(path: &Path, what: &str) -> Result<()> {
    let target = resolve_links(path)?;
    if target.is_dir() {
        return Err(Error::InvalidArgument(format!("{what} {} is a directory; give a file path", path.display())));
    }
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{what} {}: the folder {} does not exist; create it or choose another path",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Checks, before long work, that `path` is a directory or can be created as one.
pub fn check_output_dir(path: &Path, what: &str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{what} {} exists and is not a directory; give a directory",
            path.display()
        )));
    }
    let mut ancestor = path.parent();
    while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
        if a.exists() {
            if !a.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "{what} {}: {} is not a directory",
                    path.display(),
                    a.display()
                )));
            }
            break;
        }
        ancestor = a.parent();
    }
    Ok(())
}

/// An advisory lock on an output (a save path or a checkpoint directory)
/// for as long as it is held, so that two runs never mix their files. The
/// lock file (`.NAME.lock` beside a file, `.keel.lock` inside a directory)
/// stays; the lock goes with the process.
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Locks `path` (a directory when `dir`); an error naming it when another process holds it.
    pub fn acquire(path: &Path, dir: bool, what: &str) -> Result<OutputLock> {
        let lock_path = if dir {
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
            path.join(".keel.lock")
        } else {
            let target = resolve_links(path)?;
            let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keel".into());
            target.with_file_name(format!(".{name}.lock"))
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| cannot_write(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(OutputLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::InvalidArgument(format!(
                "{what} {} is in use by another keel run (it holds {}); wait for it to finish or choose another path",
                path.display(),
                lock_path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&lock_path, e)),
        }
    }
}
