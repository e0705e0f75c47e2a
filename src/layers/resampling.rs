//! What the image layers that move pixels share (Resizing, RandomFlip,
//! RandomCrop, RandomTranslation, RandomRotation): per-sample taps, set by
//! the layer, applied in parallel, and reused by the backward pass.

use crate::kernels::SAMPLES_PER_TASK;
use crate::kernels::resample::{Tap, resample_backward, resample_forward};
use rayon::prelude::*;

#[derive(Clone, Debug, Default)]
pub(super) struct Resampling {
    /// Input (height, width, channels) and output (height, width).
    pub input: (usize, usize, usize),
    pub output: (usize, usize),
    /// Per sample, per output pixel.
    taps: Vec<Tap>,
    /// The last forward copied its input (the identity at inference).
    identity: bool,
}

/// The (height, width, channels) of an image input, or why not.
pub(super) fn image_shape(input: &[usize]) -> Result<(usize, usize, usize), String> {
    match *input {
        [h, w, c] => Ok((h, w, c)),
        _ => Err(format!("expects images of shape (height, width, channels), got {input:?}")),
    }
}

impl Resampling {
    pub fn new(input: (usize, usize, usize), output: (usize, usize)) -> Self {
        Resampling { input, output, taps: Vec::new(), identity: false }
    }

    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.output.0, self.output.1, self.input.2]
    }

    pub fn allocate(&mut self, batch: usize) {
        self.taps.resize(batch * self.output.0 * self.output.1, Tap::default());
    }

    /// Sets sample `i`'s taps: `tap(oy, ox)` for every output pixel.
    pub fn set(&mut self, i: usize, tap: impl Fn(usize, usize) -> Tap) {
        let (oh, ow) = self.output;
        let taps = &mut self.taps[i * oh * ow..][..oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                taps[oy * ow + ox] = tap(oy, ox);
            }
        }
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C);  y = resample(x, taps) per sample
    pub fn forward(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        let ((h, w, c), (oh, ow)) = (self.input, self.output);
        let (in_len, out_len, per) = (h * w * c, oh * ow * c, oh * ow);
        self.identity = false;
        y[..n * out_len]
            .par_chunks_mut(SAMPLES_PER_TASK * out_len)
            .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
            .zip(self.taps[..n * per].par_chunks(SAMPLES_PER_TASK * per))
            .for_each(|((yt, xt), tt)| {
                for ((ys, xs), ts) in
                    yt.chunks_exact_mut(out_len).zip(xt.chunks_exact(in_len)).zip(tt.chunks_exact(per))
                {
                    resample_forward(ts, xs, ys, c);
                }
            });
    }

    /// y = x (same shapes), remembered for the backward pass.
    pub fn copy(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        let len = n * self.input.0 * self.input.1 * self.input.2;
        y[..len].copy_from_slice(&x[..len]);
        self.identity = true;
    }

    // Differentiates the forward pass: dx = taps^T dy (or dy, after a copy)
    pub fn backward(&self, dy: &[f32], dx: &mut [f32], n: usize) {
        let ((h, w, c), (oh, ow)) = (self.input, self.output);
        let (in_len, out_len, per) = (h * w * c, oh * ow * c, oh * ow);
        if self.identity {
            dx[..n * in_len].copy_from_slice(&dy[..n * in_len]);
            return;
        }
        dx[..n * in_len]
            .par_chunks_mut(SAMPLES_PER_TASK * in_len)
            .zip(dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
            .zip(self.taps[..n * per].par_chunks(SAMPLES_PER_TASK * per))
            .for_each(|((dxt, dyt), tt)| {
                for ((dxs, dys), ts) in
                    dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(out_len)).zip(tt.chunks_exact(per))
                {
                    resample_backward(ts, dys, dxs, c);
                }
            });
    }
}
