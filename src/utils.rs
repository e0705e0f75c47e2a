//! Small helpers Keras users know from `keras.utils`.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One-hot encodes integer class labels: (N,) -> (N, num_classes), as
/// `keras.utils.to_categorical`. With `None` the number of classes is the
/// largest label + 1.
///
/// ```
/// use keel::prelude::*;
/// let labels = Tensor::from_u8(&[3], vec![0, 2, 1]).unwrap();
/// let one_hot = to_categorical(&labels, None).unwrap();
/// assert_eq!(one_hot.shape(), &[3, 3]);
/// assert_eq!(one_hot.as_f32().unwrap()[..3], [1.0, 0.0, 0.0]);
/// ```
pub fn to_categorical(labels: &Tensor, num_classes: Option<usize>) -> Result<Tensor> {
    let values = labels.to_f32_vec();
    let mut classes = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if !(v >= 0.0 && v.fract() == 0.0 && v < u32::MAX as f32) {
            return Err(Error::InvalidArgument(format!(
                "to_categorical: label {i} is {v}, but labels must be non-negative integers"
            )));
        }
        classes.push(v as usize);
    }
    let needed = classes.iter().max().map_or(0, |m| m + 1);
    let n_classes = num_classes.unwrap_or(needed);
    if needed > n_classes {
        return Err(Error::InvalidArgument(format!(
            "to_categorical: a label is {}, which needs num_classes > {n_classes}",
            needed - 1
        )));
    }
    let mut out = vec![0.0; classes.len() * n_classes];
    for (row, &c) in out.chunks_exact_mut(n_classes.max(1)).zip(&classes) {
        row[c] = 1.0;
    }
    let mut shape: Vec<usize> = labels.shape().to_vec();
    if shape.last() == Some(&1) && shape.len() > 1 {
        shape.pop();
    }
    shape.push(n_classes);
    Tensor::from_vec(&shape, out)
}

/// Index of the largest value of each row of a (N, C) tensor: predicted classes.
pub fn argmax(probabilities: &Tensor) -> Vec<usize> {
    let width = probabilities.shape().last().copied().unwrap_or(1).max(1);
    probabilities.to_f32_vec().chunks_exact(width).map(argmax_row).collect()
}

/// Each sample's class from its targets: one-hot rows, a class index, or (for
/// one binary output) 0/1.
pub fn class_indices(y: &Tensor) -> Vec<usize> {
    if y.row_len() == 1 { y.to_f32_vec().iter().map(|&v| v.max(0.0).round() as usize).collect() } else { argmax(y) }
}

/// Index of the largest value (the first one on ties).
pub fn argmax_row(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Bytes of memory the system can still give this process: MemAvailable on
/// Linux; elsewhere unknown (None).
pub fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Bytes as people read them: "53.4 GB".
pub fn gigabytes(bytes: usize) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// Refuses to allocate `bytes` for `what()` when that is more than three
/// quarters of the memory available (the rest is for what the estimate
/// leaves out: layers' own buffers, the data, the optimizer), with the
/// figures and `fix`; nothing is allocated.
pub fn check_memory(bytes: usize, what: impl FnOnce() -> String, fix: &str) -> crate::error::Result<()> {
    match available_memory().map(|a| a / 4 * 3) {
        Some(available) if bytes > available => Err(crate::error::Error::InvalidArgument(format!(
            "{} need {} of memory, more than the {} keel may take of what is available; {fix}",
            what(),
            gigabytes(bytes),
            gigabytes(available)
        ))),
        _ => Ok(()),
    }
}

/// 54410 -> "54,410"
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
