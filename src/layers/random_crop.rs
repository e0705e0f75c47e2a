use super::resampling::{Resampling, image_shape};
use super::{Backward, Layer, LayerConfig, Mode};
use crate::kernels::resample::{Fill, bilinear};
use crate::random::BatchDraws;
use rand::Rng as _;

/// Crops a random (height, width) window of each training image, after
/// padding it with `padding` zero pixels on every side (the CIFAR recipe:
/// pad 4, crop 32), as `keras.layers.RandomCrop` plus padding; at inference
/// the centre window.
///
/// ```
/// use keel::prelude::*;
/// let crop = RandomCrop::new(32, 32).padding(4).input_shape([32, 32, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct RandomCrop {
    height: usize,
    width: usize,
    padding: usize,
    input_shape: Option<Vec<usize>>,
    draws: BatchDraws,
    resampling: Resampling,
}

impl RandomCrop {
    pub fn new(height: usize, width: usize) -> Self {
        RandomCrop {
            height,
            width,
            padding: 0,
            input_shape: None,
            draws: BatchDraws::default(),
            resampling: Resampling::default(),
        }
    }

    /// Zero pixels added on each side before cropping.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    fn set_window(&mut self, i: usize, top: usize, left: usize) {
        let ((h, w, _), p) = (self.resampling.input, self.padding);
        self.resampling.set(i, |r, c| {
            let (y, x) = ((r + top) as f32 - p as f32, (c + left) as f32 - p as f32);
            bilinear(y, x, h, w, Fill::Constant)
        });
    }
}

impl Layer for RandomCrop {
    fn class_name(&self) -> &'static str {
        "RandomCrop"
    }

    fn base_name(&self) -> &'static str {
        "random_crop"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::RandomCrop { height: self.height, width: self.width, padding: self.padding }
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (height,width,C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (h, w, c) = image_shape(input)?;
        let (ph, pw) = (h + 2 * self.padding, w + 2 * self.padding);
        if self.height == 0 || self.width == 0 || self.height > ph || self.width > pw {
            return Err(format!(
                "a {}x{} crop does not fit a {h}x{w} image padded by {} ({ph}x{pw})",
                self.height, self.width, self.padding
            ));
        }
        self.resampling = Resampling::new((h, w, c), (self.height, self.width));
        Ok(self.resampling.output_shape())
    }

    fn allocate(&mut self, batch: usize) {
        self.resampling.allocate(batch);
    }

    fn set_draws(&mut self, draws: BatchDraws) {
        self.draws = draws;
    }

    // x: (N,H,W,C) -> y: (N,height,width,C);  y = pad(x)[top.., left..] (random in training, centred at inference)
    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let (h, w, _) = self.resampling.input;
        let (spare_h, spare_w) = (h + 2 * self.padding - self.height, w + 2 * self.padding - self.width);
        if mode == Mode::Infer && (spare_h, spare_w) == (2 * self.padding, 2 * self.padding) {
            return self.resampling.copy(x, y, n);
        }
        for i in 0..n {
            let mut rng = self.draws.sample(i);
            let (top, left) = match mode {
                Mode::Train => (rng.random_range(0..=spare_h), rng.random_range(0..=spare_w)),
                Mode::Infer => (spare_h / 2, spare_w / 2),
            };
            self.set_window(i, top, left);
        }
        self.resampling.forward(x, y, n);
    }

    // Differentiates y = window of pad(x):  dx[window] = dy (padding gets nothing)
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            self.resampling.backward(pass.dy, dx, pass.n);
        }
    }
}
