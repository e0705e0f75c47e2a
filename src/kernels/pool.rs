//! Pooling: 2-D max pooling that records the winning input index of every
//! output (so backward is a scatter), average pooling, and global pooling.

use multiversion::multiversion;

use super::activation::derivative_from_output;
use super::{Window, add_assign, add_rows};
use crate::activations::Activation;

/// x: (H,W,C) -> y: (OH,OW,C); `argmax[i]` is the flat index in x of `y[i]`,
/// the first maximum in window order as TensorFlow picks it. Window positions
/// in the padding are skipped (they never win).
pub fn max_pool_forward(g: &Window, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if g.c.is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx2") {
        let (n_in, n_out) = (g.h * g.w * g.c, g.positions() * g.c);
        assert!(x.len() >= n_in && y.len() >= n_out && argmax.len() >= n_out);
        // SAFETY: the CPU has AVX2 (checked above) and the slices are large enough.
        unsafe { avx2::max_pool_forward(g, x, y, argmax) };
        return;
    }
    max_pool_forward_scalar(g, x, y, argmax);
}

/// Portable reference version of [`max_pool_forward`].
pub fn max_pool_forward_scalar(g: &Window, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let c = g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let o = (oy * g.ow + ox) * c;
            let (yo, ao) = (&mut y[o..o + c], &mut argmax[o..o + c]);
            yo.fill(f32::NEG_INFINITY);
            ao.fill(0);
            for (iy, ix) in window_positions(g, oy, ox) {
                let i = (iy * g.w + ix) * c;
                for ch in 0..c {
                    if x[i + ch] > yo[ch] {
                        yo[ch] = x[i + ch];
                        ao[ch] = (i + ch) as u32;
                    }
                }
            }
        }
    }
}

/// x: (H,W,C) -> y: (rows.len(),OW,C), output rows `rows` of [`max_pool_forward`]'s
/// maxima without their indices (inference, where nothing is differentiated),
/// the window's rows and columns found once per output and its channels
/// compared in vectors.
#[multiversion(targets = "simd")]
pub fn max_pool_values(g: &Window, x: &[f32], rows: std::ops::Range<usize>, y: &mut [f32]) {
    let c = g.c;
    for oy in rows.clone() {
        for ox in 0..g.ow {
            let yo = &mut y[((oy - rows.start) * g.ow + ox) * c..][..c];
            yo.fill(f32::NEG_INFINITY);
            for (iy, ix) in window_positions(g, oy, ox) {
                for (m, &v) in yo.iter_mut().zip(&x[(iy * g.w + ix) * c..][..c]) {
                    // Strictly greater, as the indexed kernels: a NaN never wins.
                    *m = if v > *m { v } else { *m };
                }
            }
        }
    }
}

/// The input positions (row, column) of output (oy, ox)'s window, in order,
/// leaving out those in the padding.
fn window_positions(g: &Window, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
    let iy0 = (oy * g.sh) as isize - g.pt as isize;
    let ix0 = (ox * g.sw) as isize - g.pl as isize;
    let rows = iy0.max(0) as usize..(iy0 + g.kh as isize).clamp(0, g.h as isize) as usize;
    let cols = ix0.max(0) as usize..(ix0 + g.kw as isize).clamp(0, g.w as isize) as usize;
    rows.flat_map(move |iy| cols.clone().map(move |ix| (iy, ix)))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Window, window_positions};
    use std::arch::x86_64::*;

    /// [`super::max_pool_forward`] eight channels at a time, the running maximum
    /// and its index in registers. Needs C a multiple of 8 and AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_pool_forward(g: &Window, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
        let c = g.c;
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let o = (oy * g.ow + ox) * c;
                for ch in (0..c).step_by(8) {
                    let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
                    let mut idx = _mm256_setzero_si256();
                    for (iy, ix) in window_positions(g, oy, ox) {
                        let i = (iy * g.w + ix) * c + ch;
                        // SAFETY: i + 8 <= H*W*C, asserted by the caller.
                        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
                        // Strictly greater keeps the first maximum.
                        let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
                        best = _mm256_blendv_ps(best, v, gt);
                        let here = _mm256_add_epi32(_mm256_set1_epi32(i as i32), lanes);
                        idx = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(idx),
                            _mm256_castsi256_ps(here),
                            gt,
                        ));
                    }
                    // SAFETY: o + ch + 8 <= OH*OW*C, asserted by the caller.
                    unsafe {
                        _mm256_storeu_ps(y.as_mut_ptr().add(o + ch), best);
                        _mm256_storeu_si256(argmax.as_mut_ptr().add(o + ch) as *mut __m256i, idx);
                    }
                }
            }
        }
    }
}

/// dy: (OH,OW,C) -> dx: (H,W,C). Differentiates `y[i] = x[argmax[i]]`: `dx[argmax[i]] += dy[i]`.
#[multiversion(targets = "simd")]
pub fn max_pool_backward(dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (&d, &a) in dy.iter().zip(argmax) {
        dx[a as usize] += d;
    }
}

/// The same scatter through an elementwise activation, for a pooling fused
/// into the layer before it: `dz[argmax[i]] += dy[i] * act'(y[i])`, from zero.
#[multiversion(targets = "simd")]
pub fn max_pool_backward_through(act: Activation, dy: &[f32], y: &[f32], argmax: &[u32], dz: &mut [f32]) {
    dz.fill(0.0);
    // One loop per activation, so the derivative is inlined, not matched per value.
    macro_rules! scatter {
        ($derivative:expr) => {
            for ((&d, &yv), &a) in dy.iter().zip(y).zip(argmax) {
                dz[a as usize] += d * $derivative(yv);
            }
        };
    }
    match act {
        Activation::Relu => scatter!(|y: f32| if y > 0.0 { 1.0 } else { 0.0 }),
        Activation::Linear => scatter!(|_: f32| 1.0),
        _ => scatter!(|y: f32| derivative_from_output(act, y)),
    }
}

/// Rows `[start, end)` of the input a window starting at `pos * stride - pad` covers, clipped to the image.
fn covered(pos: usize, stride: usize, pad: usize, k: usize, size: usize) -> (usize, usize) {
    let start = (pos * stride) as isize - pad as isize;
    (start.max(0) as usize, ((start + k as isize).max(0) as usize).min(size))
}

/// x: (H,W,C) -> y: (OH,OW,C): the mean of each window's inputs inside the
/// image (padding is not counted, as TensorFlow's average pooling).
#[multiversion(targets = "simd")]
pub fn avg_pool_forward(g: &Window, x: &[f32], y: &mut [f32]) {
    let c = g.c;
    for oy in 0..g.oh {
        let (y0, y1) = covered(oy, g.sh, g.pt, g.kh, g.h);
        for ox in 0..g.ow {
            let (x0, x1) = covered(ox, g.sw, g.pl, g.kw, g.w);
            let out = &mut y[(oy * g.ow + ox) * c..][..c];
            out.fill(0.0);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    add_assign(out, &x[(iy * g.w + ix) * c..][..c]);
                }
            }
            let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
            out.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// dy: (OH,OW,C) -> dx: (H,W,C), written: each input receives dy / count of every window covering it.
#[multiversion(targets = "simd")]
pub fn avg_pool_backward(g: &Window, dy: &[f32], dx: &mut [f32]) {
    let c = g.c;
    dx.fill(0.0);
    for oy in 0..g.oh {
        let (y0, y1) = covered(oy, g.sh, g.pt, g.kh, g.h);
        for ox in 0..g.ow {
            let (x0, x1) = covered(ox, g.sw, g.pl, g.kw, g.w);
            let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
            let d = &dy[(oy * g.ow + ox) * c..][..c];
            for iy in y0..y1 {
                for ix in x0..x1 {
                    for (dx, d) in dx[(iy * g.w + ix) * c..][..c].iter_mut().zip(d) {
                        *dx += d * inv;
                    }
                }
            }
        }
    }
}

/// x: (P,C) -> y: (C): the mean over the P positions.
#[multiversion(targets = "simd")]
pub fn global_avg_forward(x: &[f32], y: &mut [f32]) {
    let c = y.len();
    y.fill(0.0);
    add_rows(x, c, y);
    let inv = 1.0 / (x.len() / c).max(1) as f32;
    y.iter_mut().for_each(|v| *v *= inv);
}

/// dy: (C) -> dx: (P,C), written: dy / P everywhere.
#[multiversion(targets = "simd")]
pub fn global_avg_backward(dy: &[f32], dx: &mut [f32]) {
    let inv = 1.0 / (dx.len() / dy.len()).max(1) as f32;
    for row in dx.chunks_exact_mut(dy.len()) {
        for (d, g) in row.iter_mut().zip(dy) {
            *d = g * inv;
        }
    }
}

/// x: (P,C) -> y: (C): the maximum over the P positions, and the flat index of each winner.
pub fn global_max_forward(x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let c = y.len();
    y.copy_from_slice(&x[..c]);
    argmax.iter_mut().enumerate().for_each(|(i, a)| *a = i as u32);
    for (p, row) in x.chunks_exact(c).enumerate().skip(1) {
        for (ch, &v) in row.iter().enumerate() {
            if v > y[ch] {
                y[ch] = v;
                argmax[ch] = (p * c + ch) as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_scalar_and_unindexed_pooling_agree_on_values_ties_and_padding() {
        for (h, w, c, k, s, pt, pl, oh, ow) in
            [(6, 6, 16, 2, 2, 0, 0, 3, 3), (5, 7, 8, 3, 2, 1, 1, 3, 4), (4, 4, 8, 2, 1, 0, 0, 3, 3)]
        {
            let g = Window { h, w, c, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt, pl, oh, ow };
            // Values repeat, so ties happen; the first maximum must win in both.
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
            let (mut y1, mut y2) = (vec![0.0; oh * ow * c], vec![0.0; oh * ow * c]);
            let (mut a1, mut a2) = (vec![0; oh * ow * c], vec![0; oh * ow * c]);
            max_pool_forward(&g, &x, &mut y1, &mut a1);
            max_pool_forward_scalar(&g, &x, &mut y2, &mut a2);
            assert_eq!(y1, y2);
            assert_eq!(a1, a2);
            let mut y3 = vec![f32::NAN; oh * ow * c];
            max_pool_values(&g, &x, 0..oh, &mut y3);
            assert_eq!(y3, y1, "the maxima without their indices");
            // Row by row, each into its own place.
            let mut y4 = vec![f32::NAN; oh * ow * c];
            for (oy, row) in y4.chunks_exact_mut(ow * c).enumerate() {
                max_pool_values(&g, &x, oy..oy + 1, row);
            }
            assert_eq!(y4, y1, "the maxima row by row");
        }
    }
}
