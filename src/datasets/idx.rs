//! The IDX format of MNIST-style datasets: a 4-byte magic (0, 0, type,
//! number of dimensions), each dimension as a big-endian u32, then the data.

use super::{DataSource, DatasetSpec, read_maybe_gz};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::Path;

/// Images (N, H, W) as bytes and labels (N,) as bytes.
pub type Split = (Tensor, Tensor);

/// The (train, test) splits of an MNIST-style dataset whose four files are,
/// in order, train images, train labels, test images, test labels.
pub fn load_dataset(spec: &DatasetSpec, classes: usize, source: &DataSource) -> Result<(Split, Split)> {
    let paths = source.locate(spec)?;
    let train = read_split(&paths[0], &paths[1], classes)?;
    let test = read_split(&paths[2], &paths[3], classes)?;
    Ok((train, test))
}

/// One split from an images file and a labels file (raw or gzipped IDX),
/// checking that they agree and that labels are below `classes`.
pub fn read_split(images_path: &Path, labels_path: &Path, classes: usize) -> Result<Split> {
    let (dims, pixels) = parse(&read_maybe_gz(images_path)?, 3, images_path)?;
    let (ldims, labels) = parse(&read_maybe_gz(labels_path)?, 1, labels_path)?;
    if dims[0] != ldims[0] {
        return Err(Error::CorruptFile {
            path: labels_path.to_path_buf(),
            message: format!(
                "holds {} labels but {} holds {} images; the two files must come from the same split",
                ldims[0],
                images_path.display(),
                dims[0]
            ),
        });
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(Error::CorruptFile {
            path: labels_path.to_path_buf(),
            message: format!("label {i} is {}, outside the classes 0-{}", labels[i], classes - 1),
        });
    }
    Ok((Tensor::from_u8(&dims, pixels)?, Tensor::from_u8(&ldims, labels)?))
}

/// Type code of unsigned bytes, the only one these datasets use.
const UBYTE: u8 = 0x08;

/// Parses an IDX file of unsigned bytes with `expected_dims` dimensions
/// (3 for images, 1 for labels). Returns the dimensions and the data.
pub fn parse(bytes: &[u8], expected_dims: usize, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let corrupt = |message: String| Error::CorruptFile { path: path.to_path_buf(), message };
    let refetch = "; delete it and supply the file again";
    if bytes.len() < 4 {
        return Err(corrupt(format!("truncated: {} bytes is too short for an IDX header{refetch}", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(corrupt(format!(
            "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file{refetch}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != UBYTE {
        return Err(corrupt(format!(
            "IDX type code 0x{:02x} is not supported (expected 0x08, unsigned bytes)",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    if ndims != expected_dims {
        return Err(corrupt(format!(
            "has {ndims} dimension(s) but {expected_dims} were expected (magic 0x{:08x}; images are 0x00000803, labels 0x00000801)",
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        )));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(corrupt(format!("truncated inside the header ({} of {header} bytes){refetch}", bytes.len())));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let have = bytes.len() - header;
    match expected {
        Some(n) if n == have => Ok((dims, bytes[header..].to_vec())),
        Some(n) if n > have => Err(corrupt(format!(
            "truncated: dimensions {dims:?} need {n} bytes of data but only {have} are present{refetch}"
        ))),
        Some(n) => {
            Err(corrupt(format!("{} unexpected bytes after the {n} bytes of data for dimensions {dims:?}", have - n)))
        }
        None => Err(corrupt(format!("dimensions {dims:?} are impossibly large"))),
    }
}

/// Writes an IDX file of unsigned bytes (for tests and tools).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UBYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
