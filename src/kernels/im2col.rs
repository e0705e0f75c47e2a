//! Unfolding image patches into rows (im2col) so a convolution becomes one
//! matrix product, and folding gradients back (col2im).

use multiversion::multiversion;

use super::Window;

/// x: (H,W,C) -> cols: (OH*OW, KH*KW*C), zeros where the window hangs over
/// padding; taps `dh` rows and `dw` columns apart.
pub fn im2col(g: &Window, x: &[f32], cols: &mut [f32]) {
    im2col_positions(g, x, 0..g.positions(), cols)
}

/// [`im2col`] of the output positions `positions` (flat, OY * OW + OX) only:
/// cols (positions.len(), KH*KW*C).
#[multiversion(targets = "simd")]
pub fn im2col_positions(g: &Window, x: &[f32], positions: std::ops::Range<usize>, cols: &mut [f32]) {
    let (c, k) = (g.c, g.patch_len());
    if reads_pixels(g) {
        // A patch is one pixel.
        for (at, row) in positions.zip(cols.chunks_exact_mut(c)) {
            let (iy, ix) = (at / g.ow * g.sh, at % g.ow * g.sw);
            if iy >= g.h || ix >= g.w {
                row.fill(0.0);
                continue;
            }
            copy_values(&x[(iy * g.w + ix) * c..][..c], row);
        }
        return;
    }
    let span = g.kw * c;
    let first = positions.start;
    for (oy, ox) in positions.map(|at| (at / g.ow, at % g.ow)) {
        {
            let row = &mut cols[(oy * g.ow + ox - first) * k..][..k];
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            let ix0 = (ox * g.sw) as isize - g.pl as isize;
            for (ky, dst) in row.chunks_exact_mut(span).enumerate() {
                let iy = iy0 + (ky * g.dh) as isize;
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let line = &x[iy as usize * g.w * c..][..g.w * c];
                if g.dw == 1 && ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                    copy_values(&line[ix0 as usize * c..][..span], dst);
                    continue;
                }
                for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                    let ix = ix0 + (kx * g.dw) as isize;
                    if ix < 0 || ix >= g.w as isize {
                        d.fill(0.0);
                    } else {
                        d.copy_from_slice(&line[ix as usize * c..][..c]);
                    }
                }
            }
        }
    }
}

/// Width of the padded input a window's outputs read (dilation 1):
/// (OW-1)*SW + KW columns, from the left padding on.
pub fn padded_width(g: &Window) -> usize {
    (g.ow.max(1) - 1) * g.sw + g.kw
}

/// x: (H,W,C) -> xp: rows `rows` of x padded as the window reads it
/// (dilation 1): (rows.len(), [`padded_width`], C), padded row r being input
/// row r - PT and column q input column q - PL, zeros outside the input.
pub fn pad_rows(g: &Window, x: &[f32], rows: std::ops::Range<usize>, xp: &mut [f32]) {
    let (c, wp) = (g.c, padded_width(g));
    // The input's columns inside the padded row: [left, left + inside).
    let left = g.pl.min(wp);
    let inside = g.w.min(wp - left);
    for (r, row) in rows.zip(xp.chunks_exact_mut(wp * c)) {
        let Some(iy) = r.checked_sub(g.pt).filter(|&iy| iy < g.h) else {
            row.fill(0.0);
            continue;
        };
        let (before, rest) = row.split_at_mut(left * c);
        let (mid, after) = rest.split_at_mut(inside * c);
        before.fill(0.0);
        mid.copy_from_slice(&x[iy * g.w * c..][..inside * c]);
        after.fill(0.0);
    }
}

/// Whether the window is 1x1 without padding (strided or not): its unfolded
/// patches are the input pixels it reads, one per output position, and its
/// products those of a pointwise convolution over them.
pub fn reads_pixels(g: &Window) -> bool {
    (g.kh, g.kw, g.pt, g.pl) == (1, 1, 0, 0)
}

/// The adjoint of [`im2col`] for a window that [`reads_pixels`]: dx (H,W,C)
/// = dcols (OH*OW, C) at the pixels the window reads and zeros elsewhere, or
/// with `accumulate` dx += that (one pass over dx either way).
pub fn col2im_pixels(g: &Window, dcols: &[f32], dx: &mut [f32], accumulate: bool) {
    let c = g.c;
    for (iy, row) in dx[..g.h * g.w * c].chunks_exact_mut(g.w * c).enumerate() {
        if !accumulate {
            row.fill(0.0);
        }
        let oy = iy / g.sh;
        if iy % g.sh != 0 || oy >= g.oh {
            continue;
        }
        let read = row.chunks_mut(g.sw * c).take(g.ow);
        for (px, src) in read.zip(dcols[oy * g.ow * c..][..g.ow * c].chunks_exact(c)) {
            if accumulate {
                super::add_assign(&mut px[..c], src);
            } else {
                copy_values(src, &mut px[..c]);
            }
        }
    }
}

/// dst = src, 16 values at a time: the runs that unfolding copies (a pixel's
/// C values, a kernel row's KW*C) are short, and a call to memcpy for each
/// costs more than the copy.
#[inline(always)]
fn copy_values(src: &[f32], dst: &mut [f32]) {
    let (whole, rest) = dst.split_at_mut(dst.len() - dst.len() % 16);
    for (d, s) in whole.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
        let v: [f32; 16] = s.try_into().expect("16 values");
        d.copy_from_slice(&v);
    }
    for (d, s) in rest.iter_mut().zip(&src[whole.len()..]) {
        *d = *s;
    }
}

/// The adjoint of [`im2col`]: dx (H,W,C) += fold(dcols (OH*OW, KH*KW*C)).
#[multiversion(targets = "simd")]
pub fn col2im_add(g: &Window, dcols: &[f32], dx: &mut [f32]) {
    let (c, k) = (g.c, g.patch_len());
    let span = g.kw * c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &dcols[(oy * g.ow + ox) * k..][..k];
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            let ix0 = (ox * g.sw) as isize - g.pl as isize;
            for ky in 0..g.kh {
                let iy = iy0 + (ky * g.dh) as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                if g.dw == 1 && ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                    // The kernel row inside the input: one run of KW*C values.
                    let dst = &mut dx[(iy as usize * g.w + ix0 as usize) * c..][..span];
                    super::add_assign(dst, &row[ky * span..][..span]);
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = ix0 + (kx * g.dw) as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let src = &row[(ky * g.kw + kx) * c..][..c];
                    let dst = &mut dx[(iy as usize * g.w + ix as usize) * c..][..c];
                    super::add_assign(dst, src);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1x1 windows without padding, strided, over sides the strides divide and
    /// sides they do not; channels with and without a partial block of 16.
    fn pixel_windows() -> Vec<Window> {
        let mut windows = Vec::new();
        let sizes: [(usize, usize, usize, usize, usize); 4] =
            [(6, 6, 16, 2, 2), (7, 5, 32, 2, 2), (5, 7, 3, 3, 2), (4, 9, 20, 1, 3)];
        for (h, w, c, sh, sw) in sizes {
            let (oh, ow) = (h.div_ceil(sh), w.div_ceil(sw));
            windows.push(Window { h, w, c, kh: 1, kw: 1, sh, sw, dh: 1, dw: 1, pt: 0, pl: 0, oh, ow });
        }
        windows
    }

    #[test]
    fn unfolding_a_1x1_window_gathers_the_pixels_it_reads() {
        for g in pixel_windows() {
            assert!(reads_pixels(&g));
            let x: Vec<f32> = (0..g.h * g.w * g.c).map(|i| i as f32).collect();
            let mut cols = vec![f32::NAN; g.positions() * g.c];
            im2col(&g, &x, &mut cols);
            for (oy, ox, ch) in
                (0..g.oh).flat_map(|oy| (0..g.ow).flat_map(move |ox| (0..g.c).map(move |ch| (oy, ox, ch))))
            {
                let want = x[((oy * g.sh) * g.w + ox * g.sw) * g.c + ch];
                assert_eq!(cols[(oy * g.ow + ox) * g.c + ch], want, "{g:?} at ({oy}, {ox}, {ch})");
            }
            // A band of positions, as the batch-1 path unfolds them.
            let mut band = vec![f32::NAN; 3 * g.c];
            im2col_positions(&g, &x, 2..5, &mut band);
            assert_eq!(band, cols[2 * g.c..5 * g.c], "{g:?}: positions 2..5");
        }
    }

    /// Folding is the adjoint of unfolding: <im2col(x), d> = <x, col2im(d)>
    /// for windows with padding, strides, dilation, and kernel rows inside the
    /// input and hanging over its sides (integer values: the sums are exact).
    #[test]
    fn folding_is_the_adjoint_of_unfolding() {
        #[rustfmt::skip]
        let windows = [
            // (h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)
            (9, 8, 16, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4),
            (9, 8, 16, 3, 3, 2, 2, 1, 1, 0, 0, 4, 3),
            (7, 7, 3, 3, 3, 1, 1, 1, 1, 1, 1, 7, 7),
            (8, 9, 2, 3, 2, 1, 1, 2, 3, 0, 1, 4, 7),
            (6, 10, 5, 2, 3, 2, 3, 1, 1, 1, 0, 4, 3),
        ];
        for (h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow) in windows {
            let g = Window { h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow };
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 7) % 9) as f32 - 4.0).collect();
            let d: Vec<f32> = (0..g.positions() * g.patch_len()).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
            let mut cols = vec![f32::NAN; d.len()];
            im2col(&g, &x, &mut cols);
            let mut folded = vec![0.0; x.len()];
            col2im_add(&g, &d, &mut folded);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
            assert_eq!(dot(&cols, &d), dot(&x, &folded), "{g:?}");
        }
    }

    #[test]
    fn folding_pixels_back_matches_the_general_fold() {
        for g in pixel_windows() {
            let len = g.h * g.w * g.c;
            let dcols: Vec<f32> = (0..g.positions() * g.c).map(|i| (i as f32 * 0.37).sin()).collect();
            let held: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            // Written: every value of dx, whatever it held.
            let (mut written, mut general) = (vec![f32::NAN; len], vec![0.0; len]);
            col2im_pixels(&g, &dcols, &mut written, false);
            col2im_add(&g, &dcols, &mut general);
            assert_eq!(written, general, "{g:?}: written");
            // Added to what dx held.
            let (mut added, mut general) = (held.clone(), held);
            col2im_pixels(&g, &dcols, &mut added, true);
            col2im_add(&g, &dcols, &mut general);
            assert_eq!(added, general, "{g:?}: added");
        }
    }
}
