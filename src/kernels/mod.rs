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
pub mod packed;
pub mod pool;
pub mod resample;
pub mod winograd;

/// `acc += part` elementwise: the ordered reduction of per-task partial sums.
#[inline]
pub fn add_assign(acc: &mut [f32], part: &[f32]) {
    for (a, p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}

/// Rows and columns of the source per block of [`transpose`]: a block's
/// reads and writes stay in L1 while it is turned.
const TRANSPOSE_BLOCK: usize = 16;

/// a: (rows, cols) -> t: (cols, rows), in blocks of rows and columns.
pub fn transpose(a: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    assert!(a.len() >= rows * cols && t.len() >= rows * cols);
    for r0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
        let r1 = (r0 + TRANSPOSE_BLOCK).min(rows);
        for c0 in (0..cols).step_by(TRANSPOSE_BLOCK) {
            for c in c0..(c0 + TRANSPOSE_BLOCK).min(cols) {
                for (o, r) in t[c * rows..][r0..r1].iter_mut().zip(r0..r1) {
                    *o = a[r * cols + c];
                }
            }
        }
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
/// Where the columns come in 16s, 16 columns at a time with their sums in a
/// register rather than reloaded for every row (the same sums, bit for bit).
pub fn add_rows(m: &[f32], cols: usize, out: &mut [f32]) {
    if cols.is_multiple_of(16) && out.len() >= cols {
        add_rows_blocked(m, cols, out)
    } else {
        add_rows_reference(m, cols, out)
    }
}

#[multiversion(targets = "simd")]
fn add_rows_blocked(m: &[f32], cols: usize, out: &mut [f32]) {
    let rows = m.len() / cols;
    for c0 in (0..cols).step_by(16) {
        let mut sums: [f32; 16] = out[c0..c0 + 16].try_into().unwrap();
        for r in 0..rows {
            let row: &[f32; 16] = m[r * cols + c0..][..16].try_into().unwrap();
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
        out[c0..c0 + 16].copy_from_slice(&sums);
    }
}

/// [`add_rows`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn add_rows_reference(m: &[f32], cols: usize, out: &mut [f32]) {
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

    /// A 1x1 window over `rows` positions of `c` values: the matrix product of
    /// a (rows, C) matrix with a (C, F) kernel, as a convolution.
    pub fn rows(rows: usize, c: usize) -> Window {
        Window { h: rows, w: 1, c, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, oh: rows, ow: 1 }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocked_row_sums_match_the_reference_bit_for_bit() {
        for cols in [16, 48] {
            let m: Vec<f32> = (0..41 * cols).map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0).collect();
            let start: Vec<f32> = (0..cols).map(|i| i as f32 * 0.37).collect();
            let (mut fast, mut plain) = (start.clone(), start);
            super::add_rows_blocked(&m, cols, &mut fast);
            super::add_rows_reference(&m, cols, &mut plain);
            assert_eq!(fast, plain, "{cols} columns");
        }
    }

    #[test]
    fn transposing_matches_the_definition() {
        // Sizes that are not multiples of the block.
        for (rows, cols) in [(37, 45), (1, 17), (16, 1), (32, 48)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut t = vec![f32::NAN; rows * cols];
            super::transpose(&a, rows, cols, &mut t);
            for c in 0..cols {
                for r in 0..rows {
                    assert_eq!(t[c * rows + r], a[r * cols + c], "column {c}, row {r} of {rows}x{cols}");
                }
            }
        }
    }
}
