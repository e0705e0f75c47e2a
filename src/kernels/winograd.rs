//! Winograd F(2x2, 3x3) convolutions over the padded layout of [`Wide`].
//!
//! Each 2x2 block of outputs (a tile) is computed from the 4x4 input patch
//! under it: the patch is turned into 16 values per channel (V = B^T d B),
//! the kernel once into 16 values per (channel, filter) pair (U = G g G^T),
//! and then, for each of the 16 positions of a tile, one matrix product
//! M = V . U over the channels; the 2x2 outputs are A^T M A. A tile costs
//! 16 multiply-adds per (channel, filter) pair where the direct sum costs 36
//! (2.25x fewer), plus the transforms, which cost a few additions per value.
//! The weight gradient runs the same steps backwards: the output gradient's
//! tiles are turned into 16 values per filter (A dY A^T), one product per
//! position gathers V^T . that over the tiles, and G^T (.) G turns the sums
//! into the kernel's gradient.
//!
//! The patches are read from the padded layout, whose windows start at
//! `Wide::pixel`: the same reads as the padded layout's products, and the
//! same zeros. Where an output side is odd, the last tile of each row (or
//! column) has one output too many, which is not stored (and whose gradient
//! is zero); its patch reaches one pixel further, into the next row, the next
//! sample or [`Winograd::padded_len`]'s tail (zeros). Those values reach only
//! that output: in F(2, 3) the fourth input enters only the fourth
//! transformed value, and that only the second output.
//!
//! The matrix products run through `Wide`'s pointwise products (the
//! register-blocked kernels where they apply), a block of tiles at a time, so
//! that a block's transformed values stay in cache between the steps. The
//! reference is the unfolding path, which the tests compare against (the sums
//! are taken in another order: the results agree to rounding, not bit for bit).

use super::Window;
use super::conv_wide::Wide;
use multiversion::multiversion;
use std::ops::Range;

/// Positions per transformed tile (4x4).
const POSITIONS: usize = 16;

/// Values per transform step: channels (or filters) are taken 16 at a time.
const LANES: usize = 16;

/// Transformed values a block of tiles keeps (inputs and products, 512 KiB).
const BLOCK_VALUES: usize = 1 << 17;

/// Fewest tiles per block (wide channels): enough rows for the products' register blocks.
const MIN_BLOCK: usize = 48;

/// Filters per matrix product (the register-blocked kernel's most).
const FILTER_BLOCK: usize = 64;

/// A 3x3 stride-1 convolution computed by tiles of 2x2 outputs.
#[derive(Clone, Copy, Debug)]
pub struct Winograd {
    wide: Wide,
    /// Filters.
    f: usize,
    /// Tiles per block.
    block: usize,
}

impl Winograd {
    /// The transform for `wide` with `f` filters: a 3x3 undilated window (the
    /// layout is stride 1), and channels and filters in multiples of 16.
    pub fn of(wide: &Wide, f: usize) -> Option<Winograd> {
        let g = &wide.g;
        let applies =
            (g.kh, g.kw) == (3, 3) && g.c.is_multiple_of(LANES) && f.is_multiple_of(LANES) && g.c > 0 && f > 0;
        // An odd count: the 16 matrices of a block then start in different
        // cache sets (a power-of-two stride between them would make each
        // tile's 16 stores and loads collide in the same few).
        let block = (BLOCK_VALUES / (POSITIONS * (g.c + f))).max(MIN_BLOCK) | 1;
        applies.then_some(Winograd { wide: *wide, f, block })
    }

    /// Values of the padded input of `s` samples that [`Winograd::forward`]
    /// reads: the padded layout, and with odd output sides a tail after it
    /// (its values reach only outputs that are not stored).
    pub fn padded_len(&self, s: usize) -> usize {
        let (tiles, wp) = (self.tiles(s), self.wide.row_pixels());
        if tiles == 0 {
            return self.wide.padded_len(s);
        }
        let (last, oy, ox) = tile(&self.wide.g, tiles - 1);
        self.wide.padded_len(s).max((self.wide.pixel(last, oy, ox) + 3 * wp + 4) * self.wide.g.c)
    }

    /// x: (s,H,W,C) -> xp: the padded layout and zeros in its tail (`padded_len(s)` values).
    /// (The weight gradient multiplies the tail by zeros, which only finite values keep zero.)
    pub fn pad(&self, x: &[f32], xp: &mut [f32]) {
        let s = x.len() / (self.wide.g.h * self.wide.g.w * self.wide.g.c);
        self.wide.pad(x, xp);
        xp[self.wide.padded_len(s)..self.padded_len(s)].fill(0.0);
    }

    /// Values per sample of the padded layout: sample i's padded input starts
    /// i times this after sample 0's (and is a one-sample padded input itself).
    pub fn sample_len(&self) -> usize {
        self.wide.padded_len(1) - self.wide.padded_len(0)
    }

    /// Tiles of `s` samples.
    pub fn tiles(&self, s: usize) -> usize {
        let g = &self.wide.g;
        s * g.oh.div_ceil(2) * g.ow.div_ceil(2)
    }

    /// Values of the transformed kernel: (16, C, F).
    pub fn kernel_len(&self) -> usize {
        POSITIONS * self.wide.g.c * self.f
    }

    /// Scratch values [`Winograd::forward`] needs: a block's transformed
    /// inputs (16, tiles, C) and products (16, tiles, F).
    pub fn scratch_len(&self) -> usize {
        POSITIONS * self.block * (self.wide.g.c + self.f)
    }

    /// kernel (3,3,C,F) -> u (16,C,F):  u[:, i, j] = G g G^T, g = kernel[:, :, i, j],
    ///   G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    pub fn transform_kernel(&self, kernel: &[f32], u: &mut [f32]) {
        let cf = self.wide.g.c * self.f;
        assert!(kernel.len() >= 9 * cf && u.len() >= POSITIONS * cf, "kernel too short");
        let g = |a: usize, b: usize, i: usize| kernel[(a * 3 + b) * cf + i];
        for i in 0..cf {
            // Rows: G g (4x3, by its columns b), then columns: (G g) G^T (4x4).
            let columns: [[f32; 4]; 3] = std::array::from_fn(|b| {
                let (g0, g1, g2) = (g(0, b, i), g(1, b, i), g(2, b, i));
                [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
            });
            let rows: [[f32; 3]; 4] = std::array::from_fn(|r| [columns[0][r], columns[1][r], columns[2][r]]);
            for (r, [h0, h1, h2]) in rows.into_iter().enumerate() {
                let turned = [h0, 0.5 * (h0 + h1 + h2), 0.5 * (h0 - h1 + h2), h2];
                for (q, v) in turned.into_iter().enumerate() {
                    u[(r * 4 + q) * cf + i] = v;
                }
            }
        }
    }

    // xp: the padded layout of `s` samples; u: transform_kernel's (16,C,F) ->
    // y: (s,OH,OW,F) = conv(x, kernel) (+ bias). `scratch`: scratch_len() values.
    pub fn forward(&self, xp: &[f32], u: &[f32], s: usize, bias: Option<&[f32]>, scratch: &mut [f32], y: &mut [f32]) {
        self.forward_filters(xp, u, s, 0..self.f, bias, scratch, y)
    }

    // [`Winograd::forward`] of the output channels `filters` (multiples of 16) only:
    // y (s,OH,OW,filters.len()), bias: all F values (or none).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_filters(
        &self,
        xp: &[f32],
        u: &[f32],
        s: usize,
        filters: Range<usize>,
        bias: Option<&[f32]>,
        scratch: &mut [f32],
        y: &mut [f32],
    ) {
        let (g, f, ld) = (&self.wide.g, self.f, filters.len());
        let (c, tiles) = (g.c, self.tiles(s));
        assert!(filters.end <= f && filters.start.is_multiple_of(LANES) && ld.is_multiple_of(LANES), "filter block");
        assert!(u.len() >= self.kernel_len() && y.len() >= s * g.oh * g.ow * ld, "output too short");
        assert!(scratch.len() >= self.scratch_len(), "scratch too short");
        assert!(xp.len() >= self.padded_len(s), "padded input too short");
        let bias = bias.map(|b| &b[filters.start..filters.end]);
        let (v, m) = scratch[..self.scratch_len()].split_at_mut(POSITIONS * self.block * c);
        for first in (0..tiles).step_by(self.block) {
            let t = self.block.min(tiles - first);
            let (v, m) = (&mut v[..POSITIONS * t * c], &mut m[..POSITIONS * t * ld]);
            input_tiles(&self.wide, xp, first, t, v);
            // One product per position: m[p] (t, FB) = v[p] (t, C) . u[p] (C, FB),
            // in blocks of filters, each block's (16, t, FB) together.
            let products = Wide::of(&Window::rows(t, c)).expect("a 1x1 window");
            for f0 in filters.clone().step_by(FILTER_BLOCK) {
                let fb = FILTER_BLOCK.min(filters.end - f0);
                let column = f0 - filters.start;
                let mb = &mut m[POSITIONS * t * column..][..POSITIONS * t * fb];
                for (p, mp) in mb.chunks_exact_mut(t * fb).enumerate() {
                    let (vp, up) = (&v[p * t * c..][..t * c], &u[p * c * f..][..c * f]);
                    products.forward_filters(vp, up, f, f0..f0 + fb, 0..t, mp);
                }
                output_tiles(&self.wide, mb, first, t, Columns { f0: column, fb, f: ld, bias }, y);
            }
        }
    }

    // xp: pad()'s layout of `s` samples, dz: (s,OH,OW,F) -> du (16,C,F) +=
    //   sum over tiles of v[p] (t, C)^T . dm[p] (t, F), dm = A dz A^T (the
    //   tile's 2x2 output gradient turned into 16 values, zeros for outputs
    //   past an odd side). `scratch`: scratch_len() values.
    pub fn weight_grad(&self, xp: &[f32], dz: &[f32], s: usize, scratch: &mut [f32], du: &mut [f32]) {
        let (g, f) = (&self.wide.g, self.f);
        let (c, tiles) = (g.c, self.tiles(s));
        assert!(dz.len() >= s * g.oh * g.ow * f && du.len() >= self.kernel_len(), "output gradient too short");
        assert!(scratch.len() >= self.scratch_len() && xp.len() >= self.padded_len(s), "scratch too short");
        let (v, m) = scratch[..self.scratch_len()].split_at_mut(POSITIONS * self.block * c);
        for first in (0..tiles).step_by(self.block) {
            let t = self.block.min(tiles - first);
            let (v, m) = (&mut v[..POSITIONS * t * c], &mut m[..POSITIONS * t * f]);
            input_tiles(&self.wide, xp, first, t, v);
            gradient_tiles(&self.wide, dz, first, t, f, m);
            let products = Wide::of(&Window::rows(t, c)).expect("a 1x1 window");
            for p in 0..POSITIONS {
                let (vp, mp) = (&v[p * t * c..][..t * c], &m[p * t * f..][..t * f]);
                products.weight_grad(vp, mp, f, 1, &mut du[p * c * f..][..c * f]);
            }
        }
    }

    /// du (16,C,F) -> dw (3,3,C,F) += G^T du G: the kernel's gradient from
    /// the transformed kernel's (the transpose of [`Winograd::transform_kernel`]).
    pub fn kernel_grad(&self, du: &[f32], dw: &mut [f32]) {
        let cf = self.wide.g.c * self.f;
        assert!(du.len() >= POSITIONS * cf && dw.len() >= 9 * cf, "kernel gradient too short");
        for i in 0..cf {
            let d = |r: usize, q: usize| du[(r * 4 + q) * cf + i];
            // Columns: G^T du (3x4, by its columns q), then rows: (G^T du) G (3x3).
            let columns: [[f32; 3]; 4] = std::array::from_fn(|q| {
                let (d0, d1, d2, d3) = (d(0, q), d(1, q), d(2, q), d(3, q));
                [d0 + 0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2) + d3]
            });
            for a in 0..3 {
                let [h0, h1, h2, h3] = [columns[0][a], columns[1][a], columns[2][a], columns[3][a]];
                let row = [h0 + 0.5 * (h1 + h2), 0.5 * (h1 - h2), 0.5 * (h1 + h2) + h3];
                for (b, v) in row.into_iter().enumerate() {
                    dw[(a * 3 + b) * cf + i] += v;
                }
            }
        }
    }
}

// dz (s,OH,OW,F) -> m: (16, t, F), tiles first..first + t:
//   m[:, tile, j] = A dz A^T, dz = the tile's 2x2 outputs of filter j (zeros past an odd side),
//   A = [[1, 0], [1, 1], [1, -1], [0, -1]].
fn gradient_tiles(wide: &Wide, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
    let g = &wide.g;
    let (s, ..) = tile(g, first + t - 1);
    assert!(dz.len() >= (s + 1) * g.oh * g.ow * f && m.len() >= POSITIONS * t * f, "output gradient too short");
    assert!(f.is_multiple_of(LANES), "filters in 16s");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and the lengths were checked above.
        return unsafe { avx512::gradient_tiles(wide, dz, first, t, f, m) };
    }
    gradient_tiles_reference(wide, dz, first, t, f, m)
}

/// [`gradient_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn gradient_tiles_reference(wide: &Wide, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
    let g = &wide.g;
    for i in 0..t {
        let (s, oy, ox) = tile(g, first + i);
        for j0 in (0..f).step_by(LANES) {
            // The tile's outputs, zeros past the last row and column.
            let mut d = [[0.0f32; LANES]; 4];
            for (k, d) in d.iter_mut().enumerate() {
                let (y, x) = (oy + k / 2, ox + k % 2);
                if y < g.oh && x < g.ow {
                    d.copy_from_slice(&dz[((s * g.oh + y) * g.ow + x) * f + j0..][..LANES]);
                }
            }
            // Columns (A d: 4x2), then rows (. A^T: 4x4).
            let mut ad = [[0.0f32; LANES]; 8];
            for q in 0..2 {
                for l in 0..LANES {
                    let (d0, d1) = (d[q][l], d[2 + q][l]);
                    ad[q][l] = d0;
                    ad[2 + q][l] = d0 + d1;
                    ad[4 + q][l] = d0 - d1;
                    ad[6 + q][l] = 0.0 - d1;
                }
            }
            for r in 0..4 {
                let mut out = [[0.0f32; LANES]; 4];
                for l in 0..LANES {
                    let (a0, a1) = (ad[2 * r][l], ad[2 * r + 1][l]);
                    out[0][l] = a0;
                    out[1][l] = a0 + a1;
                    out[2][l] = a0 - a1;
                    out[3][l] = 0.0 - a1;
                }
                for (q, o) in out.iter().enumerate() {
                    m[((4 * r + q) * t + i) * f + j0..][..LANES].copy_from_slice(o);
                }
            }
        }
    }
}

/// Tile i's output position: (sample, top row, left column).
fn tile(g: &Window, i: usize) -> (usize, usize, usize) {
    let (across, per_sample) = (g.ow.div_ceil(2), g.oh.div_ceil(2) * g.ow.div_ceil(2));
    let r = i % per_sample;
    (i / per_sample, 2 * (r / across), 2 * (r % across))
}

// xp: padded -> v: (16, t, C), tiles first..first + t:
//   v[:, tile, ch] = B^T d B, d = the 4x4 patch of channel ch at the tile's window,
//   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
fn input_tiles(wide: &Wide, xp: &[f32], first: usize, t: usize, v: &mut [f32]) {
    let (c, wp) = (wide.g.c, wide.row_pixels());
    let (s, oy, ox) = tile(&wide.g, first + t - 1);
    assert!(xp.len() >= (wide.pixel(s, oy, ox) + 3 * wp + 4) * c, "padded input too short");
    assert!(v.len() >= POSITIONS * t * c && c.is_multiple_of(LANES), "transformed inputs too short");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; every patch lies before the last tile's
        // end (checked above), and v holds (16, t, C).
        return unsafe { avx512::input_tiles(wide, xp, first, t, v) };
    }
    input_tiles_reference(wide, xp, first, t, v)
}

/// [`input_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn input_tiles_reference(wide: &Wide, xp: &[f32], first: usize, t: usize, v: &mut [f32]) {
    let (c, wp) = (wide.g.c, wide.row_pixels());
    for i in 0..t {
        let (s, oy, ox) = tile(&wide.g, first + i);
        let origin = wide.pixel(s, oy, ox);
        for c0 in (0..c).step_by(LANES) {
            let mut d = [[0.0f32; LANES]; POSITIONS];
            for (k, d) in d.iter_mut().enumerate() {
                d.copy_from_slice(&xp[(origin + (k / 4) * wp + k % 4) * c + c0..][..LANES]);
            }
            // Columns of the patch (B^T d), then its rows (. B).
            let mut bd = [[0.0f32; LANES]; POSITIONS];
            for q in 0..4 {
                for l in 0..LANES {
                    let (d0, d1, d2, d3) = (d[q][l], d[4 + q][l], d[8 + q][l], d[12 + q][l]);
                    bd[q][l] = d0 - d2;
                    bd[4 + q][l] = d1 + d2;
                    bd[8 + q][l] = d2 - d1;
                    bd[12 + q][l] = d1 - d3;
                }
            }
            for r in 0..4 {
                let mut out = [[0.0f32; LANES]; 4];
                for l in 0..LANES {
                    let (b0, b1, b2, b3) = (bd[4 * r][l], bd[4 * r + 1][l], bd[4 * r + 2][l], bd[4 * r + 3][l]);
                    out[0][l] = b0 - b2;
                    out[1][l] = b1 + b2;
                    out[2][l] = b2 - b1;
                    out[3][l] = b1 - b3;
                }
                for (q, o) in out.iter().enumerate() {
                    v[((4 * r + q) * t + i) * c + c0..][..LANES].copy_from_slice(o);
                }
            }
        }
    }
}

/// The block of filters [`output_tiles`] writes: columns `f0..f0 + fb` of
/// the output's `f` per position, plus `bias` (`f` values) if any.
#[derive(Clone, Copy)]
struct Columns<'a> {
    f0: usize,
    fb: usize,
    f: usize,
    bias: Option<&'a [f32]>,
}

// m: (16, t, FB), filters f0..f0 + FB -> y (s,OH,OW,F), tiles first..first + t:
//   y[2x2 outputs of the tile] = A^T m[:, tile] A (+ bias),  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
fn output_tiles(wide: &Wide, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
    let (g, Columns { f0, fb, f, bias }) = (&wide.g, cols);
    let (s, ..) = tile(g, first + t - 1);
    assert!(y.len() >= (s + 1) * g.oh * g.ow * f && f0 + fb <= f, "output too short");
    assert!(m.len() >= POSITIONS * t * fb && fb.is_multiple_of(LANES), "products too short");
    assert!(bias.is_none_or(|b| b.len() >= f), "bias too short");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and the lengths were checked above.
        return unsafe { avx512::output_tiles(wide, m, first, t, cols, y) };
    }
    output_tiles_reference(wide, m, first, t, cols, y)
}

/// [`output_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn output_tiles_reference(wide: &Wide, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
    let (g, Columns { f0, fb, f, bias }) = (&wide.g, cols);
    for i in 0..t {
        let (s, oy, ox) = tile(g, first + i);
        for j0 in (0..fb).step_by(LANES) {
            let mut mm = [[0.0f32; LANES]; POSITIONS];
            for (p, mm) in mm.iter_mut().enumerate() {
                mm.copy_from_slice(&m[(p * t + i) * fb + j0..][..LANES]);
            }
            let b: [f32; LANES] = match bias {
                Some(b) => b[f0 + j0..][..LANES].try_into().expect("16 values"),
                None => [0.0; LANES],
            };
            // Columns (A^T m: 2x4), then rows (. A: 2x2).
            let mut am = [[0.0f32; LANES]; 8];
            for q in 0..4 {
                for l in 0..LANES {
                    let (m0, m1, m2, m3) = (mm[q][l], mm[4 + q][l], mm[8 + q][l], mm[12 + q][l]);
                    am[q][l] = m0 + m1 + m2;
                    am[4 + q][l] = m1 - m2 - m3;
                }
            }
            for r in 0..2 {
                let mut out = [[0.0f32; LANES]; 2];
                for l in 0..LANES {
                    let (a0, a1, a2, a3) = (am[4 * r][l], am[4 * r + 1][l], am[4 * r + 2][l], am[4 * r + 3][l]);
                    out[0][l] = a0 + a1 + a2 + b[l];
                    out[1][l] = a1 - a2 - a3 + b[l];
                }
                if oy + r == g.oh {
                    break;
                }
                for (q, o) in out.iter().enumerate().take(g.ow - ox) {
                    let at = (s * g.oh + oy + r) * g.ow + ox + q;
                    y[at * f + f0 + j0..][..LANES].copy_from_slice(o);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Columns, LANES, POSITIONS, tile};
    use crate::kernels::conv_wide::Wide;
    use std::arch::x86_64::*;

    // input_tiles_reference's operations in the same order, 16 channels per register.
    // Safety: AVX-512F, and the lengths the caller checked.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_tiles(wide: &Wide, xp: &[f32], first: usize, t: usize, v: &mut [f32]) {
        let (c, wp) = (wide.g.c, wide.row_pixels());
        let (x, out) = (xp.as_ptr(), v.as_mut_ptr());
        for i in 0..t {
            let (s, oy, ox) = tile(&wide.g, first + i);
            let origin = wide.pixel(s, oy, ox);
            for c0 in (0..c).step_by(LANES) {
                // SAFETY: in bounds by the caller's checks.
                unsafe {
                    let d: [__m512; POSITIONS] =
                        std::array::from_fn(|k| _mm512_loadu_ps(x.add((origin + (k / 4) * wp + k % 4) * c + c0)));
                    let mut bd = [_mm512_setzero_ps(); POSITIONS];
                    for q in 0..4 {
                        let (d0, d1, d2, d3) = (d[q], d[4 + q], d[8 + q], d[12 + q]);
                        bd[q] = _mm512_sub_ps(d0, d2);
                        bd[4 + q] = _mm512_add_ps(d1, d2);
                        bd[8 + q] = _mm512_sub_ps(d2, d1);
                        bd[12 + q] = _mm512_sub_ps(d1, d3);
                    }
                    for r in 0..4 {
                        let (b0, b1, b2, b3) = (bd[4 * r], bd[4 * r + 1], bd[4 * r + 2], bd[4 * r + 3]);
                        let row = [
                            _mm512_sub_ps(b0, b2),
                            _mm512_add_ps(b1, b2),
                            _mm512_sub_ps(b2, b1),
                            _mm512_sub_ps(b1, b3),
                        ];
                        for (q, o) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(out.add(((4 * r + q) * t + i) * c + c0), o);
                        }
                    }
                }
            }
        }
    }

    // gradient_tiles_reference's operations in the same order, 16 filters per register.
    // Safety: AVX-512F, and the lengths the caller checked.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gradient_tiles(wide: &Wide, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
        let g = &wide.g;
        let (dp, out) = (dz.as_ptr(), m.as_mut_ptr());
        for i in 0..t {
            let (s, oy, ox) = tile(g, first + i);
            for j0 in (0..f).step_by(LANES) {
                // SAFETY: in bounds by the caller's checks (outputs past the sides are not read).
                unsafe {
                    let d: [__m512; 4] = std::array::from_fn(|k| {
                        let (y, x) = (oy + k / 2, ox + k % 2);
                        if y < g.oh && x < g.ow {
                            _mm512_loadu_ps(dp.add(((s * g.oh + y) * g.ow + x) * f + j0))
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    let zero = _mm512_setzero_ps();
                    let mut ad = [zero; 8];
                    for q in 0..2 {
                        let (d0, d1) = (d[q], d[2 + q]);
                        ad[q] = d0;
                        ad[2 + q] = _mm512_add_ps(d0, d1);
                        ad[4 + q] = _mm512_sub_ps(d0, d1);
                        ad[6 + q] = _mm512_sub_ps(zero, d1);
                    }
                    for r in 0..4 {
                        let (a0, a1) = (ad[2 * r], ad[2 * r + 1]);
                        let row = [a0, _mm512_add_ps(a0, a1), _mm512_sub_ps(a0, a1), _mm512_sub_ps(zero, a1)];
                        for (q, o) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(out.add(((4 * r + q) * t + i) * f + j0), o);
                        }
                    }
                }
            }
        }
    }

    // output_tiles_reference's operations in the same order, 16 filters per register.
    // Safety: AVX-512F, and the lengths the caller checked.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output_tiles(wide: &Wide, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
        let (g, Columns { f0, fb, f, bias }) = (&wide.g, cols);
        let (mp, yp) = (m.as_ptr(), y.as_mut_ptr());
        for i in 0..t {
            let (s, oy, ox) = tile(g, first + i);
            for j0 in (0..fb).step_by(LANES) {
                // SAFETY: in bounds by the caller's checks.
                unsafe {
                    let mm: [__m512; POSITIONS] =
                        std::array::from_fn(|p| _mm512_loadu_ps(mp.add((p * t + i) * fb + j0)));
                    let b = bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr().add(f0 + j0)));
                    let mut am = [_mm512_setzero_ps(); 8];
                    for q in 0..4 {
                        let (m0, m1, m2, m3) = (mm[q], mm[4 + q], mm[8 + q], mm[12 + q]);
                        am[q] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                        am[4 + q] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                    }
                    for r in 0..2.min(g.oh - oy) {
                        let (a0, a1, a2, a3) = (am[4 * r], am[4 * r + 1], am[4 * r + 2], am[4 * r + 3]);
                        let left = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), a2), b);
                        let at = (s * g.oh + oy + r) * g.ow + ox;
                        _mm512_storeu_ps(yp.add(at * f + f0 + j0), left);
                        if ox + 1 < g.ow {
                            let right = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a1, a2), a3), b);
                            _mm512_storeu_ps(yp.add((at + 1) * f + f0 + j0), right);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::im2col;
    use crate::kernels::matmul::{MatRef, matmul};

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0).collect()
    }

    // Against the unfolding reference: 'same' and 'valid' windows, one and
    // several samples, several filter blocks (F = 80: 64 + 16), blocks of tiles
    // that end inside a sample.
    #[test]
    fn winograd_matches_the_unfolding_reference() {
        for (h, w, c, f, same, s) in [
            (8, 8, 16, 16, true, 1),
            (6, 10, 32, 48, true, 3),
            (10, 8, 16, 80, false, 2),
            (32, 32, 16, 16, true, 5),
            (16, 16, 64, 64, true, 4),
            (15, 15, 32, 64, true, 3),
            (15, 15, 64, 64, false, 2),
            (7, 7, 32, 16, true, 2),
            (7, 5, 16, 32, false, 3),
        ] {
            let (pt, oh, ow) = if same { (1, h, w) } else { (0, h - 2, w - 2) };
            let g = Window { h, w, c, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt, pl: pt, oh, ow };
            let wide = Wide::of(&g).expect("stride 1");
            let wino = Winograd::of(&wide, f).expect("applies");
            let (x, kernel, bias) = (values(s * h * w * c, 1), values(9 * c * f, 2), values(f, 3));
            // The tail beyond the padded layout (odd sides) reaches only dropped outputs.
            let mut xp = vec![f32::NAN; wino.padded_len(s)];
            wide.pad(&x, &mut xp);
            let mut u = vec![0.0; wino.kernel_len()];
            wino.transform_kernel(&kernel, &mut u);
            let mut scratch = vec![0.0; wino.scratch_len()];
            let mut y = vec![f32::NAN; s * oh * ow * f];
            wino.forward(&xp, &u, s, Some(&bias), &mut scratch, &mut y);

            let (p, k) = (g.positions(), g.patch_len());
            let mut cols = vec![0.0; p * k];
            let mut want = vec![0.0; s * p * f];
            for (xs, ys) in x.chunks_exact(h * w * c).zip(want.chunks_exact_mut(p * f)) {
                im2col(&g, xs, &mut cols);
                matmul(MatRef::new(&cols, p, k), MatRef::new(&kernel, k, f), ys, false);
                ys.chunks_exact_mut(f).for_each(|o| o.iter_mut().zip(&bias).for_each(|(o, b)| *o += b));
            }
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * scale, "{h}x{w}x{c}->{f} at {i}: {a} vs {b}");
            }
        }
    }

    // The weight gradient against the unfolding reference (im2col^T . dz),
    // on even and odd output sides; the tail past an odd side starts as NaN,
    // which pad() must clear.
    #[test]
    fn winograd_weight_gradient_matches_the_unfolding_reference() {
        for (h, w, c, f, same, s) in [(8, 8, 32, 32, true, 3), (7, 9, 16, 48, true, 2), (9, 9, 32, 64, false, 2)] {
            let (pt, oh, ow) = if same { (1, h, w) } else { (0, h - 2, w - 2) };
            let g = Window { h, w, c, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt, pl: pt, oh, ow };
            let wide = Wide::of(&g).expect("stride 1");
            let wino = Winograd::of(&wide, f).expect("applies");
            let (x, dz) = (values(s * h * w * c, 8), values(s * oh * ow * f, 9));
            let mut xp = vec![f32::NAN; wino.padded_len(s)];
            wino.pad(&x, &mut xp);
            let (mut du, mut scratch) = (vec![0.0; wino.kernel_len()], vec![0.0; wino.scratch_len()]);
            wino.weight_grad(&xp, &dz, s, &mut scratch, &mut du);
            let mut dw = vec![1.0; 9 * c * f];
            wino.kernel_grad(&du, &mut dw);

            let (p, k) = (g.positions(), g.patch_len());
            let mut cols = vec![0.0; p * k];
            let mut want = vec![1.0; k * f];
            for (xs, dzs) in x.chunks_exact(h * w * c).zip(dz.chunks_exact(p * f)) {
                im2col(&g, xs, &mut cols);
                matmul(MatRef::new(&cols, p, k).t(), MatRef::new(dzs, p, f), &mut want, true);
            }
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (i, (a, b)) in dw.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * scale, "{h}x{w}x{c}->{f} at {i}: {a} vs {b}");
            }
        }
    }

    // The SIMD transforms against their plain references, bit for bit (the
    // same additions in the same order), over odd sides and partial blocks.
    #[test]
    fn simd_transforms_match_the_reference_exactly() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let g = Window { h: 7, w: 9, c: 32, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, oh: 7, ow: 9 };
            let wide = Wide::of(&g).expect("stride 1");
            let (f, s) = (48, 2);
            let wino = Winograd::of(&wide, f).expect("applies");
            let mut xp = values(wino.padded_len(s), 4);
            wide.pad(&values(s * 7 * 9 * 32, 5), &mut xp);
            let (first, t) = (3, wino.tiles(s) - 5);
            let (mut want, mut got) = (vec![0.0; POSITIONS * t * g.c], vec![1.0; POSITIONS * t * g.c]);
            input_tiles_reference(&wide, &xp, first, t, &mut want);
            // SAFETY: AVX-512F is present; the lengths are input_tiles' own checks, which pass.
            unsafe { avx512::input_tiles(&wide, &xp, first, t, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "input transform");

            let (m, bias) = (values(POSITIONS * t * 32, 6), values(f, 7));
            let (mut want, mut got) = (vec![0.0; s * 7 * 9 * f], vec![0.0; s * 7 * 9 * f]);
            let cols = Columns { f0: 16, fb: 32, f, bias: Some(&bias) };
            output_tiles_reference(&wide, &m, first, t, cols, &mut want);
            // SAFETY: as above.
            unsafe { avx512::output_tiles(&wide, &m, first, t, cols, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "output transform");
            assert!(want.iter().any(|&v| v != 0.0), "the tiles wrote outputs");

            let dz = values(s * 7 * 9 * f, 8);
            let (mut want, mut got) = (vec![0.0; POSITIONS * t * f], vec![1.0; POSITIONS * t * f]);
            gradient_tiles_reference(&wide, &dz, first, t, f, &mut want);
            // SAFETY: as above.
            unsafe { avx512::gradient_tiles(&wide, &dz, first, t, f, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "gradient transform");
        }
    }

    #[test]
    fn winograd_applies_to_3x3_windows_with_channels_in_16s() {
        let g = |h: usize, k: usize, c: usize| {
            let pt = (k - 1) / 2;
            Window { h, w: h, c, kh: k, kw: k, sh: 1, sw: 1, dh: 1, dw: 1, pt, pl: pt, oh: h, ow: h }
        };
        let of = |g: Window, f: usize| Wide::of(&g).and_then(|w| Winograd::of(&w, f)).is_some();
        assert!(of(g(8, 3, 16), 32));
        assert!(!of(g(8, 5, 16), 32), "5x5 window");
        assert!(!of(g(8, 3, 8), 32), "8 channels");
        assert!(!of(g(8, 3, 16), 24), "24 filters");
    }
}
