use super::LayerConfig;
use super::{Backward, Layer, Mode};
use crate::device;
use crate::random::BatchDraws;
use rand::Rng as _;

/// Randomly zeroes a fraction `rate` of the inputs while training and scales
/// the rest by 1 / (1 - rate), as `keras.layers.Dropout`. The identity at
/// inference.
///
/// ```
/// use keel::prelude::*;
/// let dropout = Dropout::new(0.5);
/// ```
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f32,
    len: usize,
    input_shape: Option<Vec<usize>>,
    /// 0 or 1/(1-rate) per value of the last training batch.
    mask: Vec<f32>,
    draws: BatchDraws,
}

impl Dropout {
    /// Drops a fraction `rate` (in [0, 1)) of the values.
    pub fn new(rate: f32) -> Self {
        Dropout { rate, len: 0, input_shape: None, mask: Vec::new(), draws: BatchDraws::default() }
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        "Dropout"
    }

    fn base_name(&self) -> &'static str {
        "dropout"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Dropout { rate: self.rate }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // shape -> shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(format!("rate must be in [0, 1), got {}", self.rate));
        }
        self.len = input.iter().product();
        Ok(input.to_vec())
    }

    fn allocate(&mut self, batch: usize) {
        self.mask.resize(batch * self.len, 0.0);
    }

    fn set_draws(&mut self, draws: BatchDraws) {
        self.draws = draws;
    }

    // x: (N, ...) -> y = x * mask (training) or x (inference)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let len = n * self.len;
        if mode == Mode::Infer || self.rate == 0.0 {
            device::current().copy(x, y, len);
            self.mask[..len].fill(1.0);
            return;
        }
        let keep = 1.0 / (1.0 - self.rate);
        for (i, mask) in self.mask[..len].chunks_mut(self.len).enumerate() {
            let mut rng = self.draws.sample(i);
            for m in mask {
                *m = if rng.random::<f32>() < self.rate { 0.0 } else { keep };
            }
        }
        device::current().multiply(x, &self.mask, y, len);
    }

    // y = x * mask  =>  dx = dy * mask
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        let len = pass.n * self.len;
        device::current().multiply(pass.dy, &self.mask, dx, len);
    }
}
