use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::SAMPLES_PER_TASK;
use rayon::prelude::*;

/// Zero rows and columns around each image, as `keras.layers.ZeroPadding2D`:
/// `((top, bottom), (left, right))`.
#[derive(Clone, Debug)]
pub struct ZeroPadding2D {
    padding: ((usize, usize), (usize, usize)),
    /// Input height, width, channels.
    hwc: (usize, usize, usize),
}

impl ZeroPadding2D {
    /// Pads `((top, bottom), (left, right))`.
    pub fn new(padding: ((usize, usize), (usize, usize))) -> Self {
        ZeroPadding2D { padding, hwc: (0, 0, 0) }
    }

    /// The same padding on every side, as `ZeroPadding2D(p)`.
    pub fn symmetric(p: usize) -> Self {
        Self::new(((p, p), (p, p)))
    }

    fn out_hw(&self) -> (usize, usize) {
        let ((t, b), (l, r)) = self.padding;
        (self.hwc.0 + t + b, self.hwc.1 + l + r)
    }

    /// For each input row (y) of a sample: its offset in the input and in the output.
    fn rows(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (h, w, c) = self.hwc;
        let ((t, _), (l, _)) = self.padding;
        let ow = self.out_hw().1;
        (0..h).map(move |y| (y * w * c, ((y + t) * ow + l) * c))
    }
}

impl Layer for ZeroPadding2D {
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }

    fn base_name(&self) -> &'static str {
        "zero_padding2d"
    }

    fn config(&self) -> LayerConfig {
        let ((t, b), (l, r)) = self.padding;
        LayerConfig::ZeroPadding2D { padding: super::config::Padding2D([[t, b], [l, r]]) }
    }

    // (H,W,C) -> (H+top+bottom, W+left+right, C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
        };
        self.hwc = (h, w, c);
        let (oh, ow) = self.out_hw();
        Ok(vec![oh, ow, c])
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C), zeros around
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let (h, w, c) = self.hwc;
        let (oh, ow) = self.out_hw();
        let (in_len, out_len, row) = (h * w * c, oh * ow * c, w * c);
        y[..n * out_len]
            .par_chunks_mut(SAMPLES_PER_TASK * out_len)
            .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
            .for_each(|(yt, xt)| {
                for (ys, xs) in yt.chunks_exact_mut(out_len).zip(xt.chunks_exact(in_len)) {
                    ys.fill(0.0);
                    for (src, dst) in self.rows() {
                        ys[dst..dst + row].copy_from_slice(&xs[src..src + row]);
                    }
                }
            });
    }

    // dx = the inner window of dy
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        let (h, w, c) = self.hwc;
        let (oh, ow) = self.out_hw();
        let (in_len, out_len, row, n) = (h * w * c, oh * ow * c, w * c, pass.n);
        dx[..n * in_len]
            .par_chunks_mut(SAMPLES_PER_TASK * in_len)
            .zip(pass.dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
            .for_each(|(dxt, dyt)| {
                for (dxs, dys) in dxt.chunks_exact_mut(in_len).zip(dyt.chunks_exact(out_len)) {
                    for (src, dst) in self.rows() {
                        dxs[src..src + row].copy_from_slice(&dys[dst..dst + row]);
                    }
                }
            });
    }
}
