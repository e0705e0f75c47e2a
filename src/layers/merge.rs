//! Layers that merge several inputs: `Add`, `Multiply` and `Concatenate`.

use super::{Backward, Layer, LayerConfig, Mode};
use crate::activations::Activation;
use crate::device::{self, ProductOp, Span};
use crate::model::shape_str;

/// Sums inputs of one shape, as `keras.layers.Add`: y = x_0 + x_1 + ...
///
/// ```
/// use keel::prelude::*;
/// let inputs = Input::new([8, 8, 4]);
/// let a = Conv2D::new(4, (3, 3)).padding(Padding::Same).apply(&inputs)?;
/// let sum = Add::new().apply(&[&a, &inputs])?;
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Add {
    len: usize,
    /// The elementwise activation of the layer after it, applied in the same pass (fused by the model).
    act: Activation,
}

impl Add {
    /// An addition of two or more inputs.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Checks a merge layer's input count.
fn at_least_two(inputs: &[Vec<usize>]) -> Result<(), String> {
    if inputs.len() < 2 {
        return Err(format!("takes at least 2 inputs, got {}", inputs.len()));
    }
    Ok(())
}

impl Layer for Add {
    fn class_name(&self) -> &'static str {
        "Add"
    }

    fn base_name(&self) -> &'static str {
        "add"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Add {}
    }

    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.build_inputs(&[input.to_vec()])
    }

    // k x (S) -> (S)
    fn build_inputs(&mut self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        at_least_two(inputs)?;
        if let Some((k, other)) = inputs.iter().enumerate().find(|(_, s)| *s != &inputs[0]) {
            return Err(format!(
                "inputs must have the same shape, but input 0 is {} and input {k} is {}",
                shape_str(&inputs[0]),
                shape_str(other)
            ));
        }
        self.len = inputs[0].iter().product();
        Ok(inputs[0].clone())
    }

    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        super::copy_forward(x, y, n, self.len);
    }

    fn backward(&mut self, pass: Backward) {
        super::copy_backward(pass, self.len);
    }

    fn fuse_activation(&mut self, act: Option<Activation>) -> bool {
        self.act = act.unwrap_or(Activation::Linear);
        act.is_some()
    }

    fn residual_activation(&self) -> Option<Activation> {
        Some(self.act)
    }

    fn passes_gradient(&self) -> bool {
        true
    }

    // xs[k]: (N, S) -> y: (N, S);  y = act(sum_k xs[k]), added in input order
    fn forward_inputs(&mut self, _params: &[f32], xs: &[&[f32]], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().add(xs, y, n * self.len, self.act);
    }

    // dy (of act's output) -> dL/d(sum), in place
    fn backward_activation(&mut self, y: &[f32], dy: &mut [f32], n: usize) {
        if self.act != Activation::Linear {
            let len = n * self.len;
            device::current().activation_backward(self.act, &y[..len], &mut dy[..len], self.len);
        }
    }

    // dL/dxs[k] = dy
    fn backward_input(&mut self, _k: usize, _xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
        device::current().copy(dy, dx, n * self.len);
    }
}

/// Multiplies inputs elementwise, as `keras.layers.Multiply`: y = x_0 * x_1 * ...
/// Inputs have the output's shape or, as in squeeze-and-excitation blocks,
/// one value per channel ((1, 1, C) against (H, W, C)), broadcast over the rest.
///
/// ```
/// use keel::prelude::*;
/// let inputs = Input::new([8, 8, 4]);
/// let squeeze = GlobalAveragePooling2D::new().apply(&inputs)?;
/// let excite = Dense::new(4).activation(Activation::Sigmoid).apply(&squeeze)?;
/// let excite = Reshape::new([1, 1, 4]).apply(&excite)?;
/// let scaled = Multiply::new().apply(&[&inputs, &excite])?;
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Multiply {
    spans: Vec<Span>,
    sample_len: usize,
    c: usize,
}

impl Multiply {
    /// A product of two or more inputs.
    pub fn new() -> Self {
        Self::default()
    }

    fn op(&self) -> ProductOp<'_> {
        ProductOp { spans: &self.spans, sample_len: self.sample_len, c: self.c }
    }
}

impl Layer for Multiply {
    fn class_name(&self) -> &'static str {
        "Multiply"
    }

    fn base_name(&self) -> &'static str {
        "multiply"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Multiply {}
    }

    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.build_inputs(&[input.to_vec()])
    }

    // k x (S) or (1, .., 1, C) -> (S)
    fn build_inputs(&mut self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        at_least_two(inputs)?;
        let out: Vec<usize> = inputs.iter().max_by_key(|s| s.iter().product::<usize>()).cloned().unwrap_or_default();
        let c = out.last().copied().unwrap_or(1);
        let per_channel =
            |s: &[usize]| s.len() == out.len() && s.last() == Some(&c) && s[..s.len() - 1].iter().all(|&d| d == 1);
        self.spans = Vec::new();
        for (k, s) in inputs.iter().enumerate() {
            self.spans.push(if *s == out {
                Span::Full
            } else if per_channel(s) {
                Span::Channels
            } else {
                return Err(format!(
                    "input {k} has shape {} and cannot be multiplied with {}: inputs must have the same shape, \
                     or one value per channel (1, ..., 1, C)",
                    shape_str(s),
                    shape_str(&out)
                ));
            });
        }
        (self.sample_len, self.c) = (out.iter().product(), c);
        Ok(out)
    }

    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        super::copy_forward(x, y, n, self.sample_len);
    }

    fn backward(&mut self, pass: Backward) {
        super::copy_backward(pass, self.sample_len);
    }

    // xs[k]: (N, S) or (N, 1, .., 1, C) -> y: (N, S);  y = prod_k xs[k], broadcast
    fn forward_inputs(&mut self, _params: &[f32], xs: &[&[f32]], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().multiply_forward(&self.op(), xs, y, n);
    }

    // dL/dxs[k] = dy * prod_{j != k} xs[j], summed over positions for a per-channel input
    fn backward_input(&mut self, k: usize, xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
        device::current().multiply_backward(&self.op(), k, xs, dy, dx, n);
    }
}

/// Joins inputs along the last axis (channels), as `keras.layers.Concatenate`
/// (axis -1, the only axis keel concatenates on).
#[derive(Clone, Debug, Default)]
pub struct Concatenate {
    /// Last-axis width of each input, and rows per sample.
    widths: Vec<usize>,
    rows: usize,
}

impl Concatenate {
    /// A concatenation on the last axis.
    pub fn new() -> Self {
        Self::default()
    }

    fn out_width(&self) -> usize {
        self.widths.iter().sum()
    }
}

impl Layer for Concatenate {
    fn class_name(&self) -> &'static str {
        "Concatenate"
    }

    fn base_name(&self) -> &'static str {
        "concatenate"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Concatenate { axis: -1 }
    }

    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.build_inputs(&[input.to_vec()])
    }

    // k x (..., C_k) -> (..., sum C_k)
    fn build_inputs(&mut self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        at_least_two(inputs)?;
        let lead = |s: &[usize]| s[..s.len().saturating_sub(1)].to_vec();
        for (k, s) in inputs.iter().enumerate() {
            if s.is_empty() || lead(s) != lead(&inputs[0]) {
                return Err(format!(
                    "inputs must match on every axis but the last, but input 0 is {} and input {k} is {}",
                    shape_str(&inputs[0]),
                    shape_str(s)
                ));
            }
        }
        self.widths = inputs.iter().map(|s| s[s.len() - 1]).collect();
        self.rows = lead(&inputs[0]).iter().product();
        let mut out = lead(&inputs[0]);
        out.push(self.out_width());
        Ok(out)
    }

    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        super::copy_forward(x, y, n, self.rows * self.out_width());
    }

    fn backward(&mut self, pass: Backward) {
        super::copy_backward(pass, self.rows * self.out_width());
    }

    // xs[k]: (N, R, C_k) -> y: (N, R, sum C_k)
    fn forward_inputs(&mut self, _params: &[f32], xs: &[&[f32]], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().concat_forward(xs, &self.widths, y, n * self.rows);
    }

    // dL/dxs[k] = input k's columns of dy
    fn backward_input(&mut self, k: usize, _xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
        device::current().concat_backward(k, &self.widths, dy, dx, n * self.rows);
    }
}
