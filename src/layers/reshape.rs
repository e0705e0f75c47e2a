use super::{Backward, Layer, LayerConfig, Mode};
use crate::model::shape_str;

/// Gives each sample a new shape with the same number of values, as
/// `keras.layers.Reshape(target_shape)`; one dimension may be -1 (inferred).
/// Like Flatten, a renaming in a model: no work.
#[derive(Clone, Debug)]
pub struct Reshape {
    target_shape: Vec<i64>,
    len: usize,
}

impl Reshape {
    /// Reshapes each sample to `target_shape` (one entry may be -1).
    pub fn new(target_shape: impl Into<Vec<i64>>) -> Self {
        Reshape { target_shape: target_shape.into(), len: 0 }
    }
}

impl Layer for Reshape {
    fn class_name(&self) -> &'static str {
        "Reshape"
    }

    fn base_name(&self) -> &'static str {
        "reshape"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Reshape { target_shape: self.target_shape.clone() }
    }

    fn is_reshape(&self) -> bool {
        true
    }

    // (d1, d2, ...) -> target_shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let len: usize = input.iter().product();
        let unknown = self.target_shape.iter().filter(|&&d| d == -1).count();
        if unknown > 1 || self.target_shape.iter().any(|&d| d == 0 || d < -1) || self.target_shape.is_empty() {
            return Err(format!("target_shape {:?} must hold positive sizes and at most one -1", self.target_shape));
        }
        let known: usize = self.target_shape.iter().filter(|&&d| d > 0).map(|&d| d as usize).product();
        let fits = if unknown == 1 { known > 0 && len.is_multiple_of(known) } else { known == len };
        if !fits {
            return Err(format!("cannot reshape {} ({len} values) to {:?}", shape_str(input), self.target_shape));
        }
        self.len = len;
        Ok(self.target_shape.iter().map(|&d| if d == -1 { len / known } else { d as usize }).collect())
    }

    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        super::copy_forward(x, y, n, self.len);
    }

    // y = x  =>  dx = dy
    fn backward(&mut self, pass: Backward) {
        super::copy_backward(pass, self.len);
    }
}
