use super::{Backward, Layer, LayerConfig, Mode, Weight};
use crate::device::{self, Workspace};
use crate::initializers::Initializer;

/// A leaky rectifier with a learned slope, as `keras.layers.PReLU`: y = x for
/// x > 0, alpha * x below. alpha has the input's shape (zeros at the start),
/// with the axes in `shared_axes` (1-based over the sample's axes, as Keras
/// counts them after the batch axis: `[1, 2]` shares over height and width,
/// one slope per channel) of size 1.
///
/// ```
/// use keel::prelude::*;
/// let prelu = PReLU::new().shared_axes(vec![1, 2]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PReLU {
    shared_axes: Vec<usize>,
    alpha_shape: Vec<usize>,
    /// For each value of a sample, the index of its alpha.
    map: Vec<u32>,
    ws: Workspace,
}

impl PReLU {
    /// A PReLU with one slope per input value.
    pub fn new() -> Self {
        Self::default()
    }

    /// Axes (1-based, after the batch axis) that share one slope.
    pub fn shared_axes(mut self, axes: Vec<usize>) -> Self {
        self.shared_axes = axes;
        self
    }
}

impl Layer for PReLU {
    fn class_name(&self) -> &'static str {
        "PReLU"
    }

    fn base_name(&self) -> &'static str {
        "p_re_lu"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::PReLU { shared_axes: self.shared_axes.clone() }
    }

    fn weights(&self) -> Vec<Weight> {
        vec![Weight::new("alpha", self.alpha_shape.clone(), Initializer::Zeros)]
    }

    // shape -> shape;  alpha: shape with the shared axes 1
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if let Some(&bad) = self.shared_axes.iter().find(|&&a| a == 0 || a > input.len()) {
            return Err(format!(
                "shared axis {bad} is not an axis of the {}-axis input {input:?} (axes count from 1)",
                input.len()
            ));
        }
        self.alpha_shape =
            input.iter().enumerate().map(|(i, &d)| if self.shared_axes.contains(&(i + 1)) { 1 } else { d }).collect();
        // Row-major strides of alpha, 0 along shared axes.
        let mut strides = vec![0; input.len()];
        let mut stride = 1;
        for i in (0..input.len()).rev() {
            if self.alpha_shape[i] > 1 {
                strides[i] = stride;
            }
            stride *= self.alpha_shape[i];
        }
        let len: usize = input.iter().product();
        self.map = (0..len)
            .map(|flat| {
                let (mut rest, mut at) = (flat, 0);
                for i in (0..input.len()).rev() {
                    at += (rest % input[i]) * strides[i];
                    rest /= input[i];
                }
                at as u32
            })
            .collect();
        Ok(input.to_vec())
    }

    // x: (N, ...) -> y = x (x > 0) or alpha * x
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().prelu_forward(x, params, &self.map, y, n);
    }

    // dx = dy (x > 0) or alpha * dy;  dalpha = sum over the batch and shared axes of dy * x (x <= 0)
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, dy, dx, grads, n, .. } = pass;
        device::current().prelu_backward(x, params, &self.map, dy, dx, grads, n, &mut self.ws);
    }
}
