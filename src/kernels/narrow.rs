//! Matrix products with a narrow side: a Dense layer with few units (a
//! classifier head, 10 classes). Here a general matrix product spends its time
//! packing, and its sums are blocked by the CPU's cache sizes; these kernels
//! add in one fixed order, so results are the same on every machine (the
//! SIMD kernels give the portable reference's bits), and the reference model
//! trains bit-identically across them. The gradients' sums run sequentially
//! along the reduction; the forward product's run along the input features
//! in 16 interleaved partial sums ([`x_times_wt`]), so that its SIMD lanes
//! hold input features rather than units (which fill 10 of 16 lanes).

/// The most units these kernels take (layers with more use the general
/// matrix product), and the columns of the output gradient's padded layout
/// in the weight gradient: two AVX2 vectors.
pub const WIDTH: usize = 16;

/// a: (rows, cols) -> out: (rows, WIDTH), zeros in the padding.
pub fn pad_columns(a: &[f32], cols: usize, out: &mut [f32]) {
    super::pad_rows(a, cols, WIDTH, out);
}

/// Partial sums per (row, unit) of [`x_times_wt`]: sum l adds the input
/// features d with d % 16 == l.
const PARTIALS: usize = 16;

/// Rows whose partial sums the SIMD kernels keep while they pass over the
/// input features tile by tile.
#[cfg(target_arch = "x86_64")]
const BLOCK_ROWS: usize = 16;

/// Input features per tile: a tile of W^T (at most 16 x 512 values) stays in
/// L1 while a block's rows pass over it.
#[cfg(target_arch = "x86_64")]
const TILE: usize = 512;

// x: (R, D), wt: (u, D) (W transposed) -> y: (R, u);  y[r, j] = sum_d x[r, d] * w[d, j]:
//   p[l] = sum over d % 16 == l of x[r, d] * wt[j, d], d ascending;  y[r, j] = combine(p).
pub fn x_times_wt(x: &[f32], wt: &[f32], d: usize, u: usize, y: &mut [f32]) {
    let rows = y.len() / u;
    assert!(u <= WIDTH && x.len() >= rows * d && wt.len() >= u * d);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; sizes asserted above.
        unsafe { avx512::x_times_wt(x, wt, d, u, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; sizes asserted above.
        unsafe { avx2::x_times_wt(x, wt, d, u, y) };
        return;
    }
    x_times_wt_scalar(x, wt, d, u, y);
}

/// Portable reference version of [`x_times_wt`].
pub fn x_times_wt_scalar(x: &[f32], wt: &[f32], d: usize, u: usize, y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(u)) {
        for (j, o) in yr.iter_mut().enumerate() {
            let mut p = [0.0f32; PARTIALS];
            for (k, (&xv, &wv)) in xr.iter().zip(&wt[j * d..(j + 1) * d]).enumerate() {
                p[k % PARTIALS] = xv.mul_add(wv, p[k % PARTIALS]);
            }
            *o = combine(&p);
        }
    }
}

/// A (row, unit)'s 16 partial sums added by halves: `p[l] + p[l + 8]`, then
/// the same over the 8 sums, the 4, the 2 (the order every path follows).
fn combine(p: &[f32]) -> f32 {
    let mut p: [f32; PARTIALS] = p.try_into().expect("16 partial sums");
    let mut half = PARTIALS / 2;
    while half > 0 {
        for l in 0..half {
            p[l] += p[l + half];
        }
        half /= 2;
    }
    p[0]
}

/// Where a SIMD kernel's register block of [`x_times_wt`] lies: rows
/// r..r + R of x (the block's rows i..i + R), units j..j + U, input features
/// `features` (a tile).
#[cfg(target_arch = "x86_64")]
struct TileAt {
    r: usize,
    i: usize,
    j: usize,
    features: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
impl TileAt {
    /// Where the partial sums of the block's row i + di and unit j + dj start in `part`.
    fn sums(&self, di: usize, dj: usize) -> usize {
        ((self.i + di) * WIDTH + self.j + dj) * PARTIALS
    }

    /// The block's rows of x (D values each) and units of W^T (D each), from
    /// their first feature. Safety: rows r..r + R lie in x, units j..j + U in wt.
    unsafe fn rows<const R: usize, const U: usize>(
        &self,
        x: &[f32],
        wt: &[f32],
        d: usize,
    ) -> ([*const f32; R], [*const f32; U]) {
        // SAFETY: the contract.
        unsafe {
            (
                std::array::from_fn(|i| x.as_ptr().add((self.r + i) * d)),
                std::array::from_fn(|j| wt.as_ptr().add((self.j + j) * d)),
            )
        }
    }

    /// The features in whole steps of 16, and where they end (a last step
    /// up to the tile's end is partial).
    fn whole_steps(&self) -> (std::iter::StepBy<std::ops::Range<usize>>, usize) {
        let (start, end) = (self.features.start, self.features.end);
        let full = start + (end - start) / 16 * 16;
        ((start..full).step_by(16), full)
    }
}

/// The SIMD kernels' schedule for [`x_times_wt`]: blocks of [`BLOCK_ROWS`]
/// rows; in each, the tiles of input features in order, and in each tile
/// register blocks of `rows` rows and `units` units (one row or unit at a
/// time where fewer are left): `tile(at, whole_rows, whole_units, part)` adds
/// the tile's products to the block's partial sums `part` ((row, unit, 16),
/// zero at the block's start), which are then combined into y.
#[cfg(target_arch = "x86_64")]
fn by_tiles(
    (d, u): (usize, usize),
    (rows, units): (usize, usize),
    y: &mut [f32],
    mut tile: impl FnMut(&TileAt, bool, bool, &mut [f32]),
) {
    let mut part = [0.0f32; BLOCK_ROWS * WIDTH * PARTIALS];
    let all = y.len() / u;
    for r0 in (0..all).step_by(BLOCK_ROWS) {
        let n = (all - r0).min(BLOCK_ROWS);
        part.fill(0.0);
        for k0 in (0..d).step_by(TILE) {
            let features = k0..(k0 + TILE).min(d);
            let mut i = 0;
            while i < n {
                let whole_rows = n - i >= rows;
                let mut j = 0;
                while j < u {
                    let whole_units = u - j >= units;
                    let at = TileAt { r: r0 + i, i, j, features: features.clone() };
                    tile(&at, whole_rows, whole_units, &mut part);
                    j += if whole_units { units } else { 1 };
                }
                i += if whole_rows { rows } else { 1 };
            }
        }
        for (i, yr) in y[r0 * u..(r0 + n) * u].chunks_exact_mut(u).enumerate() {
            for (j, o) in yr.iter_mut().enumerate() {
                *o = combine(&part[(i * WIDTH + j) * PARTIALS..][..PARTIALS]);
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

/// The SIMD kernels' schedule for [`dz_times_wt`]: tiles of [`TILE`] input
/// features in order (W^T's tile stays in L1 while the rows pass over it),
/// in each blocks of `block` rows (fewer where fewer are left):
/// `each(r, rows, features)`.
#[cfg(target_arch = "x86_64")]
fn by_tiles_of_rows(rows: usize, d: usize, block: usize, mut each: impl FnMut(usize, usize, std::ops::Range<usize>)) {
    for start in (0..d).step_by(TILE) {
        let features = start..(start + TILE).min(d);
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(block);
            each(r, n, features.clone());
            r += n;
        }
    }
}

/// What the SIMD kernels of [`dz_times_wt`] read: dz (rows, u) and W^T (u, d).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct InputGrad<'a> {
    dz: &'a [f32],
    wt: &'a [f32],
    u: usize,
    d: usize,
}

/// A SIMD kernel's [`x_times_wt`]: [`by_tiles`] with its `tile::<R, U>`
/// for whole register blocks of `rows` x `units`, and single rows or units
/// where fewer are left.
#[cfg(target_arch = "x86_64")]
macro_rules! tiled_forward {
    ($tile:ident, $rows:ident, $units:ident, ($x:expr, $wt:expr, $d:expr, $u:expr), $y:expr) => {
        super::by_tiles(($d, $u), ($rows, $units), $y, |at, whole_rows, whole_units, part| {
            // SAFETY: the schedule's rows lie in x and y, its units in wt, its features below d.
            unsafe {
                match (whole_rows, whole_units) {
                    (true, true) => $tile::<$rows, $units>($x, $wt, $d, at, part),
                    (true, false) => $tile::<$rows, 1>($x, $wt, $d, at, part),
                    (false, true) => $tile::<1, $units>($x, $wt, $d, at, part),
                    (false, false) => $tile::<1, 1>($x, $wt, $d, at, part),
                }
            }
        })
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::WIDTH;
    use std::arch::x86_64::*;

    /// Rows and units of a register block of [`x_times_wt`] (2 x 2 pairs of
    /// registers of partial sums: each load of x serves two units, each of
    /// W^T two rows).
    const ROWS: usize = 2;
    const UNITS_FORWARD: usize = 2;

    /// Register blocks over tiles of input features ([`super::by_tiles`]),
    /// 16 features per step, a row's partial sums in two registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn x_times_wt(x: &[f32], wt: &[f32], d: usize, u: usize, y: &mut [f32]) {
        tiled_forward!(tile_sums, ROWS, UNITS_FORWARD, (x, wt, d, u), y);
    }

    /// Adds rows at.r..+R times units at.j..+U over the tile's features to
    /// their partial sums in `part`, in the reference's order (each partial
    /// sum along its features ascending). Safety: those rows lie in x, the
    /// units in wt (U x D), the features below d; part holds the block's sums.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_sums<const R: usize, const U: usize>(
        x: &[f32],
        wt: &[f32],
        d: usize,
        at: &super::TileAt,
        part: &mut [f32],
    ) {
        let mut acc = [[[_mm256_setzero_ps(); 2]; U]; R];
        let (steps, full) = at.whole_steps();
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let tail = at.features.end - full;
        let masks =
            [tail.min(8), tail.saturating_sub(8)].map(|n| _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane));
        // SAFETY: the contract; the masks keep the last step's loads below d.
        unsafe {
            for (i, a) in acc.iter_mut().enumerate() {
                for (j, aj) in a.iter_mut().enumerate() {
                    let p = part.as_ptr().add(at.sums(i, j));
                    *aj = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                }
            }
            let (xs, ws) = at.rows::<R, U>(x, wt, d);
            for k in steps {
                add_step(&mut acc, (&xs, &ws), |p, h| _mm256_loadu_ps(p.add(k + 8 * h)));
            }
            if tail > 0 {
                add_step(&mut acc, (&xs, &ws), |p, h| _mm256_maskload_ps(p.add(full + 8 * h), masks[h]));
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, aj) in a.iter().enumerate() {
                    let p = part.as_mut_ptr().add(at.sums(i, j));
                    _mm256_storeu_ps(p, aj[0]);
                    _mm256_storeu_ps(p.add(8), aj[1]);
                }
            }
        }
    }

    /// One step of 16 features: `load(row, h)` gives half h (8 values) of
    /// the step's features of a row of x or W^T.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn add_step<const R: usize, const U: usize>(
        acc: &mut [[[__m256; 2]; U]; R],
        (xs, ws): (&[*const f32; R], &[*const f32; U]),
        load: impl Fn(*const f32, usize) -> __m256,
    ) {
        let xv: [[__m256; 2]; R] = std::array::from_fn(|i| [load(xs[i], 0), load(xs[i], 1)]);
        for (j, &w) in ws.iter().enumerate() {
            let wv = [load(w, 0), load(w, 1)];
            for (a, xr) in acc.iter_mut().zip(&xv) {
                a[j][0] = _mm256_fmadd_ps(xr[0], wv[0], a[j][0]);
                a[j][1] = _mm256_fmadd_ps(xr[1], wv[1], a[j][1]);
            }
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
    /// of W^T, over tiles of input features ([`super::by_tiles_of_rows`]);
    /// the outputs past a tile's last whole block one by one.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dz_times_wt(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
        let g = super::InputGrad { dz, wt, u, d };
        super::by_tiles_of_rows(dx.len() / d, d, GRADIENT_ROWS, |r, rows, features| {
            // SAFETY: every call's rows lie below dx's, its features below d.
            unsafe {
                if rows == GRADIENT_ROWS {
                    output_blocks::<GRADIENT_ROWS>(g, r, features, dx)
                } else {
                    output_blocks::<1>(g, r, features, dx)
                }
            }
        });
    }

    /// Rows r..r + R of dx over `features`. Safety: r + R rows lie in dz (U
    /// values each) and dx (D each), wt holds U x D, the features lie below d.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn output_blocks<const R: usize>(
        g: super::InputGrad,
        r: usize,
        features: std::ops::Range<usize>,
        dx: &mut [f32],
    ) {
        let super::InputGrad { dz, wt, u, d } = g;
        let full = features.start + (features.end - features.start) / 32 * 32;
        for i in (features.start..full).step_by(32) {
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
            let out = &mut dx[(r + k) * d..(r + k + 1) * d];
            for (o, i) in out[full..features.end].iter_mut().zip(full..) {
                let mut acc = 0.0f32;
                for (j, &gj) in g.iter().enumerate() {
                    acc = gj.mul_add(wt[j * d + i], acc);
                }
                *o = acc;
            }
        }
    }
}

/// The kernels in registers of 16, each load shared by more sums: x . W with
/// 16 input features per register, 4 rows x 5 units at a time; the weight gradient with 32 input features
/// per register pair, for 10 units at a time; the input gradient with 6 rows
/// per load of W^T. Every sum runs in the reference's order, so every path
/// gives the scalar reference's bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::WIDTH;
    use std::arch::x86_64::*;

    /// Rows and units of a register block of [`x_times_wt`] (20 registers of
    /// partial sums: each load of x serves 5 units, each of W^T 4 rows).
    const ROWS: usize = 4;
    const UNITS_FORWARD: usize = 5;

    /// Register blocks over tiles of input features ([`super::by_tiles`]),
    /// 16 features per step.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn x_times_wt(x: &[f32], wt: &[f32], d: usize, u: usize, y: &mut [f32]) {
        tiled_forward!(tile_sums, ROWS, UNITS_FORWARD, (x, wt, d, u), y);
    }

    /// `avx2::tile_sums` in registers of 16.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_sums<const R: usize, const U: usize>(
        x: &[f32],
        wt: &[f32],
        d: usize,
        at: &super::TileAt,
        part: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_ps(); U]; R];
        let (steps, full) = at.whole_steps();
        let end = at.features.end;
        // SAFETY: the contract; the mask keeps the last step's loads below d.
        unsafe {
            for (i, a) in acc.iter_mut().enumerate() {
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm512_loadu_ps(part.as_ptr().add(at.sums(i, j)));
                }
            }
            let (xs, ws) = at.rows::<R, U>(x, wt, d);
            for k in steps {
                add_step(&mut acc, (&xs, &ws), |p| _mm512_loadu_ps(p.add(k)));
            }
            if full < end {
                let m = mask_of(end - full);
                add_step(&mut acc, (&xs, &ws), |p| _mm512_maskz_loadu_ps(m, p.add(full)));
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, &aj) in a.iter().enumerate() {
                    _mm512_storeu_ps(part.as_mut_ptr().add(at.sums(i, j)), aj);
                }
            }
        }
    }

    /// One step of 16 features: `load(row)` gives the step's features of a
    /// row of x or W^T.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn add_step<const R: usize, const U: usize>(
        acc: &mut [[__m512; U]; R],
        (xs, ws): (&[*const f32; R], &[*const f32; U]),
        load: impl Fn(*const f32) -> __m512,
    ) {
        let xv: [__m512; R] = std::array::from_fn(|i| load(xs[i]));
        for (j, &w) in ws.iter().enumerate() {
            let wv = load(w);
            for (a, &xr) in acc.iter_mut().zip(&xv) {
                a[j] = _mm512_fmadd_ps(xr, wv, a[j]);
            }
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

    /// Blocks of 64 outputs of 6 rows at a time (24 chains) sharing each load
    /// of W^T, over tiles of input features ([`super::by_tiles_of_rows`]);
    /// fewer rows where fewer are left.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dz_times_wt(dz: &[f32], wt: &[f32], u: usize, d: usize, dx: &mut [f32]) {
        let g = super::InputGrad { dz, wt, u, d };
        super::by_tiles_of_rows(dx.len() / d, d, GRADIENT_ROWS, |r, rows, features| {
            // SAFETY: every call's rows lie below dx's, its features below d.
            unsafe {
                match rows {
                    GRADIENT_ROWS => output_blocks::<GRADIENT_ROWS>(g, r, features, dx),
                    5 => output_blocks::<5>(g, r, features, dx),
                    4 => output_blocks::<4>(g, r, features, dx),
                    3 => output_blocks::<3>(g, r, features, dx),
                    2 => output_blocks::<2>(g, r, features, dx),
                    _ => output_blocks::<1>(g, r, features, dx),
                }
            }
        });
    }

    /// Rows r..r + R of dx over `features`, in blocks of 64 outputs (the last
    /// masked). Safety: r + R rows lie in dz (U values each) and dx (D each),
    /// wt holds U x D, the features lie below d.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn output_blocks<const R: usize>(
        g: super::InputGrad,
        r: usize,
        features: std::ops::Range<usize>,
        dx: &mut [f32],
    ) {
        let full = features.start + (features.end - features.start) / 64 * 64;
        // SAFETY: as the contract; each block's lanes lie below the features' end.
        unsafe {
            for i in (features.start..full).step_by(64) {
                output_block::<R, 4>(g, (r, i), 64, dx);
            }
            let lanes = features.end - full;
            match lanes.div_ceil(16) {
                0 => {}
                1 => output_block::<R, 1>(g, (r, full), lanes, dx),
                2 => output_block::<R, 2>(g, (r, full), lanes, dx),
                3 => output_block::<R, 3>(g, (r, full), lanes, dx),
                _ => output_block::<R, 4>(g, (r, full), lanes, dx),
            }
        }
    }

    /// dx[r..r + R, i..i + lanes] in R x V registers (lanes <= 16 V), the sums
    /// over j in order. Safety: as [`output_blocks`], with i + lanes <= d.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn output_block<const R: usize, const V: usize>(
        g: super::InputGrad,
        (r, i): (usize, usize),
        lanes: usize,
        dx: &mut [f32],
    ) {
        let super::InputGrad { dz, wt, u, d } = g;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 31 + seed * 17) % 23) as f32 / 23.0 - 0.5).collect()
    }

    #[test]
    fn simd_and_scalar_agree_exactly() {
        // Odd sizes: partial row groups (each size the AVX-512 input gradient
        // takes), partial 32- and 64-blocks, u < WIDTH;
        // the forward product over several tiles of features, a last partial
        // one, several blocks of rows, units past the last whole group.
        let sizes = [
            (7, 75, 10),
            (16, 40, 16),
            (3, 33, 1),
            (9, 150, 10),
            (21, 40, 10),
            (37, 1100, 10),
            (5, 530, 13),
            (8, 600, 10),
        ];
        for (rows, d, u) in sizes {
            let (x, w, dz) = (values(rows * d, 1), values(d * u, 2), values(rows * u, 3));
            let (mut dzp, mut wt) = (vec![0.0; rows * WIDTH], vec![0.0; u * d]);
            pad_columns(&dz, u, &mut dzp);
            crate::kernels::transpose(&w, d, u, &mut wt);

            let (mut fast, mut reference) = (vec![0.0; rows * u], vec![0.0; rows * u]);
            x_times_wt(&x, &wt, d, u, &mut fast);
            x_times_wt_scalar(&x, &wt, d, u, &mut reference);
            assert_eq!(fast, reference);
            for (r, j) in [(0, 0), (rows - 1, u - 1)] {
                let terms = (0..d).map(|k| x[r * d + k] as f64 * w[k * u + j] as f64);
                let (naive, size): (f64, f64) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                let got = fast[r * u + j] as f64;
                assert!((got - naive).abs() <= 1e-6 * size, "row {r} unit {j}: {got} against {naive}");
            }

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
                    avx2::x_times_wt(&x, &wt, d, u, &mut y);
                    avx2::xt_times_dz(&x, d, 2, &dzp, u, &mut gw);
                    avx2::dz_times_wt(&dz, &wt, u, d, &mut gx);
                }
                let mut want = (vec![0.0; rows * u], vec![0.0; (d - 2) * u]);
                x_times_wt_scalar(&x, &wt, d, u, &mut want.0);
                xt_times_dz_scalar(&x, d, 2, &dzp, u, &mut want.1);
                assert_eq!((y, gw, &gx), (want.0, want.1, &reference));
            }
        }
    }
}
