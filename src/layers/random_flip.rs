use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::Tap;
use crate::random::BatchDraws;
use rand::Rng as _;

/// Which flips [`RandomFlip`] may apply, as Keras' `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlipMode {
    Horizontal,
    Vertical,
    #[default]
    HorizontalAndVertical,
}

/// Flips each training image left-right and/or upside down, each with
/// probability 1/2, as `keras.layers.RandomFlip`; the identity at inference.
///
/// ```
/// use keel::prelude::*;
/// let flip = RandomFlip::new(FlipMode::Horizontal).input_shape([32, 32, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct RandomFlip {
    mode: FlipMode,
    input_shape: Option<Vec<usize>>,
    draws: BatchDraws,
    resampling: Resampling,
}

impl RandomFlip {
    pub fn new(mode: FlipMode) -> Self {
        RandomFlip { mode, input_shape: None, draws: BatchDraws::default(), resampling: Resampling::default() }
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for RandomFlip {
    fn class_name(&self) -> &'static str {
        "RandomFlip"
    }

    fn base_name(&self) -> &'static str {
        "random_flip"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::RandomFlip { mode: self.mode }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (H,W,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        self.resampling = Resampling::new((h, w, c), (h, w));
        Ok(self.resampling.output_shape())
    }

    fn allocate(&mut self, batch: usize) {
        self.resampling.allocate(batch);
    }

    fn set_draws(&mut self, draws: BatchDraws) {
        self.draws = draws;
    }

    // x: (N,H,W,C) -> y: (N,H,W,C);  y[r][c] = x[H-1-r or r][W-1-c or c] (training), y = x (inference)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        if mode == Mode::Infer {
            return self.resampling.copy(x, y, n);
        }
        let (h, w, _) = self.resampling.input;
        let (may_h, may_v) = match self.mode {
            FlipMode::Horizontal => (true, false),
            FlipMode::Vertical => (false, true),
            FlipMode::HorizontalAndVertical => (true, true),
        };
        for i in 0..n {
            let mut rng = self.draws.sample(i);
            let flip_h = may_h && rng.random::<bool>();
            let flip_v = may_v && rng.random::<bool>();
            self.resampling.set(i, |r, c| {
                let (sr, sc) = (if flip_v { h - 1 - r } else { r }, if flip_h { w - 1 - c } else { c });
                Tap::copy(sr * w + sc)
            });
        }
        self.resampling.forward(x, y, n);
    }

    // Differentiates y = x[flipped]:  dx[flipped] = dy
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            self.resampling.backward(pass.dy, dx, pass.n);
        }
    }
}
