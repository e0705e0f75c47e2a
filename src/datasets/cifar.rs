//! CIFAR-10 and CIFAR-100 in their binary versions: 50,000 training and
//! 10,000 test colour images, 32x32, as `keras.datasets.cifar10` / `cifar100`.
//!
//! A record is the label byte(s) then 3,072 pixel bytes, channel by channel
//! (1,024 red, 1,024 green, 1,024 blue); keel returns images channels-last,
//! (N, 32, 32, 3). The files are used from wherever they are found, in the
//! dataset's search directories ([`DataSource::search_dirs`]): extracted
//! (`data_batch_1.bin`, ..., directly or in the `cifar-10-batches-bin/` /
//! `cifar-100-binary/` folder the archives extract to), or else the `.tar.gz`
//! archive itself, read without extracting it (downloaded into the cache when
//! nowhere to be found).

use super::idx::Split;
use super::{DataSource, DatasetSpec, RemoteFile};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Pixels per image.
const IMAGE_BYTES: usize = 32 * 32 * 3;

/// CIFAR-10's archive as the authors publish it.
pub const CIFAR10: DatasetSpec = DatasetSpec {
    name: "cifar10",
    mirror: "https://www.cs.toronto.edu/~kriz",
    files: &[RemoteFile {
        name: "cifar-10-binary.tar.gz",
        sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        size: 170_052_171,
        content_sha256: None,
    }],
};

/// CIFAR-100's archive as the authors publish it.
pub const CIFAR100: DatasetSpec = DatasetSpec {
    name: "cifar100",
    mirror: "https://www.cs.toronto.edu/~kriz",
    files: &[RemoteFile {
        name: "cifar-100-binary.tar.gz",
        sha256: "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
        size: 168_513_733,
        content_sha256: None,
    }],
};

/// CIFAR-10's class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which CIFAR-100 labels to return, as Keras' `label_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelMode {
    /// The 100 classes.
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// The layout of one of the two datasets.
struct Layout {
    spec: &'static DatasetSpec,
    folder: &'static str,
    train: &'static [&'static str],
    test: &'static str,
    label_bytes: usize,
}

const CIFAR10_LAYOUT: Layout = Layout {
    spec: &CIFAR10,
    folder: "cifar-10-batches-bin",
    train: &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
    test: "test_batch.bin",
    label_bytes: 1,
};

const CIFAR100_LAYOUT: Layout =
    Layout { spec: &CIFAR100, folder: "cifar-100-binary", train: &["train.bin"], test: "test.bin", label_bytes: 2 };

/// CIFAR-10 `((x_train, y_train), (x_test, y_test))`: images (N, 32, 32, 3)
/// and labels (N,) as bytes, found as [`DataSource::from_env`] says.
pub fn load_cifar10() -> Result<(Split, Split)> {
    load_cifar10_from(&DataSource::from_env())
}

/// As [`load_cifar10`], from an explicit source.
pub fn load_cifar10_from(source: &DataSource) -> Result<(Split, Split)> {
    load(&CIFAR10_LAYOUT, 0, 10, source)
}

/// CIFAR-100, fine (100 classes) or coarse (20) labels; as [`load_cifar10`].
pub fn load_cifar100(mode: LabelMode) -> Result<(Split, Split)> {
    load_cifar100_from(mode, &DataSource::from_env())
}

/// As [`load_cifar100`], from an explicit source.
pub fn load_cifar100_from(mode: LabelMode, source: &DataSource) -> Result<(Split, Split)> {
    match mode {
        LabelMode::Fine => load(&CIFAR100_LAYOUT, 1, 100, source),
        LabelMode::Coarse => load(&CIFAR100_LAYOUT, 0, 20, source),
    }
}

/// CIFAR-100's class names for `mode`, from the `*_label_names.txt` file that
/// comes with the data, if it is found extracted.
pub fn cifar100_class_names(mode: LabelMode, source: &DataSource) -> Option<Vec<String>> {
    let file = if mode == LabelMode::Fine { "fine_label_names.txt" } else { "coarse_label_names.txt" };
    let path = find_extracted(&CIFAR100_LAYOUT, &[file], source)?.remove(file)?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

fn load(layout: &Layout, label_at: usize, classes: usize, source: &DataSource) -> Result<(Split, Split)> {
    let mut wanted: Vec<&str> = layout.train.to_vec();
    wanted.push(layout.test);
    let files: HashMap<String, (PathBuf, Vec<u8>)> = match find_extracted(layout, &wanted, source) {
        Some(paths) => paths
            .into_iter()
            .map(|(name, path)| {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                Ok((name, (path, bytes)))
            })
            .collect::<Result<_>>()?,
        None => {
            let archive = source.locate(layout.spec)?.remove(0);
            read_archive(&archive, &wanted)?
        }
    };
    let split = |names: &[&str]| -> Result<Split> {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for name in names {
            let (path, bytes) = &files[*name];
            decode_records(bytes, layout.label_bytes, label_at, classes, path, &mut pixels, &mut labels)?;
        }
        let n = labels.len();
        Ok((Tensor::from_u8(&[n, 32, 32, 3], pixels)?, Tensor::from_u8(&[n], labels)?))
    };
    Ok((split(layout.train)?, split(&[layout.test])?))
}

/// Paths of all `names`, when every one is found extracted in one directory.
fn find_extracted(layout: &Layout, names: &[&str], source: &DataSource) -> Option<HashMap<String, PathBuf>> {
    let dirs = source.search_dirs(layout.spec.name);
    dirs.iter().flat_map(|d| [d.join(layout.folder), d.clone()]).find_map(|dir| {
        names.iter().map(|n| Some((n.to_string(), Some(dir.join(n)).filter(|p| p.is_file())?))).collect()
    })
}

/// The members `names` (matched by file name) of a `.tar.gz` archive.
fn read_archive(path: &Path, names: &[&str]) -> Result<HashMap<String, (PathBuf, Vec<u8>)>> {
    let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found = HashMap::new();
    let entries = archive.entries().map_err(|e| corrupt(format!("not a readable .tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("damaged archive ({e}); delete it and fetch it again")))?;
        let member = entry.path().map_err(|e| corrupt(e.to_string()))?.into_owned();
        let Some(name) = member.file_name().and_then(|n| n.to_str()).filter(|n| names.contains(n)).map(String::from)
        else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 28) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("damaged member {name} ({e}); delete the archive and fetch it again")))?;
        found.insert(name, (path.join(&member), bytes));
    }
    if let Some(missing) = names.iter().find(|n| !found.contains_key(**n)) {
        return Err(corrupt(format!("the archive has no {missing}; is it the binary version of the dataset?")));
    }
    Ok(found)
}

/// The images (n x 32 x 32 x 3, channels-last) and labels of one batch
/// file's bytes: records of `label_bytes` label bytes (the label at
/// `label_at`, below `classes`) and 3,072 pixel bytes. `path` names the file
/// in errors.
pub fn parse_batch(
    bytes: &[u8],
    label_bytes: usize,
    label_at: usize,
    classes: usize,
    path: &Path,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    decode_records(bytes, label_bytes, label_at, classes, path, &mut pixels, &mut labels)?;
    Ok((pixels, labels))
}

/// Appends the records of one batch file: pixels channels-last, and the label
/// at byte `label_at` of each record's `label_bytes`.
fn decode_records(
    bytes: &[u8],
    label_bytes: usize,
    label_at: usize,
    classes: usize,
    path: &Path,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<()> {
    let record = label_bytes + IMAGE_BYTES;
    let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(corrupt(format!(
            "{} bytes is not a whole number of {record}-byte records: truncated or not a CIFAR binary batch; delete it and supply it again",
            bytes.len()
        )));
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_at];
        if label as usize >= classes {
            return Err(corrupt(format!("record {i} has label {label}, outside the classes 0-{}", classes - 1)));
        }
        labels.push(label);
        let planes = &rec[label_bytes..];
        pixels.extend((0..32 * 32).flat_map(|p| [planes[p], planes[1024 + p], planes[2048 + p]]));
    }
    Ok(())
}
