use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::{Fill, bilinear};
use crate::random::BatchDraws;
use rand::Rng as _;

/// Rotates each training image about its centre by a random angle of up to
/// `factor` x 2 pi either way, with bilinear interpolation and `fill_mode`
/// for the corners (default reflect), as `keras.layers.RandomRotation`; the
/// identity at inference.
///
/// ```
/// use keel::prelude::*;
/// let turn = RandomRotation::new(0.05).input_shape([28, 28, 1]); // up to 18 degrees
/// ```
#[derive(Clone, Debug)]
pub struct RandomRotation {
    factor: f32,
    fill_mode: Fill,
    input_shape: Option<Vec<usize>>,
    draws: BatchDraws,
    resampling: Resampling,
}

impl RandomRotation {
    pub fn new(factor: f32) -> Self {
        RandomRotation {
            factor,
            fill_mode: Fill::Reflect,
            input_shape: None,
            draws: BatchDraws::default(),
            resampling: Resampling::default(),
        }
    }

    /// What the uncovered corners show.
    pub fn fill_mode(mut self, fill_mode: Fill) -> Self {
        self.fill_mode = fill_mode;
        self
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for RandomRotation {
    fn class_name(&self) -> &'static str {
        "RandomRotation"
    }

    fn base_name(&self) -> &'static str {
        "random_rotation"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::RandomRotation { factor: self.factor, fill_mode: self.fill_mode }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (H,W,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        if !(0.0..=1.0).contains(&self.factor) {
            return Err(format!("factor must be in [0, 1], got {}", self.factor));
        }
        self.resampling = Resampling::new((h, w, c), (h, w));
        Ok(self.resampling.output_shape())
    }

    fn allocate(&mut self, batch: usize) {
        self.resampling.allocate(batch);
    }

    fn set_draws(&mut self, draws: BatchDraws) {
        self.draws = draws;
    }

    // x: (N,H,W,C) -> y: (N,H,W,C);  y(p) = x(centre + R(-angle) (p - centre)), bilinear (training)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        if mode == Mode::Infer {
            return self.resampling.copy(x, y, n);
        }
        let (h, w, _) = self.resampling.input;
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let fill = self.fill_mode;
        for i in 0..n {
            let mut rng = self.draws.sample(i);
            let angle = rng.random_range(-1.0f32..=1.0) * self.factor * std::f32::consts::TAU;
            let (sin, cos) = angle.sin_cos();
            self.resampling.set(i, |r, c| {
                let (dy, dx) = (r as f32 - cy, c as f32 - cx);
                bilinear(cy + cos * dy - sin * dx, cx + sin * dy + cos * dx, h, w, fill)
            });
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
