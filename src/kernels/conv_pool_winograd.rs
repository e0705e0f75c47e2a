//! Convolution, bias, optional ReLU and 2x2/2 max-pooling of one sample in
//! one pass (as `conv_direct::conv_relu_pool2x2`), for kernels 3 wide at
//! stride 1 over 1 to 4 channels, by Winograd's F(2, 3) along each row:
//! the two outputs of a pooling window's row share their products.
//!
//! For kernel row ky and channel c, with g = w[ky, 0..3, c] and the four
//! inputs d0..d3 under the two outputs' windows:
//!
//! ```text
//!   V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)            per input row and column
//!   U = (g0, (g0 + g2 + g1) / 2, (g0 + g2 - g1) / 2, g2)  per filter
//!   M_j = b[f] * [j == 1] + sum over (ky, c) of U_j V_j
//!   y0 = (M0 + M1) + M2,  y1 = (M1 - M2) - M3
//! ```
//!
//! Four multiply-adds per pair of outputs and kernel row where the direct sum
//! takes six, for four additions per pair; the bias starts M1, which both
//! outputs add. On AMD Zen the additions run on the two pipes that the
//! multiply-adds leave idle: the reference model's fused convolution-pool (a
//! batch of 128, one thread, Zen 4) 561 -> 454 µs with AVX-512. With AVX2 it
//! runs as fast as the direct kernel (688-702 against 691-711 µs): each value
//! of V feeds one 8-filter register, and its broadcasts, not the arithmetic,
//! bound the loop (16 registers hold no more sums); it is taken there too, so
//! that every CPU gets the same bits.
//!
//! The pooled value and the index of the window's first maximum are taken as
//! in `conv_direct` (ReLU once after the maximum), from sums computed in
//! another order: within rounding of the direct kernels, not their bits. The
//! AVX-512, AVX2 and scalar paths do the same operations per filter in the
//! same order, so every CPU gets the same bits.
//!
//! The winners (argmax) are what the backward pass needs; at inference the
//! kernels skip them, and with them the comparisons that find them (the
//! reference model's layer, AVX-512, one thread: 454 -> 350 µs a batch of
//! 128), the values' bits unchanged.

use super::Window;
use super::conv_direct::padded_filters;

/// The channels up to which the kernels are compiled (per channel count).
const MAX_CHANNELS: usize = 4;

/// Filters per block: 2 AVX-512 or 4 AVX2 registers.
const BLOCK: usize = 32;

/// Columns (times channels) per block of the transformed input.
const COLS: usize = 16;

/// Scratch values [`conv_relu_pool2x2`] needs for the transformed input: per
/// input row, its (W - 3) C columns' four values V, in blocks of 16 columns.
pub fn planes_len(g: &Window) -> usize {
    g.h * row_len(g)
}

/// Values of an input row's transform: blocks (4, COLS) of COLS columns.
fn row_len(g: &Window) -> usize {
    (g.w.saturating_sub(3) * g.c).div_ceil(COLS) * 4 * COLS
}

/// Where V_j of column-channel i (= column * C + channel) lies in its row's transform.
#[inline(always)]
fn at_column(i: usize) -> usize {
    i / COLS * 4 * COLS + i % COLS
}

/// Whether the kernels cover a convolution `g` with `f` filters pooled by
/// `pool`: 3x3 kernels at stride 1 across without dilation or padding, 1 to 4
/// channels, F a multiple of 32, 2x2/2 pooling over the whole output.
pub fn covers(g: &Window, pool: &Window, f: usize) -> bool {
    let pool_2x2 = (pool.kh, pool.kw, pool.sh, pool.sw, pool.pt, pool.pl) == (2, 2, 2, 2, 0, 0);
    pool_2x2
        && (pool.h, pool.w, pool.c) == (g.oh, g.ow, f)
        && (g.kh, g.kw, g.sw, g.dw, g.pt, g.pl) == (3, 3, 1, 1, 0, 0)
        && (1..=MAX_CHANNELS).contains(&g.c)
        && f.is_multiple_of(BLOCK)
        && g.w >= 4
        && (1..=pool.h / 2).contains(&pool.oh)
        && (1..=pool.w / 2).contains(&pool.ow)
}

/// x: (H,W,C), wp: (9C + 1, F padded) as `conv_direct::pad_filters` lays it out ->
/// y: (OH/2,OW/2,F) and, where given, `argmax` the flat index in the (OH,OW,F) convolution
/// output of each pooled value (first maximum on ties); `planes` is scratch of
/// at least [`planes_len`] values. Runs where [`covers`] holds, `planes` is
/// that long and the CPU has AVX2 and FMA; returns false (doing nothing) otherwise.
#[allow(clippy::too_many_arguments)]
pub fn conv_relu_pool2x2(
    g: &Window,
    pool: &Window,
    x: &[f32],
    wp: &[f32],
    f: usize,
    relu: bool,
    planes: &mut [f32],
    y: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if covers(g, pool, f) && planes.len() >= planes_len(g) && avx2::available() {
        simd(avx512::available(), g, pool, x, wp, f, relu, planes, y, argmax);
        return true;
    }
    let _ = (g, pool, x, wp, f, relu, planes, y, argmax);
    false
}

/// [`conv_relu_pool2x2`] by its AVX-512 path (`avx512`) or its AVX2 path,
/// monomorphized per channel count. Panics unless the shapes are covered and
/// the slices hold them; the CPU must have AVX2 and FMA (and AVX-512F for the
/// first path), which callers check.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn simd(
    avx512: bool,
    g: &Window,
    pool: &Window,
    x: &[f32],
    wp: &[f32],
    f: usize,
    relu: bool,
    planes: &mut [f32],
    y: &mut [f32],
    argmax: Option<&mut [u32]>,
) {
    check_sizes(g, pool, x, wp, f, planes, y, argmax.as_deref());
    // SAFETY: the CPU has AVX2 and FMA (and AVX-512F for the first), as the contract says;
    // sizes are checked above.
    unsafe {
        match (avx512, g.c) {
            (true, 1) => avx512::conv_relu_pool2x2::<1>(g, pool, x, wp, f, relu, planes, y, argmax),
            (true, 2) => avx512::conv_relu_pool2x2::<2>(g, pool, x, wp, f, relu, planes, y, argmax),
            (true, 3) => avx512::conv_relu_pool2x2::<3>(g, pool, x, wp, f, relu, planes, y, argmax),
            (true, _) => avx512::conv_relu_pool2x2::<4>(g, pool, x, wp, f, relu, planes, y, argmax),
            (false, 1) => avx2::conv_relu_pool2x2::<1>(g, pool, x, wp, f, relu, planes, y, argmax),
            (false, 2) => avx2::conv_relu_pool2x2::<2>(g, pool, x, wp, f, relu, planes, y, argmax),
            (false, 3) => avx2::conv_relu_pool2x2::<3>(g, pool, x, wp, f, relu, planes, y, argmax),
            (false, _) => avx2::conv_relu_pool2x2::<4>(g, pool, x, wp, f, relu, planes, y, argmax),
        }
    }
}

/// Panics unless every slice holds what the shapes need (callers of the SIMD paths rely on it).
#[allow(clippy::too_many_arguments)]
fn check_sizes(
    g: &Window,
    pool: &Window,
    x: &[f32],
    wp: &[f32],
    f: usize,
    planes: &[f32],
    y: &[f32],
    a: Option<&[u32]>,
) {
    assert!(covers(g, pool, f), "conv_pool_winograd: shapes it does not cover");
    assert!(x.len() >= g.h * g.w * g.c && wp.len() >= (9 * g.c + 1) * padded_filters(f));
    assert!(planes.len() >= planes_len(g) && y.len() >= pool.positions() * f);
    assert!(a.is_none_or(|a| a.len() >= pool.positions() * f));
    // Every input row read: (2 * pool.oh - 1) * sh + 2 * dh, below H.
    assert!((2 * pool.oh - 1) * g.sh + 2 * g.dh < g.h && 2 * pool.ow + 1 < g.w);
    assert!(g.oh * g.ow * f <= u32::MAX as usize, "argmax indices fit u32");
}

// x: (H,W,C) -> planes: (H, (W-3)C / COLS, 4, COLS), V_j of row iy and column-channel
// i = ox*C + c at iy * row_len + at_column(i) + j * COLS (the four values of a column
// at one pointer's constant offsets):
//   V0 = x[i] - x[i+2C], V1 = x[i+C] + x[i+2C], V2 = x[i+2C] - x[i+C], V3 = x[i+C] - x[i+3C]
// (single additions: every path's planes have the same bits).
fn transform_rows<'a>(g: &Window, x: &[f32], planes: &'a mut [f32]) -> &'a [f32] {
    let (c, l) = (g.c, (g.w - 3) * g.c);
    let planes = &mut planes[..planes_len(g)];
    for (row, out) in x.chunks_exact(g.w * c).zip(planes.chunks_exact_mut(row_len(g))) {
        transform_columns(row, c, 0..l, out);
    }
    planes
}

// Columns-channels `cols` of one row's [`transform_rows`], one value at a time
// (the whole row here, the last ones after the AVX2 path's 8 at a time).
fn transform_columns(row: &[f32], c: usize, cols: std::ops::Range<usize>, out: &mut [f32]) {
    for i in cols {
        let (d0, d1, d2, d3) = (row[i], row[i + c], row[i + 2 * c], row[i + 3 * c]);
        let out = &mut out[at_column(i)..];
        (out[0], out[COLS], out[2 * COLS], out[3 * COLS]) = (d0 - d2, d1 + d2, d2 - d1, d1 - d3);
    }
}

// g: the three taps of a kernel row -> U = (g0, (g0 + g2 + g1) / 2, (g0 + g2 - g1) / 2, g2)
#[inline]
fn transform_taps(g0: f32, g1: f32, g2: f32) -> [f32; 4] {
    let s = g0 + g2;
    [g0, (s + g1) * 0.5, (s - g1) * 0.5, g2]
}

/// Portable reference of [`conv_relu_pool2x2`], for shapes where [`covers`]
/// holds: the same operations per filter, in the same order.
#[allow(clippy::too_many_arguments)]
pub fn conv_relu_pool2x2_scalar(
    g: &Window,
    pool: &Window,
    x: &[f32],
    wp: &[f32],
    f: usize,
    relu: bool,
    planes: &mut [f32],
    y: &mut [f32],
    mut argmax: Option<&mut [u32]>,
) {
    check_sizes(g, pool, x, wp, f, planes, y, argmax.as_deref());
    let (c, fp, rl) = (g.c, padded_filters(f), row_len(g));
    let planes = transform_rows(g, x, planes);
    let bias = &wp[9 * c * fp..];
    for fi in 0..f {
        let u: [[f32; 4]; 3 * MAX_CHANNELS] = std::array::from_fn(|t| {
            let (ky, ch) = (t / c, t % c);
            let w = |kx: usize| if t < 3 * c { wp[((ky * 3 + kx) * c + ch) * fp + fi] } else { 0.0 };
            transform_taps(w(0), w(1), w(2))
        });
        for py in 0..pool.oh {
            for px in 0..pool.ow {
                let (oy, ox) = (2 * py, 2 * px);
                // m[r][j]: row r of the window.
                let mut m = [[0.0, bias[fi], 0.0, 0.0f32]; 2];
                for (t, u) in u[..3 * c].iter().enumerate() {
                    let (ky, ch) = (t / c, t % c);
                    for (r, m) in m.iter_mut().enumerate() {
                        let iy = (oy + r) * g.sh + ky * g.dh;
                        for (j, m) in m.iter_mut().enumerate() {
                            *m = planes[iy * rl + at_column(ox * c + ch) + j * COLS].mul_add(u[j], *m);
                        }
                    }
                }
                let v = [
                    (m[0][0] + m[0][1]) + m[0][2],
                    (m[0][1] - m[0][2]) - m[0][3],
                    (m[1][0] + m[1][1]) + m[1][2],
                    (m[1][1] - m[1][2]) - m[1][3],
                ];
                // (b > a ? b : a, as the SIMD max): the earlier pixel on ties and NaNs.
                let pick = |a: usize, b: usize| if v[b] > v[a] { b } else { a };
                let (p01, p23) = (pick(0, 1), pick(2, 3));
                let p = if v[p23] > v[p01] { p23 } else { p01 };
                let best = v[p];
                let out = (py * pool.ow + px) * f + fi;
                // (best > 0 ? best : 0, as the SIMD max: a NaN becomes 0.)
                y[out] = if relu && best.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) { 0.0 } else { best };
                if let Some(argmax) = argmax.as_deref_mut() {
                    argmax[out] = (((oy + p / 2) * g.ow + ox + p % 2) * f + fi) as u32;
                }
            }
        }
    }
}

/// `transformed_taps` for one instruction set (vector type and intrinsics):
/// U, as [`transform_taps`], of each (kernel row, channel) for the filters
/// first.. of one register. Safety: wp must hold 9C rows of fp values and a
/// register's filters from `first`.
#[cfg(target_arch = "x86_64")]
macro_rules! transformed_taps {
    ($feature:literal, $v:ty, $load:ident, $set1:ident, $add:ident, $sub:ident, $mul:ident) => {
        #[target_feature(enable = $feature)]
        unsafe fn transformed_taps<const C: usize>(wp: &[f32], fp: usize, first: usize) -> [[$v; 4]; 3 * MAX] {
            let mut u = [[$set1(0.0); 4]; 3 * MAX];
            let half = $set1(0.5);
            for (t, u) in u.iter_mut().enumerate().take(3 * C) {
                let (ky, ch) = (t / C, t % C);
                // SAFETY: in bounds by this function's contract.
                let w = |kx: usize| unsafe { $load(wp.as_ptr().add(((ky * 3 + kx) * C + ch) * fp + first)) };
                let (g0, g1, g2) = (w(0), w(1), w(2));
                let s = $add(g0, g2);
                *u = [g0, $mul($add(s, g1), half), $mul($sub(s, g1), half), g2];
            }
            u
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, COLS, Window, at_column, padded_filters};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// [`super::conv_relu_pool2x2`] over C channels, 8 filters at a time:
    /// the window's eight sums M (two rows) in registers. Callers check
    /// [`available`] and the sizes (`super::check_sizes`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_relu_pool2x2<const C: usize>(
        g: &Window,
        pool: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        planes: &mut [f32],
        y: &mut [f32],
        mut argmax: Option<&mut [u32]>,
    ) {
        let (fp, rl) = (padded_filters(f), super::row_len(g));
        let bias = &wp[9 * C * fp..];
        let planes = transform_rows::<C>(g, x, planes);
        let (pp, lanes) = (planes.as_ptr(), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let (right, down) = (_mm256_set1_epi32(f as i32), _mm256_set1_epi32((g.ow * f) as i32));
        for first in (0..f).step_by(BLOCK / 4) {
            // SAFETY (all loads and stores below): the sizes are checked by the caller
            // (`check_sizes`), which bounds every row, column and filter read or written.
            let u = unsafe { transformed_taps::<C>(wp, fp, first) };
            let b = unsafe { _mm256_loadu_ps(bias.as_ptr().add(first)) };
            for py in 0..pool.oh {
                for px in 0..pool.ow {
                    let (oy, ox) = (2 * py, 2 * px);
                    let z = _mm256_setzero_ps();
                    let mut m = [[z, b, z, z]; 2];
                    for (t, u) in u[..3 * C].iter().enumerate() {
                        let (ky, ch) = (t / C, t % C);
                        for (r, m) in m.iter_mut().enumerate() {
                            let iy = (oy + r) * g.sh + ky * g.dh;
                            let at = unsafe { pp.add(iy * rl + at_column(ox * C + ch)) };
                            for (j, m) in m.iter_mut().enumerate() {
                                let v = unsafe { _mm256_broadcast_ss(&*at.add(j * COLS)) };
                                *m = _mm256_fmadd_ps(v, u[j], *m);
                            }
                        }
                    }
                    let row = |m: [__m256; 4]| {
                        let y0 = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
                        (y0, _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]))
                    };
                    let ((v0, v1), (v2, v3)) = (row(m[0]), row(m[1]));
                    // (b > a ? b : a): the earlier pixel on ties and NaNs.
                    let (m01, m23) = (_mm256_max_ps(v1, v0), _mm256_max_ps(v3, v2));
                    let best = _mm256_max_ps(m23, m01);
                    let best = if relu { _mm256_max_ps(best, z) } else { best };
                    let out = (py * pool.ow + px) * f + first;
                    unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(out), best) };
                    let Some(argmax) = argmax.as_deref_mut() else { continue };
                    let (k01, k23) = (_mm256_cmp_ps::<_CMP_GT_OQ>(v1, v0), _mm256_cmp_ps::<_CMP_GT_OQ>(v3, v2));
                    let k = _mm256_cmp_ps::<_CMP_GT_OQ>(m23, m01);
                    // The winner's flat index: the window's first pixel, one right where the
                    // right one wins its row, one row down where the bottom row wins.
                    let base = _mm256_add_epi32(_mm256_set1_epi32(((oy * g.ow + ox) * f + first) as i32), lanes);
                    let step = |k: __m256| _mm256_and_si256(_mm256_castps_si256(k), right);
                    let top = _mm256_add_epi32(base, step(k01));
                    let bottom = _mm256_add_epi32(_mm256_add_epi32(base, down), step(k23));
                    let i = _mm256_blendv_ps(_mm256_castsi256_ps(top), _mm256_castsi256_ps(bottom), k);
                    unsafe {
                        _mm256_storeu_si256(argmax.as_mut_ptr().add(out) as *mut __m256i, _mm256_castps_si256(i));
                    }
                }
            }
        }
    }

    /// `super::transform_rows`, 8 columns at a time.
    #[target_feature(enable = "avx2,fma")]
    fn transform_rows<'a, const C: usize>(g: &Window, x: &[f32], planes: &'a mut [f32]) -> &'a [f32] {
        let l = (g.w - 3) * C;
        let planes = &mut planes[..super::planes_len(g)];
        for (row, out) in x.chunks_exact(g.w * C).zip(planes.chunks_exact_mut(super::row_len(g))) {
            let mut i = 0;
            while i + 8 <= l {
                // SAFETY: i + 3C + 8 <= l + 3C = W C, the row's length; the 8 columns lie in
                // one block (COLS is a multiple of 8), inside the row's transform.
                unsafe {
                    let d = |o: usize| _mm256_loadu_ps(row.as_ptr().add(i + o));
                    let (d0, d1, d2, d3) = (d(0), d(C), d(2 * C), d(3 * C));
                    let v = out.as_mut_ptr().add(at_column(i));
                    _mm256_storeu_ps(v, _mm256_sub_ps(d0, d2));
                    _mm256_storeu_ps(v.add(COLS), _mm256_add_ps(d1, d2));
                    _mm256_storeu_ps(v.add(2 * COLS), _mm256_sub_ps(d2, d1));
                    _mm256_storeu_ps(v.add(3 * COLS), _mm256_sub_ps(d1, d3));
                }
                i += 8;
            }
            super::transform_columns(row, C, i..l, out);
        }
        planes
    }

    transformed_taps!("avx2,fma", __m256, _mm256_loadu_ps, _mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);

    const MAX: usize = super::MAX_CHANNELS;
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, COLS, Window, at_column, padded_filters};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        super::avx2::available() && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// [`super::conv_relu_pool2x2`] over C channels, 16 filters at a time,
    /// the pooled pixels in order (row after row). A pixel's sums M are
    /// multiply-adds, its reduction a chain of additions, maximums and (for the
    /// winner) comparisons, which one pixel alone leaves the multiply-add pipe
    /// waiting on: with the winners, a pixel's multiply-adds run beside the
    /// previous pixel's reduction (software-pipelined, 454 -> 417-424 µs for
    /// the reference model's layer, a batch of 128, one thread, Zen 4); without
    /// them, two pixels' multiply-adds go together, then their reductions (the
    /// pipelined order measured no faster there: 351-360 against 349). Per lane
    /// the operations of the AVX2 kernel, in the same order. Callers check
    /// [`available`] and the sizes (`super::check_sizes`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn conv_relu_pool2x2<const C: usize>(
        g: &Window,
        pool: &Window,
        x: &[f32],
        wp: &[f32],
        f: usize,
        relu: bool,
        planes: &mut [f32],
        y: &mut [f32],
        mut argmax: Option<&mut [u32]>,
    ) {
        let fp = padded_filters(f);
        let bias = &wp[9 * C * fp..];
        let planes = transform_rows::<C>(g, x, planes);
        let out = Out { f, relu, right: _mm512_set1_epi32(f as i32), down: _mm512_set1_epi32((g.ow * f) as i32) };
        for first in (0..f).step_by(BLOCK / 2) {
            // SAFETY (here and in `products` and `reduce`): the caller checked the sizes (`check_sizes`),
            // which bound every row, column and filter read or written.
            let u = unsafe { transformed_taps::<C>(wp, fp, first) };
            let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(first)) };
            let n = pool.oh * pool.ow;
            let at = |k: usize| (k / pool.ow, k % pool.ow);
            let sums = |k: usize| unsafe { products::<C>(g, planes, &u, b, at(k)) };
            if argmax.is_some() {
                // Software-pipelined over the pooled pixels: a pixel's multiply-adds beside
                // the previous one's reduction, which finding the winner lengthens.
                let mut m = sums(0);
                for k in 1..n {
                    let next = sums(k);
                    unsafe { reduce(g, pool, first, &out, at(k - 1), &m, y, argmax.as_deref_mut()) };
                    m = next;
                }
                unsafe { reduce(g, pool, first, &out, at(n - 1), &m, y, argmax.as_deref_mut()) };
            } else {
                // Two pixels' multiply-adds together, then their reductions.
                for k in (0..n).step_by(2) {
                    if k + 1 < n {
                        let (m0, m1) = (sums(k), sums(k + 1));
                        unsafe { reduce(g, pool, first, &out, at(k), &m0, y, None) };
                        unsafe { reduce(g, pool, first, &out, at(k + 1), &m1, y, None) };
                    } else {
                        unsafe { reduce(g, pool, first, &out, at(k), &sums(k), y, None) };
                    }
                }
            }
        }
    }

    /// What every window's reduction needs.
    struct Out {
        f: usize,
        relu: bool,
        /// One pixel right and one row down in the convolution output's flat indices.
        right: __m512i,
        down: __m512i,
    }

    /// The sums M of pooled pixel (py, px), filters first..first+16: `m[r][j]`, row r of its window.
    /// Safety: as [`conv_relu_pool2x2`], with (py, px) a pooled pixel.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn products<const C: usize>(
        g: &Window,
        planes: &[f32],
        u: &[[__m512; 4]; 3 * MAX],
        b: __m512,
        (py, px): (usize, usize),
    ) -> [[__m512; 4]; 2] {
        let (oy, ox, rl) = (2 * py, 2 * px, super::row_len(g));
        let z = _mm512_setzero_ps();
        let mut m = [[z, b, z, z]; 2];
        let pp = planes.as_ptr();
        for (t, u) in u[..3 * C].iter().enumerate() {
            let (ky, ch) = (t / C, t % C);
            for (r, m) in m.iter_mut().enumerate() {
                let iy = (oy + r) * g.sh + ky * g.dh;
                // SAFETY: in bounds by this function's contract.
                let at = unsafe { pp.add(iy * rl + at_column(ox * C + ch)) };
                for (j, m) in m.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(unsafe { *at.add(j * COLS) });
                    *m = _mm512_fmadd_ps(v, u[j], *m);
                }
            }
        }
        m
    }

    /// Pooled pixel (py, px)'s value (and winner, where asked for) from its sums M.
    /// Safety: as [`conv_relu_pool2x2`], with (py, px) a pooled pixel.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn reduce(
        g: &Window,
        pool: &Window,
        first: usize,
        out: &Out,
        (py, px): (usize, usize),
        m: &[[__m512; 4]; 2],
        y: &mut [f32],
        argmax: Option<&mut [u32]>,
    ) {
        let (oy, ox, f) = (2 * py, 2 * px, out.f);
        let z = _mm512_setzero_ps();
        let row = |m: &[__m512; 4]| {
            let y0 = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
            (y0, _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]))
        };
        let ((v0, v1), (v2, v3)) = (row(&m[0]), row(&m[1]));
        // (b > a ? b : a): the earlier pixel on ties and NaNs.
        let (m01, m23) = (_mm512_max_ps(v1, v0), _mm512_max_ps(v3, v2));
        let best = _mm512_max_ps(m23, m01);
        let best = if out.relu { _mm512_max_ps(best, z) } else { best };
        let at = (py * pool.ow + px) * f + first;
        // SAFETY: in bounds by this function's contract.
        unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(at), best) };
        let Some(argmax) = argmax else { return };
        let (k01, k23) = (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v1, v0), _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v3, v2));
        let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m23, m01);
        // The winner's flat index, as the AVX2 kernel builds it.
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let base = _mm512_add_epi32(_mm512_set1_epi32(((oy * g.ow + ox) * f + first) as i32), lanes);
        let top = _mm512_mask_add_epi32(base, k01, base, out.right);
        let bottom = _mm512_add_epi32(base, out.down);
        let bottom = _mm512_mask_add_epi32(bottom, k23, bottom, out.right);
        let i = _mm512_mask_blend_epi32(k, top, bottom);
        // SAFETY: in bounds by this function's contract.
        unsafe { _mm512_storeu_si512(argmax.as_mut_ptr().add(at) as *mut __m512i, i) };
    }

    /// `super::transform_rows`, 16 columns at a time (a row's last ones masked).
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn transform_rows<'a, const C: usize>(g: &Window, x: &[f32], planes: &'a mut [f32]) -> &'a [f32] {
        let l = (g.w - 3) * C;
        let planes = &mut planes[..super::planes_len(g)];
        for (row, out) in x.chunks_exact(g.w * C).zip(planes.chunks_exact_mut(super::row_len(g))) {
            for i in (0..l).step_by(COLS) {
                let m = (u32::MAX >> (32 - (l - i).min(16))) as __mmask16;
                // SAFETY: the mask keeps reads below i + 3C + (l - i) = W C, the row's
                // length; a block's four stores fill it (zeros past the row's last column).
                unsafe {
                    let d = |o: usize| _mm512_maskz_loadu_ps(m, row.as_ptr().add(i + o));
                    let (d0, d1, d2, d3) = (d(0), d(C), d(2 * C), d(3 * C));
                    let v = out.as_mut_ptr().add(at_column(i));
                    _mm512_storeu_ps(v, _mm512_sub_ps(d0, d2));
                    _mm512_storeu_ps(v.add(COLS), _mm512_add_ps(d1, d2));
                    _mm512_storeu_ps(v.add(2 * COLS), _mm512_sub_ps(d2, d1));
                    _mm512_storeu_ps(v.add(3 * COLS), _mm512_sub_ps(d1, d3));
                }
            }
        }
        planes
    }

    transformed_taps!(
        "avx512f,avx2,fma",
        __m512,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps
    );

    const MAX: usize = super::MAX_CHANNELS;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv_direct::{conv_forward_scalar, pad_filters, padded_len};

    /// (H, W, C, F, row stride, relu): odd and even pooled columns (the AVX-512
    /// kernel's single last pixel), 1 to 4 channels, 32 and 64 filters, a row stride of 2.
    const CASES: [(usize, usize, usize, usize, usize, bool); 6] = [
        (28, 28, 1, 32, 1, true),
        (29, 29, 1, 64, 1, false),
        (10, 12, 3, 32, 1, true),
        (9, 11, 2, 32, 1, false),
        (8, 9, 4, 64, 1, true),
        (13, 10, 1, 32, 2, true),
    ];

    fn case(
        (h, w, c, f, sh, _): (usize, usize, usize, usize, usize, bool),
        kernel_scale: f32,
    ) -> (Window, Window, Vec<f32>, Vec<f32>) {
        let (oh, ow) = ((h - 3) / sh + 1, w - 2);
        let g = Window { h, w, c, kh: 3, kw: 3, sh, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, oh, ow };
        let pool = Window {
            h: oh,
            w: ow,
            c: f,
            kh: 2,
            kw: 2,
            sh: 2,
            sw: 2,
            dh: 1,
            dw: 1,
            pt: 0,
            pl: 0,
            oh: oh / 2,
            ow: ow / 2,
        };
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.3).collect();
        let kernel: Vec<f32> = (0..9 * c * f).map(|i| (((i * 13) % 11) as f32 / 11.0 - 0.45) * kernel_scale).collect();
        let bias: Vec<f32> = (0..f).map(|i| i as f32 / f as f32 - 0.5).collect();
        let mut wp = vec![0.0; padded_len(9 * c, f)];
        pad_filters(&kernel, Some(&bias), f, &mut wp);
        (g, pool, x, wp)
    }

    fn bits(y: &[f32]) -> Vec<u32> {
        y.iter().map(|v| v.to_bits()).collect()
    }

    /// The paths a test runs: the scalar reference, the dispatched one
    /// (AVX-512 where the CPU has it), AVX2.
    #[derive(Clone, Copy, Debug)]
    enum Path {
        Scalar,
        Dispatched,
        Avx2,
    }

    /// `conv_relu_pool2x2` over the shapes by `path`; false where the CPU
    /// cannot run it.
    fn run(
        path: Path,
        (g, pool, x, wp): (&Window, &Window, &[f32], &[f32]),
        (f, relu): (usize, bool),
        planes: &mut [f32],
        y: &mut [f32],
        a: Option<&mut [u32]>,
    ) -> bool {
        match path {
            Path::Scalar => conv_relu_pool2x2_scalar(g, pool, x, wp, f, relu, planes, y, a),
            Path::Dispatched => return conv_relu_pool2x2(g, pool, x, wp, f, relu, planes, y, a),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 if avx2::available() => simd(false, g, pool, x, wp, f, relu, planes, y, a),
            Path::Avx2 => return false,
        }
        true
    }

    /// Every path, with and without the winners: the scalar reference's
    /// values (bits), and its winners written where asked for, nothing where not.
    #[test]
    fn simd_paths_give_the_scalar_references_bits() {
        for case_ in CASES {
            let (g, pool, x, wp) = case(case_, 1.0);
            let (f, relu) = (case_.3, case_.5);
            assert!(covers(&g, &pool, f), "{case_:?}");
            let len = pool.positions() * f;
            let mut planes = vec![0.0; planes_len(&g)];
            let (mut y, mut a) = (vec![f32::NAN; len], vec![u32::MAX; len]);
            conv_relu_pool2x2_scalar(&g, &pool, &x, &wp, f, relu, &mut planes, &mut y, Some(&mut a));
            for (path, winners) in
                [Path::Scalar, Path::Dispatched, Path::Avx2].into_iter().flat_map(|p| [(p, true), (p, false)])
            {
                let (mut y1, mut a1) = (vec![f32::NAN; len], vec![u32::MAX; len]);
                let shapes = (&g, &pool, &x[..], &wp[..]);
                if !run(path, shapes, (f, relu), &mut planes, &mut y1, winners.then_some(&mut a1[..])) {
                    eprintln!("{path:?}: not run on this CPU (no AVX2 and FMA)");
                    continue;
                }
                assert_eq!(bits(&y1), bits(&y), "{path:?}, winners {winners}, {case_:?}");
                let want = if winners { a.clone() } else { vec![u32::MAX; len] };
                assert_eq!(a1, want, "{path:?}, winners {winners}, {case_:?}: winners only where asked for");
            }
            #[cfg(target_arch = "x86_64")]
            if !avx512::available() {
                eprintln!("no AVX-512 on this CPU: the AVX-512 path is not run");
            }
        }
    }

    #[test]
    fn pooled_values_and_winners_match_the_direct_convolution() {
        for case_ in CASES {
            let (g, pool, x, wp) = case(case_, 1.0);
            let (f, relu) = (case_.3, case_.5);
            let mut z = vec![0.0; g.positions() * f];
            conv_forward_scalar(&g, &x, &wp, f, false, 0..g.oh, &mut z);
            let len = pool.positions() * f;
            let (mut y, mut a) = (vec![0.0; len], vec![0; len]);
            let mut planes = vec![0.0; planes_len(&g)];
            conv_relu_pool2x2_scalar(&g, &pool, &x, &wp, f, relu, &mut planes, &mut y, Some(&mut a));
            let mut decided = 0;
            for (q, (&v, &i)) in y.iter().zip(&a).enumerate() {
                let (py, px, fi) = (q / f / pool.ow, q / f % pool.ow, q % f);
                let window: Vec<f32> = (0..4).map(|p| z[((2 * py + p / 2) * g.ow + 2 * px + p % 2) * f + fi]).collect();
                let best = window.iter().copied().fold(f32::MIN, f32::max);
                let want = if relu { best.max(0.0) } else { best };
                assert!((v - want).abs() <= 1e-5 * (1.0 + want.abs()), "{case_:?} at {q}: {v} vs {want}");
                // The winner: the window's maximum, unless two values are within rounding.
                let mut sorted = window.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                if sorted[0] - sorted[1] > 1e-4 && !(relu && best <= 0.0) {
                    let p = window.iter().position(|&w| w == best).unwrap();
                    assert_eq!(i as usize, ((2 * py + p / 2) * g.ow + 2 * px + p % 2) * f + fi, "{case_:?} at {q}");
                    decided += 1;
                }
            }
            assert!(decided > len / 2, "{case_:?}: too few windows with a clear winner ({decided} of {len})");
        }
    }

    #[test]
    fn ties_and_nans_pick_as_the_direct_kernels() {
        // A zero kernel: each window's four sums are its bias, so the first pixel
        // wins; a NaN input reaches the windows over it (0 x NaN), where a NaN wins
        // only as a window's first pixel, and ReLU maps it to 0.
        let (g, pool, mut x, mut wp) = case((12, 14, 1, 32, 1, false), 0.0);
        wp[..9 * padded_filters(32)].fill(0.0);
        (x[20], x[75]) = (f32::NAN, f32::NAN);
        for relu in [false, true] {
            let len = pool.positions() * 32;
            let mut planes = vec![0.0; planes_len(&g)];
            let (mut y, mut a) = (vec![0.0; len], vec![0; len]);
            conv_relu_pool2x2_scalar(&g, &pool, &x, &wp, 32, relu, &mut planes, &mut y, Some(&mut a));
            assert!(y.iter().any(|v| v.is_nan()) != relu && y.iter().any(|v| !v.is_nan()), "both kinds of window");
            for (q, (&v, &i)) in y.iter().zip(&a).enumerate() {
                let (py, px, fi) = (q / 32 / pool.ow, q / 32 % pool.ow, q % 32);
                if !v.is_nan() && v != 0.0 {
                    assert_eq!(i as usize, ((2 * py) * g.ow + 2 * px) * 32 + fi, "the first pixel on ties");
                }
            }
            let (mut y1, mut a1) = (vec![0.0; len], vec![0; len]);
            if conv_relu_pool2x2(&g, &pool, &x, &wp, 32, relu, &mut planes, &mut y1, Some(&mut a1)) {
                assert_eq!((bits(&y1), a1), (bits(&y), a), "ties and NaNs, relu {relu}");
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_direct_kernels() {
        let (g, pool, x, wp) = case((28, 28, 1, 32, 1, true), 1.0);
        assert!(covers(&g, &pool, 32));
        let refused = [
            (Window { sw: 2, ..g }, pool, 32),
            (Window { pl: 1, ..g }, pool, 32),
            (Window { kw: 5, ..g }, pool, 32),
            (Window { c: 5, ..g }, pool, 32),
            (g, Window { c: 16, ..pool }, 16),
            (g, Window { sh: 1, ..pool }, 32),
            (g, Window { oh: pool.h / 2 + 1, ..pool }, 32),
        ];
        for (g, pool, f) in refused {
            assert!(!covers(&g, &pool, f), "{g:?} {pool:?}");
        }
        // Scratch too short: nothing done.
        let mut planes = vec![0.0; planes_len(&g) - 1];
        let (mut y, mut a) = (vec![7.0; pool.positions() * 32], vec![7; pool.positions() * 32]);
        assert!(!conv_relu_pool2x2(&g, &pool, &x, &wp, 32, true, &mut planes, &mut y, Some(&mut a)));
        assert!(y.iter().all(|&v| v == 7.0) && a.iter().all(|&i| i == 7));
    }
}
