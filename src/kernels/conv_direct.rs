//! Direct convolution for small patches (few input channels, e.g. the first
//! layer on grey or RGB images): with K = KH*KW*C as small as 9, unfolding
//! patches and calling a matrix product costs more than the arithmetic, so
//! these loops keep a block of output channels in registers instead.

use super::Window;
use std::ops::Range;

/// Output channels per register block: 4 AVX2 or 2 AVX-512 vectors.
const BLOCK: usize = 32;

/// Taps (KH*KW*C) up to which the tap offsets are precomputed for the fast path.
const MAX_TAPS: usize = 64;

/// Whether a K-tap patch is small enough for these kernels' fast path (larger
/// ones, such as ResNet-50's 7x7x3 first layer, are faster unfolded).
pub fn fast_taps(k: usize) -> bool {
    k <= MAX_TAPS
}

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

/// Values of the weight layout [`conv_forward`] takes, for a K-tap patch.
pub fn padded_len(k: usize, f: usize) -> usize {
    (k + 1) * padded_filters(f)
}

/// w: (K, F), bias: (F) -> wp: (K + 1, padded_filters(F)): the kernel, then
/// the bias as a last row (zeros without bias), zeros in the padding.
pub fn pad_filters(w: &[f32], bias: Option<&[f32]>, f: usize, wp: &mut [f32]) {
    let (fp, k) = (padded_filters(f), w.len() / f);
    let (kernel, bias_row) = wp[..(k + 1) * fp].split_at_mut(k * fp);
    super::pad_rows(w, f, fp, kernel);
    match bias {
        Some(b) => super::pad_rows(b, f, fp, bias_row),
        None => bias_row.fill(0.0),
    }
}

// x: (H,W,C), wp: (KH*KW*C + 1, F padded) -> y: (OH,OW,F);
//   y[p, f] = b[f] + sum_t x[p + t] * w[t, f], then max(y, 0) when `relu`
pub fn conv_forward(g: &Window, x: &[f32], wp: &[f32], f: usize, relu: bool, y: &mut [f32]) {
    conv_forward_rows(g, x, wp, f, relu, 0..g.oh, y);
}

// x: (H,W,C), wp: (KH*KW*C + 1, F padded) -> y: (rows.len(),OW,F), output rows `rows` of [`conv_forward`]
pub fn conv_forward_rows(g: &Window, x: &[f32], wp: &[f32], f: usize, relu: bool, rows: Range<usize>, y: &mut [f32]) {
    assert!(x.len() >= g.h * g.w * g.c && wp.len() >= padded_len(g.patch_len(), f));
    assert!(rows.end <= g.oh && y.len() >= rows.len() * g.ow * f);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
        unsafe { avx512::conv_forward(g, x, wp, f, relu, rows, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { avx2::conv_forward(g, x, wp, f, relu, rows, y) };
        return;
    }
    conv_forward_scalar(g, x, wp, f, relu, rows, y);
}

/// Portable reference version of [`conv_forward_rows`].
pub fn conv_forward_scalar(g: &Window, x: &[f32], wp: &[f32], f: usize, relu: bool, rows: Range<usize>, y: &mut [f32]) {
    let fp = padded_filters(f);
    let bias = &wp[g.patch_len() * fp..][..f];
    for oy in rows.clone() {
        for ox in 0..g.ow {
            let out = &mut y[((oy - rows.start) * g.ow + ox) * f..][..f];
            out.copy_from_slice(bias);
            for (t, v) in taps(g, x, oy, ox) {
                for (o, &wv) in out.iter_mut().zip(&wp[t * fp..]) {
                    *o += v * wv;
                }
            }
            if relu {
                out.iter_mut().for_each(|o| *o = o.max(0.0));
            }
        }
    }
}

/// Convolution, bias, optional ReLU and 2x2/2 max-pooling in one pass, the
/// convolution's output never leaving registers: x: (H,W,C) -> y: (OH/2,OW/2,F)
/// with `argmax` the flat index in the (OH,OW,F) convolution output of each
/// pooled value (first maximum on ties), as [`super::pool::max_pool_forward`]
/// gives it; with ReLU, taken once after the maximum (the same values: ReLU
/// keeps the order), a window whose maximum it rectifies to zero keeps the
/// index of its largest biased sum, where the layers apart keep its first
/// pixel: the gradient through a zero is zero either way. Covers valid convolutions with F a multiple of 32 on AVX2; returns
/// false (doing nothing) otherwise, and the caller computes the steps apart.
/// (The CPU device tries [`super::conv_pool_winograd`] first: 3x3 kernels at
/// stride 1 across, over 1 to 4 channels, with fewer multiply-adds.)
#[allow(clippy::too_many_arguments)]
pub fn conv_relu_pool2x2(
    g: &Window,
    pool: &Window,
    x: &[f32],
    wp: &[f32],
    f: usize,
    relu: bool,
    y: &mut [f32],
    argmax: &mut [u32],
) -> bool {
    let pool_2x2 = (pool.kh, pool.kw, pool.sh, pool.sw, pool.pt, pool.pl) == (2, 2, 2, 2, 0, 0);
    let fits = pool_2x2 && g.pt == 0 && g.pl == 0 && f.is_multiple_of(BLOCK) && g.patch_len() <= MAX_TAPS;
    #[cfg(target_arch = "x86_64")]
    if fits && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(pool.h == g.oh && pool.w == g.ow && pool.c == f);
        assert!(x.len() >= g.h * g.w * g.c && wp.len() >= padded_len(g.patch_len(), f));
        assert!(y.len() >= pool.positions() * f && argmax.len() >= pool.positions() * f);
        // SAFETY: the CPU has AVX2 and FMA (and AVX-512F for the first); shapes and sizes are checked above.
        unsafe {
            if avx512::available() {
                avx512::conv_relu_pool2x2(g, pool, x, wp, f, relu, y, argmax)
            } else {
                avx2::conv_relu_pool2x2(g, pool, x, wp, f, relu, y, argmax)
            }
        }
        return true;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (fits, x, wp, relu, y, argmax);
    false
}

/// The taps (index t into the KH*KW*C patch, input value) of output pixel
/// (oy, ox) that fall inside the input; padding contributes nothing.
pub(crate) fn taps<'a>(g: &'a Window, x: &'a [f32], oy: usize, ox: usize) -> impl Iterator<Item = (usize, f32)> + 'a {
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

/// Offsets in x of each tap (ky, kx, c) from its window's corner, for the
/// first min(K, MAX_TAPS) taps, and how many that is.
fn tap_offsets(g: &Window) -> ([usize; MAX_TAPS], usize) {
    let taps = g.patch_len().min(MAX_TAPS);
    let mut offsets = [0usize; MAX_TAPS];
    for (t, o) in offsets.iter_mut().enumerate().take(taps) {
        let (ky, kx, ci) = (t / (g.kw * g.c), t / g.c % g.kw, t % g.c);
        *o = (ky * g.w + kx) * g.c + ci;
    }
    (offsets, taps)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, MAX_TAPS, Range, Window, padded_filters, tap_offsets, valid_range};
    use std::arch::x86_64::*;

    /// [`super::conv_forward`] with the 32 output channels of a block in four
    /// AVX registers per pixel, two neighbouring pixels at a time where both
    /// windows lie inside the input across (8 independent FMA chains, shared
    /// weight loads), the others one by one ([`pixel`]). Callers check the
    /// CPU has AVX2 and FMA and the slice sizes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_forward(
        g: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        rows: Range<usize>,
        y: &mut [f32],
    ) {
        let fp = padded_filters(f);
        let bias = &wp[g.patch_len() * fp..];
        let kx_range = |ox: usize| {
            let ix0 = (ox * g.sw) as isize - g.pl as isize;
            (ix0, (-ix0).max(0) as usize, (g.w as isize - ix0).clamp(0, g.kw as isize) as usize)
        };
        // Tap offsets for the windows that lie wholly inside the input (most of them).
        let k = g.patch_len();
        let (offsets, known) = tap_offsets(g);
        let offsets = &offsets[..known];
        for oy in rows.clone() {
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            let ky = ((-iy0).max(0) as usize, (g.h as isize - iy0).clamp(0, g.kh as isize) as usize);
            let y = &mut y[(oy - rows.start) * g.ow * f..];
            let mut ox = 0;
            while ox < g.ow {
                let (ix0, kx_lo, kx_hi) = kx_range(ox);
                let pair = ox + 1 < g.ow && {
                    let (_, lo1, hi1) = kx_range(ox + 1);
                    kx_lo == 0 && kx_hi == g.kw && lo1 == 0 && hi1 == g.kw
                };
                if !pair {
                    pixel(g, x, wp, f, relu, oy, ox, &mut y[ox * f..][..f]);
                    ox += 1;
                    continue;
                }
                let inside = pair && ky == (0, g.kh) && k <= MAX_TAPS;
                for fb in (0..f).step_by(BLOCK) {
                    let nb = (f - fb).min(BLOCK);
                    if inside {
                        let corner = (iy0 as usize * g.w + ix0 as usize) * g.c;
                        let corners = [corner, corner + g.sw * g.c];
                        let last = corners[1] + offsets[k - 1];
                        assert!(last < x.len() && (k - 1) * fp + fb + BLOCK <= wp.len());
                        // SAFETY: the largest x index and the last weight block are in bounds (asserted).
                        let [a, b] = unsafe { interior::<2>(x, corners, offsets, &wp[fb..], fp) };
                        store(a, &bias[fb..], relu, &mut y[ox * f + fb..][..nb]);
                        store(b, &bias[fb..], relu, &mut y[(ox + 1) * f + fb..][..nb]);
                    } else {
                        let ix1 = ix0 + g.sw as isize;
                        let [a, b] = taps::<2>(g, x, wp, fp, fb, iy0, ky, [ix0, ix1], (0, g.kw));
                        store(a, &bias[fb..], relu, &mut y[ox * f + fb..][..nb]);
                        store(b, &bias[fb..], relu, &mut y[(ox + 1) * f + fb..][..nb]);
                    }
                }
                ox += 2;
            }
        }
    }

    /// [`super::conv_relu_pool2x2`]: per pooled pixel and block of 32 filters,
    /// the four convolution outputs of its window are computed two at a time,
    /// reduced to their maximum and its index, then biased and rectified.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_relu_pool2x2(
        g: &Window,
        pool: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        y: &mut [f32],
        argmax: &mut [u32],
    ) {
        let (c, fp, k) = (g.c, padded_filters(f), g.patch_len());
        let bias = &wp[k * fp..];
        let (offsets, known) = tap_offsets(g);
        let offsets = &offsets[..known];
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for py in 0..pool.oh {
            for px in 0..pool.ow {
                let (oy, ox) = (2 * py, 2 * px);
                let top = (oy * g.sh * g.w + ox * g.sw) * c;
                let bottom = top + g.sh * g.w * c;
                let corners = [top, top + g.sw * c, bottom, bottom + g.sw * c];
                assert!(corners[3] + offsets[k - 1] < x.len());
                // Flat indices in the convolution output of the window's four pixels.
                let conv_index = [
                    (oy * g.ow + ox) * f,
                    (oy * g.ow + ox + 1) * f,
                    ((oy + 1) * g.ow + ox) * f,
                    ((oy + 1) * g.ow + ox + 1) * f,
                ];
                for fb in (0..f).step_by(BLOCK) {
                    // SAFETY: every corner + offset indexes x (asserted) and wp holds the block.
                    let [p0, p1] = unsafe { interior::<2>(x, [corners[0], corners[1]], offsets, &wp[fb..], fp) };
                    let [p2, p3] = unsafe { interior::<2>(x, [corners[2], corners[3]], offsets, &wp[fb..], fp) };
                    let out = (py * pool.ow + px) * f + fb;
                    let (ys, idx) = (&mut y[out..out + BLOCK], &mut argmax[out..out + BLOCK]);
                    for j in 0..4 {
                        let first = fb + 8 * j;
                        let at = |p: usize| lane_indices(conv_index[p] + first, lanes);
                        // SAFETY: bias holds the padded filters.
                        let b = unsafe { _mm256_loadu_ps(bias.as_ptr().add(first)) };
                        // The bias before the maximum, as the layers apart add it (a tie
                        // that rounding makes picks the same pixel); ReLU after it (once).
                        let (q0, q1) = (_mm256_add_ps(p0[j], b), _mm256_add_ps(p1[j], b));
                        let (q2, q3) = (_mm256_add_ps(p2[j], b), _mm256_add_ps(p3[j], b));
                        // Strictly greater keeps the earlier pixel on ties: window order (0,0) (0,1) (1,0) (1,1).
                        let (m01, i01) = pick(q0, at(0), q1, at(1));
                        let (m23, i23) = pick(q2, at(2), q3, at(3));
                        let (m, i) = pick(m01, i01, m23, i23);
                        let m = if relu { _mm256_max_ps(m, _mm256_setzero_ps()) } else { m };
                        // SAFETY: ys and idx hold BLOCK values.
                        unsafe {
                            _mm256_storeu_ps(ys.as_mut_ptr().add(8 * j), m);
                            _mm256_storeu_si256(idx.as_mut_ptr().add(8 * j) as *mut __m256i, i);
                        }
                    }
                }
            }
        }
    }

    /// first + 0, ..., first + 7 (`lanes` is 0..8).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn lane_indices(first: usize, lanes: __m256i) -> __m256i {
        _mm256_add_epi32(_mm256_set1_epi32(first as i32), lanes)
    }

    /// The larger of (a, ia) and (b, ib) per lane; `a` on ties.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn pick(a: __m256, ia: __m256i, b: __m256, ib: __m256i) -> (__m256, __m256i) {
        let b_wins = _mm256_cmp_ps::<_CMP_GT_OQ>(b, a);
        let i = _mm256_blendv_ps(_mm256_castsi256_ps(ia), _mm256_castsi256_ps(ib), b_wins);
        (_mm256_blendv_ps(a, b, b_wins), _mm256_castps_si256(i))
    }

    /// [`super::conv_weight_grad`] tap by tap: for each tap and block of 32
    /// filters, the sum over output positions runs in registers, even and odd
    /// positions apart to overlap FMA latencies. Needs F a multiple of 32.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_weight_grad(g: &Window, x: &[f32], dz: &[f32], f: usize, dw: &mut [f32]) {
        let c = g.c;
        let load = |d: &[f32]| -> [__m256; 4] {
            let d = &d[..BLOCK];
            // SAFETY: `d` holds BLOCK = 32 values.
            unsafe { std::array::from_fn(|j| _mm256_loadu_ps(d.as_ptr().add(8 * j))) }
        };
        for ky in 0..g.kh {
            let (oy_lo, oy_hi) = valid_range(g.oh, g.sh, ky, g.pt, g.h);
            for kx in 0..g.kw {
                let (ox_lo, ox_hi) = valid_range(g.ow, g.sw, kx, g.pl, g.w);
                for ci in 0..c {
                    let t = (ky * g.kw + kx) * c + ci;
                    for fb in (0..f).step_by(BLOCK) {
                        let mut even = [_mm256_setzero_ps(); 4];
                        let mut odd = [_mm256_setzero_ps(); 4];
                        for oy in oy_lo..oy_hi {
                            let xrow = ((oy * g.sh + ky - g.pt) * g.w + kx - g.pl) * c + ci;
                            let drow = oy * g.ow * f + fb;
                            let mut ox = ox_lo;
                            while ox + 1 < ox_hi {
                                let v0 = _mm256_set1_ps(x[xrow + ox * g.sw * c]);
                                let v1 = _mm256_set1_ps(x[xrow + (ox + 1) * g.sw * c]);
                                let (d0, d1) = (load(&dz[drow + ox * f..]), load(&dz[drow + (ox + 1) * f..]));
                                for j in 0..4 {
                                    even[j] = _mm256_fmadd_ps(v0, d0[j], even[j]);
                                    odd[j] = _mm256_fmadd_ps(v1, d1[j], odd[j]);
                                }
                                ox += 2;
                            }
                            if ox < ox_hi {
                                let v0 = _mm256_set1_ps(x[xrow + ox * g.sw * c]);
                                let d0 = load(&dz[drow + ox * f..]);
                                for j in 0..4 {
                                    even[j] = _mm256_fmadd_ps(v0, d0[j], even[j]);
                                }
                            }
                        }
                        let out = &mut dw[t * f + fb..][..BLOCK];
                        let old = load(out);
                        for j in 0..4 {
                            let sum = _mm256_add_ps(old[j], _mm256_add_ps(even[j], odd[j]));
                            // SAFETY: `out` holds BLOCK = 32 values.
                            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), sum) };
                        }
                    }
                }
            }
        }
    }

    /// Output channels fb..fb+32 of P pixels whose windows lie inside the
    /// input, starting at `x[corners[p]]`: one tight loop over the taps.
    /// Safety: `corners[p] + offsets[t]` must index `x` and `w` must hold
    /// `(offsets.len() - 1) * fp + 32` values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn interior<const P: usize>(
        x: &[f32],
        corners: [usize; P],
        offsets: &[usize],
        w: &[f32],
        fp: usize,
    ) -> [[__m256; 4]; P] {
        let mut acc = [[_mm256_setzero_ps(); 4]; P];
        let (x, w) = (x.as_ptr(), w.as_ptr());
        for (t, &off) in offsets.iter().enumerate() {
            // SAFETY: in bounds by this function's contract.
            unsafe {
                let wt = w.add(t * fp);
                let ws = [
                    _mm256_loadu_ps(wt),
                    _mm256_loadu_ps(wt.add(8)),
                    _mm256_loadu_ps(wt.add(16)),
                    _mm256_loadu_ps(wt.add(24)),
                ];
                for p in 0..P {
                    let v = _mm256_broadcast_ss(&*x.add(corners[p] + off));
                    for j in 0..4 {
                        acc[p][j] = _mm256_fmadd_ps(v, ws[j], acc[p][j]);
                    }
                }
            }
        }
        acc
    }

    /// Output channels fb..fb+32 of P pixels in one row, whose windows start at
    /// input row `iy0` and columns `ix0s`, over kernel rows `ky` and columns `kx`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn taps<const P: usize>(
        g: &Window,
        x: &[f32],
        wp: &[f32],
        fp: usize,
        fb: usize,
        iy0: isize,
        ky: (usize, usize),
        ix0s: [isize; P],
        kx: (usize, usize),
    ) -> [[__m256; 4]; P] {
        let c = g.c;
        let mut acc = [[_mm256_setzero_ps(); 4]; P];
        for ky in ky.0..ky.1 {
            let row = (iy0 + ky as isize) as usize * g.w;
            for kx in kx.0..kx.1 {
                let tap = (ky * g.kw + kx) * c;
                for ci in 0..c {
                    let w = &wp[(tap + ci) * fp + fb..][..BLOCK];
                    // SAFETY: `w` holds BLOCK = 32 values.
                    let ws = unsafe {
                        let w = w.as_ptr();
                        [
                            _mm256_loadu_ps(w),
                            _mm256_loadu_ps(w.add(8)),
                            _mm256_loadu_ps(w.add(16)),
                            _mm256_loadu_ps(w.add(24)),
                        ]
                    };
                    for p in 0..P {
                        let v = _mm256_set1_ps(x[(row + (ix0s[p] + kx as isize) as usize) * c + ci]);
                        for j in 0..4 {
                            acc[p][j] = _mm256_fmadd_ps(v, ws[j], acc[p][j]);
                        }
                    }
                }
            }
        }
        acc
    }

    /// Output channels of pixel (oy, ox) of [`super::conv_forward`], over the
    /// taps that fall inside the input: y (F).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn pixel(g: &Window, x: &[f32], wp: &[f32], f: usize, relu: bool, oy: usize, ox: usize, y: &mut [f32]) {
        let fp = padded_filters(f);
        let bias = &wp[g.patch_len() * fp..];
        let iy0 = (oy * g.sh) as isize - g.pt as isize;
        let ky = ((-iy0).max(0) as usize, (g.h as isize - iy0).clamp(0, g.kh as isize) as usize);
        let ix0 = (ox * g.sw) as isize - g.pl as isize;
        let kx = ((-ix0).max(0) as usize, (g.w as isize - ix0).clamp(0, g.kw as isize) as usize);
        for fb in (0..f).step_by(BLOCK) {
            let [a] = taps::<1>(g, x, wp, fp, fb, iy0, ky, [ix0], kx);
            store(a, &bias[fb..], relu, &mut y[fb..f.min(fb + BLOCK)]);
        }
    }

    /// Writes the first `dst.len()` (at most 32) lanes of `acc + bias`, through a ReLU when `relu`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn store(mut acc: [__m256; 4], bias: &[f32], relu: bool, dst: &mut [f32]) {
        let bias = &bias[..BLOCK];
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `bias` holds BLOCK = 32 values.
            *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(bias.as_ptr().add(8 * j)) });
            if relu {
                *a = _mm256_max_ps(*a, _mm256_setzero_ps());
            }
        }
        if dst.len() == BLOCK {
            // SAFETY: `dst` holds BLOCK = 32 values.
            unsafe {
                let d = dst.as_mut_ptr();
                for (j, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(d.add(8 * j), *a);
                }
            }
        } else {
            let mut block = [0.0f32; BLOCK];
            // SAFETY: `block` holds BLOCK = 32 values.
            unsafe {
                for (j, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(block.as_mut_ptr().add(8 * j), *a);
                }
            }
            dst.copy_from_slice(&block[..dst.len()]);
        }
    }
}

/// The same kernels with 16 lanes per register: a block of 32 output channels
/// is two registers per pixel (one where it holds 16 or fewer), and more
/// pixels share each weight load. Per lane they do the operations of the
/// AVX2 kernels in the same order, so both give the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, MAX_TAPS, Range, Window, avx2, padded_filters, tap_offsets, valid_range};
    use std::arch::x86_64::*;

    /// Neighbouring pixels computed together where their windows lie inside the input.
    const RUN: usize = 8;

    /// Whether the CPU has what these kernels use (they take the AVX2 kernels' edge paths).
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }

    /// [`super::conv_forward_rows`]: runs of RUN pixels of a row whose windows lie
    /// inside the input share each tap's weight loads (16 FMA chains); the
    /// other pixels take the AVX2 kernel's edge path. Callers check
    /// [`available`] and the slice sizes.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn conv_forward(
        g: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        rows: Range<usize>,
        y: &mut [f32],
    ) {
        let k = g.patch_len();
        // Output columns whose windows lie inside the input across.
        let ox_lo = g.pl.div_ceil(g.sw).min(g.ow);
        let ox_hi = if g.w + g.pl >= g.kw { ((g.w + g.pl - g.kw) / g.sw + 1).min(g.ow) } else { 0 };
        if k > MAX_TAPS || ox_hi < ox_lo + RUN {
            // SAFETY: the CPU has AVX2 and FMA (the caller checked).
            return unsafe { avx2::conv_forward(g, x, wp, f, relu, rows, y) };
        }
        let fp = padded_filters(f);
        let bias = &wp[k * fp..];
        let (offsets, _) = tap_offsets(g);
        let offsets = &offsets[..k];
        for oy in rows.clone() {
            let y = &mut y[(oy - rows.start) * g.ow * f..][..g.ow * f];
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            if iy0 < 0 || iy0 as usize + g.kh > g.h {
                // SAFETY: as above.
                unsafe { avx2::conv_forward(g, x, wp, f, relu, oy..oy + 1, y) };
                continue;
            }
            for ox in (0..ox_lo).chain(ox_hi..g.ow) {
                avx2::pixel(g, x, wp, f, relu, oy, ox, &mut y[ox * f..][..f]);
            }
            for start in (ox_lo..ox_hi).step_by(RUN) {
                // The last run ends at the last inside pixel (recomputing some, with the same result).
                let first = start.min(ox_hi - RUN);
                let corners: [usize; RUN] =
                    std::array::from_fn(|p| (iy0 as usize * g.w + (first + p) * g.sw - g.pl) * g.c);
                assert!(corners[RUN - 1] + offsets[k - 1] < x.len() && k * fp <= wp.len());
                for fb in (0..f).step_by(BLOCK) {
                    let nb = (f - fb).min(BLOCK);
                    let out = |p: usize| (first + p) * f + fb;
                    // SAFETY: the largest x index and the weight rows are in bounds (asserted).
                    unsafe {
                        if nb <= 16 {
                            let acc = interior::<1, RUN>(x, corners, offsets, &wp[fb..], fp);
                            for (p, a) in acc.into_iter().enumerate() {
                                store(a, &bias[fb..], relu, &mut y[out(p)..][..nb]);
                            }
                        } else {
                            let acc = interior::<2, RUN>(x, corners, offsets, &wp[fb..], fp);
                            for (p, a) in acc.into_iter().enumerate() {
                                store(a, &bias[fb..], relu, &mut y[out(p)..][..nb]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`super::conv_relu_pool2x2`]: the four convolution outputs of two
    /// neighbouring pooled pixels' windows at a time (one where the row has a
    /// last odd one), in registers, then reduced to their maximum and its
    /// index as the AVX2 kernel does. Callers check [`available`], the shapes and sizes.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn conv_relu_pool2x2(
        g: &Window,
        pool: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        y: &mut [f32],
        argmax: &mut [u32],
    ) {
        let (fp, k) = (padded_filters(f), g.patch_len());
        let (offsets, _) = tap_offsets(g);
        let offsets = &offsets[..k];
        for py in 0..pool.oh {
            let mut px = 0;
            while px < pool.ow {
                // SAFETY: the caller's checks.
                unsafe {
                    if px + 1 < pool.ow {
                        pooled::<2, 8>(g, pool, x, wp, (offsets, fp), f, relu, (py, px), y, argmax);
                        px += 2;
                    } else {
                        pooled::<1, 4>(g, pool, x, wp, (offsets, fp), f, relu, (py, px), y, argmax);
                        px += 1;
                    }
                }
            }
        }
    }

    /// Pooled pixels px..px+Q of row py (P = 4Q convolution outputs).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn pooled<const Q: usize, const P: usize>(
        g: &Window,
        pool: &Window,
        x: &[f32],
        wp: &[f32],
        (offsets, fp): (&[usize], usize),
        f: usize,
        relu: bool,
        (py, px): (usize, usize),
        y: &mut [f32],
        argmax: &mut [u32],
    ) {
        let (c, k) = (g.c, offsets.len());
        let bias = &wp[k * fp..];
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (oy, ox) = (2 * py, 2 * px);
        let top = (oy * g.sh * g.w + ox * g.sw) * c;
        let bottom = top + g.sh * g.w * c;
        // Window order per pooled pixel: (0,0) (0,1) (1,0) (1,1).
        let corners: [usize; P] = std::array::from_fn(|p| {
            let (q, i) = (p / 4, p % 4);
            let row = if i < 2 { top } else { bottom };
            row + (2 * q + i % 2) * g.sw * c
        });
        assert!(corners[P - 1] + offsets[k - 1] < x.len() && (k - 1) * fp + f <= wp.len());
        // Each window pixel's step from the first, in the convolution output's flat indices.
        let steps = [0, f, g.ow * f, (g.ow + 1) * f].map(|step| _mm512_set1_epi32(step as i32));
        for fb in (0..f).step_by(BLOCK) {
            // SAFETY: every corner + offset indexes x (asserted) and wp holds the block.
            let acc = unsafe { interior::<2, P>(x, corners, offsets, &wp[fb..], fp) };
            for q in 0..Q {
                // The flat index in the convolution output of the window's first pixel.
                let window = (oy * g.ow + ox + 2 * q) * f;
                let out = (py * pool.ow + px + q) * f + fb;
                let (ys, idx) = (&mut y[out..out + BLOCK], &mut argmax[out..out + BLOCK]);
                for (j, first) in (fb..fb + BLOCK).step_by(16).enumerate() {
                    // SAFETY: bias holds the padded filters.
                    let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(first)) };
                    // The bias before the maximum, ReLU after it (as the AVX2 kernel).
                    let v = |p: usize| _mm512_add_ps(acc[4 * q + p][j], b);
                    // Strictly greater keeps the earlier pixel on ties; the winner's
                    // step is added to the first pixel's indices once.
                    let (m01, s01) = pick(v(0), steps[0], v(1), steps[1]);
                    let (m23, s23) = pick(v(2), steps[2], v(3), steps[3]);
                    let (m, step) = pick(m01, s01, m23, s23);
                    let m = if relu { _mm512_max_ps(m, _mm512_setzero_ps()) } else { m };
                    let i = _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32((window + first) as i32), lanes), step);
                    // SAFETY: ys and idx hold BLOCK values.
                    unsafe {
                        _mm512_storeu_ps(ys.as_mut_ptr().add(16 * j), m);
                        _mm512_storeu_si512(idx.as_mut_ptr().add(16 * j) as *mut __m512i, i);
                    }
                }
            }
        }
    }

    /// v + bias, rectified when `relu`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn activate(v: __m512, bias: __m512, relu: bool) -> __m512 {
        let v = _mm512_add_ps(v, bias);
        if relu { _mm512_max_ps(v, _mm512_setzero_ps()) } else { v }
    }

    /// The larger of (a, ia) and (b, ib) per lane; `a` on ties.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn pick(a: __m512, ia: __m512i, b: __m512, ib: __m512i) -> (__m512, __m512i) {
        let b_wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, a);
        (_mm512_mask_blend_ps(b_wins, a, b), _mm512_mask_blend_epi32(b_wins, ia, ib))
    }

    /// V registers of output channels of P pixels whose windows lie inside
    /// the input, starting at `x[corners[p]]`: one tight loop over the taps.
    /// Safety: `corners[p] + offsets[t]` must index `x` and `w` must hold
    /// `(offsets.len() - 1) * fp + 16 * V` values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn interior<const V: usize, const P: usize>(
        x: &[f32],
        corners: [usize; P],
        offsets: &[usize],
        w: &[f32],
        fp: usize,
    ) -> [[__m512; V]; P] {
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        let (x, w) = (x.as_ptr(), w.as_ptr());
        for (t, &off) in offsets.iter().enumerate() {
            // SAFETY: in bounds by this function's contract.
            unsafe {
                let wt = w.add(t * fp);
                let ws: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(wt.add(16 * v)));
                for p in 0..P {
                    let v = _mm512_set1_ps(*x.add(corners[p] + off));
                    for j in 0..V {
                        acc[p][j] = _mm512_fmadd_ps(v, ws[j], acc[p][j]);
                    }
                }
            }
        }
        acc
    }

    /// Writes the first `dst.len()` (at most 16 V) lanes of `acc + bias`, through a ReLU when `relu`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store<const V: usize>(acc: [__m512; V], bias: &[f32], relu: bool, dst: &mut [f32]) {
        let bias = &bias[..16 * V];
        assert!(dst.len() <= 16 * V);
        for (j, a) in acc.into_iter().enumerate() {
            let lanes = dst.len().saturating_sub(16 * j).min(16);
            // SAFETY: `bias` holds 16 V values and the mask keeps the store inside `dst`.
            unsafe {
                let a = activate(a, _mm512_loadu_ps(bias.as_ptr().add(16 * j)), relu);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(16 * j), ((1u32 << lanes) - 1) as __mmask16, a);
            }
        }
    }

    /// [`super::conv_weight_grad`] with the C channels of a tap (C = the input's,
    /// up to 4) summed together, sharing each load of the output gradient; per
    /// tap and block of 16 V filters the sums over output positions run as the
    /// AVX2 kernel's do (even and odd positions apart). Needs F a multiple of 16 V.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn conv_weight_grad<const C: usize, const V: usize>(
        g: &Window,
        x: &[f32],
        dz: &[f32],
        f: usize,
        dw: &mut [f32],
    ) {
        assert_eq!(g.c, C);
        assert!(f.is_multiple_of(16 * V), "filters in blocks of 16 V");
        let load = |d: &[f32]| -> [__m512; V] {
            let d = &d[..16 * V];
            // SAFETY: `d` holds 16 V values.
            unsafe { std::array::from_fn(|j| _mm512_loadu_ps(d.as_ptr().add(16 * j))) }
        };
        for ky in 0..g.kh {
            let (oy_lo, oy_hi) = valid_range(g.oh, g.sh, ky, g.pt, g.h);
            for kx in 0..g.kw {
                let (ox_lo, ox_hi) = valid_range(g.ow, g.sw, kx, g.pl, g.w);
                let t = (ky * g.kw + kx) * C;
                for fb in (0..f).step_by(16 * V) {
                    let mut even = [[_mm512_setzero_ps(); V]; C];
                    let mut odd = [[_mm512_setzero_ps(); V]; C];
                    for oy in oy_lo..oy_hi {
                        // The input pixel under tap (ky, kx) of output (oy, ox), inside by the valid ranges.
                        let row = (oy * g.sh + ky - g.pt) * g.w;
                        let at = |ox: usize| &x[(row + ox * g.sw + kx - g.pl) * C..][..C];
                        let drow = oy * g.ow * f + fb;
                        let mut ox = ox_lo;
                        while ox + 1 < ox_hi {
                            let (x0, x1) = (at(ox), at(ox + 1));
                            let (d0, d1) = (load(&dz[drow + ox * f..]), load(&dz[drow + (ox + 1) * f..]));
                            for ci in 0..C {
                                let (v0, v1) = (_mm512_set1_ps(x0[ci]), _mm512_set1_ps(x1[ci]));
                                for j in 0..V {
                                    even[ci][j] = _mm512_fmadd_ps(v0, d0[j], even[ci][j]);
                                    odd[ci][j] = _mm512_fmadd_ps(v1, d1[j], odd[ci][j]);
                                }
                            }
                            ox += 2;
                        }
                        if ox < ox_hi {
                            let x0 = at(ox);
                            let d0 = load(&dz[drow + ox * f..]);
                            for ci in 0..C {
                                let v0 = _mm512_set1_ps(x0[ci]);
                                for j in 0..V {
                                    even[ci][j] = _mm512_fmadd_ps(v0, d0[j], even[ci][j]);
                                }
                            }
                        }
                    }
                    for ci in 0..C {
                        let out = &mut dw[(t + ci) * f + fb..][..16 * V];
                        let old = load(out);
                        for j in 0..V {
                            let sum = _mm512_add_ps(old[j], _mm512_add_ps(even[ci][j], odd[ci][j]));
                            // SAFETY: `out` holds 16 V values.
                            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), sum) };
                        }
                    }
                }
            }
        }
    }
}

/// Whether [`conv_weight_grad`] has a SIMD path for `f` filters over any
/// number of channels (else, beyond AVX-512's paths for up to 4 channels, it
/// runs the scalar reference).
pub fn fast_weight_grad(f: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if f.is_multiple_of(BLOCK)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        return true;
    }
    false
}

// Differentiates y[p, f] = sum_t x[p + t] * w[t, f]:  dw[t, f] += sum_p x[p + t] * dz[p, f]
pub fn conv_weight_grad(g: &Window, x: &[f32], dz: &[f32], f: usize, dw: &mut [f32]) {
    assert!(x.len() >= g.h * g.w * g.c && dz.len() >= g.positions() * f && dw.len() >= g.patch_len() * f);
    #[cfg(target_arch = "x86_64")]
    {
        // With AVX-512, up to 4 channels, by blocks of 32 filters or of 16 (a
        // MobileNet's first convolution: 3 -> 16 at alpha 0.35).
        if (1..=4).contains(&g.c) && f.is_multiple_of(16) && avx512::available() {
            // SAFETY: the CPU has AVX-512F; C matches g.c, F is in blocks of 16 V.
            unsafe {
                match (g.c, f.is_multiple_of(32)) {
                    (1, true) => avx512::conv_weight_grad::<1, 2>(g, x, dz, f, dw),
                    (2, true) => avx512::conv_weight_grad::<2, 2>(g, x, dz, f, dw),
                    (3, true) => avx512::conv_weight_grad::<3, 2>(g, x, dz, f, dw),
                    (_, true) => avx512::conv_weight_grad::<4, 2>(g, x, dz, f, dw),
                    (1, false) => avx512::conv_weight_grad::<1, 1>(g, x, dz, f, dw),
                    (2, false) => avx512::conv_weight_grad::<2, 1>(g, x, dz, f, dw),
                    (3, false) => avx512::conv_weight_grad::<3, 1>(g, x, dz, f, dw),
                    (_, false) => avx512::conv_weight_grad::<4, 1>(g, x, dz, f, dw),
                }
            }
            return;
        }
        if f.is_multiple_of(BLOCK)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { avx2::conv_weight_grad(g, x, dz, f, dw) };
            return;
        }
    }
    conv_weight_grad_scalar(g, x, dz, f, dw);
}

/// Portable reference version of [`conv_weight_grad`].
pub fn conv_weight_grad_scalar(g: &Window, x: &[f32], dz: &[f32], f: usize, dw: &mut [f32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let d = &dz[(oy * g.ow + ox) * f..][..f];
            for (t, v) in taps(g, x, oy, ox) {
                for (w, &dv) in dw[t * f..][..f].iter_mut().zip(d) {
                    *w += v * dv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_forward_agree() {
        // Valid and same padding, strides, 1 and 3 channels, a partial filter block.
        let cases = [(9, 9, 1, 3, 1, 0, 7, 7, 32), (8, 7, 3, 3, 2, 1, 4, 4, 40), (6, 6, 2, 2, 1, 0, 5, 5, 8)];
        for (h, w, c, k, s, pad, oh, ow, f) in cases {
            let g = Window { h, w, c, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt: pad, pl: pad, oh, ow };
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5).collect();
            let kernel: Vec<f32> = (0..g.patch_len() * f).map(|i| ((i * 13) % 11) as f32 / 11.0 - 0.5).collect();
            let bias: Vec<f32> = (0..f).map(|i| i as f32 / f as f32 - 0.5).collect();
            let mut wp = vec![0.0; padded_len(g.patch_len(), f)];
            pad_filters(&kernel, Some(&bias), f, &mut wp);
            for relu in [false, true] {
                let (mut fast, mut reference) = (vec![0.0; oh * ow * f], vec![0.0; oh * ow * f]);
                conv_forward(&g, &x, &wp, f, relu, &mut fast);
                conv_forward_scalar(&g, &x, &wp, f, relu, 0..oh, &mut reference);
                for (a, b) in fast.iter().zip(&reference) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
                assert_eq!(relu, fast.iter().all(|v| *v >= 0.0));
                // Bands of output rows (how batch-1 inference splits a sample) give the same rows exactly.
                for rows in [0..1, 1..oh, oh / 2..oh, oh - 1..oh] {
                    let mut band = vec![f32::NAN; rows.len() * ow * f];
                    conv_forward_rows(&g, &x, &wp, f, relu, rows.clone(), &mut band);
                    assert_eq!(band[..], fast[rows.start * ow * f..rows.end * ow * f], "rows {rows:?}");
                    conv_forward_scalar(&g, &x, &wp, f, relu, rows.clone(), &mut band);
                    assert_eq!(band[..], reference[rows.start * ow * f..rows.end * ow * f], "rows {rows:?}");
                }
            }
        }
    }

    #[test]
    fn fused_conv_pool_matches_conv_then_pool() {
        use crate::kernels::pool::max_pool_forward;
        // Odd conv output (27 -> 13 pooled), many exact ties (few distinct values), 64 filters, 3 channels.
        for (h, w, c, f, relu) in [(29, 29, 1, 32, true), (10, 12, 3, 64, false), (6, 6, 1, 32, true)] {
            let g = Window { h, w, c, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, oh: h - 2, ow: w - 2 };
            let pool = Window {
                h: g.oh,
                w: g.ow,
                c: f,
                kh: 2,
                kw: 2,
                sh: 2,
                sw: 2,
                dh: 1,
                dw: 1,
                pt: 0,
                pl: 0,
                oh: g.oh / 2,
                ow: g.ow / 2,
            };
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 7) as f32 / 7.0 - 0.5).collect();
            let kernel: Vec<f32> = (0..g.patch_len() * f).map(|i| ((i * 13) % 11) as f32 / 11.0 - 0.5).collect();
            let bias: Vec<f32> = (0..f).map(|i| (i % 3) as f32 * 0.1 - 0.1).collect();
            let mut wp = vec![0.0; padded_len(g.patch_len(), f)];
            pad_filters(&kernel, Some(&bias), f, &mut wp);
            // The steps apart, with the same arithmetic: values and winners must agree exactly
            // (winners only where the value is not a rectified zero, whose gradient is zero).
            let mut z = vec![0.0; g.positions() * f];
            conv_forward(&g, &x, &wp, f, relu, &mut z);
            let (mut want_y, mut want_a) = (vec![0.0; pool.positions() * f], vec![0; pool.positions() * f]);
            max_pool_forward(&pool, &z, &mut want_y, &mut want_a);
            let (mut y, mut a) = (vec![0.0; pool.positions() * f], vec![0; pool.positions() * f]);
            if !conv_relu_pool2x2(&g, &pool, &x, &wp, f, relu, &mut y, &mut a) {
                return; // no AVX2 here: the layer computes the steps apart
            }
            assert_eq!(y, want_y);
            let winners = |a: &[u32]| -> Vec<Option<u32>> {
                a.iter().zip(&y).map(|(&a, &v)| (!relu || v > 0.0).then_some(a)).collect()
            };
            assert_eq!(winners(&a), winners(&want_a));
            assert!(y.iter().any(|&v| v > 0.0), "no window to compare");
        }
    }

    #[test]
    fn simd_and_scalar_weight_gradients_agree() {
        let cases = [
            (9, 9, 1, 3, 1, 0, 7, 7, 32),
            (8, 7, 3, 3, 2, 1, 4, 4, 64),
            (7, 6, 2, 2, 1, 0, 6, 5, 8),
            (9, 9, 3, 3, 2, 1, 5, 5, 16),
            (9, 8, 1, 3, 1, 1, 9, 8, 48),
            (6, 7, 4, 3, 1, 0, 4, 5, 16),
        ];
        for (h, w, c, k, s, pad, oh, ow, f) in cases {
            let g = Window { h, w, c, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt: pad, pl: pad, oh, ow };
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5).collect();
            let dz: Vec<f32> = (0..oh * ow * f).map(|i| ((i * 29) % 23) as f32 / 23.0 - 0.5).collect();
            let (mut fast, mut reference) = (vec![0.5; g.patch_len() * f], vec![0.5; g.patch_len() * f]);
            conv_weight_grad(&g, &x, &dz, f, &mut fast);
            conv_weight_grad_scalar(&g, &x, &dz, f, &mut reference);
            for (a, b) in fast.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    /// (H, W, C, K, stride, padding, F) with rows long enough for the AVX-512
    /// runs: same and valid padding, strides 1 and 2, 1 to 3 channels, blocks of 16, 32 and 32 + 16 filters.
    const WIDE_CASES: [(usize, usize, usize, usize, usize, usize, usize); 5] = [
        (20, 19, 3, 3, 1, 1, 48),
        (30, 30, 1, 3, 1, 0, 32),
        (21, 23, 3, 3, 2, 1, 16),
        (12, 40, 2, 5, 1, 2, 64),
        (9, 11, 3, 3, 1, 1, 8),
    ];

    fn wide_case(case: (usize, usize, usize, usize, usize, usize, usize)) -> (Window, Vec<f32>, Vec<f32>, usize) {
        let (h, w, c, k, s, pad, f) = case;
        let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
        let g = Window { h, w, c, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt: pad, pl: pad, oh, ow };
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5).collect();
        let kernel: Vec<f32> = (0..g.patch_len() * f).map(|i| ((i * 13) % 11) as f32 / 11.0 - 0.45).collect();
        let bias: Vec<f32> = (0..f).map(|i| i as f32 / f as f32 - 0.5).collect();
        let mut wp = vec![0.0; padded_len(g.patch_len(), f)];
        pad_filters(&kernel, Some(&bias), f, &mut wp);
        (g, x, wp, f)
    }

    #[test]
    fn wide_rows_agree_with_the_scalar_reference() {
        for case in WIDE_CASES {
            let (g, x, wp, f) = wide_case(case);
            for relu in [false, true] {
                let (mut fast, mut reference) = (vec![0.0; g.positions() * f], vec![0.0; g.positions() * f]);
                conv_forward(&g, &x, &wp, f, relu, &mut fast);
                conv_forward_scalar(&g, &x, &wp, f, relu, 0..g.oh, &mut reference);
                for (a, b) in fast.iter().zip(&reference) {
                    assert!((a - b).abs() < 1e-5, "{case:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn avx512_kernels_give_the_avx2_kernels_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !avx512::available() {
                eprintln!("no AVX-512 on this CPU: its kernels are not run");
                return;
            }
            for case in WIDE_CASES {
                let (g, x, wp, f) = wide_case(case);
                for (relu, rows) in [(false, 0..g.oh), (true, 0..g.oh), (true, 1..g.oh - 1)] {
                    let len = rows.len() * g.ow * f;
                    let (mut wide, mut narrow) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA; the sizes are the output's.
                    unsafe {
                        avx512::conv_forward(&g, &x, &wp, f, relu, rows.clone(), &mut wide);
                        avx2::conv_forward(&g, &x, &wp, f, relu, rows.clone(), &mut narrow);
                    }
                    assert_eq!(
                        wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        narrow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{case:?}"
                    );
                }
                // The weight gradient, 32 and 64 filters.
                for f in [32, 64] {
                    let dz: Vec<f32> = (0..g.positions() * f).map(|i| ((i * 29) % 23) as f32 / 23.0 - 0.5).collect();
                    let (mut wide, mut narrow) = (vec![0.5; g.patch_len() * f], vec![0.5; g.patch_len() * f]);
                    conv_weight_grad(&g, &x, &dz, f, &mut wide);
                    // SAFETY: as above.
                    unsafe { avx2::conv_weight_grad(&g, &x, &dz, f, &mut narrow) };
                    assert_eq!(wide, narrow, "{case:?} with {f} filters");
                }
            }
            // The fused pool: an odd number of pooled columns (one pixel alone at the end of each row).
            for (h, w, c, f, relu) in [(29, 29, 1, 32, true), (12, 14, 3, 64, false), (11, 21, 2, 32, true)] {
                let (g, x, wp, _) = wide_case((h, w, c, 3, 1, 0, f));
                let pool =
                    Window { h: g.oh, w: g.ow, c: f, kh: 2, kw: 2, sh: 2, sw: 2, oh: g.oh / 2, ow: g.ow / 2, ..g };
                let len = pool.positions() * f;
                let (mut y, mut a, mut y2, mut a2) = (vec![0.0; len], vec![0; len], vec![0.0; len], vec![0; len]);
                // SAFETY: as above, and the shapes conv_relu_pool2x2 checks.
                unsafe {
                    avx512::conv_relu_pool2x2(&g, &pool, &x, &wp, f, relu, &mut y, &mut a);
                    avx2::conv_relu_pool2x2(&g, &pool, &x, &wp, f, relu, &mut y2, &mut a2);
                }
                assert_eq!((y, a), (y2, a2), "{h}x{w}x{c}");
            }
            // Ties and NaNs: a zero kernel makes every window's four outputs its
            // bias (the first pixel wins), except where a NaN input reaches them
            // (0 x NaN).
            let (g, mut x, mut wp, f) = wide_case((12, 14, 1, 3, 1, 0, 32));
            wp[..g.patch_len() * padded_filters(f)].fill(0.0);
            (x[20], x[75]) = (f32::NAN, f32::NAN);
            let pool = Window { h: g.oh, w: g.ow, c: f, kh: 2, kw: 2, sh: 2, sw: 2, oh: g.oh / 2, ow: g.ow / 2, ..g };
            for relu in [false, true] {
                let len = pool.positions() * f;
                let (mut y, mut a, mut y2, mut a2) = (vec![0.0; len], vec![0; len], vec![0.0; len], vec![0; len]);
                // SAFETY: as above.
                unsafe {
                    avx512::conv_relu_pool2x2(&g, &pool, &x, &wp, f, relu, &mut y, &mut a);
                    avx2::conv_relu_pool2x2(&g, &pool, &x, &wp, f, relu, &mut y2, &mut a2);
                }
                // (A NaN wins only as a window's first pixel, and the ReLU maps it to 0.)
                assert!(y.iter().any(|v| v.is_nan()) != relu && y.iter().any(|v| !v.is_nan()), "both kinds of window");
                let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!((bits(&y), a), (bits(&y2), a2), "ties and NaNs, relu {relu}");
            }
        }
    }

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
