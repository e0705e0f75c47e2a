//! The math, as plain functions over slices: no shapes objects, no allocation,
//! no threads. The CPU device (`device::cpu`) splits the work and calls these;
//! each SIMD path has a plain scalar reference beside it, tested against it.

use multiversion::multiversion;

pub mod activation;
pub mod batch_norm;
pub mod conv_direct;
pub mod conv_pool_grad;
pub mod conv_wide;
pub mod depthwise;
pub mod im2col;
pub mod matmul;
pub mod narrow;
pub mod pool;
pub mod resample;

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
    /// Dilation: the window's taps are `dh` rows and `dw` columns apart (1 for pooling).
    pub dh: usize,
    pub dw: usize,
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
