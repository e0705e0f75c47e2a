//! Checksummed downloads into the cache: never a partial or unverified file
//! under the final name.

use crate::error::{Error, Result};
use crate::io::TempFile;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Downloads `url` to `dest`, checking its SHA-256 (hex) before renaming it
/// into place. On any failure nothing is left at `dest`.
pub fn fetch_verified(url: &str, dest: &Path, sha256: &str) -> Result<()> {
    let fail = |why: String| Error::Download(format!("{url}: {why}"));
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let length = response.body().content_length();
    let mut body = response.into_body().into_reader();
    // A bar on a terminal (stderr); nothing when output is redirected.
    let progress = length.map_or_else(indicatif::ProgressBar::new_spinner, indicatif::ProgressBar::new);
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
    progress.set_style(style);
    progress.set_message(format!("Downloading {}", dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut tmp = TempFile::beside(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(format!("connection broke off: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.inc(n as u64);
        tmp.file().write_all(&buf[..n]).map_err(|e| Error::io(tmp.path(), e))?;
    }
    progress.finish_and_clear();
    let got = hex(&hasher.finalize());
    if !got.eq_ignore_ascii_case(sha256) {
        return Err(fail(format!("checksum mismatch: expected SHA-256 {sha256}, got {got}; the file was discarded")));
    }
    tmp.commit(dest)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
