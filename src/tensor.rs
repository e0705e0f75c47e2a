//! A contiguous, row-major, channels-last (N,H,W,C) tensor.
//!
//! Image data read from disk stays `u8` (a quarter of the memory of f32) with a
//! pending scale factor: `images / 255.0` only records the factor, and the
//! conversion to f32 happens per batch when the model gathers rows.

use crate::error::{Error, Result};
use std::ops::{Div, Mul};

/// An n-dimensional array of f32, or of u8 with a scale applied on read.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    U8 { bytes: Vec<u8>, scale: f32 },
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != len {
        return Err(Error::Shape(format!(
            "shape {shape:?} holds {expected} values but {len} were given"
        )));
    }
    Ok(())
}

impl Tensor {
    /// A tensor of f32 values in row-major order.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(Tensor { shape: shape.to_vec(), data: Data::F32(data) })
    }

    /// A tensor of bytes (images, labels); read as `byte as f32 * 1.0` until scaled.
    pub fn from_u8(shape: &[usize], bytes: Vec<u8>) -> Result<Self> {
        check_len(shape, bytes.len())?;
        Ok(Tensor { shape: shape.to_vec(), data: Data::U8 { bytes, scale: 1.0 } })
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

    /// True when the values are stored as bytes with a pending scale.
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

    /// All values converted to f32 (scale applied).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::U8 { bytes, scale } => bytes.iter().map(|&b| b as f32 * scale).collect(),
        }
    }

    /// The value at flat index `i` as f32, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<f32> {
        match &self.data {
            Data::F32(v) => v.get(i).copied(),
            Data::U8 { bytes, scale } => bytes.get(i).map(|&b| b as f32 * scale),
        }
    }

    /// Same values, new shape; one dimension may be -1 and is then inferred (as numpy).
    pub fn reshape(self, shape: &[isize]) -> Result<Self> {
        let len = self.len();
        let unknown: Vec<usize> =
            shape.iter().enumerate().filter(|(_, d)| **d == -1).map(|(i, _)| i).collect();
        if unknown.len() > 1 || shape.iter().any(|&d| d < -1) {
            return Err(Error::Shape(format!(
                "reshape to {shape:?}: only one dimension may be -1 and none may be below -1"
            )));
        }
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let mut dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(&i) = unknown.first() {
            if known == 0 || len % known != 0 {
                return Err(Error::Shape(format!(
                    "cannot reshape {} values of shape {:?} to {shape:?}",
                    len, self.shape
                )));
            }
            dims[i] = len / known;
        }
        check_len(&dims, len).map_err(|_| {
            Error::Shape(format!("cannot reshape {len} values of shape {:?} to {shape:?}", self.shape))
        })?;
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
            Data::U8 { bytes, scale } => Data::U8 { bytes: bytes[a..b].to_vec(), scale: *scale },
        };
        Ok(Tensor { shape, data })
    }

    /// Copies the rows named by `indices`, converted to f32, one after another into `out`.
    /// This is the only place where byte images become floats, a batch at a time.
    pub(crate) fn gather_rows(&self, indices: &[usize], out: &mut [f32]) {
        let row = self.row_len();
        debug_assert_eq!(out.len(), indices.len() * row);
        for (dst, &i) in out.chunks_exact_mut(row).zip(indices) {
            match &self.data {
                Data::F32(v) => dst.copy_from_slice(&v[i * row..(i + 1) * row]),
                Data::U8 { bytes, scale } => {
                    for (d, &b) in dst.iter_mut().zip(&bytes[i * row..(i + 1) * row]) {
                        *d = b as f32 * scale;
                    }
                }
            }
        }
    }

    fn scaled(mut self, factor: f32) -> Self {
        match &mut self.data {
            Data::F32(v) => v.iter_mut().for_each(|x| *x *= factor),
            Data::U8 { scale, .. } => *scale *= factor,
        }
        self
    }
}

/// `images / 255.0`: for byte tensors only the scale is recorded.
impl Div<f32> for Tensor {
    type Output = Tensor;
    fn div(self, rhs: f32) -> Tensor {
        self.scaled(1.0 / rhs)
    }
}

/// `images * (1.0 / 255.0)`: for byte tensors only the scale is recorded.
impl Mul<f32> for Tensor {
    type Output = Tensor;
    fn mul(self, rhs: f32) -> Tensor {
        self.scaled(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
