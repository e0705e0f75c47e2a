use super::LayerConfig;
use super::{Backward, Layer, Mode};

/// Flattens each sample to one dimension, as `keras.layers.Flatten`. Data is
/// already contiguous: in a model this is a renaming, no work at all (run on
/// its own, forward and backward are copies).
///
/// ```
/// use keel::prelude::*;
/// let flatten = Flatten::new();
/// ```
#[derive(Clone, Debug, Default)]
pub struct Flatten {
    len: usize,
    input_shape: Option<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    fn base_name(&self) -> &'static str {
        "flatten"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Flatten {}
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn is_reshape(&self) -> bool {
        true
    }

    // (d1, d2, ...) -> (d1*d2*...)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.len = input.iter().product();
        Ok(vec![self.len])
    }

    // x: (N, d1, d2, ...) -> y: (N, d1*d2*...)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        super::copy_forward(x, y, n, self.len);
    }

    // y = x  =>  dx = dy
    fn backward(&mut self, pass: Backward) {
        super::copy_backward(pass, self.len);
    }
}
