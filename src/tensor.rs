//! A contiguous, row-major, channels-last (N,H,W,C) tensor.
//!
//! Image data read from disk stays `u8` (a quarter of the memory of f32) with a
//! 256-entry table of the values its bytes stand for: `images / 255.0` only
//! divides the table (in f64, as numpy does, so the values match Keras bit for
//! bit), and bytes become f32 per batch, when the model gathers rows.

use crate::device::ForEachTask;
use crate::error::{Error, Result};
use crate::kernels;
use rayon::prelude::*;
use std::ops::{Div, Mul};

/// An n-dimensional array of f32, or of bytes read through a value table.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    U8 { bytes: Vec<u8>, values: Box<[f64; 256]> },
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != len {
        return Err(Error::Shape(format!("shape {shape:?} holds {expected} values but {len} were given")));
    }
    Ok(())
}

impl Tensor {
    /// A tensor of f32 values in row-major order.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(Tensor { shape: shape.to_vec(), data: Data::F32(data) })
    }

    /// A tensor of bytes (images, labels); each byte reads as its value until scaled.
    pub fn from_u8(shape: &[usize], bytes: Vec<u8>) -> Result<Self> {
        check_len(shape, bytes.len())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Data::U8 { bytes, values: Box::new(std::array::from_fn(|b| b as f64)) },
        })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: Data::F32(vec![0.0; shape.iter().product()]) }
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::U8 { bytes, .. } => bytes.len(),
        }
    }

    /// True when the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the first dimension (samples).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Values per sample: the product of all dimensions but the first.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// True when the values are stored as bytes.
    pub fn is_u8(&self) -> bool {
        matches!(self.data, Data::U8 { .. })
    }

    /// The values as an f32 slice, when stored as f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::U8 { .. } => None,
        }
    }

    /// All values as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::U8 { bytes, values } => bytes.iter().map(|&b| values[b as usize] as f32).collect(),
        }
    }

    /// The value at flat index `i` as f32, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<f32> {
        match &self.data {
            Data::F32(v) => v.get(i).copied(),
            Data::U8 { bytes, values } => bytes.get(i).map(|&b| values[b as usize] as f32),
        }
    }

    /// Same values, new shape; one dimension may be -1 and is then inferred (as numpy).
    pub fn reshape(self, shape: &[isize]) -> Result<Self> {
        let len = self.len();
        let unknown: Vec<usize> = shape.iter().enumerate().filter(|(_, d)| **d == -1).map(|(i, _)| i).collect();
        if unknown.len() > 1 || shape.iter().any(|&d| d < -1) {
            return Err(Error::Shape(format!(
                "reshape to {shape:?}: only one dimension may be -1 and none may be below -1"
            )));
        }
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let mut dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(&i) = unknown.first() {
            if known == 0 || !len.is_multiple_of(known) {
                return Err(Error::Shape(format!(
                    "cannot reshape {} values of shape {:?} to {shape:?}",
                    len, self.shape
                )));
            }
            dims[i] = len / known;
        }
        check_len(&dims, len)
            .map_err(|_| Error::Shape(format!("cannot reshape {len} values of shape {:?} to {shape:?}", self.shape)))?;
        Ok(Tensor { shape: dims, data: self.data })
    }

    /// The rows `start..end` (first dimension) as a new tensor.
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<Self> {
        if start > end || end > self.rows() {
            return Err(Error::Shape(format!(
                "rows {start}..{end} out of range for a tensor with {} rows",
                self.rows()
            )));
        }
        let (a, b) = (start * self.row_len(), end * self.row_len());
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        let data = match &self.data {
            Data::F32(v) => Data::F32(v[a..b].to_vec()),
            Data::U8 { bytes, values } => Data::U8 { bytes: bytes[a..b].to_vec(), values: values.clone() },
        };
        Ok(Tensor { shape, data })
    }

    /// Copies the rows named by `indices`, converted to f32, one after another into `out`.
    /// This is the only place where byte images become floats, a batch at a time.
    pub(crate) fn gather_rows(&self, indices: &[usize], out: &mut [f32]) {
        let row = self.row_len();
        debug_assert_eq!(out.len(), indices.len() * row);
        if row == 0 {
            return;
        }
        match &self.data {
            Data::F32(v) => gather_from(v, row, indices, out, |src, dst| dst.copy_from_slice(src)),
            Data::U8 { bytes, values } => {
                let table = kernels::ByteTable::new(values.map(|v| v as f32));
                gather_from(bytes, row, indices, out, |src, dst| table.look_up(src, dst));
            }
        }
    }

    fn map_values(mut self, f: impl Fn(f64) -> f64) -> Self {
        match &mut self.data {
            Data::F32(v) => v.iter_mut().for_each(|x| *x = f(*x as f64) as f32),
            Data::U8 { values, .. } => values.iter_mut().for_each(|x| *x = f(*x)),
        }
        self
    }
}

/// `images / 255.0`: for byte tensors only the value table changes.
impl Div<f32> for Tensor {
    type Output = Tensor;
    fn div(self, rhs: f32) -> Tensor {
        self.map_values(|v| v / rhs as f64)
    }
}

/// `images * 2.0`: for byte tensors only the value table changes.
impl Mul<f32> for Tensor {
    type Output = Tensor;
    fn mul(self, rhs: f32) -> Tensor {
        self.map_values(|v| v * rhs as f64)
    }
}

/// What `fit`, `evaluate` and `predict` read samples from: a [`Tensor`] in
/// memory, or a stream that produces the requested rows on demand (an image
/// folder too large for memory, see `datasets::image_folder::FolderStream`).
pub trait Samples: Sync {
    /// (N, per-sample shape...).
    fn shape(&self) -> &[usize];

    /// Writes the rows named by `indices`, as f32, one after another into `out`.
    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()>;

    /// A hint: these rows will be gathered next (a stream may start reading them).
    fn prefetch(&self, _indices: &[usize]) {}

    /// All values, when they are f32 in memory (checked for NaN up front).
    fn values(&self) -> Option<&[f32]> {
        None
    }

    /// Number of samples.
    fn rows(&self) -> usize {
        self.shape().first().copied().unwrap_or(0)
    }
}

/// Rows of `row` values per task of [`gather_from`] (and of the prefetch
/// before it, so that each thread asks for the rows it will copy).
fn rows_per_gather_task(row: usize) -> usize {
    (16 * 1024 / row.max(1)).max(1)
}

/// Copies rows `indices` of `src` (rows of `row` values) one after another
/// into `out` through `copy`, in tasks of at least 16 K values on every
/// thread. Rows come from anywhere in memory: each task asks for the row it
/// copies 4 rows later while it copies one.
fn gather_from<T: Sync>(
    src: &[T],
    row: usize,
    indices: &[usize],
    out: &mut [f32],
    copy: impl Fn(&[T], &mut [f32]) + Sync,
) {
    const AHEAD: usize = 4;
    let rows_per_task = rows_per_gather_task(row);
    let row_of = |i: usize| &src[i * row..(i + 1) * row];
    out.par_chunks_mut(rows_per_task * row).zip(indices.par_chunks(rows_per_task)).for_each_task(|(out, indices)| {
        indices.iter().take(AHEAD).for_each(|&i| kernels::prefetch(row_of(i)));
        for (k, (dst, &i)) in out.chunks_exact_mut(row).zip(indices).enumerate() {
            if let Some(&next) = indices.get(k + AHEAD) {
                kernels::prefetch(row_of(next));
            }
            copy(row_of(i), dst);
        }
    });
}

impl Samples for Tensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        self.gather_rows(indices, out);
        Ok(())
    }

    /// Asks for the rows of the next batch while this one trains: its
    /// gather then reads them from cache, not from memory in shuffled order
    /// (the reference model's gather a fifth faster). Rows past the end are
    /// skipped. Over the threads, by the gather's tasks: each thread asks
    /// for the rows it will then copy (on one, the asking took the caller
    /// 24 µs a batch of the reference model, in series with the step).
    fn prefetch(&self, indices: &[usize]) {
        let row = self.row_len();
        indices.par_chunks(rows_per_gather_task(row)).for_each_task(|indices| {
            for &i in indices.iter().filter(|&&i| i < self.rows()) {
                match &self.data {
                    Data::F32(v) => kernels::prefetch(&v[i * row..(i + 1) * row]),
                    Data::U8 { bytes, .. } => kernels::prefetch(&bytes[i * row..(i + 1) * row]),
                }
            }
        });
    }

    fn values(&self) -> Option<&[f32]> {
        self.as_f32()
    }
}

/// The first `n` samples of another set, without copying them.
pub struct FirstRows<'a> {
    inner: &'a dyn Samples,
    shape: Vec<usize>,
}

impl<'a> FirstRows<'a> {
    /// The first `n` samples of `inner` (all of them when it has fewer).
    pub fn new(inner: &'a dyn Samples, n: usize) -> Self {
        let mut shape = inner.shape().to_vec();
        shape[0] = shape[0].min(n);
        FirstRows { inner, shape }
    }
}

impl Samples for FirstRows<'_> {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.shape[0]) {
            return Err(Error::InvalidArgument(format!("sample {i} is past the first {}", self.shape[0])));
        }
        self.inner.gather(indices, out)
    }

    fn prefetch(&self, indices: &[usize]) {
        self.inner.prefetch(indices)
    }

    fn values(&self) -> Option<&[f32]> {
        let len = self.shape.iter().product();
        self.inner.values().map(|v| &v[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_are_a_prefix() {
        let t = Tensor::from_vec(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let first = FirstRows::new(&t, 2);
        assert_eq!(first.shape(), &[2, 2]);
        assert_eq!(first.values(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        let mut out = [0.0; 2];
        first.gather(&[1], &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
        assert!(first.gather(&[2], &mut out).is_err());
        // A prefetch past the first rows (or past the tensor) is only skipped.
        first.prefetch(&[1, 2, 3, usize::MAX]);
        let bytes = Tensor::from_u8(&[3, 2], vec![1, 2, 3, 4, 5, 6]).unwrap();
        bytes.prefetch(&[2, 0, 3]);
        let mut rows = [0.0; 4];
        bytes.gather(&[2, 0], &mut rows).unwrap();
        assert_eq!(rows, [5.0, 6.0, 1.0, 2.0]);
    }

    #[test]
    fn u8_scaling_is_lazy_and_exact() {
        let t = Tensor::from_u8(&[2, 2], vec![0, 51, 102, 255]).unwrap() / 255.0;
        assert!(t.is_u8());
        assert_eq!(t.get(3), Some(1.0));
        let mut out = vec![0.0; 2];
        t.gather_rows(&[1], &mut out);
        assert_eq!(out, vec![102.0 / 255.0, 1.0]);
    }

    #[test]
    fn reshape_infers_minus_one_and_rejects_bad_sizes() {
        let t = Tensor::zeros(&[6, 4]);
        assert_eq!(t.clone().reshape(&[-1, 2, 2, 1]).unwrap().shape(), &[6, 2, 2, 1]);
        assert!(t.clone().reshape(&[-1, 5]).is_err());
        assert!(t.reshape(&[-1, -1]).is_err());
    }
}
