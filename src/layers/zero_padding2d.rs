use super::{Backward, Layer, LayerConfig, Mode};
use crate::device::{self, Pad2D};

/// Zero rows and columns around each image, as `keras.layers.ZeroPadding2D`:
/// `((top, bottom), (left, right))`.
#[derive(Clone, Debug)]
pub struct ZeroPadding2D {
    padding: ((usize, usize), (usize, usize)),
    /// The input's shape with the padding, once built.
    p: Pad2D,
}

impl ZeroPadding2D {
    /// Pads `((top, bottom), (left, right))`.
    pub fn new(padding: ((usize, usize), (usize, usize))) -> Self {
        ZeroPadding2D { padding, p: Pad2D::default() }
    }

    /// The same padding on every side, as `ZeroPadding2D(p)`.
    pub fn symmetric(p: usize) -> Self {
        Self::new(((p, p), (p, p)))
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

    fn zero_padding(&self) -> Option<((usize, usize), (usize, usize))> {
        Some(self.padding)
    }

    // (H,W,C) -> (H+top+bottom, W+left+right, C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
        };
        let ((top, bottom), (left, right)) = self.padding;
        self.p = Pad2D { h, w, c, top, bottom, left, right };
        let (oh, ow) = self.p.out_hw();
        Ok(vec![oh, ow, c])
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C), zeros around
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().pad2d_forward(&self.p, x, y, n);
    }

    // dx = the inner window of dy
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().pad2d_backward(&self.p, pass.dy, dx, pass.n);
    }
}
