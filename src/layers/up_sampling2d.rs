use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::{Fill, Tap, bilinear};

/// How UpSampling2D fills the new pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Each input pixel repeated (Keras' default).
    #[default]
    Nearest,
    /// Bilinear, half-pixel centres (as Resizing).
    Bilinear,
}

/// Repeats rows and columns `size` times, as `keras.layers.UpSampling2D`
/// (`interpolation` nearest by default, or bilinear).
///
/// ```
/// use keel::prelude::*;
/// let up = UpSampling2D::new((2, 2));
/// ```
#[derive(Clone, Debug)]
pub struct UpSampling2D {
    size: (usize, usize),
    interpolation: Interpolation,
    resampling: Resampling,
    /// Taps are the same for every sample; set once per batch capacity.
    ready: usize,
}

impl UpSampling2D {
    /// Upsamples by `size` (rows, columns).
    pub fn new(size: (usize, usize)) -> Self {
        UpSampling2D { size, interpolation: Interpolation::Nearest, resampling: Resampling::default(), ready: 0 }
    }

    /// Nearest (default) or bilinear.
    pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }
}

impl Layer for UpSampling2D {
    fn class_name(&self) -> &'static str {
        "UpSampling2D"
    }

    fn base_name(&self) -> &'static str {
        "up_sampling2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::UpSampling2D { size: self.size.into(), interpolation: self.interpolation }
    }

    // (H,W,C) -> (H*size.0, W*size.1, C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        if self.size.0 == 0 || self.size.1 == 0 {
            return Err(format!("size {:?} must be positive", self.size));
        }
        self.resampling = Resampling::new((h, w, c), (h * self.size.0, w * self.size.1));
        self.ready = 0;
        Ok(self.resampling.output_shape())
    }

    fn allocate(&mut self, batch: usize) {
        self.resampling.allocate(batch);
        let ((h, w, _), (sy, sx)) = (self.resampling.input, self.size);
        let interpolation = self.interpolation;
        let tap = |r: usize, c: usize| match interpolation {
            Interpolation::Nearest => Tap::copy((r / sy) * w + c / sx),
            Interpolation::Bilinear => {
                let (fy, fx) = ((r as f32 + 0.5) / sy as f32 - 0.5, (c as f32 + 0.5) / sx as f32 - 0.5);
                bilinear(fy, fx, h, w, Fill::Nearest)
            }
        };
        for i in self.ready.min(batch)..batch {
            self.resampling.set(i, tap);
        }
        self.ready = self.ready.max(batch);
    }

    // x: (N,H,W,C) -> y: (N,H*sy,W*sx,C)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        self.resampling.forward(x, y, n);
    }

    // dx = taps^T dy: each input pixel gathers the gradients of its copies
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            self.resampling.backward(pass.dy, dx, pass.n);
        }
    }
}
