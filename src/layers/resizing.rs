use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::{Fill, bilinear};

/// Resizes images to (height, width) with bilinear interpolation (half-pixel
/// centres, as TensorFlow and ONNX's Resize), as `keras.layers.Resizing`.
///
/// ```
/// use keel::prelude::*;
/// let resize = Resizing::new(64, 64).input_shape([28, 28, 1]);
/// ```
#[derive(Clone, Debug)]
pub struct Resizing {
    height: usize,
    width: usize,
    input_shape: Option<Vec<usize>>,
    resampling: Resampling,
    /// Taps are the same for every sample; set once per batch capacity.
    ready: usize,
}

impl Resizing {
    pub fn new(height: usize, width: usize) -> Self {
        Resizing { height, width, input_shape: None, resampling: Resampling::default(), ready: 0 }
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for Resizing {
    fn class_name(&self) -> &'static str {
        "Resizing"
    }

    fn base_name(&self) -> &'static str {
        "resizing"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Resizing { height: self.height, width: self.width }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (height,width,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        if self.height == 0 || self.width == 0 {
            return Err("height and width must be positive".into());
        }
        self.resampling = Resampling::new((h, w, c), (self.height, self.width));
        self.ready = 0;
        Ok(self.resampling.output_shape())
    }

    fn allocate(&mut self, batch: usize) {
        self.resampling.allocate(batch);
        let ((h, w, _), (oh, ow)) = (self.resampling.input, self.resampling.output);
        let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
        for i in self.ready.min(batch)..batch {
            self.resampling
                .set(i, |r, c| bilinear((r as f32 + 0.5) * sy - 0.5, (c as f32 + 0.5) * sx - 0.5, h, w, Fill::Nearest));
        }
        self.ready = self.ready.max(batch);
    }

    // x: (N,H,W,C) -> y: (N,height,width,C);  y(p) = x((p + 1/2) * in/out - 1/2), bilinear
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        if self.resampling.output == (self.resampling.input.0, self.resampling.input.1) {
            return self.resampling.copy(x, y, n);
        }
        self.resampling.forward(x, y, n);
    }

    // Differentiates the bilinear resampling:  dx = taps^T dy
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            self.resampling.backward(pass.dy, dx, pass.n);
        }
    }
}
