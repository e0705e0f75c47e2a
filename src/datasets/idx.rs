//! The IDX format of MNIST-style datasets: a 4-byte magic (0, 0, type,
//! number of dimensions), each dimension as a big-endian u32, then the data.

use super::{DataSource, DatasetSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::Path;

/// Images (N, H, W) as bytes and labels (N,) as bytes.
pub type Split = (Tensor, Tensor);

/// The (train, test) splits of an MNIST-style dataset whose four files are,
/// in order, train images, train labels, test images, test labels.
/// Every MNIST-style dataset keel knows has 28x28 images: a header that
/// declares another size is refused before its data is inflated.
pub fn load_dataset(spec: &DatasetSpec, classes: usize, source: &DataSource) -> Result<(Split, Split)> {
    let paths = source.locate(spec)?;
    let train = read_split_of(&paths[0], &paths[1], classes, Some([28, 28]))?;
    let test = read_split_of(&paths[2], &paths[3], classes, Some([28, 28]))?;
    Ok((train, test))
}

/// One split from an images file and a labels file (raw or gzipped IDX),
/// checking that they agree and that labels are below `classes`. Both
/// headers are read and checked against each other before any data is
/// inflated, and no more data is inflated than the header declares, so a
/// small file that inflates to gigabytes is refused, not held in memory.
pub fn read_split(images_path: &Path, labels_path: &Path, classes: usize) -> Result<Split> {
    read_split_of(images_path, labels_path, classes, None)
}

/// [`read_split`], refusing images of another (height, width) than `image_size` when given.
fn read_split_of(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
    image_size: Option<[usize; 2]>,
) -> Result<Split> {
    let (ldims, mut labels_in) = open(labels_path, 1)?;
    let (dims, mut images_in) = open(images_path, 3)?;
    if let Some(size) = image_size.filter(|s| dims[1..] != s[..]) {
        return Err(Error::CorruptFile {
            path: images_path.to_path_buf(),
            message: format!(
                "declares {}x{} images, but this dataset's are {}x{}; delete it and supply the file again",
                dims[1], dims[2], size[0], size[1]
            ),
        });
    }
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
    let labels = read_data(&mut labels_in, &ldims, labels_path)?;
    if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(Error::CorruptFile {
            path: labels_path.to_path_buf(),
            message: format!("label {i} is {}, outside the classes 0-{}", labels[i], classes - 1),
        });
    }
    let pixels = read_data(&mut images_in, &dims, images_path)?;
    Ok((Tensor::from_u8(&dims, pixels)?, Tensor::from_u8(&ldims, labels)?))
}

/// Most data bytes one IDX file may declare (16 GiB): far beyond any
/// MNIST-style dataset, and refused before anything is allocated.
const MAX_DATA: usize = 1 << 34;

/// Opens a raw or gzipped IDX file and reads its header: the dimensions and
/// the stream positioned at the data.
fn open(path: &Path, expected_dims: usize) -> Result<(Vec<usize>, Box<dyn std::io::Read>)> {
    use std::io::Read;
    let corrupt = |message: String| Error::CorruptFile { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let gzipped = std::io::BufRead::fill_buf(&mut reader).map_err(|e| Error::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let mut stream: Box<dyn Read> =
        if gzipped { Box::new(flate2::read::MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    // The magic, then as many dimensions as it announces (at most 255).
    let mut header = vec![0u8; 4];
    let got = read_up_to(&mut stream, &mut header, path)?;
    if got == 4 {
        header.resize(4 + 4 * header[3] as usize, 0);
        let more = read_up_to(&mut stream, &mut header[4..], path)?;
        header.truncate(4 + more);
    } else {
        header.truncate(got);
    }
    // The header alone, checked as `parse` checks it (data length aside).
    let (dims, declared) = check_header(&header, expected_dims, path)?;
    if declared > MAX_DATA {
        return Err(corrupt(format!("declares {declared} bytes of data (dimensions {dims:?}), more than keel reads")));
    }
    Ok((dims, stream))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(stream: &mut dyn std::io::Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::CorruptFile {
                    path: path.to_path_buf(),
                    message: format!("not a valid IDX or gzip file ({e}); delete it and supply the file again"),
                });
            }
        }
    }
    Ok(n)
}

/// The data after a header of dimensions `dims`: exactly their product of
/// bytes, then the end of the stream (one byte more is read to check).
fn read_data(stream: &mut dyn std::io::Read, dims: &[usize], path: &Path) -> Result<Vec<u8>> {
    let n: usize = dims.iter().product();
    let mut data = vec![0u8; n];
    let got = read_up_to(stream, &mut data, path)?;
    let corrupt = |message: String| Error::CorruptFile { path: path.to_path_buf(), message };
    if got < n {
        return Err(corrupt(format!(
            "truncated: dimensions {dims:?} need {n} bytes of data but only {got} are present; delete it and supply the file again"
        )));
    }
    if read_up_to(stream, &mut [0u8; 1], path)? > 0 {
        return Err(corrupt(format!("unexpected bytes after the {n} bytes of data for dimensions {dims:?}")));
    }
    Ok(data)
}

/// Type code of unsigned bytes, the only one these datasets use.
const UBYTE: u8 = 0x08;

/// Parses an IDX file of unsigned bytes with `expected_dims` dimensions
/// (3 for images, 1 for labels). Returns the dimensions and the data.
pub fn parse(bytes: &[u8], expected_dims: usize, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let corrupt = |message: String| Error::CorruptFile { path: path.to_path_buf(), message };
    let (dims, n) = check_header(bytes, expected_dims, path)?;
    let have = bytes.len() - (4 + 4 * expected_dims);
    match n.cmp(&have) {
        std::cmp::Ordering::Equal => Ok((dims, bytes[bytes.len() - have..].to_vec())),
        std::cmp::Ordering::Greater => Err(corrupt(format!(
            "truncated: dimensions {dims:?} need {n} bytes of data but only {have} are present; delete it and supply the file again"
        ))),
        std::cmp::Ordering::Less => {
            Err(corrupt(format!("{} unexpected bytes after the {n} bytes of data for dimensions {dims:?}", have - n)))
        }
    }
}

/// Checks the header at the start of `bytes` (at least as long as it);
/// returns the dimensions and the number of data bytes they declare.
fn check_header(bytes: &[u8], expected_dims: usize, path: &Path) -> Result<(Vec<usize>, usize)> {
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
    match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) => Ok((dims, n)),
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
