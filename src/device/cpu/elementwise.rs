//! Passes that touch each value once: copies, activations, merges, padding,
//! resampling. Split in fixed chunks (or tasks of samples), so any thread
//! count gives the same result.

use super::team::ForEachTask;
use super::{CHUNK, SAMPLES_PER_TASK, task_count, with_scratch};
use crate::activations::Activation;
use crate::device::{Pad2D, ProductOp, ResampleOp, Span, Workspace};
use crate::kernels::activation::{self, Rectifier};
use crate::kernels::batch_norm;
use crate::kernels::resample::{resample_backward as tap_backward, resample_forward as tap_forward};
use rayon::prelude::*;

/// A chunk length that is a multiple of `width` (rows stay whole).
fn rows_chunk(width: usize) -> usize {
    width.max(1) * (CHUNK / width.max(1)).max(1)
}

pub fn copy(x: &[f32], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).zip(x[..len].par_chunks(CHUNK)).for_each_task(|(y, x)| y.copy_from_slice(x));
}

// z: (rows, width) -> act(z), in place
pub fn activation_forward(act: Activation, z: &mut [f32], width: usize) {
    if act == Activation::Linear {
        return;
    }
    z.par_chunks_mut(rows_chunk(width)).for_each_task(|z| activation::forward(act, z, None, width));
}

// dy -> dy * act'(z), from y
pub fn activation_backward(act: Activation, y: &[f32], dy: &mut [f32], width: usize) {
    if act == Activation::Linear {
        return;
    }
    let chunk = rows_chunk(width);
    dy.par_chunks_mut(chunk).zip(y.par_chunks(chunk)).for_each_task(|(d, y)| activation::backward(act, y, d, width));
}

// dy -> dy * act'(z), from z
pub fn activation_backward_from_input(act: Activation, z: &[f32], dy: &mut [f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(z.par_chunks(CHUNK))
        .for_each_task(|(d, z)| activation::backward_from_input(act, z, d));
}

// y = f(x)
pub fn rectifier_forward(f: Rectifier, x: &[f32], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).zip(x[..len].par_chunks(CHUNK)).for_each_task(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = f.value(x);
        }
    });
}

// dx = dy * f'(x)
pub fn rectifier_backward(f: Rectifier, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
    dx[..len].par_chunks_mut(CHUNK).zip(dy[..len].par_chunks(CHUNK)).zip(x[..len].par_chunks(CHUNK)).for_each_task(
        |((dx, dy), x)| {
            for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
                *dx = dy * f.derivative(x);
            }
        },
    );
}

// y = act(x * a[ch] + b[ch] (+ residual)), a chunk at a time while it is in cache
pub fn scale_shift(
    x: &[f32],
    (a, b): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
    len: usize,
) {
    let chunk = rows_chunk(a.len());
    y[..len].par_chunks_mut(chunk).zip(x[..len].par_chunks(chunk)).enumerate().for_each_task(|(i, (y, x))| {
        let residual = residual.map(|r| &r[i * chunk..][..y.len()]);
        batch_norm::scale_shift(x, a, b, residual, act, y);
        if !batch_norm::applies(act) {
            activation::forward(act, y, None, a.len());
        }
    });
}

// y += x over len values
pub fn add_to(x: &[f32], y: &mut [f32], len: usize) {
    y[..len]
        .par_chunks_mut(CHUNK)
        .zip(x[..len].par_chunks(CHUNK))
        .for_each_task(|(y, x)| crate::kernels::add_assign(y, x));
}

// y = act(sum_k xs[k]), in input order, a chunk at a time while it is in cache (act elementwise)
pub fn add(xs: &[&[f32]], y: &mut [f32], len: usize, act: Activation) {
    y[..len].par_chunks_mut(CHUNK).enumerate().for_each_task(|(t, yt)| {
        let at = t * CHUNK;
        yt.copy_from_slice(&xs[0][at..at + yt.len()]);
        for x in &xs[1..] {
            crate::kernels::add_assign(yt, &x[at..at + yt.len()]);
        }
        if act != Activation::Linear {
            let width = yt.len();
            activation::forward(act, yt, None, width);
        }
    });
}

/// y (one sample) *= x's values for sample `s` by its span (or = them, with `first`).
fn multiply_in(y: &mut [f32], x: &[f32], span: Span, s: usize, c: usize, first: bool) {
    match span {
        Span::Full => {
            let x = &x[s * y.len()..][..y.len()];
            if first {
                y.copy_from_slice(x);
            } else {
                y.iter_mut().zip(x).for_each(|(y, x)| *y *= x);
            }
        }
        Span::Channels => {
            let x = &x[s * c..][..c];
            for row in y.chunks_exact_mut(c) {
                if first {
                    row.copy_from_slice(x);
                } else {
                    row.iter_mut().zip(x).for_each(|(y, x)| *y *= x);
                }
            }
        }
    }
}

// xs[k]: spans of (N, S) -> y: (N, S);  y = prod_k xs[k], in input order
pub fn multiply_forward(op: &ProductOp, xs: &[&[f32]], y: &mut [f32], n: usize) {
    let len = op.sample_len;
    y[..n * len].par_chunks_mut(SAMPLES_PER_TASK * len).enumerate().for_each_task(|(t, yt)| {
        for (i, ys) in yt.chunks_exact_mut(len).enumerate() {
            let s = t * SAMPLES_PER_TASK + i;
            for (j, (x, &span)) in xs.iter().zip(op.spans).enumerate() {
                multiply_in(ys, x, span, s, op.c, j == 0);
            }
        }
    });
}

// dL/dxs[k] = dy * prod_{j != k} xs[j]; summed over positions for a per-channel input
pub fn multiply_backward(op: &ProductOp, k: usize, xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
    let (len, c) = (op.sample_len, op.c);
    let dx_len = if op.spans[k] == Span::Full { len } else { c };
    dx[..n * dx_len].par_chunks_mut(SAMPLES_PER_TASK * dx_len).enumerate().for_each_task(|(t, dxt)| {
        with_scratch(len, |g| {
            for (i, dxs) in dxt.chunks_exact_mut(dx_len).enumerate() {
                let s = t * SAMPLES_PER_TASK + i;
                g.copy_from_slice(&dy[s * len..][..len]);
                for (j, (x, &span)) in xs.iter().zip(op.spans).enumerate() {
                    if j != k {
                        multiply_in(g, x, span, s, c, false);
                    }
                }
                match op.spans[k] {
                    Span::Full => dxs.copy_from_slice(g),
                    Span::Channels => crate::kernels::sum_rows(g, c, dxs),
                }
            }
        });
    });
}

// y = x (x > 0) or alpha[map] * x
pub fn prelu_forward(x: &[f32], alpha: &[f32], map: &[u32], y: &mut [f32], n: usize) {
    let len = map.len();
    let task = SAMPLES_PER_TASK * len;
    y[..n * len].par_chunks_mut(task).zip(x[..n * len].par_chunks(task)).for_each_task(|(yt, xt)| {
        for (ys, xs) in yt.chunks_exact_mut(len).zip(xt.chunks_exact(len)) {
            for ((y, &x), &m) in ys.iter_mut().zip(xs).zip(map) {
                *y = if x > 0.0 { x } else { alpha[m as usize] * x };
            }
        }
    });
}

// dx = dy (x > 0) or alpha[map] * dy;  dalpha[j] = sum over x <= 0 mapped to j of dy * x,
// per task of samples (workspace), added in task order
#[allow(clippy::too_many_arguments)]
pub fn prelu_backward(
    x: &[f32],
    alpha: &[f32],
    map: &[u32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dalpha: &mut [f32],
    n: usize,
    ws: &mut Workspace,
) {
    let (len, a) = (map.len(), alpha.len());
    let [parts] = ws.f32s([task_count(n) * a]);
    let task = SAMPLES_PER_TASK * len;
    let (x, dy) = (&x[..n * len], &dy[..n * len]);
    parts.par_chunks_mut(a).zip(x.par_chunks(task).zip(dy.par_chunks(task))).for_each_task(|(part, (xt, dyt))| {
        part.fill(0.0);
        for (xs, dys) in xt.chunks_exact(len).zip(dyt.chunks_exact(len)) {
            for ((&x, &d), &m) in xs.iter().zip(dys).zip(map) {
                if x <= 0.0 {
                    part[m as usize] += d * x;
                }
            }
        }
    });
    crate::kernels::sum_rows(parts, a, dalpha);
    if let Some(dx) = dx {
        dx[..n * len].par_chunks_mut(task).zip(x.par_chunks(task).zip(dy.par_chunks(task))).for_each_task(
            |(dxt, (xt, dyt))| {
                for ((dxs, xs), dys) in dxt.chunks_exact_mut(len).zip(xt.chunks_exact(len)).zip(dyt.chunks_exact(len)) {
                    for (((dx, &x), &d), &m) in dxs.iter_mut().zip(xs).zip(dys).zip(map) {
                        *dx = if x > 0.0 { d } else { alpha[m as usize] * d };
                    }
                }
            },
        );
    }
}

// xs[k]: (R, C_k) -> y: (R, sum C_k)
pub fn concat_forward(xs: &[&[f32]], widths: &[usize], y: &mut [f32], rows: usize) {
    let width: usize = widths.iter().sum();
    y[..rows * width].par_chunks_mut(width).enumerate().for_each_task(|(r, row)| {
        let mut at = 0;
        for (x, &w) in xs.iter().zip(widths) {
            row[at..at + w].copy_from_slice(&x[r * w..][..w]);
            at += w;
        }
    });
}

// dx = input k's columns of dy
pub fn concat_backward(k: usize, widths: &[usize], dy: &[f32], dx: &mut [f32], rows: usize) {
    let (width, w) = (widths.iter().sum::<usize>(), widths[k]);
    let at: usize = widths[..k].iter().sum();
    dx[..rows * w]
        .par_chunks_mut(w)
        .zip(dy[..rows * width].par_chunks(width))
        .for_each_task(|(d, g)| d.copy_from_slice(&g[at..at + w]));
}

/// For each input row of a sample: its offset in the input and in the padded output.
fn pad_rows(p: &Pad2D) -> impl Iterator<Item = (usize, usize)> + '_ {
    let ow = p.out_hw().1;
    (0..p.h).map(move |y| (y * p.w * p.c, ((y + p.top) * ow + p.left) * p.c))
}

// x: (N,H,W,C) -> y: (N,OH,OW,C), zeros around
// (below one task of samples, by output rows, so that batch 1 uses every thread)
pub fn pad2d_forward(p: &Pad2D, x: &[f32], y: &mut [f32], n: usize) {
    let (oh, ow) = p.out_hw();
    let (in_len, out_len, row) = (p.h * p.w * p.c, oh * ow * p.c, p.w * p.c);
    if n < SAMPLES_PER_TASK {
        return y[..n * out_len].par_chunks_mut(ow * p.c).enumerate().for_each_task(|(r, out)| {
            let (s, oy) = (r / oh, r % oh);
            out.fill(0.0);
            if let Some(iy) = oy.checked_sub(p.top).filter(|&iy| iy < p.h) {
                out[p.left * p.c..][..row].copy_from_slice(&x[s * in_len + iy * row..][..row]);
            }
        });
    }
    y[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .for_each_task(|(yt, xt)| {
            for (ys, xs) in yt.chunks_exact_mut(out_len).zip(xt.chunks_exact(in_len)) {
                ys.fill(0.0);
                for (src, dst) in pad_rows(p) {
                    ys[dst..dst + row].copy_from_slice(&xs[src..src + row]);
                }
            }
        });
}

// dx = the inner window of dy
pub fn pad2d_backward(p: &Pad2D, dy: &[f32], dx: &mut [f32], n: usize) {
    let (oh, ow) = p.out_hw();
    let (in_len, out_len, row) = (p.h * p.w * p.c, oh * ow * p.c, p.w * p.c);
    dx[..n * in_len]
        .par_chunks_mut(SAMPLES_PER_TASK * in_len)
        .zip(dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
        .for_each_task(|(dxt, dyt)| {
            for (dxs, dys) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(out_len)) {
                for (src, dst) in pad_rows(p) {
                    dxs[src..src + row].copy_from_slice(&dys[dst..dst + row]);
                }
            }
        });
}

// x: (N,H,W,C) -> y: (N,OH,OW,C);  y = resample(x, taps) per sample
pub fn resample_forward(op: &ResampleOp, x: &[f32], y: &mut [f32], n: usize) {
    let ((h, w, c), (oh, ow)) = (op.input, op.output);
    let (in_len, out_len, per) = (h * w * c, oh * ow * c, oh * ow);
    y[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .zip(op.taps[..n * per].par_chunks(SAMPLES_PER_TASK * per))
        .for_each_task(|((yt, xt), tt)| {
            for ((ys, xs), ts) in yt.chunks_exact_mut(out_len).zip(xt.chunks_exact(in_len)).zip(tt.chunks_exact(per)) {
                tap_forward(ts, xs, ys, c);
            }
        });
}

// dx = taps^T dy
pub fn resample_backward(op: &ResampleOp, dy: &[f32], dx: &mut [f32], n: usize) {
    let ((h, w, c), (oh, ow)) = (op.input, op.output);
    let (in_len, out_len, per) = (h * w * c, oh * ow * c, oh * ow);
    dx[..n * in_len]
        .par_chunks_mut(SAMPLES_PER_TASK * in_len)
        .zip(dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
        .zip(op.taps[..n * per].par_chunks(SAMPLES_PER_TASK * per))
        .for_each_task(|((dxt, dyt), tt)| {
            for ((dxs, dys), ts) in
                dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(out_len)).zip(tt.chunks_exact(per))
            {
                tap_backward(ts, dys, dxs, c);
            }
        });
}
