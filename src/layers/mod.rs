//! Layers: shapes and parameters around the kernels. Each layer's forward and
//! backward live side by side in its own file.
//!
//! A layer owns no weights: the model keeps all parameters in one flat f32
//! buffer (and the gradients in another, same layout), and hands each layer its
//! slice. That makes optimizers one loop and an all-reduce one call.

mod activation;
mod config;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod max_pooling2d;
mod normalization;
mod padding;
mod random_crop;
mod random_flip;
mod random_rotation;
mod random_translation;
mod resampling;
mod rescaling;
mod resizing;

pub use activation::ActivationLayer;
pub use config::{LayerConfig, Pair};
pub use conv2d::Conv2D;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use max_pooling2d::MaxPooling2D;
pub use normalization::Normalization;
pub use padding::Padding;
pub use random_crop::RandomCrop;
pub use random_flip::{FlipMode, RandomFlip};
pub use random_rotation::RandomRotation;
pub use random_translation::RandomTranslation;
pub use rescaling::Rescaling;
pub use resizing::Resizing;

use crate::activations::Activation;
use crate::kernels::Window;
use crate::random::{BatchDraws, Rng};

/// Whether a forward pass is for training (dropout active) or inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Infer,
}

/// What a layer's backward pass reads and writes. Shapes are per batch of `n`
/// samples; `dy` may be overwritten (layers turn it into dL/dz in place).
pub struct Backward<'a> {
    /// This layer's slice of the model's parameters.
    pub params: &'a [f32],
    /// The forward input and output.
    pub x: &'a [f32],
    pub y: &'a [f32],
    /// dL/dy on entry; scratch afterwards.
    pub dy: &'a mut [f32],
    /// Where dL/dx goes, or `None` for the first layer (nobody needs it).
    pub dx: Option<&'a mut [f32]>,
    /// dL/dparams, same layout as `params`; overwritten.
    pub grads: &'a mut [f32],
    /// Samples in the batch.
    pub n: usize,
}

/// A layer of a [`crate::model::Sequential`] model.
pub trait Layer: Send {
    /// Keras' class name, shown by `summary()`: "Conv2D".
    fn class_name(&self) -> &'static str;

    /// The base of automatic layer names: "conv2d" (then "conv2d_1", ...).
    fn base_name(&self) -> &'static str;

    /// The layer's class and arguments, as saved in model files.
    fn config(&self) -> LayerConfig;

    /// Names and shapes of the parameters in this layer's slice, in order
    /// (after `build`): `[("kernel", [3, 3, 1, 32]), ("bias", [32])]`.
    fn weight_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }

    /// The input shape given on this layer (`input_shape=` in Keras), if any.
    fn declared_input_shape(&self) -> Option<&[usize]> {
        None
    }

    /// Checks the per-sample input shape and returns the per-sample output shape.
    /// The error says what is wrong; the model adds the layer's name.
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String>;

    /// Number of parameters (after `build`).
    fn param_count(&self) -> usize {
        0
    }

    /// Fills this layer's parameters with their initial values.
    fn init_params(&self, _params: &mut [f32], _rng: &mut Rng) {}

    /// Allocates per-batch state (argmax indices, masks, partial sums) for up to `batch` samples.
    fn allocate(&mut self, _batch: usize) {}

    /// The random draws of the next training batch (dropout masks, augmentations):
    /// sample i of the batch draws from `draws.sample(i)`.
    fn set_draws(&mut self, _draws: BatchDraws) {}

    /// The activation applied to this layer's output.
    fn output_activation(&self) -> Activation {
        Activation::Linear
    }

    /// When set, forward leaves the output before its activation (logits) and
    /// backward receives dL/dlogits: the loss then applies the activation
    /// itself, stably (softmax + cross-entropy via log-sum-exp).
    fn defer_output_activation(&mut self, _deferred: bool) {}

    /// True for layers that only reshape (Flatten): the model then passes their
    /// input on as their output, without running them or copying.
    fn is_reshape(&self) -> bool {
        false
    }

    /// For a max-pooling layer, its window (after `build`), so that the layer
    /// before it may compute the pooling itself.
    fn max_pool_window(&self) -> Option<Window> {
        None
    }

    /// Asks this layer to also compute the max-pooling `pool` that follows it
    /// (`None` undoes it); returns whether it does. When it does, `forward`
    /// writes the pooled output, `backward` receives the pooled gradient, and
    /// the model skips the pooling layer: the same numbers, less memory traffic.
    fn fuse_max_pool(&mut self, _pool: Option<Window>) -> bool {
        false
    }

    /// x: (n, input shape) -> y: (n, output shape).
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode);

    /// Gradients of the forward pass; see [`Backward`].
    fn backward(&mut self, pass: Backward);
}

impl<L: Layer + 'static> From<L> for Box<dyn Layer> {
    fn from(layer: L) -> Self {
        Box::new(layer)
    }
}
