//! Matrix products with a narrow side: a Dense layer with few units (a
//! classifier head, 10 classes). Here a general matrix product spends its time
//! packing, and its sums are blocked by the CPU's cache sizes; these kernels
//! add in one fixed order (sequentially along the reduction), so results are
//! the same on every AVX2 machine, and the reference model trains
//! bit-identically across them.

/// Columns of the padded layouts (the output gradient's in the weight
/// gradient) and of the forward pass's sums: two AVX2 vectors. Layers with
/// more units use the general matrix product.
pub const WIDTH: usize = 16;

/// a: (rows, cols) -> out: (rows, WIDTH), zeros in the padding.
pub fn pad_columns(a: &[f32], cols: usize, out: &mut [f32]) {
    super::pad_rows(a, cols, WIDTH, out);
}

// x: (R, D), w: (D, u) -> y: (R, u);  y[r, j] = sum_d x[r, d] * w[d, j], d ascending.
// The kernel is read where it lies, a row (u values) into a register's lanes.
pub fn x_times_w(x: &[f32], w: &[f32], d: usize, u: usize, y: &mut [f32]) {
    let rows = y.len() / u;
    assert!(u <= WIDTH && x.len() >= rows * d && w.len() >= d * u);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; sizes asserted above.
        unsafe { avx512::x_times_w(x, w, d, u, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; sizes asserted above.
        unsafe { avx2::x_times_w(x, w, d, u, y) };
        return;
    }
    x_times_w_scalar(x, w, d, u, y);
}

/// Portable reference version of [`x_times_w`].
pub fn x_times_w_scalar(x: &[f32], w: &[f32], d: usize, u: usize, y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(u)) {
        yr.fill(0.0);
        for (&xv, w) in xr.iter().zip(w.chunks_exact(u)) {
            for (o, &wv) in yr.iter_mut().zip(w) {
                *o = xv.mul_add(wv, *o);
            }
        }
    }
}

// x: (R, D) columns [first, first + n), dzp: (R, WIDTH) -> dw: (n, u);
//   dw[i, j] = sum_r x[r, first + i] * dz[r, j], r ascending
pub fn xt_times_dz(x: &[f32], d: usize, first: usize, dzp: &[f32], u: usize, dw: &mut [f32]) {
    let rows = dzp.len() / WIDTH;
    assert!(u <= WIDTH && x.len() >= rows * d && first + dw.len() / u <= d);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; sizes asserted above.
        unsafe { avx512::xt_times_dz(x, d, first, dzp, u, dw) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; sizes asserted above.
        unsafe { avx2::xt_times_dz(x, d, first, dzp, u, dw) };
        return;
    }
    xt_times_dz_scalar(x, d, first, dzp, u, dw);
}

/// Portable reference version of [`xt_times_dz`].
pub fn xt_times_dz_scalar(x: &[f32], d: usize, first: usize, dzp: &[f32], u: usize, dw: &mut [f32]) {
    for (i, out) in dw.chunks_exact_mut(u).enumerate() {
        out.fill(0.0);
        for (xr, dz) in x.chunks_exact(d).zip(dzp.chunks_exact(WIDTH)) {
            let xv = xr[first + i];
            for (o, &g) in out.iter_mut().zip(dz) {
                *o = xv.mul_add(g, *o);
            }
        }
    }
}

// dz: (R, u), wt: (u, D) -> dx: (R, D);  dx[r, i] = sum_j dz[r, j] * w[i, j], j ascending
pub fn dz_times_wt(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
    let rows = dx.len() / d;
    assert!(dz.len() >= rows * u && wt.len() >= u * d);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; sizes asserted above.
        unsafe { avx512::dz_times_wt(dz, wt, u, d, dx) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; sizes asserted above.
        unsafe { avx2::dz_times_wt(dz, wt, u, d, dx) };
        return;
    }
    dz_times_wt_scalar(dz, wt, u, d, dx);
}

/// Portable reference version of [`dz_times_wt`].
pub fn dz_times_wt_scalar(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
    for (g, out) in dz.chunks_exact(u).zip(dx.chunks_exact_mut(d)) {
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (j, &gj) in g.iter().enumerate() {
                acc = gj.mul_add(wt[j * d + i], acc);
            }
            *o = acc;
        }
    }
}

/// Calls `each(r, true)` at the first row of each whole block of `block`
/// rows, then `each(r, false)` for each row after the last whole block.
#[cfg(target_arch = "x86_64")]
fn by_row_blocks(rows: usize, block: usize, mut each: impl FnMut(usize, bool)) {
    let blocked = rows - rows % block;
    (0..blocked).step_by(block).for_each(|r| each(r, true));
    (blocked..rows).for_each(|r| each(r, false));
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::WIDTH;
    use std::arch::x86_64::*;

    /// Rows handled together (independent FMA chains sharing weight loads).
    const ROWS: usize = 4;

    /// Each row of W loaded masked into two registers (lanes past u zero).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn x_times_w(x: &[f32], w: &[f32], d: usize, u: usize, y: &mut [f32]) {
        let rows = y.len() / u;
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks = [u.min(8), u.saturating_sub(8)].map(|n| _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane));
        let mut r = 0;
        while r < rows {
            let n = ROWS.min(rows - r);
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            for k in 0..d {
                // SAFETY: k < d and w holds d * u values, the masks keep the loads in row k;
                // (r + i) * d + k < rows * d <= x.len().
                unsafe {
                    let w = w.as_ptr().add(k * u);
                    let (w0, w1) = (_mm256_maskload_ps(w, masks[0]), _mm256_maskload_ps(w.add(8), masks[1]));
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let xv = _mm256_broadcast_ss(&*x.as_ptr().add((r + i) * d + k));
                        a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                store(*a, &mut y[(r + i) * u..(r + i + 1) * u]);
            }
            r += n;
        }
    }

    /// Units per pass of the weight gradient (5 x 2 registers of sums).
    const UNITS: usize = 5;

    /// The sums run along 16 input features in registers, for 5 units at a
    /// time; features past the last 16 go one at a time. Each sum adds the
    /// rows in order, as the reference does.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn xt_times_dz(x: &[f32], d: usize, first: usize, dzp: &[f32], u: usize, dw: &mut [f32]) {
        let (rows, cols) = (dzp.len() / WIDTH, dw.len() / u);
        let full = cols - cols % 16;
        for c in (0..full).step_by(16) {
            for u0 in (0..u).step_by(UNITS) {
                let mut acc = [[_mm256_setzero_ps(); 2]; UNITS];
                for r in 0..rows {
                    // SAFETY: first + c + 16 <= first + cols <= d keeps x's loads in row r; the
                    // unit read is below WIDTH, in row r of dzp (a unit past the last one
                    // repeats it, and its sums are dropped).
                    unsafe {
                        let xr = x.as_ptr().add(r * d + first + c);
                        // The next pass's features of this row, to L2 (as the AVX-512 kernel).
                        _mm_prefetch::<_MM_HINT_T1>(xr.wrapping_add(16) as *const i8);
                        let xs = [_mm256_loadu_ps(xr), _mm256_loadu_ps(xr.add(8))];
                        let g = dzp.as_ptr().add(r * WIDTH + u0);
                        for (k, a) in acc.iter_mut().enumerate() {
                            let gv = _mm256_set1_ps(*g.add(k.min(WIDTH - 1 - u0)));
                            a[0] = _mm256_fmadd_ps(xs[0], gv, a[0]);
                            a[1] = _mm256_fmadd_ps(xs[1], gv, a[1]);
                        }
                    }
                }
                for (k, a) in acc.iter().enumerate().take(u - u0) {
                    let mut sums = [0.0f32; 16];
                    // SAFETY: `sums` holds 16 values.
                    unsafe {
                        _mm256_storeu_ps(sums.as_mut_ptr(), a[0]);
                        _mm256_storeu_ps(sums.as_mut_ptr().add(8), a[1]);
                    }
                    for (l, &v) in sums.iter().enumerate() {
                        dw[(c + l) * u + u0 + k] = v;
                    }
                }
            }
        }
        super::xt_times_dz_scalar(x, d, first + full, dzp, u, &mut dw[full * u..]);
    }

    /// Rows of the input gradient sharing each load of W^T.
    const GRADIENT_ROWS: usize = 2;

    /// Blocks of 32 outputs of 2 rows at a time (8 chains) sharing each load
    /// of W^T; the outputs past the last whole block one by one.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dz_times_wt(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
        super::by_row_blocks(dx.len() / d, GRADIENT_ROWS, |r, whole| {
            // SAFETY: every call's rows lie below dx's.
            unsafe {
                if whole {
                    output_blocks::<GRADIENT_ROWS>(dz, wt, u, d, r, dx)
                } else {
                    output_blocks::<1>(dz, wt, u, d, r, dx)
                }
            }
        });
    }

    /// Rows r..r + R of dx. Safety: r + R rows lie in dz (U values each) and
    /// dx (D each), wt holds U x D.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn output_blocks<const R: usize>(dz: &[f32], wt: &[f32], u: usize, d: usize, r: usize, dx: &mut [f32]) {
        let full = d - d % 32;
        for i in (0..full).step_by(32) {
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for j in 0..u {
                // SAFETY: j * d + i + 32 <= u * d <= wt.len(); (r + k) * u + j < (r + R) * u <= dz.len().
                unsafe {
                    let w = wt.as_ptr().add(j * d + i);
                    let ws: [__m256; 4] = std::array::from_fn(|q| _mm256_loadu_ps(w.add(8 * q)));
                    for (k, a) in acc.iter_mut().enumerate() {
                        let gv = _mm256_set1_ps(*dz.as_ptr().add((r + k) * u + j));
                        for (aq, &wq) in a.iter_mut().zip(&ws) {
                            *aq = _mm256_fmadd_ps(gv, wq, *aq);
                        }
                    }
                }
            }
            for (k, a) in acc.iter().enumerate() {
                for (q, aq) in a.iter().enumerate() {
                    // SAFETY: i + 32 <= d: inside row r + k of dx.
                    unsafe { _mm256_storeu_ps(dx.as_mut_ptr().add((r + k) * d + i + 8 * q), *aq) };
                }
            }
        }
        for k in 0..R {
            let g = &dz[(r + k) * u..(r + k + 1) * u];
            for (o, i) in dx[(r + k) * d..(r + k + 1) * d].iter_mut().zip(0..).skip(full) {
                let mut acc = 0.0f32;
                for (j, &gj) in g.iter().enumerate() {
                    acc = gj.mul_add(wt[j * d + i], acc);
                }
                *o = acc;
            }
        }
    }

    /// The first `dst.len()` (at most 16) lanes of a pair of vectors.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn store(a: [__m256; 2], dst: &mut [f32]) {
        let mut lanes = [0.0f32; WIDTH];
        // SAFETY: `lanes` holds WIDTH = 16 values.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), a[1]);
        }
        dst.copy_from_slice(&lanes[..dst.len()]);
    }
}

/// The kernels in registers of 16, each load shared by more sums: x . W with
/// a padded row of W per register; the weight gradient with 32 input features
/// per register pair, for 10 units at a time; the input gradient with 6 rows
/// per load of W^T. Every sum runs in the reference's order, so every path
/// gives the scalar reference's bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::WIDTH;
    use std::arch::x86_64::*;

    /// Rows sharing each load of W (16 sums in registers: a task's rows).
    const ROWS: usize = 16;

    /// Blocks of [`ROWS`] rows, each load of W shared by them; leftover rows
    /// go one at a time.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn x_times_w(x: &[f32], w: &[f32], d: usize, u: usize, y: &mut [f32]) {
        super::by_row_blocks(y.len() / u, ROWS, |r, whole| {
            // SAFETY: every call's rows lie below y's, and x holds them.
            unsafe {
                match whole {
                    true => rows_times_w::<ROWS>(x, w, d, u, r, y),
                    false => rows_times_w::<1>(x, w, d, u, r, y),
                }
            }
        });
    }

    /// Rows r..r + R of y from those of x (its sums fully in registers), each
    /// row of W loaded masked (lanes past u zero).
    /// Safety: r + R rows lie within y and x; w holds d * u values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows_times_w<const R: usize>(x: &[f32], w: &[f32], d: usize, u: usize, r: usize, y: &mut [f32]) {
        let mut acc = [_mm512_setzero_ps(); R];
        let mask = mask_of(u);
        // SAFETY: the caller's contract; the mask keeps each load in row k of w.
        unsafe {
            let xs: [*const f32; R] = std::array::from_fn(|i| x.as_ptr().add((r + i) * d));
            for k in 0..d {
                let w = _mm512_maskz_loadu_ps(mask, w.as_ptr().add(k * u));
                for i in 0..R {
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*xs[i].add(k)), w, acc[i]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            store(*a, &mut y[(r + i) * u..(r + i + 1) * u]);
        }
    }

    /// Vectors of 16 input features in the weight gradient's register block.
    const FEATURE_VECTORS: usize = 2;

    /// The sums run along 32 input features in registers, for up to 10 units
    /// at a time (20 chains): per row, two loads of x and a broadcast of each
    /// unit's dz. Each sum adds the rows in order, as the reference does.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn xt_times_dz(x: &[f32], d: usize, first: usize, dzp: &[f32], u: usize, dw: &mut [f32]) {
        let cols = dw.len() / u;
        for c in (0..cols).step_by(16 * FEATURE_VECTORS) {
            let lanes = (cols - c).min(16 * FEATURE_VECTORS);
            // Units 0..10 (a classifier head's), then 10..16 where there are more.
            // SAFETY: first + c + lanes <= first + cols <= d; the units lie in dzp's padded rows.
            unsafe {
                let low = unit_sums::<10>(x, d, first + c, lanes, dzp, 0);
                scatter_sums(&low, u, c, 0, lanes, dw);
                if u > 10 {
                    let high = unit_sums::<{ WIDTH - 10 }>(x, d, first + c, lanes, dzp, 10);
                    scatter_sums(&high, u, c, 10, lanes, dw);
                }
            }
        }
    }

    /// Sums over the rows of x[r, col..col + lanes] * dzp[r, u0 + k] for
    /// k < K: register k, lane l holds the sum for feature col + l (then
    /// col + 16 + l) and unit u0 + k. Safety: col + lanes <= d, u0 + K <= WIDTH,
    /// lanes <= 32, and x holds the rows of dzp.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn unit_sums<const K: usize>(
        x: &[f32],
        d: usize,
        col: usize,
        lanes: usize,
        dzp: &[f32],
        u0: usize,
    ) -> [[__m512; FEATURE_VECTORS]; K] {
        let rows = dzp.len() / WIDTH;
        let mask = |q: usize| mask_of(lanes.saturating_sub(16 * q));
        let mut acc = [[_mm512_setzero_ps(); FEATURE_VECTORS]; K];
        for r in 0..rows {
            // SAFETY: the masks keep x's lanes below r * d + d; u0 + k < WIDTH (the contract).
            unsafe {
                let xr = x.as_ptr().add(r * d + col);
                // The next pass's features of this row, to L2: the rows lie a
                // page or more apart, beyond the hardware prefetchers' reach (a
                // prefetch never faults; past the last feature it fetches nothing used).
                let next = xr.wrapping_add(16 * FEATURE_VECTORS);
                _mm_prefetch::<_MM_HINT_T1>(next as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(16) as *const i8);
                let xs: [__m512; FEATURE_VECTORS] =
                    std::array::from_fn(|q| _mm512_maskz_loadu_ps(mask(q), xr.add(16 * q)));
                let g = dzp.as_ptr().add(r * WIDTH + u0);
                for (k, a) in acc.iter_mut().enumerate() {
                    let gv = _mm512_set1_ps(*g.add(k));
                    for (aq, &xq) in a.iter_mut().zip(&xs) {
                        *aq = _mm512_fmadd_ps(xq, gv, *aq);
                    }
                }
            }
        }
        acc
    }

    /// Writes the sums of units u0.. (below u) for features c..c + lanes into
    /// dw (features, u).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn scatter_sums<const K: usize>(
        acc: &[[__m512; FEATURE_VECTORS]; K],
        u: usize,
        c: usize,
        u0: usize,
        lanes: usize,
        dw: &mut [f32],
    ) {
        for (k, a) in acc.iter().enumerate().take(u - u0) {
            for (q, aq) in a.iter().enumerate() {
                let mut sums = [0.0f32; 16];
                // SAFETY: `sums` holds 16 values.
                unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), *aq) };
                for (l, &v) in sums.iter().enumerate().take(lanes.saturating_sub(16 * q)) {
                    dw[(c + 16 * q + l) * u + u0 + k] = v;
                }
            }
        }
    }

    /// Rows of the input gradient sharing each load of W^T.
    const GRADIENT_ROWS: usize = 6;

    /// Blocks of 64 outputs of 6 rows at a time (24 chains), each load of W^T
    /// shared by the 6 rows: W^T (U x D) is read once per 6 rows rather than
    /// once per row. Leftover rows go one at a time.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dz_times_wt(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
        super::by_row_blocks(dx.len() / d, GRADIENT_ROWS, |r, whole| {
            // SAFETY: every call's rows lie below dx's.
            unsafe {
                if whole {
                    output_blocks::<GRADIENT_ROWS>(dz, wt, u, d, r, dx)
                } else {
                    output_blocks::<1>(dz, wt, u, d, r, dx)
                }
            }
        });
    }

    /// Rows r..r + R of dx, in blocks of 64 outputs (the last masked).
    /// Safety: r + R rows lie in dz (U values each) and dx (D each), wt holds U x D.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn output_blocks<const R: usize>(dz: &[f32], wt: &[f32], u: usize, d: usize, r: usize, dx: &mut [f32]) {
        let full = d - d % 64;
        // SAFETY: as the contract; each block's lanes lie below d.
        unsafe {
            for i in (0..full).step_by(64) {
                output_block::<R, 4>(dz, wt, u, d, (r, i), 64, dx);
            }
            let lanes = d - full;
            match lanes.div_ceil(16) {
                0 => {}
                1 => output_block::<R, 1>(dz, wt, u, d, (r, full), lanes, dx),
                2 => output_block::<R, 2>(dz, wt, u, d, (r, full), lanes, dx),
                3 => output_block::<R, 3>(dz, wt, u, d, (r, full), lanes, dx),
                _ => output_block::<R, 4>(dz, wt, u, d, (r, full), lanes, dx),
            }
        }
    }

    /// dx[r..r + R, i..i + lanes] in R x V registers (lanes <= 16 V), the sums
    /// over j in order. Safety: as [`output_blocks`], with i + lanes <= d.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn output_block<const R: usize, const V: usize>(
        dz: &[f32],
        wt: &[f32],
        u: usize,
        d: usize,
        (r, i): (usize, usize),
        lanes: usize,
        dx: &mut [f32],
    ) {
        let mask = |q: usize| mask_of(lanes.saturating_sub(16 * q));
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for j in 0..u {
            // SAFETY: the masks keep every lane below d: j * d + i + lane < u * d <= wt.len();
            // (r + k) * u + j < (r + R) * u <= dz.len().
            unsafe {
                let w = wt.as_ptr().add(j * d + i);
                let ws: [__m512; V] = std::array::from_fn(|q| _mm512_maskz_loadu_ps(mask(q), w.add(16 * q)));
                for (k, a) in acc.iter_mut().enumerate() {
                    let gv = _mm512_set1_ps(*dz.as_ptr().add((r + k) * u + j));
                    for (aq, &wq) in a.iter_mut().zip(&ws) {
                        *aq = _mm512_fmadd_ps(gv, wq, *aq);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            for (q, aq) in a.iter().enumerate() {
                // SAFETY: the mask keeps the store inside row r + k of dx (i + lane < d).
                unsafe { _mm512_mask_storeu_ps(dx.as_mut_ptr().add((r + k) * d + i + 16 * q), mask(q), *aq) };
            }
        }
    }

    /// The mask of the first `n` (at most 16 counted) lanes.
    #[inline(always)]
    fn mask_of(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// The first `dst.len()` (at most 16) lanes of `a`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store(a: __m512, dst: &mut [f32]) {
        assert!(dst.len() <= WIDTH);
        // SAFETY: the mask keeps the store inside `dst`.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), ((1u32 << dst.len()) - 1) as __mmask16, a) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 31 + seed * 17) % 23) as f32 / 23.0 - 0.5).collect()
    }

    #[test]
    fn simd_and_scalar_agree_exactly() {
        // Odd sizes: partial row groups, partial 32- and 64-blocks, u < WIDTH.
        for (rows, d, u) in [(7, 75, 10), (16, 40, 16), (3, 33, 1), (9, 150, 10), (21, 40, 10)] {
            let (x, w, dz) = (values(rows * d, 1), values(d * u, 2), values(rows * u, 3));
            let (mut dzp, mut wt) = (vec![0.0; rows * WIDTH], vec![0.0; u * d]);
            pad_columns(&dz, u, &mut dzp);
            crate::kernels::transpose(&w, d, u, &mut wt);

            let (mut fast, mut reference) = (vec![0.0; rows * u], vec![0.0; rows * u]);
            x_times_w(&x, &w, d, u, &mut fast);
            x_times_w_scalar(&x, &w, d, u, &mut reference);
            assert_eq!(fast, reference);
            let naive: f32 = (0..d).map(|k| x[k] * w[k * u]).sum();
            assert!((fast[0] - naive).abs() < 1e-4);

            let (mut fast, mut reference) = (vec![0.0; (d - 2) * u], vec![0.0; (d - 2) * u]);
            xt_times_dz(&x, d, 2, &dzp, u, &mut fast);
            xt_times_dz_scalar(&x, d, 2, &dzp, u, &mut reference);
            assert_eq!(fast, reference);
            let naive: f32 = (0..rows).map(|r| x[r * d + 2] * dz[r * u]).sum();
            assert!((fast[0] - naive).abs() < 1e-4);

            let (mut fast, mut reference) = (vec![0.0; rows * d], vec![0.0; rows * d]);
            dz_times_wt(&dz, &wt, u, d, &mut fast);
            dz_times_wt_scalar(&dz, &wt, u, d, &mut reference);
            assert_eq!(fast, reference);
            let naive: f32 = (0..u).map(|j| dz[j] * w[j]).sum();
            assert!((fast[0] - naive).abs() < 1e-4);

            // The AVX2 kernels too, where the dispatch above took the AVX-512 ones.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                let (mut y, mut gw, mut gx) = (vec![0.0; rows * u], vec![0.0; (d - 2) * u], vec![0.0; rows * d]);
                // SAFETY: the CPU has AVX2 and FMA; the sizes are those of the calls above.
                unsafe {
                    avx2::x_times_w(&x, &w, d, u, &mut y);
                    avx2::xt_times_dz(&x, d, 2, &dzp, u, &mut gw);
                    avx2::dz_times_wt(&dz, &wt, u, d, &mut gx);
                }
                let mut want = (vec![0.0; rows * u], vec![0.0; (d - 2) * u]);
                x_times_w_scalar(&x, &w, d, u, &mut want.0);
                xt_times_dz_scalar(&x, d, 2, &dzp, u, &mut want.1);
                assert_eq!((y, gw, &gx), (want.0, want.1, &reference));
            }
        }
    }
}
