//! What the image layers that move pixels share (Resizing, RandomFlip,
//! RandomCrop, RandomTranslation, RandomRotation): per-sample taps, set by
//! the layer, applied by the device, and reused by the backward pass.

use crate::device::{self, ResampleOp};
use crate::kernels::resample::Tap;

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

    fn op(&self) -> ResampleOp<'_> {
        ResampleOp { input: self.input, output: self.output, taps: &self.taps }
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C);  y = resample(x, taps) per sample
    pub fn forward(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        self.identity = false;
        device::current().resample_forward(&self.op(), x, y, n);
    }

    /// y = x (same shapes), remembered for the backward pass.
    pub fn copy(&mut self, x: &[f32], y: &mut [f32], n: usize) {
        let len = n * self.input.0 * self.input.1 * self.input.2;
        device::current().copy(x, y, len);
        self.identity = true;
    }

    // Differentiates the forward pass: dx = taps^T dy (or dy, after a copy)
    pub fn backward(&self, dy: &[f32], dx: &mut [f32], n: usize) {
        if self.identity {
            let len = n * self.input.0 * self.input.1 * self.input.2;
            return device::current().copy(dy, dx, len);
        }
        device::current().resample_backward(&self.op(), dy, dx, n);
    }
}
