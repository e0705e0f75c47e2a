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
        let (g, c) = (&self.g, self.g.c);
        let s = x.len() / (g.h * g.w * c);
        let xp = &mut xp[..self.padded_len(s)];
        let (lead, samples) = xp.split_at_mut(self.lead * c);
        lead.fill(0.0);
        for (xs, ps) in x.chunks_exact(g.h * g.w * c).zip(samples.chunks_exact_mut(self.hp * self.wp * c)) {
            let (rows, below) = ps.split_at_mut(g.h * self.wp * c);
            for (src, dst) in xs.chunks_exact(g.w * c).zip(rows.chunks_exact_mut(self.wp * c)) {
                let (values, zeros) = dst.split_at_mut(g.w * c);
                values.copy_from_slice(src);
                zeros.fill(0.0);
            }
            below.fill(0.0);
        }
    }

    // xp: padded -> y_wide: (rows.len(), F), wide rows m in `rows` (all: 0..rows(s)) =
    //   sum over kernel rows a of xp[(m + a*WP)*C ..][..KW*C] . W[a] (KW*C, F)
    pub fn forward(&self, xp: &[f32], kernel: &[f32], f: usize, rows: std::ops::Range<usize>, y_wide: &mut [f32]) {
        self.forward_filters(xp, kernel, f, 0..f, rows, y_wide);
    }

    // [`Wide::forward`] of the output channels `filters` only: y_wide (rows.len(), filters.len()).
    pub fn forward_filters(
        &self,
        xp: &[f32],
        kernel: &[f32],
        f: usize,
        filters: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
        y_wide: &mut [f32],
    ) {
        let g = &self.g;
        let (k, m, fb) = (g.kw * g.c, rows.len(), filters.len());
        for a in 0..g.kh {
            let patches = MatRef::overlapping(&xp[(rows.start + a * self.wp) * g.c..], m, k, g.c);
            let w = MatRef::with_ld(&kernel[a * k * f + filters.start..], k, fb, f);
            matmul_ld(patches, w, &mut y_wide[..m * fb], fb, a > 0);
        }
    }

    // dw (KH*KW*C, F) += sum over kernel rows a of xp_a^T . dz_wide, per a its KW*C rows;
    // dz_wide: (rows(s), F) with zeros at the dropped positions.
    pub fn weight_grad(&self, xp: &[f32], dz_wide: &[f32], f: usize, s: usize, dw: &mut [f32]) {
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

    /// y_wide (rows(s), F) -> y (s,OH,OW,F): the real outputs.
    pub fn compact(&self, y_wide: &[f32], f: usize, y: &mut [f32]) {
        let g = &self.g;
        for (s, ys) in y.chunks_exact_mut(g.oh * g.ow * f).enumerate() {
            for (r, row) in ys.chunks_exact_mut(g.ow * f).enumerate() {
                row.copy_from_slice(&y_wide[(s * self.hp * self.wp + r * self.wp) * f..][..g.ow * f]);
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

    /// kernel (KH,KW,C,F) -> turned (KH,KW,F,C): turned[a][b][j][i] = kernel[KH-1-a][KW-1-b][i][j].
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
        ];
        for (h, w, c, kh, kw, same, f, s) in cases {
            let g = window(h, w, c, kh, kw, same);
            let wide = Wide::of(&g).unwrap();
            let what = format!("{g:?} f={f} s={s}");
            let (x, kernel) = (values(s * h * w * c, 1), values(kh * kw * c * f, 2));
            let (p, k) = (g.positions(), g.patch_len());
            let mut cols = vec![0.0; s * p * k];
            for (xs, cs) in x.chunks_exact(h * w * c).zip(cols.chunks_exact_mut(p * k)) {
                im2col(&g, xs, cs);
            }
            let mut want = vec![0.0; s * p * f];
            matmul(MatRef::new(&cols, s * p, k), MatRef::new(&kernel, k, f), &mut want, false);

            let mut xp = vec![f32::NAN; wide.padded_len(s)];
            wide.pad(&x, &mut xp);
            let mut y_wide = vec![f32::NAN; wide.rows(s) * f];
            wide.forward(&xp, &kernel, f, 0..wide.rows(s), &mut y_wide);
            let mut y = vec![0.0; s * p * f];
            wide.compact(&y_wide, f, &mut y);
            assert_close(&format!("forward {what}"), &y, &want);
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
            if wide.pointwise() {
                assert_eq!((xp.as_slice(), y_wide.as_slice()), (x.as_slice(), y.as_slice()), "{what}");
            }

            let dz = values(s * p * f, 3);
            let mut want_dw = vec![0.5; k * f];
            matmul(MatRef::new(&cols, s * p, k).t(), MatRef::new(&dz, s * p, f), &mut want_dw, true);
            let mut dz_wide = vec![f32::NAN; wide.rows(s) * f];
            wide.expand(&dz, f, &mut dz_wide);
            let mut dw = vec![0.5; k * f];
            wide.weight_grad(&xp, &dz_wide, f, s, &mut dw);
            assert_close(&format!("weight gradient {what}"), &dw, &want_dw);

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
            t.compact(&dx_wide, c, &mut dx);
            assert_close(&format!("input gradient {what}"), &dx, &want_dx);
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
