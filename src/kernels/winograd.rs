//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions (stride 1, any padding).
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
//! F(4x4, 3x3) does the same with 6x6 patches, 36 values per channel, for
//! 4x4 outputs: 36 multiply-adds per (channel, filter) pair for 16 outputs
//! (4x fewer than the direct sum, 1.78x fewer than F(2x2)). Its transforms
//! carry constants up to 8 and down to 1/24, which round more: results agree
//! with the direct sum to about 1e-4 of the largest value over hundreds of
//! channels, where F(2x2)'s agree to 1e-5.
//!
//! The patches are read from the input itself (`Patch`): a pixel outside
//! it (the padding) reads as zero. Where an output side is odd (in F(4x4):
//! not a multiple of 4), the last tile of each row (or column) has outputs too
//! many, which are not stored (and whose gradients are zero); its patch
//! reaches as many pixels past the input's side, which read as zeros too. (An
//! earlier build copied each group of samples into [`Wide`]'s zero-padded
//! layout first: that copy was 8% of ResNet-20's training step; read in
//! place, with the rows the next row of tiles reads asked for ahead, the
//! step is about 5% faster.)
//!
//! The matrix products run through `Wide`'s pointwise products (the
//! register-blocked kernels where they apply), or at inference, where the
//! transformed kernel is kept packed ([`Transformed::Packed`]), through the
//! packed product (ResNet-50 about 8% faster at batch 1, where its 14x14
//! stage's products stream 4 MiB of transformed kernel per layer with the
//! next block fetched ahead, and 6% at batch 32), a block of tiles at a
//! time, so that a block's transformed values stay in cache between the steps. The
//! reference is the unfolding path, which the tests compare against (the sums
//! are taken in another order: the results agree to rounding, not bit for bit).

use super::conv_wide::Wide;
use super::matmul::MatRef;
use super::packed::{self, PANEL, Packed, matmul_packed, packed_len};
use super::{Isa, Window, add_rows};
use multiversion::multiversion;
use std::ops::Range;

/// Positions per transformed tile of F(2x2, 3x3) (4x4).
const POSITIONS: usize = 16;

/// Positions per transformed tile of F(4x4, 3x3) (6x6).
const POSITIONS4: usize = 36;

/// Values per transform step: channels (or filters) are taken 16 at a time.
const LANES: usize = 16;

/// Transformed values a block of tiles keeps (inputs and products, 512 KiB).
const BLOCK_VALUES: usize = 1 << 17;

/// Fewest tiles per block (wide channels): enough rows for the products' register blocks.
const MIN_BLOCK: usize = 48;

/// Filters per matrix product (the register-blocked kernel's most).
const FILTER_BLOCK: usize = 64;

/// The transformed kernel as the tiles' products read it: (positions, C, F)
/// row-major (the register-blocked kernel's), or each position's (C, F)
/// packed ([`packed`]: inference, where the kernel is kept).
#[derive(Clone, Copy)]
pub enum Transformed<'a> {
    Rows(&'a [f32]),
    Packed(&'a [f32]),
}

impl<'a> From<&'a [f32]> for Transformed<'a> {
    fn from(u: &'a [f32]) -> Self {
        Transformed::Rows(u)
    }
}

/// A 3x3 stride-1 convolution computed by tiles of 2x2 (or 4x4) outputs.
#[derive(Clone, Copy, Debug)]
pub struct Winograd {
    /// The convolution's geometry (stride 1: [`Wide::of`]'s).
    g: Window,
    /// Filters.
    f: usize,
    /// Outputs per tile side: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)).
    m: usize,
    /// Tiles per block.
    block: usize,
}

impl Winograd {
    /// The transform for `wide` with `f` filters: a 3x3 undilated window (the
    /// layout is stride 1), and channels and filters in multiples of 16.
    pub fn of(wide: &Wide, f: usize) -> Option<Winograd> {
        Self::with_tiles(wide, f, 2)
    }

    /// [`Winograd::of`] with tiles of `m` x `m` outputs (2 or 4).
    pub fn with_tiles(wide: &Wide, f: usize, m: usize) -> Option<Winograd> {
        let g = &wide.g;
        let applies = (g.kh, g.kw) == (3, 3)
            && g.c.is_multiple_of(LANES)
            && f.is_multiple_of(LANES)
            && g.c > 0
            && f > 0
            && matches!(m, 2 | 4);
        // An odd count: the matrices of a block then start in different
        // cache sets (a power-of-two stride between them would make each
        // tile's stores and loads collide in the same few).
        let block = (BLOCK_VALUES / ((m + 2) * (m + 2) * (g.c + f))).max(MIN_BLOCK) | 1;
        applies.then_some(Winograd { g: *g, f, m, block })
    }

    /// Outputs per tile side: 2 or 4.
    pub fn tile_side(&self) -> usize {
        self.m
    }

    /// Transformed values per tile and channel: (m + 2)^2.
    fn positions(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Values per input sample (H,W,C): the tiles read the input itself,
    /// zeros outside it ([`Patch`]).
    fn input_len(&self) -> usize {
        self.g.h * self.g.w * self.g.c
    }

    /// Tiles of `s` samples.
    pub fn tiles(&self, s: usize) -> usize {
        let g = &self.g;
        s * g.oh.div_ceil(self.m) * g.ow.div_ceil(self.m)
    }

    /// Values of the transformed kernel: (positions, C, F).
    pub fn kernel_len(&self) -> usize {
        self.positions() * self.g.c * self.f
    }

    /// Scratch values [`Winograd::forward`] needs: a block's transformed
    /// inputs (16, tiles, C) and products (16, tiles, F).
    pub fn scratch_len(&self) -> usize {
        self.positions() * self.block * (self.g.c + self.f)
    }

    /// kernel (3,3,C,F) -> u (16,C,F):  u[:, i, j] = G g G^T, g = kernel[:, :, i, j],
    ///   G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    /// With 4x4 tiles: u (36,C,F), G = [[1/4, 0, 0], [-1/6, -1/6, -1/6],
    ///   [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]].
    pub fn transform_kernel(&self, kernel: &[f32], u: &mut [f32]) {
        let cf = self.g.c * self.f;
        assert!(kernel.len() >= 9 * cf && u.len() >= self.positions() * cf, "kernel too short");
        if self.m == 4 {
            return transform_kernel4(kernel, cf, u);
        }
        transform_kernel2(kernel, cf, u);
    }

    /// Values of the transformed kernel packed: each position's (C, F) by
    /// [`packed::pack`].
    pub fn packed_kernel_len(&self) -> usize {
        self.positions() * packed_len(self.g.c, self.f)
    }

    /// kernel (3,3,C,F) -> u: [`Winograd::transform_kernel`]'s, each
    /// position's (C, F) packed ([`Winograd::packed_kernel_len`] values).
    pub fn transform_kernel_packed(&self, kernel: &[f32], u: &mut [f32]) {
        let (c, f) = (self.g.c, self.f);
        let mut rows = vec![0.0; self.kernel_len()];
        self.transform_kernel(kernel, &mut rows);
        let len = packed_len(c, f);
        for (up, rp) in u[..self.packed_kernel_len()].chunks_exact_mut(len).zip(rows.chunks_exact(c * f)) {
            packed::pack(rp, c, f, up);
        }
    }

    // x: (s,H,W,C), u: transform_kernel's (16,C,F) ->
    // y: (s,OH,OW,F) = conv(x, kernel) (+ bias). `scratch`: scratch_len() values.
    pub fn forward(
        &self,
        x: &[f32],
        u: Transformed,
        s: usize,
        bias: Option<&[f32]>,
        scratch: &mut [f32],
        y: &mut [f32],
    ) {
        self.forward_filters(x, u, s, 0..self.f, bias, scratch, y)
    }

    // [`Winograd::forward`] added into y: y (s,OH,OW,F) += conv(x, kernel)
    // (an input gradient into one that another reader's already holds).
    pub fn forward_adding(&self, x: &[f32], u: Transformed, s: usize, scratch: &mut [f32], y: &mut [f32]) {
        let g = &self.g;
        assert!(y.len() >= s * g.oh * g.ow * self.f, "output too short");
        assert!(x.len() >= s * self.input_len(), "input too short");
        let epilogue = Epilogue { bias: None, add: true };
        self.forward_tiles(x, u, 0..self.tiles(s), 0, 0..self.f, epilogue, scratch, y)
    }

    // [`Winograd::forward`] of the output channels `filters` (multiples of 16) only:
    // y (s,OH,OW,filters.len()), bias: all F values (or none).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_filters(
        &self,
        x: &[f32],
        u: Transformed,
        s: usize,
        filters: Range<usize>,
        bias: Option<&[f32]>,
        scratch: &mut [f32],
        y: &mut [f32],
    ) {
        let g = &self.g;
        assert!(y.len() >= s * g.oh * g.ow * filters.len(), "output too short");
        assert!(x.len() >= s * self.input_len(), "input too short");
        self.forward_tiles(x, u, 0..self.tiles(s), 0, filters, Epilogue { bias, add: false }, scratch, y)
    }

    // [`Winograd::forward`] of one sample's rows of tiles `rows` only:
    // y (OH,OW,F) from output row rows.start * m on (the tiles' outputs).
    pub fn forward_rows(
        &self,
        x: &[f32],
        u: Transformed,
        rows: Range<usize>,
        bias: Option<&[f32]>,
        scratch: &mut [f32],
        y: &mut [f32],
    ) {
        assert!(x.len() >= self.input_len(), "input too short");
        let across = self.g.ow.div_ceil(self.m);
        let tiles = rows.start * across..(rows.end * across).min(self.tiles(1));
        self.forward_tiles(x, u, tiles, rows.start * self.m, 0..self.f, Epilogue { bias, add: false }, scratch, y)
    }

    // Tiles `tiles` of the output channels `filters` into y, which starts at output row `row0`.
    #[allow(clippy::too_many_arguments)]
    fn forward_tiles(
        &self,
        x: &[f32],
        u: Transformed,
        tiles: Range<usize>,
        row0: usize,
        filters: Range<usize>,
        Epilogue { bias, add }: Epilogue,
        scratch: &mut [f32],
        y: &mut [f32],
    ) {
        let (g, f, ld) = (&self.g, self.f, filters.len());
        let c = g.c;
        assert!(filters.end <= f && filters.start.is_multiple_of(LANES) && ld.is_multiple_of(LANES), "filter block");
        match u {
            Transformed::Rows(u) => assert!(u.len() >= self.kernel_len(), "transformed kernel too short"),
            Transformed::Packed(u) => {
                assert!(u.len() >= self.packed_kernel_len(), "transformed kernel too short");
                assert!(filters.start.is_multiple_of(PANEL), "packed filter blocks start at a panel");
            }
        }
        assert!(scratch.len() >= self.scratch_len(), "scratch too short");
        let bias = bias.map(|b| &b[filters.start..filters.end]);
        let positions = self.positions();
        let (v, m) = scratch[..self.scratch_len()].split_at_mut(positions * self.block * c);
        for first in tiles.clone().step_by(self.block) {
            let t = self.block.min(tiles.end - first);
            let (v, m) = (&mut v[..positions * t * c], &mut m[..positions * t * ld]);
            input_tiles(&self.g, self.m, x, first, t, v);
            // One product per position: m[p] (t, FB) = v[p] (t, C) . u[p] (C, FB),
            // in blocks of filters, each block's (16, t, FB) together.
            let products = Wide::of(&Window::rows(t, c)).expect("a 1x1 window");
            for f0 in filters.clone().step_by(FILTER_BLOCK) {
                let fb = FILTER_BLOCK.min(filters.end - f0);
                let column = f0 - filters.start;
                let mb = &mut m[positions * t * column..][..positions * t * fb];
                for (p, mp) in mb.chunks_exact_mut(t * fb).enumerate() {
                    let vp = &v[p * t * c..][..t * c];
                    match u {
                        Transformed::Rows(u) => {
                            products.forward_filters(vp, &u[p * c * f..][..c * f], f, f0..f0 + fb, 0..t, mp)
                        }
                        Transformed::Packed(u) => {
                            let up = Packed::new(&u[p * packed_len(c, f)..], c, f);
                            matmul_packed(MatRef::new(vp, t, c), up, 0..c, f0..f0 + fb, mp, fb, false);
                        }
                    }
                }
                let cols = Columns { f0: column, fb, f: ld, bias, add, row0 };
                output_tiles(&self.g, self.m, mb, first, t, cols, y);
            }
        }
    }

    // x: (s,H,W,C), dz: (s,OH,OW,F) -> du (16,C,F) +=
    //   sum over tiles of v[p] (t, C)^T . dm[p] (t, F), dm = A dz A^T (the
    //   tile's 2x2 output gradient turned into 16 values, zeros for outputs
    //   past an odd side). `scratch`: scratch_len() values. With `db` (F),
    //   also db += the sum of dz over the samples: the sum of dm at the
    //   position where both of A's rows are all ones (each tile's outputs
    //   summed), read from the tiles rather than from dz again.
    pub fn weight_grad(
        &self,
        x: &[f32],
        dz: &[f32],
        s: usize,
        scratch: &mut [f32],
        du: &mut [f32],
        mut db: Option<&mut [f32]>,
    ) {
        let (g, f) = (&self.g, self.f);
        let (c, tiles) = (g.c, self.tiles(s));
        assert!(dz.len() >= s * g.oh * g.ow * f && du.len() >= self.kernel_len(), "output gradient too short");
        assert!(x.len() >= s * self.input_len(), "input too short");
        assert!(scratch.len() >= self.scratch_len(), "scratch too short");
        let positions = self.positions();
        let (v, m) = scratch[..self.scratch_len()].split_at_mut(positions * self.block * c);
        for first in (0..tiles).step_by(self.block) {
            let t = self.block.min(tiles - first);
            let (v, m) = (&mut v[..positions * t * c], &mut m[..positions * t * f]);
            input_tiles(&self.g, self.m, x, first, t, v);
            gradient_tiles(&self.g, self.m, dz, first, t, f, m);
            if let Some(db) = db.as_deref_mut() {
                // Row and column 1 of A: (1, 1) for 2x2 tiles, (1, 1, 1, 1) for 4x4.
                let sums = (self.m + 2) + 1;
                add_rows(&m[sums * t * f..][..t * f], f, db);
            }
            let products = Wide::of(&Window::rows(t, c)).expect("a 1x1 window");
            for p in 0..positions {
                let (vp, mp) = (&v[p * t * c..][..t * c], &m[p * t * f..][..t * f]);
                products.weight_grad(vp, mp, f, 1, &mut du[p * c * f..][..c * f]);
            }
        }
    }

    /// du (16,C,F) -> dw (3,3,C,F) += G^T du G: the kernel's gradient from
    /// the transformed kernel's (the transpose of [`Winograd::transform_kernel`]).
    pub fn kernel_grad(&self, du: &[f32], dw: &mut [f32]) {
        let cf = self.g.c * self.f;
        assert!(du.len() >= self.positions() * cf && dw.len() >= 9 * cf, "kernel gradient too short");
        if self.m == 4 {
            return kernel_grad4(du, cf, dw);
        }
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

// dz (s,OH,OW,F) -> m: ((k + 2)^2, t, F), tiles of k x k outputs first..first + t:
//   m[:, tile, j] = A dz A^T, dz = the tile's outputs of filter j (zeros past a side);
//   for k = 2, A = [[1, 0], [1, 1], [1, -1], [0, -1]] (k = 4: the transpose of [`output6`]'s).
fn gradient_tiles(g: &Window, k: usize, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
    let (s, ..) = tile(g, k, first + t - 1);
    assert!(dz.len() >= (s + 1) * g.oh * g.ow * f && m.len() >= (k + 2) * (k + 2) * t * f, "output gradient too short");
    assert!(f.is_multiple_of(LANES), "filters in 16s");
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd_sets().next() {
        // SAFETY: the CPU has the set, and the lengths were checked above.
        return unsafe {
            match k {
                4 => (simd.gradient_tiles4)(g, dz, first, t, f, m),
                _ => (simd.gradient_tiles)(g, dz, first, t, f, m),
            }
        };
    }
    match k {
        4 => gradient_tiles4_lanes(g, dz, first, t, f, m),
        _ => gradient_tiles_reference(g, dz, first, t, f, m),
    }
}

/// [`gradient_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn gradient_tiles_reference(g: &Window, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
    for i in 0..t {
        let (s, oy, ox) = tile(g, 2, first + i);
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

/// Tile i's output position, for tiles of m x m outputs: (sample, top row, left column).
fn tile(g: &Window, m: usize, i: usize) -> (usize, usize, usize) {
    let (across, per_sample) = (g.ow.div_ceil(m), g.oh.div_ceil(m) * g.ow.div_ceil(m));
    let r = i % per_sample;
    (i / per_sample, m * (r / across), m * (r % across))
}

/// Tiles first..first + t of k x k outputs, in order, as [`tile`] gives
/// each, stepping from one to the next rather than dividing for each.
fn tiles(g: &Window, k: usize, first: usize, t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (right, bottom) = (k * g.ow.div_ceil(k), k * g.oh.div_ceil(k));
    let mut next = tile(g, k, first);
    (0..t).map(move |_| {
        let here = next;
        let (s, oy, ox) = here;
        next = match (ox + k < right, oy + k < bottom) {
            (true, _) => (s, oy, ox + k),
            (false, true) => (s, oy + k, 0),
            (false, false) => (s + 1, 0, 0),
        };
        here
    })
}

/// Where the (k + 2)^2 patch under a tile of k x k outputs lies in the input
/// x (s,H,W,C): its pixel (r, q) is input pixel (oy + r - PT, ox + q - PL) of
/// the tile's sample, and reads as zeros outside the input (the padding, and
/// past the sides, where the tile's outputs are not stored).
#[derive(Clone, Copy)]
struct Patch {
    /// Value offset of the sample in x.
    sample: usize,
    /// The patch's top row and left column in the sample (wrapped below zero).
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Patch {
    /// The patch of tile `i` (over the samples) of k x k outputs.
    fn of(g: &Window, k: usize, i: usize) -> Patch {
        Patch::under(g, tile(g, k, i))
    }

    /// The patch under the tile at (sample, top row, left column) of the output.
    #[inline(always)]
    fn under(g: &Window, (s, oy, ox): (usize, usize, usize)) -> Patch {
        let (top, left) = (oy.wrapping_sub(g.pt), ox.wrapping_sub(g.pl));
        Patch { sample: s * g.h * g.w * g.c, top, left, h: g.h, w: g.w, c: g.c }
    }

    /// The offset in x of pixel (0, 0)'s channels where the whole k x k patch
    /// (k = 6: F(4x4)'s) lies inside the input, None where any of it is outside.
    #[inline(always)]
    fn inside(&self) -> Option<usize> {
        const SIDE: usize = 6;
        let fits = |first: usize, side: usize| side.checked_sub(SIDE).is_some_and(|last| first <= last);
        (fits(self.top, self.h) && fits(self.left, self.w))
            .then(|| self.sample + (self.top * self.w + self.left) * self.c)
    }

    /// The offset in x of pixel (r, q)'s channels, None where it lies outside the input.
    #[inline(always)]
    fn at(&self, r: usize, q: usize) -> Option<usize> {
        let (y, x) = (self.top.wrapping_add(r), self.left.wrapping_add(q));
        (y < self.h && x < self.w).then(|| self.sample + (y * self.w + x) * self.c)
    }
}

// x: (s,H,W,C) -> v: ((k + 2)^2, t, C), tiles of k x k outputs first..first + t:
//   v[:, tile, ch] = B^T d B, d = the (k + 2)^2 patch of channel ch under the tile ([`Patch`]);
//   for k = 2, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] (k = 4: [`input6`]'s).
fn input_tiles(g: &Window, k: usize, x: &[f32], first: usize, t: usize, v: &mut [f32]) {
    let c = g.c;
    let (s, ..) = tile(g, k, first + t - 1);
    assert!(x.len() >= (s + 1) * g.h * g.w * c, "input too short");
    assert!(v.len() >= (k + 2) * (k + 2) * t * c && c.is_multiple_of(LANES), "transformed inputs too short");
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd_sets().next() {
        // SAFETY: the CPU has the set; every patch's pixels inside the input
        // lie in x (checked above), and v holds ((k + 2)^2, t, C).
        return unsafe {
            match k {
                4 => (simd.input_tiles4)(g, x, first, t, v),
                _ => (simd.input_tiles)(g, x, first, t, v),
            }
        };
    }
    match k {
        4 => input_tiles4_lanes(g, x, first, t, v),
        _ => input_tiles_reference(g, x, first, t, v),
    }
}

/// [`input_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn input_tiles_reference(g: &Window, x: &[f32], first: usize, t: usize, v: &mut [f32]) {
    let c = g.c;
    for i in 0..t {
        let patch = Patch::of(g, 2, first + i);
        for c0 in (0..c).step_by(LANES) {
            let mut d = [[0.0f32; LANES]; POSITIONS];
            for (k, d) in d.iter_mut().enumerate() {
                if let Some(at) = patch.at(k / 4, k % 4) {
                    d.copy_from_slice(&x[at + c0..][..LANES]);
                }
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

/// What the output transform adds to each output: `bias` (F values) if any,
/// and with `add` the value y holds (y += the convolution).
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    add: bool,
}

/// The block of filters [`output_tiles`] writes: columns `f0..f0 + fb` of
/// the output's `f` per position, plus `bias` (`f` values) if any, added to
/// y's values with `add`.
#[derive(Clone, Copy)]
struct Columns<'a> {
    f0: usize,
    fb: usize,
    f: usize,
    bias: Option<&'a [f32]>,
    add: bool,
    /// Output rows (over the samples) before y's first.
    row0: usize,
}

// m: ((k + 2)^2, t, FB), filters f0..f0 + FB -> y (s,OH,OW,F), tiles of k x k outputs first..first + t:
//   y[the tile's outputs] = A^T m[:, tile] A (+ bias) (+ y with `add`), those past a side not stored;
//   for k = 2, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] (k = 4: [`output6`]'s).
fn output_tiles(g: &Window, k: usize, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
    let (g, Columns { f0, fb, f, bias, row0, .. }) = (g, cols);
    let ((s0, oy0, _), (s, oy, _)) = (tile(g, k, first), tile(g, k, first + t - 1));
    assert!(row0 <= s0 * g.oh + oy0, "output rows before y's first");
    let end = s * g.oh + (oy + k).min(g.oh);
    assert!(y.len() >= (end - row0) * g.ow * f && f0 + fb <= f, "output too short");
    assert!(m.len() >= (k + 2) * (k + 2) * t * fb && fb.is_multiple_of(LANES), "products too short");
    assert!(bias.is_none_or(|b| b.len() >= f), "bias too short");
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd_sets().next() {
        // SAFETY: the CPU has the set, and the lengths were checked above.
        return unsafe {
            match k {
                4 => (simd.output_tiles4)(g, m, first, t, cols, y),
                _ => (simd.output_tiles)(g, m, first, t, cols, y),
            }
        };
    }
    match k {
        4 => output_tiles4_lanes(g, m, first, t, cols, y),
        _ => output_tiles_reference(g, m, first, t, cols, y),
    }
}

/// [`output_tiles`] in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn output_tiles_reference(g: &Window, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
    let (g, Columns { f0, fb, f, bias, add, row0 }) = (g, cols);
    for i in 0..t {
        let (s, oy, ox) = tile(g, 2, first + i);
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
                    let at = (s * g.oh + oy + r - row0) * g.ow + ox + q;
                    let y = &mut y[at * f + f0 + j0..][..LANES];
                    if add {
                        y.iter_mut().zip(o).for_each(|(y, &o)| *y += o);
                    } else {
                        y.copy_from_slice(o);
                    }
                }
            }
        }
    }
}

/// The SIMD transforms, written once for a module that defines the vector
/// type `V`, its width `STEP` (channels or filters per register) and the
/// operations on it (`vadd`, `vsub`, `vmul`, `vfmadd`, `vfnmadd`, `vset1`,
/// `vzero`, `vload`, `vstore`), each the one instruction of its name:
/// [`avx512`] and [`avx2`]. Each runs its plain reference's operations in
/// the same order, lane by lane, so both give the reference's bits.
macro_rules! simd_transforms {
    ($feature:literal) => {
        // input_tiles_reference's operations in the same order, a register of channels.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn input_tiles(g: &Window, x: &[f32], first: usize, t: usize, v: &mut [f32]) {
            let c = g.c;
            let (x, out) = (x.as_ptr(), v.as_mut_ptr());
            for (i, at) in tiles(g, 2, first, t).enumerate() {
                let patch = Patch::under(g, at);
                for c0 in (0..c).step_by(STEP) {
                    // SAFETY: in bounds by the caller's checks.
                    unsafe {
                        let d: [[V; 4]; 4] = std::array::from_fn(|q| column(&patch, x, q, c0));
                        let d: [V; POSITIONS] = std::array::from_fn(|k| d[k % 4][k / 4]);
                        let mut bd = [vzero(); POSITIONS];
                        for q in 0..4 {
                            let (d0, d1, d2, d3) = (d[q], d[4 + q], d[8 + q], d[12 + q]);
                            bd[q] = vsub(d0, d2);
                            bd[4 + q] = vadd(d1, d2);
                            bd[8 + q] = vsub(d2, d1);
                            bd[12 + q] = vsub(d1, d3);
                        }
                        for r in 0..4 {
                            let (b0, b1, b2, b3) = (bd[4 * r], bd[4 * r + 1], bd[4 * r + 2], bd[4 * r + 3]);
                            let row = [vsub(b0, b2), vadd(b1, b2), vsub(b2, b1), vsub(b1, b3)];
                            for (q, o) in row.into_iter().enumerate() {
                                vstore(out.add(((4 * r + q) * t + i) * c + c0), o);
                            }
                        }
                    }
                }
            }
        }

        // gradient_tiles_reference's operations in the same order, a register of filters.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn gradient_tiles(g: &Window, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
            let (dp, out) = (dz.as_ptr(), m.as_mut_ptr());
            for (i, (s, oy, ox)) in tiles(g, 2, first, t).enumerate() {
                for j0 in (0..f).step_by(STEP) {
                    // SAFETY: in bounds by the caller's checks (outputs past the sides are not read).
                    unsafe {
                        let d: [V; 4] = std::array::from_fn(|k| {
                            let (y, x) = (oy + k / 2, ox + k % 2);
                            if y < g.oh && x < g.ow {
                                vload(dp.add(((s * g.oh + y) * g.ow + x) * f + j0))
                            } else {
                                vzero()
                            }
                        });
                        let zero = vzero();
                        let mut ad = [zero; 8];
                        for q in 0..2 {
                            let (d0, d1) = (d[q], d[2 + q]);
                            ad[q] = d0;
                            ad[2 + q] = vadd(d0, d1);
                            ad[4 + q] = vsub(d0, d1);
                            ad[6 + q] = vsub(zero, d1);
                        }
                        for r in 0..4 {
                            let (a0, a1) = (ad[2 * r], ad[2 * r + 1]);
                            let row = [a0, vadd(a0, a1), vsub(a0, a1), vsub(zero, a1)];
                            for (q, o) in row.into_iter().enumerate() {
                                vstore(out.add(((4 * r + q) * t + i) * f + j0), o);
                            }
                        }
                    }
                }
            }
        }

        // output_tiles_reference's operations in the same order, a register of filters.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn output_tiles(g: &Window, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
            let (g, Columns { f0, fb, f, bias, add, row0 }) = (g, cols);
            let (mp, yp) = (m.as_ptr(), y.as_mut_ptr());
            for (i, (s, oy, ox)) in tiles(g, 2, first, t).enumerate() {
                for j0 in (0..fb).step_by(STEP) {
                    // SAFETY: in bounds by the caller's checks.
                    unsafe {
                        let mm: [V; POSITIONS] = std::array::from_fn(|p| vload(mp.add((p * t + i) * fb + j0)));
                        let b = bias.map_or(vzero(), |b| vload(b.as_ptr().add(f0 + j0)));
                        let mut am = [vzero(); 8];
                        for q in 0..4 {
                            let (m0, m1, m2, m3) = (mm[q], mm[4 + q], mm[8 + q], mm[12 + q]);
                            am[q] = vadd(vadd(m0, m1), m2);
                            am[4 + q] = vsub(vsub(m1, m2), m3);
                        }
                        for r in 0..2.min(g.oh - oy) {
                            let (a0, a1, a2, a3) = (am[4 * r], am[4 * r + 1], am[4 * r + 2], am[4 * r + 3]);
                            let left = vadd(vadd(vadd(a0, a1), a2), b);
                            let at = (s * g.oh + oy + r - row0) * g.ow + ox;
                            store(yp.add(at * f + f0 + j0), left, add);
                            if ox + 1 < g.ow {
                                let right = vadd(vsub(vsub(a1, a2), a3), b);
                                store(yp.add((at + 1) * f + f0 + j0), right, add);
                            }
                        }
                    }
                }
            }
        }
        // *y = v, or with `add` *y = v + *y (a register of values).
        // Safety: the module's instruction set, and a register of values at y.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn store(y: *mut f32, v: V, add: bool) {
            // SAFETY: the caller's.
            unsafe { vstore(y, if add { vadd(v, vload(y)) } else { v }) }
        }

        // Column q of `patch`: its N pixels' channels c0..c0 + STEP, zeros outside the input.
        // Safety: the module's instruction set, and the patch's pixels inside the input lie in x.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn column<const N: usize>(patch: &Patch, x: *const f32, q: usize, c0: usize) -> [V; N] {
            let mut d = [vzero(); N];
            for (r, d) in d.iter_mut().enumerate() {
                if let Some(at) = patch.at(r, q) {
                    // SAFETY: the caller's.
                    *d = unsafe { vload(x.add(at + c0)) };
                }
            }
            d
        }

        // F(4x4, 3x3)'s 1-D transforms (input6, output6, gradient6) in the same
        // operations and order, a register of lanes.
        #[target_feature(enable = $feature)]
        #[inline]
        fn input6(d: [V; 6]) -> [V; 6] {
            let ([first, _], [r1, r2], [r3, r4], [last, _]) =
                (input6_rows::<0>(d), input6_rows::<1>(d), input6_rows::<3>(d), input6_rows::<5>(d));
            [first, r1, r2, r3, r4, last]
        }

        // input6's results R (R = 0 or 5: [R, unused]) or R and R + 1 (R = 1 or
        // 3), which share their terms.
        #[target_feature(enable = $feature)]
        #[inline]
        fn input6_rows<const R: usize>([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 2] {
            let (two, four, five) = (vset1(2.0), vset1(4.0), vset1(5.0));
            match R {
                0 => [vfmadd(four, d0, vfnmadd(five, d2, d4)), vzero()],
                1 => {
                    let (a, b) = (vfnmadd(four, d2, d4), vfnmadd(four, d1, d3));
                    [vadd(a, b), vsub(a, b)]
                }
                3 => {
                    let (c, e) = (vsub(d4, d2), vmul(two, vsub(d3, d1)));
                    [vadd(c, e), vsub(c, e)]
                }
                _ => [vfmadd(four, d1, vfnmadd(five, d3, d5)), vzero()],
            }
        }

        #[target_feature(enable = $feature)]
        #[inline]
        fn output6(m: [V; 6]) -> [V; 4] {
            let ([r0, r2], [r1, r3]) = (output6_rows::<0>(m), output6_rows::<1>(m));
            [r0, r1, r2, r3]
        }

        // output6's results R and R + 2 (R = 0 or 1), which share their terms.
        #[target_feature(enable = $feature)]
        #[inline]
        fn output6_rows<const R: usize>([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 2] {
            let (two, four, eight) = (vset1(2.0), vset1(4.0), vset1(8.0));
            if R == 0 {
                let (s12, s34) = (vadd(m1, m2), vadd(m3, m4));
                [vadd(vadd(m0, s12), s34), vfmadd(four, s34, s12)]
            } else {
                let (d12, d34) = (vsub(m1, m2), vsub(m3, m4));
                [vfmadd(two, d34, d12), vadd(vfmadd(eight, d34, d12), m5)]
            }
        }

        #[target_feature(enable = $feature)]
        #[inline]
        fn gradient6(d: [V; 4]) -> [V; 6] {
            let ([first, _], [r1, r2], [r3, r4], [last, _]) =
                (gradient6_rows::<0>(d), gradient6_rows::<1>(d), gradient6_rows::<3>(d), gradient6_rows::<5>(d));
            [first, r1, r2, r3, r4, last]
        }

        // gradient6's results as input6_rows gives input6's: R (R = 0 or 5:
        // [R, unused]) or R and R + 1 (R = 1 or 3), which share their terms.
        #[target_feature(enable = $feature)]
        #[inline]
        fn gradient6_rows<const R: usize>([d0, d1, d2, d3]: [V; 4]) -> [V; 2] {
            let (two, four, eight) = (vset1(2.0), vset1(4.0), vset1(8.0));
            match R {
                0 => [d0, vzero()],
                1 => {
                    let (s02, s13) = (vadd(d0, d2), vadd(d1, d3));
                    [vadd(s02, s13), vsub(s02, s13)]
                }
                3 => {
                    let e02 = vfmadd(four, d2, d0);
                    let e13 = vfmadd(eight, d3, vmul(two, d1));
                    [vadd(e02, e13), vsub(e02, e13)]
                }
                _ => [d3, vzero()],
            }
        }

        // input_tiles4_lanes' operations in the same order, a register of channels.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn input_tiles4(g: &Window, x: &[f32], first: usize, t: usize, v: &mut [f32]) {
            let c = g.c;
            let (len, x, out) = (x.len(), x.as_ptr(), v.as_mut_ptr());
            let (row, stride) = (g.w * c, t * c);
            for (i, at) in tiles(g, 4, first, t).enumerate() {
                let patch = Patch::under(g, at);
                // Asks for the pixels that the tile below reads and this one does
                // not (its patch's last 4 rows; none past the sample's last row):
                // the tiles read short rows of pixels, a few hundred bytes each,
                // which the hardware's prefetchers fetch too late (ResNet-20's
                // training steps 4% faster).
                let below = Patch { top: patch.top.wrapping_add(4), ..patch };
                for r in 2..6 {
                    for q in 0..6 {
                        if let Some(at) = below.at(r, q).filter(|at| at + c <= len) {
                            // One request per cache line of 16 values.
                            for c0 in (0..c).step_by(16) {
                                _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(at + c0) as *const i8);
                            }
                        }
                    }
                }
                // SAFETY (both arms): in bounds by the caller's checks; a patch
                // wholly inside the input reads its pixels at fixed offsets.
                let tile_out = unsafe { out.add(i * c) };
                match patch.inside() {
                    Some(at) => {
                        let p = unsafe { x.add(at) };
                        for c0 in (0..c).step_by(STEP) {
                            let d = |r: usize, q: usize| unsafe { vload(p.add(r * row + q * c + c0)) };
                            unsafe { transform_patch4(d, tile_out.add(c0), stride) };
                        }
                    }
                    None => {
                        for c0 in (0..c).step_by(STEP) {
                            let d = |r: usize, q: usize| {
                                patch.at(r, q).map_or(vzero(), |at| unsafe { vload(x.add(at + c0)) })
                            };
                            unsafe { transform_patch4(d, tile_out.add(c0), stride) };
                        }
                    }
                }
            }
        }

        // One register of a 6x6 patch's channels, pixel (r, q) = d(r, q) -> B^T d B,
        // value (r, q) at out[(6 r + q) * stride]: input_tiles4_lanes' operations
        // in the same order. The columns' transforms (B^T d) are taken a row
        // of results at a time, in the rows that input6 computes together
        // ((0), (1, 2), (3, 4), (5)), each row then turned (. B) and stored:
        // a dozen values live at a time where the whole patch's 36 spilled.
        // Safety: the module's instruction set, and 36 rows of STEP values at out's stride.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn transform_patch4(d: impl Fn(usize, usize) -> V, out: *mut f32, stride: usize) {
            let row = |v| input6(v);
            // SAFETY (all four): the caller's.
            unsafe {
                rows6::<6, 0, 1>(&d, |v| input6_rows::<0>(v), row, out, stride);
                rows6::<6, 1, 2>(&d, |v| input6_rows::<1>(v), row, out, stride);
                rows6::<6, 3, 2>(&d, |v| input6_rows::<3>(v), row, out, stride);
                rows6::<6, 5, 1>(&d, |v| input6_rows::<5>(v), row, out, stride);
            }
        }

        // Rows R..R + N of a 6x6 transform of K x K values (d(r, q)): `column`
        // gives those rows of each column's 1-D transform, `row` turns each
        // row of those; value (r, q) stored at out[(6 r + q) * stride].
        // Safety: the module's instruction set, and 36 rows of STEP values at out's stride.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn rows6<const K: usize, const R: usize, const N: usize>(
            d: &impl Fn(usize, usize) -> V,
            column: impl Fn([V; K]) -> [V; 2],
            row: impl Fn([V; K]) -> [V; 6],
            out: *mut f32,
            stride: usize,
        ) {
            let columns: [[V; 2]; K] = std::array::from_fn(|q| column(std::array::from_fn(|r| d(r, q))));
            for k in 0..N {
                for (q, o) in row(std::array::from_fn(|q| columns[q][k])).into_iter().enumerate() {
                    // SAFETY: the caller's.
                    unsafe { vstore(out.add((6 * (R + k) + q) * stride), o) };
                }
            }
        }

        // output_tiles4_lanes' operations in the same order, a register of filters.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn output_tiles4(g: &Window, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
            let (g, Columns { f0, fb, f, bias, add, row0 }) = (g, cols);
            let (mp, yp, stride) = (m.as_ptr(), y.as_mut_ptr(), t * fb);
            for (i, (s, oy, ox)) in tiles(g, 4, first, t).enumerate() {
                let (rows, across) = ((g.oh - oy).min(4), (g.ow - ox).min(4));
                for j0 in (0..fb).step_by(STEP) {
                    // SAFETY: in bounds by the caller's checks.
                    unsafe {
                        let tile = Tile4 { m: mp.add(i * fb + j0), stride, rows, across, add };
                        let b = bias.map_or(vzero(), |b| vload(b.as_ptr().add(f0 + j0)));
                        let corner = yp.add(((s * g.oh + oy - row0) * g.ow + ox) * f + f0 + j0);
                        let y = |r: usize, q: usize| corner.add((r * g.ow + q) * f);
                        if (rows, across) == (4, 4) {
                            output_rows4::<0, true>(&tile, b, &y);
                            output_rows4::<1, true>(&tile, b, &y);
                        } else {
                            output_rows4::<0, false>(&tile, b, &y);
                            output_rows4::<1, false>(&tile, b, &y);
                        }
                    }
                }
            }
        }

        // One register of filters of a tile's products: position p at m[p * stride];
        // its outputs inside the output's rows and columns are stored (added with `add`).
        struct Tile4 {
            m: *const f32,
            stride: usize,
            rows: usize,
            across: usize,
            add: bool,
        }

        // Output rows R and R + 2 of a tile (A^T m A, + b), output (r, q) at y(r, q):
        // output_tiles4_lanes' operations in the same order, the columns'
        // transforms (A^T m) taken a pair of rows at a time (those output6
        // computes together), so that a dozen values are live where the
        // whole tile's 24 spilled. With WHOLE, all 4x4 outputs are stored.
        // Safety: the module's instruction set, 36 registers at the tile's stride,
        // and y's outputs in bounds.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn output_rows4<const R: usize, const WHOLE: bool>(
            tile: &Tile4,
            b: V,
            y: impl Fn(usize, usize) -> *mut f32,
        ) {
            // SAFETY: the caller's.
            let am: [[V; 2]; 6] = std::array::from_fn(|q| {
                output6_rows::<R>(std::array::from_fn(|r| unsafe { vload(tile.m.add((6 * r + q) * tile.stride)) }))
            });
            for (k, r) in [R, R + 2].into_iter().enumerate() {
                if !WHOLE && r >= tile.rows {
                    break;
                }
                let row = output6(std::array::from_fn(|q| am[q][k]));
                for (q, o) in row.into_iter().enumerate() {
                    if !WHOLE && q >= tile.across {
                        break;
                    }
                    // SAFETY: the caller's.
                    unsafe { store(y(r, q), vadd(o, b), tile.add) };
                }
            }
        }

        // gradient_tiles4_lanes' operations in the same order, a register of filters.
        // Safety: the module's instruction set, and the lengths the caller checked.
        #[target_feature(enable = $feature)]
        pub unsafe fn gradient_tiles4(g: &Window, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
            let (dp, out, stride) = (dz.as_ptr(), m.as_mut_ptr(), t * f);
            for (i, (s, oy, ox)) in tiles(g, 4, first, t).enumerate() {
                let whole = oy + 4 <= g.oh && ox + 4 <= g.ow;
                for j0 in (0..f).step_by(STEP) {
                    // SAFETY: in bounds by the caller's checks (outputs past the sides are not read).
                    unsafe {
                        let (corner, tile_out) = (dp.add(((s * g.oh + oy) * g.ow + ox) * f + j0), out.add(i * f + j0));
                        let at = |r: usize, q: usize| corner.add((r * g.ow + q) * f);
                        if whole {
                            gradient_patch4(|r, q| vload(at(r, q)), tile_out, stride);
                        } else {
                            let inside = |r: usize, q: usize| oy + r < g.oh && ox + q < g.ow;
                            gradient_patch4(
                                |r, q| if inside(r, q) { vload(at(r, q)) } else { vzero() },
                                tile_out,
                                stride,
                            );
                        }
                    }
                }
            }
        }

        // One register of filters of a tile's 4x4 output gradients, (r, q) = d(r, q)
        // -> A d A^T, value (r, q) at out[(6 r + q) * stride]: gradient_tiles4_lanes'
        // operations in the same order, the columns' transforms taken in the
        // groups of rows that gradient6 computes together (as transform_patch4).
        // Safety: the module's instruction set, and 36 rows of STEP values at out's stride.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn gradient_patch4(d: impl Fn(usize, usize) -> V, out: *mut f32, stride: usize) {
            let row = |v| gradient6(v);
            // SAFETY (all four): the caller's.
            unsafe {
                rows6::<4, 0, 1>(&d, |v| gradient6_rows::<0>(v), row, out, stride);
                rows6::<4, 1, 2>(&d, |v| gradient6_rows::<1>(v), row, out, stride);
                rows6::<4, 3, 2>(&d, |v| gradient6_rows::<3>(v), row, out, stride);
                rows6::<4, 5, 1>(&d, |v| gradient6_rows::<5>(v), row, out, stride);
            }
        }
    };
}

/// The operations [`simd_transforms`] takes, for the vector type `$v` and
/// the instruction set `$feature`, from its intrinsics.
macro_rules! vector_ops {
    ($feature:literal, $v:ty, $add:ident, $sub:ident, $mul:ident, $fmadd:ident, $fnmadd:ident, $set1:ident,
     $zero:ident, $load:ident, $store:ident) => {
        type V = $v;
        #[target_feature(enable = $feature)]
        #[inline]
        fn vadd(a: V, b: V) -> V {
            $add(a, b)
        }
        #[target_feature(enable = $feature)]
        #[inline]
        fn vsub(a: V, b: V) -> V {
            $sub(a, b)
        }
        #[target_feature(enable = $feature)]
        #[inline]
        fn vmul(a: V, b: V) -> V {
            $mul(a, b)
        }
        // a * b + c, and -(a * b) + c, rounded once.
        #[target_feature(enable = $feature)]
        #[inline]
        fn vfmadd(a: V, b: V, c: V) -> V {
            $fmadd(a, b, c)
        }
        #[target_feature(enable = $feature)]
        #[inline]
        fn vfnmadd(a: V, b: V, c: V) -> V {
            $fnmadd(a, b, c)
        }
        #[target_feature(enable = $feature)]
        #[inline]
        fn vset1(a: f32) -> V {
            $set1(a)
        }
        #[target_feature(enable = $feature)]
        #[inline]
        fn vzero() -> V {
            $zero()
        }
        // Safety: the module's instruction set, and STEP values at p.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn vload(p: *const f32) -> V {
            // SAFETY: the caller's.
            unsafe { $load(p) }
        }
        // Safety: the module's instruction set, and STEP values at p.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn vstore(p: *mut f32, v: V) {
            // SAFETY: the caller's.
            unsafe { $store(p, v) }
        }
    };
}

/// One instruction set's SIMD transforms ([`input_tiles`], [`output_tiles`],
/// [`gradient_tiles`], of 2x2 and of 4x4 tiles). Each is unsafe: the CPU
/// must have the set, and the lengths must pass the dispatching function's checks.
#[cfg(target_arch = "x86_64")]
struct Simd {
    #[cfg_attr(not(test), allow(dead_code))]
    name: &'static str,
    input_tiles: unsafe fn(&Window, &[f32], usize, usize, &mut [f32]),
    input_tiles4: unsafe fn(&Window, &[f32], usize, usize, &mut [f32]),
    output_tiles: unsafe fn(&Window, &[f32], usize, usize, Columns, &mut [f32]),
    output_tiles4: unsafe fn(&Window, &[f32], usize, usize, Columns, &mut [f32]),
    gradient_tiles: unsafe fn(&Window, &[f32], usize, usize, usize, &mut [f32]),
    gradient_tiles4: unsafe fn(&Window, &[f32], usize, usize, usize, &mut [f32]),
}

#[cfg(target_arch = "x86_64")]
const AVX512: Simd = Simd {
    name: "AVX-512",
    input_tiles: avx512::input_tiles,
    input_tiles4: avx512::input_tiles4,
    output_tiles: avx512::output_tiles,
    output_tiles4: avx512::output_tiles4,
    gradient_tiles: avx512::gradient_tiles,
    gradient_tiles4: avx512::gradient_tiles4,
};

#[cfg(target_arch = "x86_64")]
const AVX2: Simd = Simd {
    name: "AVX2",
    input_tiles: avx2::input_tiles,
    input_tiles4: avx2::input_tiles4,
    output_tiles: avx2::output_tiles,
    output_tiles4: avx2::output_tiles4,
    gradient_tiles: avx2::gradient_tiles,
    gradient_tiles4: avx2::gradient_tiles4,
};

/// The SIMD transforms of every instruction set this CPU has, the widest first.
#[cfg(target_arch = "x86_64")]
fn simd_sets() -> impl Iterator<Item = &'static Simd> {
    Isa::present_sets().map(|isa| match isa {
        Isa::Avx512 => &AVX512,
        Isa::Avx2 => &AVX2,
    })
}

/// The transforms with AVX-512F: 16 channels (or filters) per register.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Columns, POSITIONS, Patch, tiles};
    use crate::kernels::Window;
    use std::arch::x86_64::*;

    const STEP: usize = 16;
    vector_ops!(
        "avx512f",
        __m512,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_fnmadd_ps,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps
    );
    simd_transforms!("avx512f");
}

/// The transforms with AVX2 and FMA: 8 channels (or filters) per register.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Columns, POSITIONS, Patch, tiles};
    use crate::kernels::Window;
    use std::arch::x86_64::*;

    const STEP: usize = 8;
    vector_ops!(
        "avx2,fma",
        __m256,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_fnmadd_ps,
        _mm256_set1_ps,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps
    );
    simd_transforms!("avx2,fma");
}

// F(4x4, 3x3): tiles of 4x4 outputs from 6x6 input patches. Its transforms
// (Lavin and Gray's, at the points 0, 1, -1, 2, -2 and infinity) multiply by
// their constants in fused multiply-adds (one rounding, and fewer operations).

/// 16 lanes: channels (or filters) side by side.
type Lanes = [f32; LANES];

/// Applies `f` to the values of each lane: one transform of 16 columns at once.
#[inline(always)]
fn lanewise<const I: usize, const O: usize>(d: [Lanes; I], f: impl Fn([f32; I]) -> [f32; O]) -> [Lanes; O] {
    let mut out = [[0.0f32; LANES]; O];
    for l in 0..LANES {
        let values = f(std::array::from_fn(|k| d[k][l]));
        for (o, v) in out.iter_mut().zip(values) {
            o[l] = v;
        }
    }
    out
}

/// 1-D input transform of 6 values: B^T d,  B^T = [[4, 0, -5, 0, 1, 0],
///   [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
///   [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]].
#[inline(always)]
fn input6([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
    let (a, b) = ((-4.0f32).mul_add(d2, d4), (-4.0f32).mul_add(d1, d3));
    let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
    let (first, last) = (4.0f32.mul_add(d0, (-5.0f32).mul_add(d2, d4)), 4.0f32.mul_add(d1, (-5.0f32).mul_add(d3, d5)));
    [first, a + b, a - b, c + e, c - e, last]
}

/// 1-D output transform of 6 values: A^T m,  A^T = [[1, 1, 1, 1, 1, 0],
///   [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]].
#[inline(always)]
fn output6([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [(m0 + s12) + s34, 2.0f32.mul_add(d34, d12), 4.0f32.mul_add(s34, s12), 8.0f32.mul_add(d34, d12) + m5]
}

/// 1-D gradient transform of 4 output gradients: A d (the transpose of [`output6`]).
#[inline(always)]
fn gradient6([d0, d1, d2, d3]: [f32; 4]) -> [f32; 6] {
    let (s02, s13) = (d0 + d2, d1 + d3);
    let (e02, e13) = (4.0f32.mul_add(d2, d0), 8.0f32.mul_add(d3, 2.0 * d1));
    [d0, s02 + s13, s02 - s13, e02 + e13, e02 - e13, d3]
}

/// G (6x3) of F(4x4, 3x3) (see [`Winograd::transform_kernel`]).
const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `u[r * 6 + q] = sum over taps (a, b) of G[r][a] G[q][b] g[a][b]`: the
/// kernel transform's weights, one row of 9 per transformed value.
fn kernel_weights4() -> [[f32; 9]; POSITIONS4] {
    std::array::from_fn(|k| std::array::from_fn(|ab| G4[k / 6][ab / 3] * G4[k % 6][ab % 3]))
}

/// kernel (3,3,C,F) -> u (16,C,F) = G g G^T for each of the `cf` (channel,
/// filter) pairs, 16 pairs at a time (the last ones one by one): G's 1-D
/// transform of each column of taps, then of each row.
#[multiversion(targets = "simd")]
fn transform_kernel2(kernel: &[f32], cf: usize, u: &mut [f32]) {
    let turn = |[g0, g1, g2]: [f32; 3]| [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
    let vectors = cf / LANES * LANES;
    for i in (0..vectors).step_by(LANES) {
        let g =
            |a: usize, b: usize| -> Lanes { kernel[(a * 3 + b) * cf + i..][..LANES].try_into().expect("16 values") };
        // Rows: G g (4x3, by its columns b), then columns: (G g) G^T (4x4).
        let columns: [[Lanes; 4]; 3] = std::array::from_fn(|b| lanewise([g(0, b), g(1, b), g(2, b)], turn));
        for r in 0..4 {
            let turned = lanewise([columns[0][r], columns[1][r], columns[2][r]], turn);
            for (q, v) in turned.iter().enumerate() {
                u[(r * 4 + q) * cf + i..][..LANES].copy_from_slice(v);
            }
        }
    }
    for i in vectors..cf {
        let g = |a: usize, b: usize| kernel[(a * 3 + b) * cf + i];
        let columns: [[f32; 4]; 3] = std::array::from_fn(|b| turn([g(0, b), g(1, b), g(2, b)]));
        for r in 0..4 {
            for (q, v) in turn([columns[0][r], columns[1][r], columns[2][r]]).into_iter().enumerate() {
                u[(r * 4 + q) * cf + i] = v;
            }
        }
    }
}

/// (Channel, filter) pairs per pass of [`transform_kernel4`] and
/// [`kernel_grad4`]: the pass's 9 taps and 36 transformed values stay in cache.
const PAIRS_PER_PASS: usize = 256;

/// kernel (3,3,C,F) -> u (36,C,F) = G g G^T for each of the `cf` (channel,
/// filter) pairs: each transformed value a weighted sum of the 9 taps, over
/// a block of pairs at a time (contiguous, so the sums run in vectors).
#[multiversion(targets = "simd")]
fn transform_kernel4(kernel: &[f32], cf: usize, u: &mut [f32]) {
    let weights = kernel_weights4();
    for i0 in (0..cf).step_by(PAIRS_PER_PASS) {
        let pairs = i0..(i0 + PAIRS_PER_PASS).min(cf);
        for (k, w) in weights.iter().enumerate() {
            let out = &mut u[k * cf..][pairs.clone()];
            out.fill(0.0);
            for (ab, &w) in w.iter().enumerate().filter(|(_, w)| **w != 0.0) {
                let tap = &kernel[ab * cf..][pairs.clone()];
                out.iter_mut().zip(tap).for_each(|(o, &g)| *o += w * g);
            }
        }
    }
}

/// du (36,C,F) -> dw (3,3,C,F) += G^T du G (the transpose of [`transform_kernel4`]).
#[multiversion(targets = "simd")]
fn kernel_grad4(du: &[f32], cf: usize, dw: &mut [f32]) {
    let weights = kernel_weights4();
    for i0 in (0..cf).step_by(PAIRS_PER_PASS) {
        let pairs = i0..(i0 + PAIRS_PER_PASS).min(cf);
        for ab in 0..9 {
            let out = &mut dw[ab * cf..][pairs.clone()];
            for (k, w) in weights.iter().enumerate().filter(|(_, w)| w[ab] != 0.0) {
                let d = &du[k * cf..][pairs.clone()];
                out.iter_mut().zip(d).for_each(|(o, &d)| *o += w[ab] * d);
            }
        }
    }
}

/// [`input_tiles`] of 4x4 tiles in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn input_tiles4_lanes(g: &Window, x: &[f32], first: usize, t: usize, v: &mut [f32]) {
    let c = g.c;
    for i in 0..t {
        let patch = Patch::of(g, 4, first + i);
        for c0 in (0..c).step_by(LANES) {
            let mut d = [[0.0f32; LANES]; POSITIONS4];
            for (k, d) in d.iter_mut().enumerate() {
                if let Some(at) = patch.at(k / 6, k % 6) {
                    d.copy_from_slice(&x[at + c0..][..LANES]);
                }
            }
            // Columns of the patch (B^T d), then its rows (. B).
            let mut bd = [[0.0f32; LANES]; POSITIONS4];
            for q in 0..6 {
                let column = lanewise(std::array::from_fn(|r| d[6 * r + q]), input6);
                for (r, value) in column.into_iter().enumerate() {
                    bd[6 * r + q] = value;
                }
            }
            for r in 0..6 {
                let row = lanewise(std::array::from_fn(|q| bd[6 * r + q]), input6);
                for (q, o) in row.iter().enumerate() {
                    v[((6 * r + q) * t + i) * c + c0..][..LANES].copy_from_slice(o);
                }
            }
        }
    }
}

/// [`output_tiles`] of 4x4 tiles in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn output_tiles4_lanes(g: &Window, m: &[f32], first: usize, t: usize, cols: Columns, y: &mut [f32]) {
    let (g, Columns { f0, fb, f, bias, add, row0 }) = (g, cols);
    for i in 0..t {
        let (s, oy, ox) = tile(g, 4, first + i);
        let (rows, across) = ((g.oh - oy).min(4), (g.ow - ox).min(4));
        for j0 in (0..fb).step_by(LANES) {
            let mut mm = [[0.0f32; LANES]; POSITIONS4];
            for (p, mm) in mm.iter_mut().enumerate() {
                mm.copy_from_slice(&m[(p * t + i) * fb + j0..][..LANES]);
            }
            let b: Lanes = match bias {
                Some(b) => b[f0 + j0..][..LANES].try_into().expect("16 values"),
                None => [0.0; LANES],
            };
            // Columns (A^T m: 4x6), then rows (. A: 4x4).
            let mut am = [[0.0f32; LANES]; 24];
            for q in 0..6 {
                let column = lanewise(std::array::from_fn(|r| mm[6 * r + q]), output6);
                for (r, value) in column.into_iter().enumerate() {
                    am[6 * r + q] = value;
                }
            }
            for r in 0..rows {
                let row = lanewise(std::array::from_fn(|q| am[6 * r + q]), output6);
                for (q, o) in row.iter().enumerate().take(across) {
                    let at = ((s * g.oh + oy + r - row0) * g.ow + ox + q) * f + f0 + j0;
                    for ((y, &o), &b) in y[at..][..LANES].iter_mut().zip(o).zip(&b) {
                        *y = if add { (o + b) + *y } else { o + b };
                    }
                }
            }
        }
    }
}

/// [`gradient_tiles`] of 4x4 tiles in plain code: the reference of the SIMD path.
#[multiversion(targets = "simd")]
fn gradient_tiles4_lanes(g: &Window, dz: &[f32], first: usize, t: usize, f: usize, m: &mut [f32]) {
    for i in 0..t {
        let (s, oy, ox) = tile(g, 4, first + i);
        for j0 in (0..f).step_by(LANES) {
            // The tile's output gradients, zeros past the last row and column.
            let mut d = [[0.0f32; LANES]; 16];
            for (k, d) in d.iter_mut().enumerate() {
                let (y, x) = (oy + k / 4, ox + k % 4);
                if y < g.oh && x < g.ow {
                    d.copy_from_slice(&dz[((s * g.oh + y) * g.ow + x) * f + j0..][..LANES]);
                }
            }
            // Columns (A d: 6x4), then rows (. A^T: 6x6).
            let mut ad = [[0.0f32; LANES]; 24];
            for q in 0..4 {
                let column = lanewise(std::array::from_fn(|r| d[4 * r + q]), gradient6);
                for (r, value) in column.into_iter().enumerate() {
                    ad[4 * r + q] = value;
                }
            }
            for r in 0..6 {
                let row = lanewise(std::array::from_fn(|q| ad[4 * r + q]), gradient6);
                for (q, o) in row.iter().enumerate() {
                    m[((6 * r + q) * t + i) * f + j0..][..LANES].copy_from_slice(o);
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

    /// Rounding error relative to the largest value: F(4x4)'s transforms
    /// (constants 4, 5, 8 and 1/6, 1/24) round more than F(2x2)'s additions.
    fn tolerance(m: usize) -> f32 {
        if m == 2 { 1e-5 } else { 5e-5 }
    }

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
            for m in [2, 4] {
                let wino = Winograd::with_tiles(&wide, f, m).expect("applies");
                // The input exactly: the tiles read zeros outside it (the padding,
                // and past odd sides), never past its end.
                let (x, kernel, bias) = (values(s * h * w * c, 1), values(9 * c * f, 2), values(f, 3));
                let mut u = vec![0.0; wino.kernel_len()];
                wino.transform_kernel(&kernel, &mut u);
                let mut scratch = vec![0.0; wino.scratch_len()];
                let mut y = vec![f32::NAN; s * oh * ow * f];
                wino.forward(&x, u[..].into(), s, Some(&bias), &mut scratch, &mut y);

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
                    assert!((a - b).abs() <= tolerance(m) * scale, "F({m}) {h}x{w}x{c}->{f} at {i}: {a} vs {b}");
                }
                // The first sample by bands of rows of tiles (1, 2, then the
                // rest): each band's outputs where the whole sample's are.
                let (rows, sample) = (oh.div_ceil(m), oh * ow * f);
                let mut bands = vec![f32::NAN; sample];
                for band in [0..1, 1..3, 3..rows].into_iter().filter(|b| b.start < rows) {
                    let yb = &mut bands[band.start * m * ow * f..];
                    wino.forward_rows(&x[..h * w * c], u[..].into(), band, Some(&bias), &mut scratch, yb);
                }
                for (i, (a, b)) in bands.iter().zip(&y[..sample]).enumerate() {
                    assert!((a - b).abs() <= 1e-6 * scale, "F({m}) {h}x{w}x{c}->{f} by bands at {i}: {a} vs {b}");
                }
                // Inference's products through the packed kernel: every sample, and
                // the first by blocks of filters (from a panel on) and by bands of rows.
                let mut up = vec![f32::NAN; wino.packed_kernel_len()];
                wino.transform_kernel_packed(&kernel, &mut up);
                let packed = Transformed::Packed(&up);
                let mut all = vec![f32::NAN; s * oh * ow * f];
                wino.forward(&x, packed, s, Some(&bias), &mut scratch, &mut all);
                for (i, (a, b)) in all.iter().zip(&y).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * scale, "F({m}) {h}x{w}x{c}->{f} packed at {i}: {a} vs {b}");
                }
                let mut by_bands = vec![f32::NAN; sample];
                for band in [0..1, 1..rows].into_iter().filter(|b| b.start < rows) {
                    let yb = &mut by_bands[band.start * m * ow * f..];
                    wino.forward_rows(&x[..h * w * c], packed, band, Some(&bias), &mut scratch, yb);
                }
                for filters in [0..32.min(f), 32.min(f)..f].into_iter().filter(|b| !b.is_empty()) {
                    let mut block = vec![f32::NAN; oh * ow * filters.len()];
                    wino.forward_filters(
                        &x[..h * w * c],
                        packed,
                        1,
                        filters.clone(),
                        Some(&bias),
                        &mut scratch,
                        &mut block,
                    );
                    for (i, (a, b)) in block.iter().zip(y.chunks_exact(f).flat_map(|o| &o[filters.clone()])).enumerate()
                    {
                        assert!((a - b).abs() <= 1e-5 * scale, "F({m}) packed, filters {filters:?} at {i}: {a} vs {b}");
                    }
                }
                for (i, (a, b)) in by_bands.iter().zip(&y[..sample]).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "F({m}) {h}x{w}x{c}->{f} packed by bands at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    // The weight gradient against the unfolding reference (im2col^T . dz),
    // on even and odd output sides.
    #[test]
    fn winograd_weight_gradient_matches_the_unfolding_reference() {
        for (h, w, c, f, same, s) in [(8, 8, 32, 32, true, 3), (7, 9, 16, 48, true, 2), (9, 9, 32, 64, false, 2)] {
            let (pt, oh, ow) = if same { (1, h, w) } else { (0, h - 2, w - 2) };
            let g = Window { h, w, c, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt, pl: pt, oh, ow };
            let wide = Wide::of(&g).expect("stride 1");
            for m in [2, 4] {
                let wino = Winograd::with_tiles(&wide, f, m).expect("applies");
                let (x, dz) = (values(s * h * w * c, 8), values(s * oh * ow * f, 9));
                let (mut du, mut scratch) = (vec![0.0; wino.kernel_len()], vec![0.0; wino.scratch_len()]);
                let mut db = vec![1.0; f];
                wino.weight_grad(&x, &dz, s, &mut scratch, &mut du, Some(&mut db));
                let mut dw = vec![1.0; 9 * c * f];
                wino.kernel_grad(&du, &mut dw);
                // The bias gradient from the tiles: 1 + the sum of dz's rows.
                let mut sums = vec![1.0; f];
                add_rows(&dz, f, &mut sums);
                for (j, (a, b)) in db.iter().zip(&sums).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "F({m}) bias {j}: {a} vs {b}");
                }

                let (p, k) = (g.positions(), g.patch_len());
                let mut cols = vec![0.0; p * k];
                let mut want = vec![1.0; k * f];
                for (xs, dzs) in x.chunks_exact(h * w * c).zip(dz.chunks_exact(p * f)) {
                    im2col(&g, xs, &mut cols);
                    matmul(MatRef::new(&cols, p, k).t(), MatRef::new(dzs, p, f), &mut want, true);
                }
                let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                for (i, (a, b)) in dw.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= tolerance(m) * scale, "F({m}) {h}x{w}x{c}->{f} at {i}: {a} vs {b}");
                }
            }
        }
    }

    // The SIMD transforms against their plain references, bit for bit (the
    // same additions in the same order), over odd sides and partial blocks.
    #[test]
    fn simd_transforms_match_the_reference_exactly() {
        #[cfg(target_arch = "x86_64")]
        for simd in simd_sets() {
            let name = simd.name;
            let g = Window { h: 7, w: 9, c: 32, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, oh: 7, ow: 9 };
            let wide = Wide::of(&g).expect("stride 1");
            let (f, s) = (48, 2);
            let wino = Winograd::of(&wide, f).expect("applies");
            let x = values(s * 7 * 9 * 32, 5);
            let (first, t) = (3, wino.tiles(s) - 5);
            let (mut want, mut got) = (vec![0.0; POSITIONS * t * g.c], vec![1.0; POSITIONS * t * g.c]);
            input_tiles_reference(&g, &x, first, t, &mut want);
            // SAFETY: the CPU has the instruction set; the lengths are input_tiles' own checks, which pass.
            unsafe { (simd.input_tiles)(&g, &x, first, t, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} input transform");

            // From the second row of tiles on, into outputs that start at its first row.
            let (first_out, t_out, row0) = (5, wino.tiles(s) - 7, 2);
            let (m, bias) = (values(POSITIONS * t_out * 32, 6), values(f, 7));
            let len = (s * 7 - row0) * 9 * f;
            check_output_tiles(
                |cols, y| output_tiles_reference(&g, &m, first_out, t_out, cols, y),
                // SAFETY: as above.
                |cols, y| unsafe { (simd.output_tiles)(&g, &m, first_out, t_out, cols, y) },
                (f, &bias, row0, len),
            );

            let dz = values(s * 7 * 9 * f, 8);
            let (mut want, mut got) = (vec![0.0; POSITIONS * t * f], vec![1.0; POSITIONS * t * f]);
            gradient_tiles_reference(&g, &dz, first, t, f, &mut want);
            // SAFETY: as above.
            unsafe { (simd.gradient_tiles)(&g, &dz, first, t, f, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} gradient transform");
        }
    }

    // An output transform's SIMD path against its plain code, bit for bit,
    // into filters 16..48 of `f` with `bias`, outputs from row `row0` on
    // (`len` values): written, then added to what y holds (y + the written).
    #[cfg(target_arch = "x86_64")]
    fn check_output_tiles(
        plain: impl Fn(Columns, &mut [f32]),
        simd: impl Fn(Columns, &mut [f32]),
        (f, bias, row0, len): (usize, &[f32], usize, usize),
    ) {
        let mut written = vec![0.0; len];
        for (add, before) in [(false, vec![0.0; len]), (true, values(len, 9))] {
            let (mut want, mut got) = (before.clone(), before.clone());
            let cols = Columns { f0: 16, fb: 32, f, bias: Some(bias), add, row0 };
            plain(cols, &mut want);
            simd(cols, &mut got);
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "output transform");
            assert!(want.iter().zip(&before).any(|(a, b)| a != b), "the tiles wrote outputs");
            if add {
                let sums = written.iter().zip(&before).map(|(w, b)| w + b);
                assert!(sums.zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "added to y");
            } else {
                written = want;
            }
        }
    }

    // F(4x4)'s SIMD transforms against their plain code, bit for bit, over
    // sides that are not multiples of 4 and partial blocks.
    #[test]
    fn simd_transforms_of_4x4_tiles_match_the_plain_code_exactly() {
        #[cfg(target_arch = "x86_64")]
        for simd in simd_sets() {
            let name = simd.name;
            // 4x4 tiles, the last of each row and column short; four patches
            // of each sample wholly inside the input (read at fixed offsets).
            let (h, w) = (14, 13);
            let g = Window { h, w, c: 32, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, oh: h, ow: w };
            let wide = Wide::of(&g).expect("stride 1");
            let (f, s) = (48, 3);
            let wino = Winograd::with_tiles(&wide, f, 4).expect("applies");
            let x = values(s * h * w * 32, 5);
            let (first, t) = (2, wino.tiles(s) - 3);
            let (mut want, mut got) = (vec![0.0; POSITIONS4 * t * g.c], vec![1.0; POSITIONS4 * t * g.c]);
            input_tiles4_lanes(&g, &x, first, t, &mut want);
            // SAFETY: the CPU has the instruction set; the lengths are input_tiles' own checks, which pass.
            unsafe { (simd.input_tiles4)(&g, &x, first, t, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} input transform");

            // From the second row of tiles on, into outputs that start at its first row.
            let (first_out, t_out, row0) = (5, wino.tiles(s) - 6, 4);
            let (m, bias) = (values(POSITIONS4 * t_out * 32, 6), values(f, 7));
            let len = (s * h - row0) * w * f;
            check_output_tiles(
                |cols, y| output_tiles4_lanes(&g, &m, first_out, t_out, cols, y),
                // SAFETY: as above.
                |cols, y| unsafe { (simd.output_tiles4)(&g, &m, first_out, t_out, cols, y) },
                (f, &bias, row0, len),
            );

            let dz = values(s * h * w * f, 8);
            let (mut want, mut got) = (vec![0.0; POSITIONS4 * t * f], vec![1.0; POSITIONS4 * t * f]);
            gradient_tiles4_lanes(&g, &dz, first, t, f, &mut want);
            // SAFETY: as above.
            unsafe { (simd.gradient_tiles4)(&g, &dz, first, t, f, &mut got) };
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} gradient transform");
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
