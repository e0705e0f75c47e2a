use super::LayerConfig;
use super::{Backward, Layer, Mode};
use crate::activations::Activation;
use crate::device;

/// Applies an activation function, as `keras.layers.Activation`.
///
/// ```
/// use keel::prelude::*;
/// let act = ActivationLayer::new(Activation::Tanh);
/// ```
#[derive(Clone, Debug)]
pub struct ActivationLayer {
    activation: Activation,
    deferred: bool,
    shape: Vec<usize>,
    input_shape: Option<Vec<usize>>,
}

impl ActivationLayer {
    /// A layer applying `activation` (softmax over the last axis).
    pub fn new(activation: Activation) -> Self {
        ActivationLayer { activation, deferred: false, shape: Vec::new(), input_shape: None }
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn width(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &'static str {
        "Activation"
    }

    fn base_name(&self) -> &'static str {
        "activation"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Activation { activation: self.activation }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // shape -> shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.shape = input.to_vec();
        Ok(input.to_vec())
    }

    fn as_activation(&self) -> Option<Activation> {
        let act = self.activation;
        (!self.deferred && act != Activation::Softmax && !act.needs_input()).then_some(act)
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    // x: (N, ...) -> y = act(x): (N, ...)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let (device, len) = (device::current(), n * self.len());
        device.copy(x, y, len);
        if !self.deferred {
            device.activation_forward(self.activation, &mut y[..len], self.width());
        }
    }

    // y = act(x)  =>  dx = dy * act'(x)
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        let (device, len) = (device::current(), pass.n * self.len());
        match self.activation {
            _ if self.deferred => {}
            act if act.needs_input() => device.activation_backward_from_input(act, &pass.x[..len], &mut pass.dy[..len]),
            act => device.activation_backward(act, &pass.y[..len], &mut pass.dy[..len], self.width()),
        }
        device.copy(pass.dy, dx, len);
    }
}
