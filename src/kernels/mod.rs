//! The math, as plain functions over slices: no shapes objects, no allocation.
//! Layers call these; another backend (GPU) can provide the same functions.
//!
//! Work is split over the batch in fixed tasks of [`SAMPLES_PER_TASK`] samples,
//! never by thread count, and partial sums (weight gradients) are added in task
//! order, so results are bit-identical whatever the number of threads.

use multiversion::multiversion;

pub mod activation;
pub mod batch_norm;
pub mod conv_direct;
pub mod conv_pool_grad;
pub mod depthwise;
pub mod im2col;
pub mod matmul;
pub mod narrow;
pub mod pool;
pub mod resample;

/// Samples per parallel task.
pub const SAMPLES_PER_TASK: usize = 16;

/// Number of tasks a batch of `n` samples is split into.
pub fn task_count(n: usize) -> usize {
    n.div_ceil(SAMPLES_PER_TASK)
}

/// `acc += part` elementwise: the ordered reduction of per-task partial sums.
#[inline]
pub fn add_assign(acc: &mut [f32], part: &[f32]) {
    for (a, p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}

/// Copies each row of `src` (rows of `cols` values) to the start of a row of
/// `width` values in `out`, zeros after it: the padded layouts SIMD kernels read
/// in whole vectors. Stops at whichever runs out first.
pub fn pad_rows(src: &[f32], cols: usize, width: usize, out: &mut [f32]) {
    for (s, d) in src.chunks_exact(cols).zip(out.chunks_exact_mut(width)) {
        d[..cols].copy_from_slice(s);
        d[cols..].fill(0.0);
    }
}

/// Sums the rows of `m` (rows x cols, row-major) into `out` (cols).
pub fn sum_rows(m: &[f32], cols: usize, out: &mut [f32]) {
    out.fill(0.0);
    add_rows(m, cols, out);
}

/// Adds the rows of `m` (rows x cols, row-major) to `out` (cols), in order.
#[multiversion(targets = "simd")]
pub fn add_rows(m: &[f32], cols: usize, out: &mut [f32]) {
    for row in m.chunks_exact(cols) {
        add_assign(out, row);
    }
}

/// Geometry of a 2-D sliding window (convolution or pooling) over one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Input height, width, channels.
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Window height and width.
    pub kh: usize,
    pub kw: usize,
    /// Strides.
    pub sh: usize,
    pub sw: usize,
    /// Padding before the first row and column.
    pub pt: usize,
    pub pl: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Values in one unfolded patch: KH*KW*C.
    pub fn patch_len(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// Output positions per sample: OH*OW.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` values. It grows to the
/// largest size asked for and is then reused: no allocation in steady state,
/// and memory bounded by the number of threads, not by the batch size.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}
