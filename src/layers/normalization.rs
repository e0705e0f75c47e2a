use super::{Backward, Layer, LayerConfig, Mode};
use crate::activations::Activation;
use crate::device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Keras' floor on the standard deviation (`keras.backend.epsilon()`).
const EPSILON: f32 = 1e-7;

/// Standardises each channel (the last axis): `(x - mean) / sqrt(variance)`,
/// as `keras.layers.Normalization`. The statistics are given, or measured on
/// training data with [`Normalization::adapt`]; they are constants (saved
/// with the model), not trained.
///
/// ```
/// use keel::prelude::*;
/// let x = Tensor::from_vec(&[2, 1, 1, 3], vec![0.0, 1.0, 2.0, 2.0, 3.0, 6.0])?;
/// let norm = Normalization::new().adapt(&x)?; // mean [1, 2, 4], variance [1, 1, 4]
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Normalization {
    mean: Vec<f32>,
    variance: Vec<f32>,
    input_shape: Option<Vec<usize>>,
    len: usize,
    /// y = x * a + b per channel: a = 1 / std, b = -mean / std; zeros for dx = dy * a.
    a: Vec<f32>,
    b: Vec<f32>,
    zeros: Vec<f32>,
}

impl Normalization {
    /// A layer still to be adapted (or given `with_statistics`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-channel mean and variance, as Keras' `mean=` and `variance=`.
    pub fn with_statistics(mean: Vec<f32>, variance: Vec<f32>) -> Self {
        Normalization { mean, variance, ..Self::default() }
    }

    /// Measures the per-channel mean and variance of `data` (N, ..., C), as Keras' `adapt`.
    pub fn adapt(mut self, data: &Tensor) -> Result<Self> {
        let channels =
            *data.shape().last().ok_or_else(|| Error::Shape("adapt needs data with a channel axis".into()))?;
        let values = data.to_f32_vec();
        if values.is_empty() || channels == 0 {
            return Err(Error::Shape("adapt needs at least one sample".into()));
        }
        let (mut sum, mut sq) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        for row in values.chunks_exact(channels) {
            for (c, &v) in row.iter().enumerate() {
                sum[c] += v as f64;
                sq[c] += v as f64 * v as f64;
            }
        }
        let count = (values.len() / channels) as f64;
        self.mean = sum.iter().map(|s| (s / count) as f32).collect();
        self.variance = sum.iter().zip(&sq).map(|(s, q)| ((q / count - (s / count).powi(2)).max(0.0)) as f32).collect();
        Ok(self)
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    fn inverse_std(&self) -> Vec<f32> {
        self.variance.iter().map(|v| 1.0 / v.sqrt().max(EPSILON)).collect()
    }
}

impl Layer for Normalization {
    fn class_name(&self) -> &'static str {
        "Normalization"
    }

    fn base_name(&self) -> &'static str {
        "normalization"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Normalization { mean: self.mean.clone(), variance: self.variance.clone() }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // shape (..., C) -> shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let channels = input.last().copied().unwrap_or(0);
        if self.mean.is_empty() {
            return Err("has no statistics: call adapt(&training_data) or give mean and variance".into());
        }
        if self.mean.len() != channels || self.variance.len() != channels {
            return Err(format!(
                "has {} means and {} variances for {channels} channels",
                self.mean.len(),
                self.variance.len()
            ));
        }
        if self.mean.iter().chain(&self.variance).any(|v| !v.is_finite()) || self.variance.iter().any(|v| *v < 0.0) {
            return Err("means must be finite and variances finite and non-negative".into());
        }
        self.len = input.iter().product();
        self.a = self.inverse_std();
        self.b = self.mean.iter().zip(&self.a).map(|(m, a)| -m * a).collect();
        self.zeros = vec![0.0; channels];
        Ok(input.to_vec())
    }

    // x: (N, ..., C) -> y = (x - mean[c]) / sqrt(variance[c]) = x * a[c] + b[c]
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        device::current().scale_shift(x, (&self.a, &self.b), None, Activation::Linear, y, n * self.len);
    }

    // y = (x - mean) / std  =>  dx = dy / std
    fn backward(&mut self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().scale_shift(pass.dy, (&self.a, &self.zeros), None, Activation::Linear, dx, pass.n * self.len);
    }
}
