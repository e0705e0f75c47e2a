use super::{Backward, Layer, LayerConfig, Mode};
use crate::activations::Activation;
use crate::device;

/// Multiplies inputs by `scale` and adds `offset`, as `keras.layers.Rescaling`:
/// `Rescaling::new(1.0 / 255.0)` turns pixel bytes into [0, 1] inside the model.
///
/// ```
/// use keel::prelude::*;
/// let rescale = Rescaling::new(1.0 / 127.5).offset(-1.0).input_shape([32, 32, 3]); // to [-1, 1]
/// ```
#[derive(Clone, Debug)]
pub struct Rescaling {
    scale: f32,
    offset: f32,
    input_shape: Option<Vec<usize>>,
    len: usize,
}

impl Rescaling {
    pub fn new(scale: f32) -> Self {
        Rescaling { scale, offset: 0.0, input_shape: None, len: 0 }
    }

    /// Added after scaling (default 0).
    pub fn offset(mut self, offset: f32) -> Self {
        self.offset = offset;
        self
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for Rescaling {
    fn class_name(&self) -> &'static str {
        "Rescaling"
    }

    fn base_name(&self) -> &'static str {
        "rescaling"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Rescaling { scale: self.scale, offset: self.offset }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // shape -> shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if !(self.scale.is_finite() && self.offset.is_finite()) {
            return Err(format!("scale {} and offset {} must be finite", self.scale, self.offset));
        }
        self.len = input.iter().product();
        Ok(input.to_vec())
    }

    // x: (N, ...) -> y = x * scale + offset
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().scale_shift(x, (&[self.scale], &[self.offset]), None, Activation::Linear, y, n * self.len);
    }

    // y = x * scale + offset  =>  dx = dy * scale
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            device::current().scale_shift(
                pass.dy,
                (&[self.scale], &[0.0]),
                None,
                Activation::Linear,
                dx,
                pass.n * self.len,
            );
        }
    }
}
