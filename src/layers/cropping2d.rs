use super::{Backward, Layer, LayerConfig, Mode};
use crate::device::{self, Pad2D};

/// Removes rows and columns at the edges of each image, as
/// `keras.layers.Cropping2D`: `((top, bottom), (left, right))`. The inverse of
/// ZeroPadding2D, and computed by its operations with the roles swapped.
///
/// ```
/// use keel::prelude::*;
/// let crop = Cropping2D::new(((2, 2), (4, 4)));
/// ```
#[derive(Clone, Debug)]
pub struct Cropping2D {
    cropping: ((usize, usize), (usize, usize)),
    /// The output inside the input: the padding that would give the input back.
    p: Pad2D,
}

impl Cropping2D {
    /// Crops `((top, bottom), (left, right))`.
    pub fn new(cropping: ((usize, usize), (usize, usize))) -> Self {
        Cropping2D { cropping, p: Pad2D::default() }
    }

    /// The same cropping on every side, as `Cropping2D(c)`.
    pub fn symmetric(c: usize) -> Self {
        Self::new(((c, c), (c, c)))
    }
}

impl Layer for Cropping2D {
    fn class_name(&self) -> &'static str {
        "Cropping2D"
    }

    fn base_name(&self) -> &'static str {
        "cropping2d"
    }

    fn config(&self) -> LayerConfig {
        let ((t, b), (l, r)) = self.cropping;
        LayerConfig::Cropping2D { cropping: super::config::Padding2D([[t, b], [l, r]]) }
    }

    // (H,W,C) -> (H-top-bottom, W-left-right, C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
        };
        let ((top, bottom), (left, right)) = self.cropping;
        let (Some(oh), Some(ow)) = (h.checked_sub(top + bottom), w.checked_sub(left + right)) else {
            return Err(format!("cropping {:?} removes more than the {h}x{w} input", self.cropping));
        };
        if oh == 0 || ow == 0 {
            return Err(format!("cropping {:?} leaves nothing of the {h}x{w} input", self.cropping));
        }
        self.p = Pad2D { h: oh, w: ow, c, top, bottom, left, right };
        Ok(vec![oh, ow, c])
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C), the inner window
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().pad2d_backward(&self.p, x, y, n);
    }

    // dx = dy with zeros around
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().pad2d_forward(&self.p, pass.dy, dx, pass.n);
    }
}
