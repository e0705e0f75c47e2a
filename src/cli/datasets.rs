//! `keel datasets list | fetch NAME | verify [NAME]`.

use keel::datasets::catalog::{self, CATALOG, Entry};
use keel::datasets::download::sha256_hex;
use keel::datasets::{DataSource, RemoteFile, read_maybe_gz};
use keel::prelude::*;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum DatasetsCommand {
    /// Name, classes, samples, download size, whether the files found match their checksums, and where they are.
    List {
        /// Directory holding the datasets' folders (default: $KEEL_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Download a dataset into the cache (checksummed), unless it is already found.
    Fetch {
        name: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the SHA-256 of every published file found (all datasets, or NAME).
    Verify {
        name: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(command: &DatasetsCommand) -> keel::Result<()> {
    match command {
        DatasetsCommand::List { data_dir } => {
            let source = DataSource::from_env().with_data_dir(data_dir.clone());
            println!(
                "{:<14} {:>7} {:>7} {:>6} {:>9}  {:<12}  where",
                "name", "classes", "train", "test", "download", "checksums"
            );
            for entry in &CATALOG {
                let size: u64 = entry.spec.files.iter().map(|f| f.size).sum();
                let place = found(entry, &source).map_or("not found".into(), |p| p.display().to_string());
                let checks =
                    entry.spec.files.iter().map(|f| check(entry, f, &source)).collect::<keel::Result<Vec<_>>>()?;
                let verified = if checks.iter().all(|c| matches!(c, Check::Published(_) | Check::SameContents(_))) {
                    "verified"
                } else if checks.iter().any(|c| matches!(c, Check::Differs(_) | Check::Unverifiable(_))) {
                    "NOT verified"
                } else {
                    "-"
                };
                println!(
                    "{:<14} {:>7} {:>7} {:>6} {:>7.1}MB  {verified:<12}  {place}",
                    entry.name,
                    entry.classes,
                    entry.train,
                    entry.test,
                    size as f64 / 1e6
                );
            }
            Ok(())
        }
        DatasetsCommand::Fetch { name, data_dir } => {
            let entry = catalog::find(name)?;
            let source = DataSource::from_env().with_data_dir(data_dir.clone());
            let ((x, _), (xt, _)) = entry.load(&source)?;
            println!("{}: {} training and {} test images, ready", entry.name, x.rows(), xt.rows());
            Ok(())
        }
        DatasetsCommand::Verify { name, data_dir } => {
            let source = DataSource::from_env().with_data_dir(data_dir.clone());
            let entries: Vec<&Entry> = match name {
                Some(n) => vec![catalog::find(n)?],
                None => CATALOG.iter().collect(),
            };
            let mut bad = Vec::new();
            for entry in entries {
                for file in entry.spec.files {
                    match check(entry, file, &source)? {
                        Check::Missing => println!("{}/{}: not found", entry.name, file.name),
                        Check::Published(path) => println!("{}: ok (the published file)", path.display()),
                        Check::SameContents(path) => {
                            println!("{}: ok (its contents match the published file's)", path.display())
                        }
                        Check::Differs(path) => {
                            println!("{}: CONTENTS DIFFER from the published file's", path.display());
                            bad.push(path.display().to_string());
                        }
                        Check::Unverifiable(path) => {
                            println!(
                                "{}: differs from the published file (expected SHA-256 {}); a re-compressed copy cannot be checked",
                                path.display(),
                                file.sha256
                            );
                            bad.push(path.display().to_string());
                        }
                    }
                }
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(Error::State(format!(
                    "{} local file(s) do not match the published checksums: {}; delete them and fetch the originals (keel datasets fetch)",
                    bad.len(),
                    bad.join(", ")
                )))
            }
        }
    }
}

/// Files or folders that show a dataset is there, extracted.
const EXTRACTED: [&str; 4] = ["cifar-10-batches-bin", "cifar-100-binary", "data_batch_1.bin", "train.bin"];

/// The first search directory holding the dataset's files, published or extracted.
fn found(entry: &Entry, source: &DataSource) -> Option<PathBuf> {
    let extracted = if entry.shape[2] == 3 { &EXTRACTED[..] } else { &[] };
    source.search_dirs(entry.name).into_iter().find(|dir| {
        entry.spec.files.iter().any(|f| dir.join(f.name).is_file() || dir.join(f.stem()).is_file())
            || extracted.iter().any(|e| dir.join(e).exists())
    })
}

/// What a published file's local copy is, checked.
enum Check {
    Missing,
    /// The published file itself.
    Published(PathBuf),
    /// A re-compressed or decompressed copy whose contents match.
    SameContents(PathBuf),
    /// A copy whose contents differ.
    Differs(PathBuf),
    /// A copy that differs from the published file, with no contents checksum to go by.
    Unverifiable(PathBuf),
}

fn check(entry: &Entry, file: &RemoteFile, source: &DataSource) -> keel::Result<Check> {
    let Some(path) = local_file(entry, file, source) else { return Ok(Check::Missing) };
    let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if sha256_hex(&raw) == file.sha256 {
        return Ok(Check::Published(path));
    }
    Ok(match file.content_sha256 {
        Some(want) if sha256_hex(&read_maybe_gz(&path)?) == want => Check::SameContents(path),
        Some(_) => Check::Differs(path),
        None => Check::Unverifiable(path),
    })
}

/// `file` where keel would use it: as published (`name.gz`) or decompressed.
fn local_file(entry: &Entry, file: &RemoteFile, source: &DataSource) -> Option<PathBuf> {
    let dirs = source.search_dirs(entry.name);
    dirs.iter().flat_map(|d| [d.join(file.stem()), d.join(file.name)]).find(|p| p.is_file())
}
