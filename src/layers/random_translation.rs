use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::{Fill, bilinear};
use crate::random::BatchDraws;
use rand::Rng as _;

/// Shifts each training image by a random fraction of its size, up to
/// `height_factor` vertically and `width_factor` horizontally (either way),
/// with bilinear interpolation and `fill_mode` for the uncovered border
/// (default reflect), as `keras.layers.RandomTranslation`; the identity at inference.
///
/// ```
/// use keel::prelude::*;
/// let shift = RandomTranslation::new(0.1, 0.1).input_shape([28, 28, 1]);
/// ```
#[derive(Clone, Debug)]
pub struct RandomTranslation {
    height_factor: f32,
    width_factor: f32,
    fill_mode: Fill,
    input_shape: Option<Vec<usize>>,
    draws: BatchDraws,
    resampling: Resampling,
}

impl RandomTranslation {
    pub fn new(height_factor: f32, width_factor: f32) -> Self {
        RandomTranslation {
            height_factor,
            width_factor,
            fill_mode: Fill::Reflect,
            input_shape: None,
            draws: BatchDraws::default(),
            resampling: Resampling::default(),
        }
    }

    /// What the uncovered border shows.
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

impl Layer for RandomTranslation {
    fn class_name(&self) -> &'static str {
        "RandomTranslation"
    }

    fn base_name(&self) -> &'static str {
        "random_translation"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::RandomTranslation {
            height_factor: self.height_factor,
            width_factor: self.width_factor,
            fill_mode: self.fill_mode,
        }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (H,W,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        for f in [self.height_factor, self.width_factor] {
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("factors must be in [0, 1], got {f}"));
            }
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

    // x: (N,H,W,C) -> y: (N,H,W,C);  y[r][c] = x(r - dy, c - dx), bilinear, dy, dx random (training)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        if mode == Mode::Infer {
            return self.resampling.copy(x, y, n);
        }
        let (h, w, _) = self.resampling.input;
        let fill = self.fill_mode;
        for i in 0..n {
            let mut rng = self.draws.sample(i);
            let dy = rng.random_range(-1.0f32..=1.0) * self.height_factor * h as f32;
            let dx = rng.random_range(-1.0f32..=1.0) * self.width_factor * w as f32;
            self.resampling.set(i, |r, c| bilinear(r as f32 - dy, c as f32 - dx, h, w, fill));
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
