//! Batch normalisation over the last axis (channels) of row-major rows of `c`
//! values. Sums are f64 and taken row by row in order, so callers that split
//! rows into fixed tasks and add the task sums in order are deterministic.

use multiversion::multiversion;

/// sums[ch] += sum over rows of x[row, ch] and sums[c + ch] += sum of x[row, ch]^2:
/// the batch's mean and variance in one pass (var = E[x^2] - mean^2, in f64).
#[multiversion(targets = "simd")]
pub fn add_moments(x: &[f32], c: usize, sums: &mut [f64]) {
    let (values, squares) = sums[..2 * c].split_at_mut(c);
    for row in x.chunks_exact(c) {
        for ((s, q), &v) in values.iter_mut().zip(squares.iter_mut()).zip(row) {
            let v = v as f64;
            *s += v;
            *q += v * v;
        }
    }
}

/// y = x * a + b per channel (a = gamma / sqrt(var + eps), b = beta - mean * a).
#[multiversion(targets = "simd")]
pub fn scale_shift(x: &[f32], a: &[f32], b: &[f32], y: &mut [f32]) {
    let c = a.len();
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for (((y, &x), &a), &b) in yr.iter_mut().zip(xr).zip(a).zip(b) {
            *y = x * a + b;
        }
    }
}

/// sums[ch] += sum dy and sums[c + ch] += sum dy * xhat, with xhat = (x - mean) * inv_std:
/// the gradients of beta and gamma.
#[multiversion(targets = "simd")]
pub fn add_grad_sums(x: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], sums: &mut [f64]) {
    let c = mean.len();
    let (dbeta, dgamma) = sums.split_at_mut(c);
    for (xr, dr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
            dbeta[ch] += dr[ch] as f64;
            dgamma[ch] += (dr[ch] * xhat) as f64;
        }
    }
}

/// dx = a * (dy - k1 - xhat * k2) per channel, xhat = (x - mean) * inv_std.
/// Training (batch statistics): k1 = sum dy / M, k2 = sum dy*xhat / M;
/// inference (fixed statistics): k1 = k2 = 0.
pub struct InputGrad<'a> {
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub a: &'a [f32],
    pub k1: &'a [f32],
    pub k2: &'a [f32],
}

impl InputGrad<'_> {
    pub fn write(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        input_grad(self, x, dy, dx)
    }
}

#[multiversion(targets = "simd")]
fn input_grad(g: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let c = g.mean.len();
    for ((xr, dr), out) in x.chunks_exact(c).zip(dy.chunks_exact(c)).zip(dx.chunks_exact_mut(c)) {
        for ch in 0..c {
            let xhat = (xr[ch] - g.mean[ch]) * g.inv_std[ch];
            out[ch] = g.a[ch] * (dr[ch] - g.k1[ch] - xhat * g.k2[ch]);
        }
    }
}

/// total += part, elementwise (ordered reduction of per-task f64 sums).
pub fn add_f64(total: &mut [f64], part: &[f64]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}
