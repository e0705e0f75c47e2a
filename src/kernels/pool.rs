//! 2-D max pooling that records the winning input index of every output, so
//! backward is a scatter.

use multiversion::multiversion;

use super::Window;

/// x: (H,W,C) -> y: (OH,OW,C); argmax[i] is the flat index in x of y[i].
/// Window positions in the padding are skipped (they never win).
#[multiversion(targets = "simd")]
pub fn max_pool_forward(g: &Window, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    let c = g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let o = (oy * g.ow + ox) * c;
            let (yo, ao) = (&mut y[o..o + c], &mut argmax[o..o + c]);
            yo.fill(f32::NEG_INFINITY);
            let iy0 = (oy * g.sh) as isize - g.pt as isize;
            let ix0 = (ox * g.sw) as isize - g.pl as isize;
            for iy in iy0.max(0)..(iy0 + g.kh as isize).min(g.h as isize) {
                for ix in ix0.max(0)..(ix0 + g.kw as isize).min(g.w as isize) {
                    let i = (iy as usize * g.w + ix as usize) * c;
                    // `>` keeps the first maximum, as TensorFlow does; written
                    // as selects so the channel loop vectorises.
                    for (ch, ((ym, am), &v)) in yo.iter_mut().zip(ao.iter_mut()).zip(&x[i..i + c]).enumerate() {
                        let better = v > *ym;
                        *ym = if better { v } else { *ym };
                        *am = if better { (i + ch) as u32 } else { *am };
                    }
                }
            }
        }
    }
}

/// dy: (OH,OW,C) -> dx: (H,W,C). Differentiates `y[i] = x[argmax[i]]`: dx[argmax[i]] += dy[i].
#[multiversion(targets = "simd")]
pub fn max_pool_backward(dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (&d, &a) in dy.iter().zip(argmax) {
        dx[a as usize] += d;
    }
}
