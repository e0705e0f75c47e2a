//! BatchNormalization's reductions and input gradient.

use super::team::ForEachTask;
use super::{CHUNK, SAMPLES_PER_TASK};
use crate::device::{ChannelSums, Workspace};
use crate::kernels::batch_norm::{self, InputGrad};
use rayon::prelude::*;

/// Per-channel sums over tasks of samples (or, for fewer samples than a
/// task, over [`SAMPLES_PER_TASK`] tasks of pixels, at least
/// [`PIXELS_PER_TASK`] each: a large image at a small batch): each task's
/// f64 partial sums (in `ws`), added in task order into `sums`. The tasks
/// depend on the shapes only, never on the threads.
#[allow(clippy::too_many_arguments)]
pub fn channel_sums(
    what: ChannelSums,
    x: &[f32],
    c: usize,
    sample_len: usize,
    len: usize,
    sums: &mut [f64],
    ws: &mut Workspace,
) {
    let width = 2 * c;
    let task = match SAMPLES_PER_TASK * sample_len {
        whole if len >= whole => whole,
        _ => (len / c).div_ceil(SAMPLES_PER_TASK).max(PIXELS_PER_TASK) * c,
    };
    let x = &x[..len];
    let parts = ws.f64s(len.div_ceil(task) * width);
    parts.fill(0.0);
    parts.par_chunks_mut(width).zip(x.par_chunks(task)).enumerate().for_each_task(|(t, (part, xt))| match what {
        ChannelSums::Moments => batch_norm::add_moments(xt, c, part),
        ChannelSums::Gradients { dy, mean, inv_std, gate } => {
            batch_norm::add_grad_sums(xt, &dy[t * task..][..xt.len()], mean, inv_std, gate, part)
        }
    });
    add_parts(parts, width, sums);
}

/// The fewest pixels per task of [`channel_sums`] where a batch splits by pixels.
const PIXELS_PER_TASK: usize = 256;

/// sums[..width] = the parts (of `width` values each) added in their order.
pub fn add_parts(parts: &[f64], width: usize, sums: &mut [f64]) {
    let total = &mut sums[..width];
    total.fill(0.0);
    for part in parts.chunks_exact(width) {
        batch_norm::add_f64(total, part);
    }
}

// dx = a * (dy - k1 - xhat * k2)
pub fn input_grad(grad: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
    let c = grad.a.len();
    let chunk = c * (CHUNK / c).max(1);
    dx[..len]
        .par_chunks_mut(chunk)
        .zip(x[..len].par_chunks(chunk))
        .zip(dy[..len].par_chunks(chunk))
        .for_each_task(|((dxt, xt), dyt)| grad.write(xt, dyt, dxt));
}

#[cfg(test)]
mod tests {
    use super::*;

    // Below a task of samples, the sums by tasks of pixels (several, the
    // last one short) against their definitions; over a whole task of
    // samples too, and for channels in blocks and not.
    #[test]
    fn channel_sums_match_their_definitions() {
        for (n, pixels, c) in [(3, 400, 16), (2, 300, 5), (17, 9, 16)] {
            let len = n * pixels * c;
            let value = |i: usize, seed: usize| ((i * 37 + seed * 11) % 29) as f32 / 29.0 - 0.5;
            let x: Vec<f32> = (0..len).map(|i| value(i, 1)).collect();
            let dy: Vec<f32> = (0..len).map(|i| value(i, 2)).collect();
            let mean: Vec<f32> = (0..c).map(|ch| 0.1 * ch as f32).collect();
            let inv_std: Vec<f32> = (0..c).map(|ch| 1.0 + 0.5 * ch as f32).collect();
            let gradients = ChannelSums::Gradients { dy: &dy, mean: &mean, inv_std: &inv_std, gate: None };
            for what in [ChannelSums::Moments, gradients] {
                let mut sums = vec![f64::NAN; 2 * c];
                channel_sums(what, &x, c, pixels * c, len, &mut sums, &mut Workspace::default());
                for ch in 0..c {
                    let (mut first, mut second) = (0.0f64, 0.0f64);
                    for (&x, &dy) in x.iter().zip(&dy).skip(ch).step_by(c) {
                        let (x, dy) = (x as f64, dy as f64);
                        match what {
                            ChannelSums::Moments => (first, second) = (first + x, second + x * x),
                            ChannelSums::Gradients { .. } => {
                                let xhat = (x - mean[ch] as f64) * inv_std[ch] as f64;
                                (first, second) = (first + dy, second + dy * xhat)
                            }
                        }
                    }
                    let close = |got: f64, want: f64| (got - want).abs() <= 1e-4 * (1.0 + want.abs());
                    assert!(
                        close(sums[ch], first) && close(sums[c + ch], second),
                        "{n} x {pixels} x {c}, channel {ch}"
                    );
                }
            }
        }
    }
}
