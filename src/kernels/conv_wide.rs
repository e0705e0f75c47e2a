//! Stride-1 convolutions without unfolding patches (an implicit GEMM).
//!
//! The samples are copied once into a zero-padded layout whose rows lie end
//! to end: each row of W pixels is followed by Z zero pixels (Z = the larger
//! of the left and right padding, shared by neighbouring rows), each sample
//! by ZV zero rows, and the first sample is preceded by its top and left
//! padding. In that layout the window of output position m (counted over
//! "wide" rows of W + Z positions, sample after sample) starts, for kernel row
//! a, at pixel m + a * (W + Z), and its KW taps are KW consecutive pixels. So
//! for each kernel row the patches of every output position of a whole task
//! are the rows of one strided matrix whose consecutive rows overlap (each
//! starts C values after the previous one), and the convolution is KH matrix
//! products with K = KW*C, instead of one with K = KH*KW*C over an unfolded
//! copy KH*KW times the input's size. The few outputs that fall on padding
//! (Z per row, ZV rows per sample) are computed and dropped.
//!
//! The input gradient of a stride-1 convolution is itself a stride-1
//! convolution (of the padded output gradient with the kernel turned by 180
//! degrees and its channels swapped), so it runs through the same products.
//! The reference is the unfolding path ([`super::im2col`] + a matrix product),
//! which the tests compare against.

use super::Window;
use super::matmul::{MatRef, matmul_ld};
use super::packed::{Packed, matmul_packed};

/// The padded layout and output rows of a stride-1, undilated convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wide {
    pub g: Window,
    /// Pixels per padded row (W + Z) and rows per padded sample (H + ZV).
    wp: usize,
    hp: usize,
    /// Zero pixels before the first sample: its top and left padding.
    lead: usize,
}

impl Wide {
    /// The layout for `g`, when it is a stride-1 undilated convolution.
    pub fn of(g: &Window) -> Option<Wide> {
        if (g.sh, g.sw, g.dh, g.dw) != (1, 1, 1, 1) || g.oh == 0 || g.ow == 0 {
            return None;
        }
        // Padding after the last row and column.
        let pb = (g.oh + g.kh - 1).checked_sub(g.h + g.pt)?;
        let pr = (g.ow + g.kw - 1).checked_sub(g.w + g.pl)?;
        let wp = g.w + g.pl.max(pr);
        let hp = g.h + g.pt.max(pb);
        Some(Wide { g: *g, wp, hp, lead: g.pt * wp + g.pl })
    }

    /// Whether `f` filters (or input channels, for the input gradient) run
    /// through the register-blocked kernel on this CPU.
    pub fn blocked(f: usize) -> bool {
        blocked::applies(f)
    }

    /// Values of the padded copy of `s` samples.
    pub fn padded_len(&self, s: usize) -> usize {
        (self.lead + s * self.hp * self.wp) * self.g.c
    }

    /// Output rows computed for `s` samples (real and dropped ones), up to the last real one.
    pub fn rows(&self, s: usize) -> usize {
        if s == 0 { 0 } else { (s - 1) * self.hp * self.wp + (self.g.oh - 1) * self.wp + self.g.ow }
    }

    /// The wide row of output position `p` (OY * OW + OX) of the first sample.
    pub fn row_of(&self, p: usize) -> usize {
        p / self.g.ow * self.wp + p % self.g.ow
    }

    /// The wide rows of output rows `first..first + count` of the first sample.
    pub fn band(&self, first: usize, count: usize) -> std::ops::Range<usize> {
        first * self.wp..(first + count - 1) * self.wp + self.g.ow
    }

    /// Outputs computed per real output: (H + ZV)(W + Z) / (OH * OW).
    pub fn overhead(&self) -> f64 {
        (self.hp * self.wp) as f64 / (self.g.oh * self.g.ow) as f64
    }

    /// Whether the padded layout is the input itself and the wide output the
    /// output itself (1x1 windows without padding): no copies are needed.
    pub fn pointwise(&self) -> bool {
        (self.g.kh, self.g.kw, self.wp, self.hp) == (1, 1, self.g.w, self.g.h)
    }

    /// x: (s,H,W,C) -> xp: the padded layout, zeros around (`padded_len(s)` values).
    pub fn pad(&self, x: &[f32], xp: &mut [f32]) {
        let s = x.len() / (self.g.h * self.g.w * self.g.c);
        let xp = &mut xp[..self.padded_len(s)];
        let (lead, samples) = xp.split_at_mut(self.lead_len());
        lead.fill(0.0);
        let sample_len = self.hp * self.wp * self.g.c;
        for (xs, ps) in x.chunks_exact(self.g.h * self.g.w * self.g.c).zip(samples.chunks_exact_mut(sample_len)) {
            self.pad_rows(xs, 0, ps);
        }
    }

    /// Values of the padded layout before the first sample's first row (zeros).
    pub fn lead_len(&self) -> usize {
        self.lead * self.g.c
    }

    /// Values per padded row: (W + Z) C.
    pub fn row_len(&self) -> usize {
        self.wp * self.g.c
    }

    /// One sample xs (H,W,C) -> padded rows first.. of its layout (after the
    /// lead): the rows of xs then zeros, and zeros past its last row, to the
    /// end of `rows` (which may end within a row). Bands of rows are
    /// independent: threads may pad a sample's bands at once.
    pub fn pad_rows(&self, xs: &[f32], first: usize, rows: &mut [f32]) {
        let (g, c) = (&self.g, self.g.c);
        for (i, dst) in (first..).zip(rows.chunks_mut(self.row_len())) {
            let src = if i < g.h { &xs[i * g.w * c..][..(g.w * c).min(dst.len())] } else { &[] };
            let (head, zeros) = dst.split_at_mut(src.len());
            head.copy_from_slice(src);
            zeros.fill(0.0);
        }
    }

    // xp: padded -> y_wide: (rows.len(), F), wide rows m in `rows` (all: 0..rows(s)) =
    //   sum over kernel rows a of xp[(m + a*WP)*C ..][..KW*C] . W[a] (KW*C, F)
    pub fn forward(&self, xp: &[f32], kernel: &[f32], f: usize, rows: std::ops::Range<usize>, y_wide: &mut [f32]) {
        self.forward_filters(xp, kernel, f, 0..f, rows, y_wide);
    }

    // [`Wide::forward`] of the output channels `filters` only: y_wide (rows.len(), filters.len()).
    // 16 to 64 filters run through [`blocked`]'s register-blocked kernel where
    // the CPU has AVX-512 or AVX2 with FMA; the matrix products below are its reference.
    pub fn forward_filters(
        &self,
        xp: &[f32],
        kernel: &[f32],
        f: usize,
        filters: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
        y_wide: &mut [f32],
    ) {
        if super::isa()
            .is_some_and(|isa| blocked::forward(isa, self, xp, kernel, f, filters.clone(), rows.clone(), y_wide))
        {
            return;
        }
        let g = &self.g;
        let (k, m, fb) = (g.kw * g.c, rows.len(), filters.len());
        for a in 0..g.kh {
            let patches = MatRef::overlapping(&xp[(rows.start + a * self.wp) * g.c..], m, k, g.c);
            let w = MatRef::with_ld(&kernel[a * k * f + filters.start..], k, fb, f);
            matmul_ld(patches, w, &mut y_wide[..m * fb], fb, a > 0);
        }
    }

    // [`Wide::forward_filters`] with the kernel packed (see [`super::packed`]); `filters` starts at a panel.
    pub fn forward_packed(
        &self,
        xp: &[f32],
        kernel: Packed,
        filters: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
        y_wide: &mut [f32],
    ) {
        let g = &self.g;
        let (k, m, fb) = (g.kw * g.c, rows.len(), filters.len());
        for a in 0..g.kh {
            let patches = MatRef::overlapping(&xp[(rows.start + a * self.wp) * g.c..], m, k, g.c);
            matmul_packed(patches, kernel, a * k..(a + 1) * k, filters.clone(), &mut y_wide[..m * fb], fb, a > 0);
        }
    }

    // dw (KH*KW*C, F) += sum over kernel rows a of xp_a^T . dz_wide, per a its KW*C rows;
    // dz_wide: (rows(s), F) with zeros at the dropped positions.
    pub fn weight_grad(&self, xp: &[f32], dz_wide: &[f32], f: usize, s: usize, dw: &mut [f32]) {
        let m = self.rows(s);
        if super::isa().is_some_and(|isa| blocked::weight_grad(isa, self, xp, &dz_wide[..m * f], false, f, dw)) {
            return;
        }
        self.weight_products(xp, dz_wide, f, s, dw);
    }

    // [`Wide::weight_grad`] from the real outputs' gradient dz (s,OH,OW,F);
    // dz_wide: room for (rows(s), F), used where the register-blocked kernel does not apply.
    pub fn weight_grad_real(&self, xp: &[f32], dz: &[f32], f: usize, s: usize, dz_wide: &mut [f32], dw: &mut [f32]) {
        if super::isa().is_some_and(|isa| blocked::weight_grad(isa, self, xp, dz, true, f, dw)) {
            return;
        }
        self.expand(dz, f, dz_wide);
        self.weight_products(xp, dz_wide, f, s, dw);
    }

    // [`Wide::weight_grad`] through the matrix products alone.
    fn weight_products(&self, xp: &[f32], dz_wide: &[f32], f: usize, s: usize, dw: &mut [f32]) {
        let (g, m) = (&self.g, self.rows(s));
        let k = g.kw * g.c;
        for a in 0..g.kh {
            let patches = MatRef::overlapping(&xp[a * self.wp * g.c..], m, k, g.c);
            matmul_ld(patches.t(), MatRef::new(&dz_wide[..m * f], m, f), &mut dw[a * k * f..][..k * f], f, true);
        }
    }

    /// y_wide (rows of [`Wide::band`], F) -> y (rows,OW,F): the real outputs of a band of the first sample.
    pub fn compact_band(&self, y_wide: &[f32], f: usize, y: &mut [f32]) {
        let ow = self.g.ow;
        for (r, row) in y.chunks_exact_mut(ow * f).enumerate() {
            row.copy_from_slice(&y_wide[r * self.wp * f..][..ow * f]);
        }
    }

    /// y_wide (rows(s), F) -> y (s,OH,OW,F): the real outputs, plus `bias`;
    /// with `accumulate` added to y's values.
    pub fn compact(&self, y_wide: &[f32], f: usize, bias: Option<&[f32]>, accumulate: bool, y: &mut [f32]) {
        let g = &self.g;
        for (s, ys) in y.chunks_exact_mut(g.oh * g.ow * f).enumerate() {
            for (r, row) in ys.chunks_exact_mut(g.ow * f).enumerate() {
                let src = &y_wide[(s * self.hp * self.wp + r * self.wp) * f..][..g.ow * f];
                if accumulate {
                    super::add_assign(row, src)
                } else {
                    row.copy_from_slice(src)
                }
                if let Some(b) = bias {
                    row.chunks_exact_mut(f).for_each(|pixel| super::add_assign(pixel, &b[..f]));
                }
            }
        }
    }

    /// dz (s,OH,OW,F) -> dz_wide (rows(s), F), zeros at the dropped positions.
    pub fn expand(&self, dz: &[f32], f: usize, dz_wide: &mut [f32]) {
        let g = &self.g;
        let s = dz.len() / (g.oh * g.ow * f);
        let dz_wide = &mut dz_wide[..self.rows(s) * f];
        dz_wide.fill(0.0);
        for (k, dzs) in dz.chunks_exact(g.oh * g.ow * f).enumerate() {
            for (r, row) in dzs.chunks_exact(g.ow * f).enumerate() {
                dz_wide[(k * self.hp * self.wp + r * self.wp) * f..][..g.ow * f].copy_from_slice(row);
            }
        }
    }

    /// The convolution whose forward pass is this one's input gradient: from
    /// (OH,OW,F) to (H,W,C), padded by what the window reaches beyond.
    pub fn transposed(&self, f: usize) -> Wide {
        let g = &self.g;
        let t = Window { h: g.oh, w: g.ow, c: f, pt: g.kh - 1 - g.pt, pl: g.kw - 1 - g.pl, oh: g.h, ow: g.w, ..*g };
        Wide::of(&t).expect("the transpose of a stride-1 convolution is one")
    }

    /// kernel (KH,KW,C,F) -> turned (KH,KW,F,C): `turned[a][b][j][i] = kernel[KH-1-a][KW-1-b][i][j]`.
    pub fn turn_kernel(&self, kernel: &[f32], f: usize, turned: &mut [f32]) {
        let g = &self.g;
        let c = g.c;
        for a in 0..g.kh {
            for b in 0..g.kw {
                let src = &kernel[((g.kh - 1 - a) * g.kw + (g.kw - 1 - b)) * c * f..][..c * f];
                let dst = &mut turned[(a * g.kw + b) * f * c..][..f * c];
                for i in 0..c {
                    for j in 0..f {
                        dst[j * c + i] = src[i * f + j];
                    }
                }
            }
        }
    }
}

/// Register-blocked kernels over the padded layout for 16 to 64 filters
/// (1-4 registers of 16): there the matrix-product microkernels, which tile
/// the output along its filters, hold one or two vectors of output per
/// register tile and spend most of their time loading. Here a block of
/// consecutive output positions keeps all its filters in registers (24
/// accumulators) through every kernel row and tap, so each output is written
/// once, and each step loads the tap's weights once and broadcasts one input
/// value per position into its multiply-add. The weight gradient keeps a
/// block of taps' sums in registers through every output position, reading
/// the output gradient in place. With AVX2's 16 registers of 8 values a
/// block is 6 positions x 16 filters (12 accumulators), the filters taken 16
/// at a time, and the weight gradient's up to 6 taps x 16 filters: on a
/// 2-core AMD EPYC (Zen 3, AVX2) the CIFAR-10 CNN's training step about 7%
/// faster than with the tiles' products through the matrix products, at
/// batch 128 8-33%.
mod blocked {
    use super::super::{Isa, isa};
    use super::Wide;
    use std::ops::Range;

    /// Filters per register.
    const LANES: usize = 16;
    /// Registers of filters per position (up to 64 filters).
    const MAX_VECTORS: usize = 4;
    /// Accumulator registers per block of positions.
    const ACCUMULATORS: usize = 24;

    /// Whether `f` filters run here: AVX-512 or AVX2 with FMA, 16, 32, 48 or 64 of them.
    pub fn applies(f: usize) -> bool {
        isa().is_some() && f.is_multiple_of(LANES) && (1..=MAX_VECTORS).contains(&(f / LANES))
    }

    /// Runs [`Wide::forward_filters`] with the instruction set `isa` when
    /// this kernel applies (the CPU has it, 16 to 64 filters, enough rows
    /// for one block); returns whether it did.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        isa: Isa,
        wide: &Wide,
        xp: &[f32],
        kernel: &[f32],
        f: usize,
        filters: Range<usize>,
        rows: Range<usize>,
        y_wide: &mut [f32],
    ) -> bool {
        let (fb, vectors) = (filters.len(), filters.len() / LANES);
        if !isa.present() || !applies(fb) || rows.len() < ACCUMULATORS / vectors {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let g = &wide.g;
            let (k, wp) = (g.kw * g.c, wide.wp);
            // Every value the kernel reads and writes, checked once.
            assert!(xp.len() >= (rows.end - 1 + (g.kh - 1) * wp) * g.c + k, "padded input too short");
            assert!(kernel.len() >= ((g.kh - 1) * k + k - 1) * f + filters.end, "kernel too short");
            assert!(y_wide.len() >= rows.len() * fb, "output too short");
            let args = Args { c: g.c, wp, kh: g.kh, k, f };
            let (xp, w, y) = (&xp[rows.start * g.c..], &kernel[filters.start..], &mut y_wide[..rows.len() * fb]);
            match isa {
                // SAFETY: the CPU has AVX-512F (`present`), and the lengths were checked above.
                Isa::Avx512 => unsafe {
                    match vectors {
                        1 => avx512::forward::<1, 24>(&args, xp, w, y),
                        2 => avx512::forward::<2, 12>(&args, xp, w, y),
                        3 => avx512::forward::<3, 8>(&args, xp, w, y),
                        _ => avx512::forward::<4, 6>(&args, xp, w, y),
                    }
                },
                // SAFETY: the CPU has AVX2 and FMA (`present`), and the lengths were checked above.
                Isa::Avx2 => unsafe { avx2::forward(&args, xp, w, y, fb) },
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (isa, wide, xp, kernel, f, y_wide);
            false
        }
    }

    /// Runs the weight gradient with the instruction set `isa` when this
    /// kernel applies (the CPU has it, 16 to 64 filters; for AVX-512, KW*C a
    /// multiple of 4 or more); returns whether it did. `dz`
    /// is the wide (rows, F), zeros at dropped rows, or with `real` only the
    /// real outputs (s,OH,OW,F), read in place.
    pub fn weight_grad(isa: Isa, wide: &Wide, xp: &[f32], dz: &[f32], real: bool, f: usize, dw: &mut [f32]) -> bool {
        let g = &wide.g;
        let (k, vectors) = (g.kw * g.c, f / LANES);
        if !isa.present() || !applies(f) || dz.is_empty() {
            return false;
        }
        // Taps per block: the most that fit the accumulators and divide KW*C
        // (AVX2: blocks of 16 filters in two registers).
        let (counts, per_tap, accumulators) = match isa {
            Isa::Avx512 => (&[24, 16, 12, 9, 8, 6, 4][..], vectors, ACCUMULATORS),
            Isa::Avx2 => (&avx2::TAPS[..], 2, avx2::ACCUMULATORS),
        };
        let Some(taps) = counts.iter().copied().find(|&t| t * per_tap <= accumulators && k % t == 0) else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        {
            let runs = if real {
                let per_sample = wide.hp * wide.wp;
                Runs { count: dz.len() / (g.ow * f), len: g.ow, oh: g.oh, wp: wide.wp, per_sample }
            } else {
                Runs { count: 1, len: dz.len() / f, oh: 1, wp: 0, per_sample: 0 }
            };
            let (last, _, len) = runs.run(runs.count - 1);
            assert!(xp.len() >= (last + len - 1 + (g.kh - 1) * wide.wp) * g.c + k, "padded input too short");
            assert!(runs.count * runs.len * f <= dz.len(), "output gradient too short");
            assert!(dw.len() >= g.kh * k * f, "kernel gradient too short");
            let args = Args { c: g.c, wp: wide.wp, kh: g.kh, k, f };
            match isa {
                // SAFETY: the CPU has AVX-512F (`present`), and the lengths were checked above.
                Isa::Avx512 => unsafe {
                    // Every (vectors, taps) the search above can pick, exactly: a
                    // kernel with other taps per block would step past KW*C.
                    match (vectors, taps) {
                        (1, 24) => avx512::weight_grad::<1, 24>(&args, &runs, xp, dz, dw),
                        (1, 16) => avx512::weight_grad::<1, 16>(&args, &runs, xp, dz, dw),
                        (1, 12) => avx512::weight_grad::<1, 12>(&args, &runs, xp, dz, dw),
                        (1, 9) => avx512::weight_grad::<1, 9>(&args, &runs, xp, dz, dw),
                        (1, 8) => avx512::weight_grad::<1, 8>(&args, &runs, xp, dz, dw),
                        (1, 6) => avx512::weight_grad::<1, 6>(&args, &runs, xp, dz, dw),
                        (1, 4) => avx512::weight_grad::<1, 4>(&args, &runs, xp, dz, dw),
                        (2, 12) => avx512::weight_grad::<2, 12>(&args, &runs, xp, dz, dw),
                        (2, 9) => avx512::weight_grad::<2, 9>(&args, &runs, xp, dz, dw),
                        (2, 8) => avx512::weight_grad::<2, 8>(&args, &runs, xp, dz, dw),
                        (2, 6) => avx512::weight_grad::<2, 6>(&args, &runs, xp, dz, dw),
                        (2, 4) => avx512::weight_grad::<2, 4>(&args, &runs, xp, dz, dw),
                        (3, 8) => avx512::weight_grad::<3, 8>(&args, &runs, xp, dz, dw),
                        (3, 6) => avx512::weight_grad::<3, 6>(&args, &runs, xp, dz, dw),
                        (3, 4) => avx512::weight_grad::<3, 4>(&args, &runs, xp, dz, dw),
                        (4, 6) => avx512::weight_grad::<4, 6>(&args, &runs, xp, dz, dw),
                        (4, 4) => avx512::weight_grad::<4, 4>(&args, &runs, xp, dz, dw),
                        _ => return false,
                    }
                },
                // SAFETY: the CPU has AVX2 and FMA (`present`), and the lengths were checked above.
                Isa::Avx2 => unsafe {
                    match taps {
                        6 => avx2::weight_grad::<6>(&args, &runs, xp, dz, dw),
                        4 => avx2::weight_grad::<4>(&args, &runs, xp, dz, dw),
                        3 => avx2::weight_grad::<3>(&args, &runs, xp, dz, dw),
                        2 => avx2::weight_grad::<2>(&args, &runs, xp, dz, dw),
                        _ => avx2::weight_grad::<1>(&args, &runs, xp, dz, dw),
                    }
                },
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (xp, dw, taps, real);
            false
        }
    }

    /// The rows of the output gradient the weight gradient reads: `count` runs
    /// of `len` consecutive rows (an output row each, or all the wide rows at once).
    struct Runs {
        count: usize,
        len: usize,
        oh: usize,
        wp: usize,
        per_sample: usize,
    }

    impl Runs {
        /// Run r: (its first wide row, its first row of the output gradient, its length).
        fn run(&self, r: usize) -> (usize, usize, usize) {
            ((r / self.oh) * self.per_sample + (r % self.oh) * self.wp, r * self.len, self.len)
        }
    }

    /// The layout's strides: channels, pixels per padded row, kernel rows,
    /// values per kernel row (KW*C), filters of the whole kernel.
    struct Args {
        c: usize,
        wp: usize,
        kh: usize,
        k: usize,
        f: usize,
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use super::{Args, Runs};
        use std::arch::x86_64::*;

        // xp: padded, from the first row; w: the kernel from the first filter
        // (stride F); y: (rows, V*16) with rows = y.len() / (V*16) >= P:
        //   y[m] = sum over a, j of xp[(m + a*WP)*C + j] * w[(a*K + j)*F ..][..V*16].
        // Blocks of P rows; the last block ends at the last row (it may
        // recompute rows of the block before it, with the same result).
        // Safety: AVX-512F, and the lengths the caller checked.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn forward<const V: usize, const P: usize>(a: &Args, xp: &[f32], w: &[f32], y: &mut [f32]) {
            let fb = V * 16;
            let rows = y.len() / fb;
            let mut m = 0;
            while m < rows {
                let first = m.min(rows - P);
                // SAFETY: rows first..first + P are inside y, and their windows inside xp.
                unsafe {
                    let acc = block::<V, P>(a, xp.as_ptr().add(first * a.c), w.as_ptr());
                    let out = y.as_mut_ptr().add(first * fb);
                    for (p, acc) in acc.iter().enumerate() {
                        for (v, &sum) in acc.iter().enumerate() {
                            _mm512_storeu_ps(out.add(p * fb + 16 * v), sum);
                        }
                    }
                }
                m += P;
            }
        }

        /// P consecutive positions, V vectors of 16 filters each, in registers
        /// through all KH*KW*C taps.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn block<const V: usize, const P: usize>(a: &Args, x: *const f32, w: *const f32) -> [[__m512; V]; P] {
            let mut acc = [[_mm512_setzero_ps(); V]; P];
            // SAFETY: in bounds by the caller's checks.
            unsafe {
                for row in 0..a.kh {
                    let (xr, wr) = (x.add(row * a.wp * a.c), w.add(row * a.k * a.f));
                    for j in 0..a.k {
                        let wj = wr.add(j * a.f);
                        let ws: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(wj.add(16 * v)));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xr.add(p * a.c + j));
                            for v in 0..V {
                                acc[v] = _mm512_fmadd_ps(xv, ws[v], acc[v]);
                            }
                        }
                    }
                }
            }
            acc
        }

        // xp: padded; dz: rows of V*16; runs: (first wide row m, first dz row, length);
        // dw (KH*K, V*16):
        //   dw[a*K + j] += sum over the runs' rows of xp[(m + a*WP)*C + j] * dz[row].
        // Blocks of T taps j, each through all rows with its T x V sums in registers.
        // Safety: AVX-512F, T divides K, and the lengths the caller checked.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn weight_grad<const V: usize, const T: usize>(
            a: &Args,
            runs: &Runs,
            xp: &[f32],
            dz: &[f32],
            dw: &mut [f32],
        ) {
            assert!(a.k.is_multiple_of(T), "taps per block must divide KW*C");
            for row in 0..a.kh {
                for j in (0..a.k).step_by(T) {
                    let mut acc = [[_mm512_setzero_ps(); V]; T];
                    // SAFETY: in bounds by the caller's checks.
                    unsafe {
                        let x = xp.as_ptr().add(row * a.wp * a.c + j);
                        for r in 0..runs.count {
                            let (m0, d0, len) = runs.run(r);
                            for i in 0..len {
                                let d = dz.as_ptr().add((d0 + i) * V * 16);
                                let ds: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(d.add(16 * v)));
                                let xm = x.add((m0 + i) * a.c);
                                for (t, acc) in acc.iter_mut().enumerate() {
                                    let xv = _mm512_set1_ps(*xm.add(t));
                                    for v in 0..V {
                                        acc[v] = _mm512_fmadd_ps(xv, ds[v], acc[v]);
                                    }
                                }
                            }
                        }
                        let out = dw.as_mut_ptr().add((row * a.k + j) * a.f);
                        for (t, acc) in acc.iter().enumerate() {
                            for (v, &sum) in acc.iter().enumerate() {
                                let o = out.add(t * a.f + 16 * v);
                                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), sum));
                            }
                        }
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::{Args, Runs};
        use std::arch::x86_64::*;

        /// Positions per block of the forward kernel: 6 x 2 registers of 8 filters.
        const P: usize = 6;
        /// Taps per block the weight gradient can take (2 registers of sums each).
        pub const TAPS: [usize; 5] = [6, 4, 3, 2, 1];
        /// Accumulator registers of the weight gradient's blocks (of 16).
        pub const ACCUMULATORS: usize = 12;

        // xp: padded, from the first row; w: the kernel from the first filter
        // (stride F); y: (rows, FB), FB a multiple of 16, rows >= P:
        //   y[m] = sum over a, j of xp[(m + a*WP)*C + j] * w[(a*K + j)*F ..][..FB].
        // Blocks of 16 filters, each over blocks of P rows; the last block of
        // rows ends at the last row (it may recompute rows of the block before
        // it, with the same result).
        // Safety: AVX2 and FMA, and the lengths the caller checked.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn forward(a: &Args, xp: &[f32], w: &[f32], y: &mut [f32], fb: usize) {
            let rows = y.len() / fb;
            for f0 in (0..fb).step_by(16) {
                let mut m = 0;
                while m < rows {
                    let first = m.min(rows - P);
                    // SAFETY: rows first..first + P are inside y, and their windows inside xp.
                    unsafe {
                        let acc = block(a, xp.as_ptr().add(first * a.c), w.as_ptr().add(f0));
                        let out = y.as_mut_ptr().add(first * fb + f0);
                        for (p, [low, high]) in acc.iter().enumerate() {
                            _mm256_storeu_ps(out.add(p * fb), *low);
                            _mm256_storeu_ps(out.add(p * fb + 8), *high);
                        }
                    }
                    m += P;
                }
            }
        }

        /// P consecutive positions, 16 filters, in registers through all KH*KW*C taps.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn block(a: &Args, x: *const f32, w: *const f32) -> [[__m256; 2]; P] {
            let mut acc = [[_mm256_setzero_ps(); 2]; P];
            // SAFETY: in bounds by the caller's checks.
            unsafe {
                for row in 0..a.kh {
                    let (xr, wr) = (x.add(row * a.wp * a.c), w.add(row * a.k * a.f));
                    for j in 0..a.k {
                        let wj = wr.add(j * a.f);
                        let ws = [_mm256_loadu_ps(wj), _mm256_loadu_ps(wj.add(8))];
                        for (p, [low, high]) in acc.iter_mut().enumerate() {
                            let xv = _mm256_set1_ps(*xr.add(p * a.c + j));
                            *low = _mm256_fmadd_ps(xv, ws[0], *low);
                            *high = _mm256_fmadd_ps(xv, ws[1], *high);
                        }
                    }
                }
            }
            acc
        }

        // xp: padded; dz: rows of F; runs: (first wide row m, first dz row, length);
        // dw (KH*K, F):
        //   dw[a*K + j] += sum over the runs' rows of xp[(m + a*WP)*C + j] * dz[row].
        // Blocks of 16 filters, and in each, blocks of T taps j, each through
        // all rows with its T x 2 sums in registers.
        // Safety: AVX2 and FMA, T divides K, F is a multiple of 16, and the
        // lengths the caller checked.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn weight_grad<const T: usize>(a: &Args, runs: &Runs, xp: &[f32], dz: &[f32], dw: &mut [f32]) {
            assert!(a.k.is_multiple_of(T), "taps per block must divide KW*C");
            for f0 in (0..a.f).step_by(16) {
                for row in 0..a.kh {
                    for j in (0..a.k).step_by(T) {
                        let mut acc = [[_mm256_setzero_ps(); 2]; T];
                        // SAFETY: in bounds by the caller's checks.
                        unsafe {
                            let x = xp.as_ptr().add(row * a.wp * a.c + j);
                            for r in 0..runs.count {
                                let (m0, d0, len) = runs.run(r);
                                for i in 0..len {
                                    let d = dz.as_ptr().add((d0 + i) * a.f + f0);
                                    let ds = [_mm256_loadu_ps(d), _mm256_loadu_ps(d.add(8))];
                                    let xm = x.add((m0 + i) * a.c);
                                    for (t, [low, high]) in acc.iter_mut().enumerate() {
                                        let xv = _mm256_set1_ps(*xm.add(t));
                                        *low = _mm256_fmadd_ps(xv, ds[0], *low);
                                        *high = _mm256_fmadd_ps(xv, ds[1], *high);
                                    }
                                }
                            }
                            let out = dw.as_mut_ptr().add((row * a.k + j) * a.f + f0);
                            for (t, [low, high]) in acc.iter().enumerate() {
                                let o = out.add(t * a.f);
                                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), *low));
                                _mm256_storeu_ps(o.add(8), _mm256_add_ps(_mm256_loadu_ps(o.add(8)), *high));
                            }
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
    use crate::kernels::im2col::{col2im_add, im2col};
    use crate::kernels::matmul::matmul;

    fn window(h: usize, w: usize, c: usize, kh: usize, kw: usize, same: bool) -> Window {
        let (pt, pl) = if same { ((kh - 1) / 2, (kw - 1) / 2) } else { (0, 0) };
        let (oh, ow) = if same { (h, w) } else { (h - kh + 1, w - kw + 1) };
        Window { h, w, c, kh, kw, sh: 1, sw: 1, dh: 1, dw: 1, pt, pl, oh, ow }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0).collect()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
        }
    }

    /// One case of the layout's tests: its input, kernel, padded input, and
    /// the unfolding reference's forward output and weight gradient (from
    /// the output gradient `dz`, added to 0.5).
    struct Case {
        x: Vec<f32>,
        kernel: Vec<f32>,
        xp: Vec<f32>,
        want: Vec<f32>,
        dz: Vec<f32>,
        want_dw: Vec<f32>,
    }

    fn case(g: &Window, wide: &Wide, f: usize, s: usize) -> Case {
        let (h, w, c) = (g.h, g.w, g.c);
        let (x, kernel) = (values(s * h * w * c, 1), values(g.kh * g.kw * c * f, 2));
        let (p, k) = (g.positions(), g.patch_len());
        let mut cols = vec![0.0; s * p * k];
        for (xs, cs) in x.chunks_exact(h * w * c).zip(cols.chunks_exact_mut(p * k)) {
            im2col(g, xs, cs);
        }
        let mut want = vec![0.0; s * p * f];
        matmul(MatRef::new(&cols, s * p, k), MatRef::new(&kernel, k, f), &mut want, false);
        let mut xp = vec![f32::NAN; wide.padded_len(s)];
        wide.pad(&x, &mut xp);
        let dz = values(s * p * f, 3);
        let mut want_dw = vec![0.5; k * f];
        matmul(MatRef::new(&cols, s * p, k).t(), MatRef::new(&dz, s * p, f), &mut want_dw, true);
        Case { x, kernel, xp, want, dz, want_dw }
    }

    /// A sample padded band by band (as threads do it) equals it padded whole,
    /// with zeros past the layout where the buffer is longer.
    #[test]
    fn padding_by_bands_of_rows_equals_padding_whole() {
        for (g, extra) in
            [(window(7, 5, 3, 3, 3, true), 11), (window(6, 4, 2, 3, 3, false), 0), (window(5, 5, 1, 2, 2, true), 4)]
        {
            let wide = Wide::of(&g).expect("stride 1");
            let x = values(g.h * g.w * g.c, 3);
            let mut whole = vec![f32::NAN; wide.padded_len(1) + extra];
            wide.pad(&x, &mut whole);
            whole[wide.padded_len(1)..].fill(0.0);
            for band_rows in [1, 2, 3, 100] {
                let mut banded = vec![f32::NAN; whole.len()];
                let (lead, rows) = banded.split_at_mut(wide.lead_len());
                lead.fill(0.0);
                for (b, band) in rows.chunks_mut(band_rows * wide.row_len()).enumerate() {
                    wide.pad_rows(&x, b * band_rows, band);
                }
                assert_eq!(banded, whole, "{g:?} in bands of {band_rows} rows");
            }
        }
    }

    /// Forward, weight gradient and input gradient against im2col + matrix products.
    #[test]
    fn wide_convolutions_match_the_unfolding_reference() {
        // (h, w, c, kh, kw, same, f, samples): odd and even kernels, valid and same
        // (2x2 same pads only below and right), one row or column, several samples.
        let cases = [
            (6, 5, 3, 3, 3, true, 4, 3),
            (6, 5, 3, 3, 3, false, 5, 2),
            (4, 7, 2, 2, 2, true, 3, 2),
            (5, 5, 9, 5, 5, true, 2, 2),
            (1, 6, 4, 1, 3, true, 3, 3),
            (7, 4, 3, 3, 1, false, 2, 1),
            (8, 8, 16, 1, 1, false, 8, 2),
            // 16 to 64 filters or channels: the register-blocked kernels where the CPU has AVX-512 or AVX2
            // (taps per block 24, 12, 9, 8 and 6; too few rows for a block; blocks of filters).
            (9, 9, 16, 3, 3, true, 16, 2),
            (7, 6, 3, 3, 3, true, 16, 2),
            (6, 5, 3, 3, 3, false, 32, 2),
            (6, 6, 2, 3, 3, true, 16, 2),
            (5, 7, 10, 3, 3, false, 16, 2),
            (5, 6, 4, 3, 3, true, 32, 2),
            (6, 7, 32, 3, 3, false, 48, 2),
            (3, 3, 16, 3, 3, false, 16, 1),
            (6, 6, 16, 1, 1, false, 32, 3),
            (5, 5, 8, 3, 3, true, 64, 2),
            (7, 6, 64, 3, 3, false, 48, 1),
        ];
        for (h, w, c, kh, kw, same, f, s) in cases {
            let g = window(h, w, c, kh, kw, same);
            let wide = Wide::of(&g).unwrap();
            let what = format!("{g:?} f={f} s={s}");
            let Case { x, kernel, xp, want, dz, want_dw } = case(&g, &wide, f, s);
            let (p, k) = (g.positions(), g.patch_len());
            let mut y_wide = vec![f32::NAN; wide.rows(s) * f];
            wide.forward(&xp, &kernel, f, 0..wide.rows(s), &mut y_wide);
            let mut y = vec![0.0; s * p * f];
            wide.compact(&y_wide, f, None, false, &mut y);
            assert_close(&format!("forward {what}"), &y, &want);
            // The real outputs with a bias added.
            let bias = values(f, 4);
            let mut y_real = vec![f32::NAN; s * p * f];
            wide.compact(&y_wide, f, Some(&bias), false, &mut y_real);
            let want_biased: Vec<f32> = want.iter().enumerate().map(|(i, v)| v + bias[i % f]).collect();
            assert_close(&format!("forward with a bias {what}"), &y_real, &want_biased);
            // Bands of output rows of the first sample, as batch-1 inference splits it.
            for (first, count) in [(0, 1), (1, g.oh - 1), (g.oh - 1, 1)] {
                if count == 0 {
                    continue;
                }
                let band = wide.band(first, count);
                let mut y_band = vec![f32::NAN; band.len() * f];
                wide.forward(&xp, &kernel, f, band, &mut y_band);
                let mut y = vec![0.0; count * g.ow * f];
                wide.compact_band(&y_band, f, &mut y);
                assert_close(
                    &format!("band {first}+{count} {what}"),
                    &y,
                    &want[first * g.ow * f..][..count * g.ow * f],
                );
            }
            // A block of output channels of the first sample, as batch-1 inference splits small images.
            if f > 1 {
                let (filters, rows) = (1..f, wide.band(0, g.oh));
                let mut block = vec![f32::NAN; rows.len() * (f - 1)];
                wide.forward_filters(&xp, &kernel, f, filters, rows, &mut block);
                let mut y = vec![0.0; p * (f - 1)];
                wide.compact_band(&block, f - 1, &mut y);
                let want: Vec<f32> = want[..p * f].chunks_exact(f).flat_map(|r| r[1..].to_vec()).collect();
                assert_close(&format!("filters 1.. {what}"), &y, &want);
            }
            if f >= 32 {
                let (filters, rows) = (f - 16..f, wide.band(0, g.oh));
                let mut block = vec![f32::NAN; rows.len() * 16];
                wide.forward_filters(&xp, &kernel, f, filters, rows, &mut block);
                let mut y = vec![0.0; p * 16];
                wide.compact_band(&block, 16, &mut y);
                let want: Vec<f32> = want[..p * f].chunks_exact(f).flat_map(|r| r[f - 16..].to_vec()).collect();
                assert_close(&format!("filters {}.. {what}", f - 16), &y, &want);
            }
            if wide.pointwise() {
                assert_eq!((xp.as_slice(), y_wide.as_slice()), (x.as_slice(), y.as_slice()), "{what}");
            }

            let mut dz_wide = vec![f32::NAN; wide.rows(s) * f];
            wide.expand(&dz, f, &mut dz_wide);
            let mut dw = vec![0.5; k * f];
            wide.weight_grad(&xp, &dz_wide, f, s, &mut dw);
            assert_close(&format!("weight gradient {what}"), &dw, &want_dw);
            let mut dw = vec![0.5; k * f];
            wide.weight_grad_real(&xp, &dz, f, s, &mut vec![f32::NAN; wide.rows(s) * f], &mut dw);
            assert_close(&format!("weight gradient from real outputs {what}"), &dw, &want_dw);

            let mut dcols = vec![0.0; s * p * k];
            matmul(MatRef::new(&dz, s * p, f), MatRef::new(&kernel, k, f).t(), &mut dcols, false);
            let mut want_dx = vec![0.0; s * h * w * c];
            for (dxs, dc) in want_dx.chunks_exact_mut(h * w * c).zip(dcols.chunks_exact(p * k)) {
                col2im_add(&g, dc, dxs);
            }
            let t = wide.transposed(f);
            let mut turned = vec![0.0; kernel.len()];
            wide.turn_kernel(&kernel, f, &mut turned);
            let mut dzp = vec![f32::NAN; t.padded_len(s)];
            t.pad(&dz, &mut dzp);
            let mut dx_wide = vec![f32::NAN; t.rows(s) * c];
            t.forward(&dzp, &turned, c, 0..t.rows(s), &mut dx_wide);
            let mut dx = vec![0.0; s * h * w * c];
            t.compact(&dx_wide, c, None, false, &mut dx);
            assert_close(&format!("input gradient {what}"), &dx, &want_dx);
        }
    }

    /// The register-blocked kernels of every instruction set this CPU runs
    /// (AVX2's too where AVX-512 runs) against im2col + matrix products: the
    /// forward pass, a block of filters, and the weight gradient from the
    /// wide and the real output gradient.
    #[test]
    fn register_blocked_kernels_match_the_products_on_every_instruction_set() {
        use super::super::Isa;
        let isas = Isa::present_sets();
        // (h, w, c, kh, kw, same, f, samples): 16 to 64 filters; KW*C with
        // each of AVX2's taps per block (6, 4, 3, 2, 1); pointwise windows.
        let cases = [
            (9, 9, 16, 3, 3, true, 16, 2),
            (7, 6, 3, 3, 3, true, 32, 2),
            (6, 7, 32, 3, 3, false, 48, 2),
            (5, 5, 8, 3, 3, true, 64, 2),
            (6, 6, 2, 3, 3, true, 16, 2),
            (6, 5, 1, 3, 1, true, 32, 2),
            (8, 8, 1, 1, 1, false, 16, 2),
            (6, 6, 16, 1, 1, false, 32, 3),
        ];
        for isa in isas {
            for (h, w, c, kh, kw, same, f, s) in cases {
                let g = window(h, w, c, kh, kw, same);
                let wide = Wide::of(&g).unwrap();
                let what = format!("{isa:?} {g:?} f={f} s={s}");
                let Case { kernel, xp, want, dz, want_dw, .. } = case(&g, &wide, f, s);
                let (p, k) = (g.positions(), g.patch_len());
                let rows = wide.rows(s);
                let mut y_wide = vec![f32::NAN; rows * f];
                assert!(blocked::forward(isa, &wide, &xp, &kernel, f, 0..f, 0..rows, &mut y_wide), "{what}");
                let mut y = vec![0.0; s * p * f];
                wide.compact(&y_wide, f, None, false, &mut y);
                assert_close(&format!("forward {what}"), &y, &want);
                // The last 16 filters alone.
                let mut block = vec![f32::NAN; rows * 16];
                assert!(blocked::forward(isa, &wide, &xp, &kernel, f, f - 16..f, 0..rows, &mut block), "{what}");
                let mut y = vec![0.0; s * p * 16];
                wide.compact(&block, 16, None, false, &mut y);
                let want: Vec<f32> = want.chunks_exact(f).flat_map(|r| r[f - 16..].to_vec()).collect();
                assert_close(&format!("filters {}.. {what}", f - 16), &y, &want);

                let mut dz_wide = vec![f32::NAN; rows * f];
                wide.expand(&dz, f, &mut dz_wide);
                let mut dw = vec![0.5; k * f];
                let ran = blocked::weight_grad(isa, &wide, &xp, &dz_wide, false, f, &mut dw);
                assert!(ran || isa == Isa::Avx512, "AVX2's kernel takes any KW*C: {what}");
                if ran {
                    assert_close(&format!("weight gradient {what}"), &dw, &want_dw);
                }
                let mut dw = vec![0.5; k * f];
                if blocked::weight_grad(isa, &wide, &xp, &dz, true, f, &mut dw) {
                    assert_close(&format!("weight gradient from real outputs {what}"), &dw, &want_dw);
                }
            }
        }
    }

    #[test]
    fn strided_and_dilated_windows_take_the_unfolding_path() {
        let g = window(8, 8, 3, 3, 3, true);
        assert!(Wide::of(&Window { sh: 2, sw: 2, oh: 4, ow: 4, ..g }).is_none());
        assert!(Wide::of(&Window { dh: 2, dw: 2, ..g }).is_none());
        assert!(Wide::of(&g).is_some());
    }
}
