//! BatchNormalization's reductions and input gradient.

use super::{CHUNK, SAMPLES_PER_TASK};
use crate::device::{ChannelSums, Workspace};
use crate::kernels::batch_norm::{self, InputGrad};
use rayon::prelude::*;

/// Per-channel sums over tasks of samples: each task's f64 partial sums (in
/// `ws`), added in task order into `sums`.
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
    let task = SAMPLES_PER_TASK * sample_len;
    let x = &x[..len];
    let parts = ws.f64s(len.div_ceil(task) * width);
    parts.fill(0.0);
    parts.par_chunks_mut(width).zip(x.par_chunks(task)).enumerate().for_each(|(t, (part, xt))| match what {
        ChannelSums::Moments => batch_norm::add_moments(xt, c, part),
        ChannelSums::Gradients { dy, mean, inv_std, gate } => {
            batch_norm::add_grad_sums(xt, &dy[t * task..][..xt.len()], mean, inv_std, gate, part)
        }
    });
    add_parts(parts, width, sums);
}

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
        .for_each(|((dxt, xt), dyt)| grad.write(xt, dyt, dxt));
}
