//! Cross-entropies. From logits they use log-sum-exp (softmax) and the
//! log(1 + e^-|z|) form (sigmoid), so no log(0) or overflow can occur; from
//! probabilities they clip to [EPSILON, 1 - EPSILON] as Keras does.

use super::EPSILON;
use crate::kernels::activation::{log_sum_exp, sigmoid};

// L = -sum_i t_i log p_i per row; p = softmax(z) from logits, else p = y / sum(y) clipped.
// With label smoothing s, t_i becomes t_i * (1 - s) + s / width.
pub(super) fn categorical(
    out: &[f32],
    target: &[f32],
    grad: &mut [f32],
    width: usize,
    scale: f32,
    from_logits: bool,
    smoothing: f32,
) -> f64 {
    let rows = out.chunks_exact(width).zip(target.chunks_exact(width)).zip(grad.chunks_exact_mut(width));
    if smoothing == 0.0 {
        return rows.map(|((o, t), g)| xent_row(o, |i| t[i], g, scale, from_logits)).sum();
    }
    let (keep, add) = (1.0 - smoothing, smoothing / width as f32);
    rows.map(|((o, t), g)| xent_row(o, |i| t[i] * keep + add, g, scale, from_logits)).sum()
}

// As categorical, with t = one_hot(class index).
pub(super) fn sparse_categorical(
    out: &[f32],
    target: &[f32],
    grad: &mut [f32],
    width: usize,
    scale: f32,
    from_logits: bool,
) -> f64 {
    let rows = out.chunks_exact(width).zip(target).zip(grad.chunks_exact_mut(width));
    rows.map(|((o, &class), g)| xent_row(o, |i| (i == class as usize) as u8 as f32, g, scale, from_logits)).sum()
}

fn xent_row(out: &[f32], t: impl Fn(usize) -> f32, g: &mut [f32], scale: f32, from_logits: bool) -> f64 {
    if from_logits { softmax_xent_row(out, t, g, scale) } else { prob_xent_row(out, t, g, scale) }
}

// L = sum_i t_i lse(z) - t_i z_i;  dL/dz = softmax(z) * sum(t) - t
fn softmax_xent_row(z: &[f32], t: impl Fn(usize) -> f32, g: &mut [f32], scale: f32) -> f64 {
    let lse = log_sum_exp(z);
    let t_sum: f32 = (0..z.len()).map(&t).sum();
    let mut loss = 0.0f64;
    for (i, (gi, &zi)) in g.iter_mut().zip(z).enumerate() {
        let ti = t(i);
        loss += (ti * (lse - zi)) as f64;
        *gi = ((zi - lse).exp() * t_sum - ti) * scale;
    }
    loss
}

// p = y / S, q = clip(p);  L = -sum t_i log q_i;  dL/dy_j = (g_j - sum_i g_i p_i) / S, g_i = -t_i / q_i
fn prob_xent_row(y: &[f32], t: impl Fn(usize) -> f32, g: &mut [f32], scale: f32) -> f64 {
    let sum: f32 = y.iter().sum();
    let mut loss = 0.0f64;
    let mut dot = 0.0f32;
    for (i, (gi, &yi)) in g.iter_mut().zip(y).enumerate() {
        let (ti, p) = (t(i), yi / sum);
        let q = p.clamp(EPSILON, 1.0 - EPSILON);
        if ti != 0.0 {
            loss -= (ti as f64) * (q as f64).ln();
        }
        *gi = if q == p { -ti / q } else { 0.0 };
        dot += *gi * p;
    }
    for gi in g.iter_mut() {
        *gi = (*gi - dot) / sum * scale;
    }
    loss
}

// Per element, averaged over the row:
//   from logits: L = max(z, 0) - z t + log(1 + e^-|z|);  dL/dz = sigmoid(z) - t
//   from probabilities: L = -(t log q + (1 - t) log(1 - q)), q = clip(p)
// With label smoothing s, t becomes t * (1 - s) + s / 2.
pub(super) fn binary(
    out: &[f32],
    target: &[f32],
    grad: &mut [f32],
    width: usize,
    scale: f32,
    from_logits: bool,
    smoothing: f32,
) -> f64 {
    let scale = scale / width as f32;
    let mut total = 0.0f64;
    for ((o, t), g) in out.chunks_exact(width).zip(target.chunks_exact(width)).zip(grad.chunks_exact_mut(width)) {
        let mut row = 0.0f64;
        for ((gi, &v), &ti) in g.iter_mut().zip(o).zip(t) {
            let ti = if smoothing == 0.0 { ti } else { ti * (1.0 - smoothing) + 0.5 * smoothing };
            if from_logits {
                row += (v.max(0.0) - v * ti + (-v.abs()).exp().ln_1p()) as f64;
                *gi = (sigmoid(v) - ti) * scale;
            } else {
                let q = v.clamp(EPSILON, 1.0 - EPSILON);
                row -= (ti as f64) * (q as f64).ln() + (1.0 - ti as f64) * (1.0 - q as f64).ln();
                *gi = if q == v { (-ti / q + (1.0 - ti) / (1.0 - q)) * scale } else { 0.0 };
            }
        }
        total += row / width as f64;
    }
    total
}
