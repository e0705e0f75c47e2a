use super::LayerConfig;
use super::{Backward, Layer, Mode};
use crate::device::{self, ProductOp, Span};
use crate::random::BatchDraws;

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
    body: Drop,
    input_shape: Option<Vec<usize>>,
}

/// Drops whole channels of images, as `keras.layers.SpatialDropout2D`: each
/// sample's channels are zeroed with probability `rate` (the same at every
/// position), the others scaled by 1 / (1 - rate); the identity at inference.
///
/// ```
/// use keel::prelude::*;
/// let dropout = SpatialDropout2D::new(0.2);
/// ```
#[derive(Clone, Debug)]
pub struct SpatialDropout2D {
    body: Drop,
}

impl SpatialDropout2D {
    /// Drops a fraction `rate` (in [0, 1)) of each sample's channels.
    pub fn new(rate: f32) -> Self {
        SpatialDropout2D { body: Drop::new(rate, true) }
    }
}

/// What the two share: a mask drawn per value (or per channel) of each
/// training sample, applied by the device.
#[derive(Clone, Debug)]
struct Drop {
    rate: f32,
    per_channel: bool,
    /// Values and channels per sample.
    len: usize,
    c: usize,
    /// 0 or 1/(1-rate) per value (or per channel) of the last training batch.
    mask: Vec<f32>,
    draws: BatchDraws,
}

impl Drop {
    fn new(rate: f32, per_channel: bool) -> Self {
        Drop { rate, per_channel, len: 0, c: 0, mask: Vec::new(), draws: BatchDraws::default() }
    }

    /// Mask values per sample.
    fn mask_len(&self) -> usize {
        if self.per_channel { self.c } else { self.len }
    }

    fn op(&self) -> ProductOp<'static> {
        const SPANS: [Span; 2] = [Span::Full, Span::Full];
        const CHANNELS: [Span; 2] = [Span::Full, Span::Channels];
        ProductOp { spans: if self.per_channel { &CHANNELS } else { &SPANS }, sample_len: self.len, c: self.c }
    }

    // shape -> shape
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(format!("rate must be in [0, 1), got {}", self.rate));
        }
        if self.per_channel && input.len() != 3 {
            return Err(format!("expects images of shape (height, width, channels), got {input:?}"));
        }
        self.len = input.iter().product();
        self.c = input.last().copied().unwrap_or(1);
        Ok(input.to_vec())
    }

    fn allocate(&mut self, batch: usize) {
        self.mask.resize(batch * self.mask_len(), 0.0);
    }

    // x: (N, ...) -> y = x * mask (training) or x (inference)
    fn forward(&mut self, x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let len = n * self.len;
        if mode == Mode::Infer || self.rate == 0.0 {
            device::current().copy(x, y, len);
            let masked = n * self.mask_len();
            return self.mask[..masked].fill(1.0);
        }
        let (keep, per) = (1.0 / (1.0 - self.rate), self.mask_len());
        self.draws.fill_masks(&mut self.mask[..n * per], per, self.rate, keep);
        device::current().multiply_forward(&self.op(), &[x, &self.mask], y, n);
    }

    // y = x * mask  =>  dx = dy * mask
    fn backward(&mut self, pass: Backward) {
        if let Some(dx) = pass.dx {
            device::current().multiply_forward(&self.op(), &[pass.dy, &self.mask], dx, pass.n);
        }
    }
}

impl Dropout {
    /// Drops a fraction `rate` (in [0, 1)) of the values.
    pub fn new(rate: f32) -> Self {
        Dropout { body: Drop::new(rate, false), input_shape: None }
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

macro_rules! dropout_layer {
    ($name:ident, $base:literal, |$s:ident| $config:expr, $input_shape:expr) => {
        impl Layer for $name {
            fn class_name(&self) -> &'static str {
                stringify!($name)
            }

            fn base_name(&self) -> &'static str {
                $base
            }

            fn config(&self) -> LayerConfig {
                let $s = self;
                $config
            }

            fn declared_input_shape(&self) -> Option<&[usize]> {
                let $s = self;
                $input_shape
            }

            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                self.body.build(input)
            }

            fn allocate(&mut self, batch: usize) {
                self.body.allocate(batch)
            }

            fn set_draws(&mut self, draws: BatchDraws) {
                self.body.draws = draws;
            }

            fn identity_at_inference(&self) -> bool {
                true
            }

            fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
                self.body.forward(x, y, n, mode)
            }

            fn backward(&mut self, pass: Backward) {
                self.body.backward(pass)
            }
        }
    };
}

dropout_layer!(Dropout, "dropout", |s| LayerConfig::Dropout { rate: s.body.rate }, s.input_shape.as_deref());
dropout_layer!(SpatialDropout2D, "spatial_dropout2d", |s| LayerConfig::SpatialDropout2D { rate: s.body.rate }, {
    let _ = s;
    None
});
