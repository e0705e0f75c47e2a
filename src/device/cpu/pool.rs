//! Pooling, a task per sample (or, for the global poolings, per task of
//! samples: a row of channels each).

use super::SAMPLES_PER_TASK;
use super::team::ForEachTask;
use crate::device::Workspace;
use crate::kernels::Window;
use crate::kernels::pool::{
    avg_pool_backward, avg_pool_forward, global_avg_backward, global_avg_forward, global_max_forward,
    max_pool_backward, max_pool_forward, max_pool_values,
};
use rayon::prelude::*;

// x: (N,H,W,C) -> y: (N,OH,OW,C);  y = max over each window, argmax recorded in ws
// (a task per sample: each is computed on its own)
pub fn max_forward(g: &Window, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
    let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
    let argmax = ws.u32s(n * out_len);
    y[..n * out_len]
        .par_chunks_mut(out_len)
        .zip(argmax.par_chunks_mut(out_len))
        .zip(x[..n * in_len].par_chunks(in_len))
        .for_each_task(|((ys, a), xs)| max_pool_forward(g, xs, ys, a));
}

// x: (N,H,W,C) -> y: (N,OH,OW,C);  y = max over each window
// (below one task of samples, by output rows, so that batch 1 uses every thread)
pub fn max_values(g: &Window, x: &[f32], y: &mut [f32], n: usize) {
    let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
    if n < SAMPLES_PER_TASK {
        return y[..n * out_len].par_chunks_mut(g.ow * g.c).enumerate().for_each_task(|(r, row)| {
            let (s, oy) = (r / g.oh, r % g.oh);
            max_pool_values(g, &x[s * in_len..][..in_len], oy..oy + 1, row);
        });
    }
    y[..n * out_len].par_chunks_mut(out_len).zip(x[..n * in_len].par_chunks(in_len)).for_each_task(|(ys, xs)| {
        max_pool_values(g, xs, 0..g.oh, ys);
    });
}

// Differentiates y[i] = x[argmax[i]]:  dx[argmax[i]] += dy[i]  (a task per sample)
pub fn max_backward(g: &Window, dy: &[f32], dx: &mut [f32], n: usize, ws: &mut Workspace) {
    let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
    let argmax = &*ws.u32s(n * out_len);
    dx[..n * in_len]
        .par_chunks_mut(in_len)
        .zip(argmax.par_chunks(out_len))
        .zip(dy[..n * out_len].par_chunks(out_len))
        .for_each_task(|((dxs, a), dys)| max_pool_backward(dys, a, dxs));
}

// x: (N,H,W,C) -> y: (N,OH,OW,C);  y = mean of each window's inputs  (a task per sample)
pub fn avg_forward(g: &Window, x: &[f32], y: &mut [f32], n: usize) {
    let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
    y[..n * out_len]
        .par_chunks_mut(out_len)
        .zip(x[..n * in_len].par_chunks(in_len))
        .for_each_task(|(ys, xs)| avg_pool_forward(g, xs, ys));
}

// dx[i] = sum over windows w covering i of dy[w] / |w|  (a task per sample)
pub fn avg_backward(g: &Window, dy: &[f32], dx: &mut [f32], n: usize) {
    let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
    dx[..n * in_len]
        .par_chunks_mut(in_len)
        .zip(dy[..n * out_len].par_chunks(out_len))
        .for_each_task(|(dxs, dys)| avg_pool_backward(g, dys, dxs));
}

// x: (N,P,C) -> y: (N,C), mean or max (argmax in ws)
pub fn global_forward(max: bool, positions: usize, c: usize, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
    let in_len = positions * c;
    let (xt, yt) =
        (x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len), y[..n * c].par_chunks_mut(SAMPLES_PER_TASK * c));
    if !max {
        return xt.zip(yt).for_each_task(|(xt, yt)| {
            for (xs, ys) in xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(c)) {
                global_avg_forward(xs, ys);
            }
        });
    }
    let argmax = ws.u32s(n * c).par_chunks_mut(SAMPLES_PER_TASK * c);
    xt.zip(yt).zip(argmax).for_each_task(|((xt, yt), at)| {
        for ((xs, ys), a) in xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(c)).zip(at.chunks_exact_mut(c)) {
            global_max_forward(xs, ys, a);
        }
    });
}

// mean: dx = dy / P everywhere;  max: dx[argmax[c]] = dy[c], zero elsewhere
pub fn global_backward(
    max: bool,
    positions: usize,
    c: usize,
    dy: &[f32],
    dx: &mut [f32],
    n: usize,
    ws: &mut Workspace,
) {
    let in_len = positions * c;
    let dxt = dx[..n * in_len].par_chunks_mut(SAMPLES_PER_TASK * in_len);
    let dyt = dy[..n * c].par_chunks(SAMPLES_PER_TASK * c);
    if !max {
        return dxt.zip(dyt).for_each_task(|(dxt, dyt)| {
            for (dxs, dys) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(c)) {
                global_avg_backward(dys, dxs);
            }
        });
    }
    let argmax = &*ws.u32s(n * c);
    dxt.zip(dyt).zip(argmax.par_chunks(SAMPLES_PER_TASK * c)).for_each_task(|((dxt, dyt), at)| {
        for ((dxs, dys), a) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(c)).zip(at.chunks_exact(c)) {
            max_pool_backward(dys, a, dxs);
        }
    });
}
