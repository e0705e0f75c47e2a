//! Passes that touch each value once: copies, activations, merges, padding,
//! resampling. Split in fixed chunks (or tasks of samples), so any thread
//! count gives the same result.

use super::{CHUNK, SAMPLES_PER_TASK};
use crate::activations::Activation;
use crate::device::{Pad2D, ResampleOp};
use crate::kernels::activation::{self, Rectifier};
use crate::kernels::batch_norm;
use crate::kernels::resample::{resample_backward as tap_backward, resample_forward as tap_forward};
use rayon::prelude::*;

/// A chunk length that is a multiple of `width` (rows stay whole).
fn rows_chunk(width: usize) -> usize {
    width.max(1) * (CHUNK / width.max(1)).max(1)
}

pub fn copy(x: &[f32], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).zip(x[..len].par_chunks(CHUNK)).for_each(|(y, x)| y.copy_from_slice(x));
}

// z: (rows, width) -> act(z), in place
pub fn activation_forward(act: Activation, z: &mut [f32], width: usize) {
    if act == Activation::Linear {
        return;
    }
    z.par_chunks_mut(rows_chunk(width)).for_each(|z| activation::forward(act, z, None, width));
}

// dy -> dy * act'(z), from y
pub fn activation_backward(act: Activation, y: &[f32], dy: &mut [f32], width: usize) {
    if act == Activation::Linear {
        return;
    }
    let chunk = rows_chunk(width);
    dy.par_chunks_mut(chunk).zip(y.par_chunks(chunk)).for_each(|(d, y)| activation::backward(act, y, d, width));
}

// dy -> dy * act'(z), from z
pub fn activation_backward_from_input(act: Activation, z: &[f32], dy: &mut [f32]) {
    dy.par_chunks_mut(CHUNK).zip(z.par_chunks(CHUNK)).for_each(|(d, z)| activation::backward_from_input(act, z, d));
}

// y = f(x)
pub fn rectifier_forward(f: Rectifier, x: &[f32], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).zip(x[..len].par_chunks(CHUNK)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = f.value(x);
        }
    });
}

// dx = dy * f'(x)
pub fn rectifier_backward(f: Rectifier, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
    dx[..len].par_chunks_mut(CHUNK).zip(dy[..len].par_chunks(CHUNK)).zip(x[..len].par_chunks(CHUNK)).for_each(
        |((dx, dy), x)| {
            for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
                *dx = dy * f.derivative(x);
            }
        },
    );
}

// y = x * a[ch] + b[ch]
pub fn scale_shift(x: &[f32], a: &[f32], b: &[f32], y: &mut [f32], len: usize) {
    let chunk = rows_chunk(a.len());
    y[..len]
        .par_chunks_mut(chunk)
        .zip(x[..len].par_chunks(chunk))
        .for_each(|(y, x)| batch_norm::scale_shift(x, a, b, y));
}

// y = x * m
pub fn multiply(x: &[f32], m: &[f32], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).zip(x[..len].par_chunks(CHUNK)).zip(m[..len].par_chunks(CHUNK)).for_each(
        |((y, x), m)| {
            for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
                *y = x * m;
            }
        },
    );
}

// y = sum_k xs[k], in input order
pub fn add(xs: &[&[f32]], y: &mut [f32], len: usize) {
    y[..len].par_chunks_mut(CHUNK).enumerate().for_each(|(t, yt)| {
        let at = t * CHUNK;
        yt.copy_from_slice(&xs[0][at..at + yt.len()]);
        for x in &xs[1..] {
            crate::kernels::add_assign(yt, &x[at..at + yt.len()]);
        }
    });
}

// xs[k]: (R, C_k) -> y: (R, sum C_k)
pub fn concat_forward(xs: &[&[f32]], widths: &[usize], y: &mut [f32], rows: usize) {
    let width: usize = widths.iter().sum();
    y[..rows * width].par_chunks_mut(width).enumerate().for_each(|(r, row)| {
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
        .for_each(|(d, g)| d.copy_from_slice(&g[at..at + w]));
}

/// For each input row of a sample: its offset in the input and in the padded output.
fn pad_rows(p: &Pad2D) -> impl Iterator<Item = (usize, usize)> + '_ {
    let ow = p.out_hw().1;
    (0..p.h).map(move |y| (y * p.w * p.c, ((y + p.top) * ow + p.left) * p.c))
}

// x: (N,H,W,C) -> y: (N,OH,OW,C), zeros around
pub fn pad2d_forward(p: &Pad2D, x: &[f32], y: &mut [f32], n: usize) {
    let (oh, ow) = p.out_hw();
    let (in_len, out_len, row) = (p.h * p.w * p.c, oh * ow * p.c, p.w * p.c);
    y[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .for_each(|(yt, xt)| {
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
        .for_each(|(dxt, dyt)| {
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
        .for_each(|((yt, xt), tt)| {
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
        .for_each(|((dxt, dyt), tt)| {
            for ((dxs, dys), ts) in
                dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(out_len)).zip(tt.chunks_exact(per))
            {
                tap_backward(ts, dys, dxs, c);
            }
        });
}
