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
                    let src = &line[ix0 as usize * c..][..span];
                    if span <= 16 {
                        // A call to memcpy costs more than a few scalar moves.
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = *s;
                        }
                    } else {
                        dst.copy_from_slice(src);
                    }
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

/// The adjoint of [`im2col`]: dx (H,W,C) += fold(dcols (OH*OW, KH*KW*C)).
#[multiversion(targets = "simd")]
pub fn col2im_add(g: &Window, dcols: &[f32], dx: &mut [f32]) {
    let (c, k) = (g.c, g.patch_len());
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
