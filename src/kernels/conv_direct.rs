//! Direct convolution for small patches (few input channels, e.g. the first
//! layer on grey or RGB images): with K = KH*KW*C as small as 9, unfolding
//! patches and calling a matrix product costs more than the arithmetic, so
//! these loops keep a block of output channels in registers instead.

use super::Window;
use multiversion::multiversion;

/// Output channels per register block: 4 AVX2 or 2 AVX-512 vectors.
const BLOCK: usize = 32;

/// Valid output rows (or columns) `lo..hi` for kernel offset `k`: those whose
/// input index `o * s + k - pad` lies in `0..len`.
fn valid_range(out: usize, s: usize, k: usize, pad: usize, len: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(k).div_ceil(s);
    let hi = if len + pad > k { ((len + pad - k - 1) / s + 1).min(out) } else { 0 };
    (lo.min(hi), hi)
}

/// Output channels rounded up to whole register blocks: the layout of the
/// weights [`conv_forward`] takes.
pub fn padded_filters(f: usize) -> usize {
    f.div_ceil(BLOCK) * BLOCK
}

/// w: (K, F) -> wp: (K, padded_filters(F)), zeros in the padding.
pub fn pad_filters(w: &[f32], f: usize, wp: &mut [f32]) {
    let fp = padded_filters(f);
    for (src, dst) in w.chunks_exact(f).zip(wp.chunks_exact_mut(fp)) {
        dst[..f].copy_from_slice(src);
        dst[f..].fill(0.0);
    }
}

// x: (H,W,C), wp: (KH,KW,C,F padded) -> y: (OH,OW,F);  y[p, f] = sum_t x[p + t] * w[t, f]
pub fn conv_forward(g: &Window, x: &[f32], wp: &[f32], f: usize, y: &mut [f32]) {
    assert!(
        x.len() >= g.h * g.w * g.c && wp.len() >= g.patch_len() * padded_filters(f) && y.len() >= g.positions() * f
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { avx2::conv_forward(g, x, wp, f, y) };
        return;
    }
    conv_forward_scalar(g, x, wp, f, y);
}

/// Portable reference version of [`conv_forward`].
pub fn conv_forward_scalar(g: &Window, x: &[f32], wp: &[f32], f: usize, y: &mut [f32]) {
    let fp = padded_filters(f);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let out = &mut y[(oy * g.ow + ox) * f..][..f];
            out.fill(0.0);
            for (t, v) in taps(g, x, oy, ox) {
                for (o, &wv) in out.iter_mut().zip(&wp[t * fp..]) {
                    *o += v * wv;
                }
            }
        }
    }
}

/// The taps (index t into the KH*KW*C patch, input value) of output pixel
/// (oy, ox) that fall inside the input; padding contributes nothing.
fn taps<'a>(g: &'a Window, x: &'a [f32], oy: usize, ox: usize) -> impl Iterator<Item = (usize, f32)> + 'a {
    let iy0 = (oy * g.sh) as isize - g.pt as isize;
    let ix0 = (ox * g.sw) as isize - g.pl as isize;
    (0..g.kh)
        .flat_map(move |ky| (0..g.kw).map(move |kx| (ky, kx)))
        .filter_map(move |(ky, kx)| {
            let (iy, ix) = (iy0 + ky as isize, ix0 + kx as isize);
            let inside = iy >= 0 && iy < g.h as isize && ix >= 0 && ix < g.w as isize;
            inside.then(|| {
                let base = (iy as usize * g.w + ix as usize) * g.c;
                let tap = (ky * g.kw + kx) * g.c;
                (0..g.c).map(move |ci| (tap + ci, x[base + ci]))
            })
        })
        .flatten()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, Window, padded_filters};
    use std::arch::x86_64::*;

    /// [`super::conv_forward`] with the 32 output channels of a block in four
    /// AVX registers. Callers check the CPU has AVX2 and FMA and the slice sizes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_forward(g: &Window, x: &[f32], wp: &[f32], f: usize, y: &mut [f32]) {
        let (c, fp) = (g.c, padded_filters(f));
        let mut block = [0.0f32; BLOCK];
        for oy in 0..g.oh {
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            let (ky_lo, ky_hi) = ((-iy0).max(0) as usize, (g.h as isize - iy0).clamp(0, g.kh as isize) as usize);
            for ox in 0..g.ow {
                let ix0 = (ox * g.sw) as isize - g.pl as isize;
                let (kx_lo, kx_hi) = ((-ix0).max(0) as usize, (g.w as isize - ix0).clamp(0, g.kw as isize) as usize);
                for fb in (0..f).step_by(BLOCK) {
                    let (mut a0, mut a1, mut a2, mut a3) =
                        (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
                    for ky in ky_lo..ky_hi {
                        let row = (iy0 + ky as isize) as usize * g.w;
                        for kx in kx_lo..kx_hi {
                            let xs = &x[(row + (ix0 + kx as isize) as usize) * c..][..c];
                            let tap = (ky * g.kw + kx) * c;
                            for (ci, &v) in xs.iter().enumerate() {
                                let w = wp[(tap + ci) * fp + fb..][..BLOCK].as_ptr();
                                let v = _mm256_set1_ps(v);
                                // SAFETY: `w` points at BLOCK = 32 values (sliced above).
                                unsafe {
                                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w), a0);
                                    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w.add(8)), a1);
                                    a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w.add(16)), a2);
                                    a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(w.add(24)), a3);
                                }
                            }
                        }
                    }
                    let out = block.as_mut_ptr();
                    // SAFETY: `block` holds BLOCK = 32 values.
                    unsafe {
                        _mm256_storeu_ps(out, a0);
                        _mm256_storeu_ps(out.add(8), a1);
                        _mm256_storeu_ps(out.add(16), a2);
                        _mm256_storeu_ps(out.add(24), a3);
                    }
                    let nb = (f - fb).min(BLOCK);
                    y[(oy * g.ow + ox) * f + fb..][..nb].copy_from_slice(&block[..nb]);
                }
            }
        }
    }
}

// Differentiates y[p, f] = sum_t x[p + t] * w[t, f]:  dw[t, f] += sum_p x[p + t] * dz[p, f]
#[multiversion(targets = "simd")]
pub fn conv_weight_grad(g: &Window, x: &[f32], dz: &[f32], f: usize, dw: &mut [f32]) {
    let c = g.c;
    for ky in 0..g.kh {
        let (oy_lo, oy_hi) = valid_range(g.oh, g.sh, ky, g.pt, g.h);
        for kx in 0..g.kw {
            let (ox_lo, ox_hi) = valid_range(g.ow, g.sw, kx, g.pl, g.w);
            for ci in 0..c {
                let t = (ky * g.kw + kx) * c + ci;
                for fb in (0..f).step_by(BLOCK) {
                    let nb = (f - fb).min(BLOCK);
                    let mut acc = [0.0f32; BLOCK];
                    acc[..nb].copy_from_slice(&dw[t * f + fb..][..nb]);
                    for oy in oy_lo..oy_hi {
                        let iy = oy * g.sh + ky - g.pt;
                        for ox in ox_lo..ox_hi {
                            let ix = ox * g.sw + kx - g.pl;
                            let v = x[(iy * g.w + ix) * c + ci];
                            let d = &dz[(oy * g.ow + ox) * f + fb..][..nb];
                            if let Ok(d) = <&[f32; BLOCK]>::try_from(d) {
                                for j in 0..BLOCK {
                                    acc[j] += v * d[j];
                                }
                            } else {
                                for (a, &dv) in acc.iter_mut().zip(d) {
                                    *a += v * dv;
                                }
                            }
                        }
                    }
                    dw[t * f + fb..][..nb].copy_from_slice(&acc[..nb]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges_keep_inputs_in_bounds() {
        for (out, s, pad, len, kmax) in [(26, 1, 0, 28, 3), (28, 1, 1, 28, 3), (3, 2, 1, 5, 3), (4, 2, 0, 9, 3)] {
            for k in 0..kmax {
                let (lo, hi) = valid_range(out, s, k, pad, len);
                for o in 0..out {
                    let i = (o * s + k) as isize - pad as isize;
                    assert_eq!((lo..hi).contains(&o), i >= 0 && i < len as isize, "o={o} k={k}");
                }
            }
        }
    }
}
