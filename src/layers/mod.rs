//! Layers: shapes and parameters around the kernels. Each layer's forward and
//! backward live side by side in its own file.
//!
//! A layer owns no weights: the model keeps all parameters in one flat f32
//! buffer (and the gradients in another, same layout), and hands each layer its
//! slice. That makes optimizers one loop and an all-reduce one call.

mod activation;
mod average_pooling2d;
mod batch_normalization;
mod config;
mod conv2d;
mod cropping2d;
mod dense;
mod depthwise_conv2d;
mod dropout;
mod flatten;
mod global_pooling2d;
mod max_pooling2d;
mod merge;
mod normalization;
mod padding;
mod prelu;
mod random_crop;
mod random_flip;
mod random_rotation;
mod random_translation;
mod relu;
mod resampling;
mod rescaling;
mod reshape;
mod resizing;
mod separable_conv2d;
mod up_sampling2d;
mod zero_padding2d;

pub use activation::ActivationLayer;
pub use average_pooling2d::AveragePooling2D;
pub use batch_normalization::BatchNormalization;
pub use config::{LayerConfig, Padding2D, Pair};
pub use conv2d::Conv2D;
pub use cropping2d::Cropping2D;
pub use dense::Dense;
pub use depthwise_conv2d::DepthwiseConv2D;
pub use dropout::{Dropout, SpatialDropout2D};
pub use flatten::Flatten;
pub use global_pooling2d::{GlobalAveragePooling2D, GlobalMaxPooling2D};
pub use max_pooling2d::MaxPooling2D;
pub use merge::{Add, Concatenate, Multiply};
pub use normalization::Normalization;
pub use padding::Padding;
pub use prelu::PReLU;
pub use random_crop::RandomCrop;
pub use random_flip::{FlipMode, RandomFlip};
pub use random_rotation::RandomRotation;
pub use random_translation::RandomTranslation;
pub use relu::{ELU, LeakyReLU, ReLU};
pub use rescaling::Rescaling;
pub use reshape::Reshape;
pub use resizing::Resizing;
pub use separable_conv2d::SeparableConv2D;
pub use up_sampling2d::{Interpolation, UpSampling2D};
pub use zero_padding2d::ZeroPadding2D;

use crate::activations::Activation;
use crate::distributed::Communicator;
use crate::initializers::Initializer;
use crate::kernels::Window;
use crate::random::BatchDraws;
use std::sync::Arc;

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
    /// Where dL/dx goes, or `None` for the model's input (nobody needs it):
    /// written, or with `accumulate` added to what dx holds (another reader's
    /// gradient; only for layers whose [`Layer::accumulates_input_gradient`]).
    pub dx: Option<&'a mut [f32]>,
    pub accumulate: bool,
    /// dL/dparams, same layout as `params`; overwritten.
    pub grads: &'a mut [f32],
    /// Samples in the batch.
    pub n: usize,
}

/// One weight a layer declares, as Keras' `add_weight(name, shape,
/// initializer, regularizer, trainable)`. The model lays out every layer's
/// trainable weights, in declaration order, in one flat parameter buffer, and
/// the others (state such as moving statistics) in a second buffer that no
/// optimizer touches; each layer receives its slice of each.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub initializer: Initializer,
    /// False for state that the forward pass updates (moving statistics).
    pub trainable: bool,
    /// L2 factor added to the loss as `l2 * sum(w^2)` (Keras' `regularizers.L2`), 0 for none.
    pub l2: f32,
}

impl Weight {
    /// A trainable weight without regularisation.
    pub fn new(name: &'static str, shape: Vec<usize>, initializer: Initializer) -> Self {
        Weight { name, shape, initializer, trainable: true, l2: 0.0 }
    }

    /// A non-trainable weight (state).
    pub fn state(name: &'static str, shape: Vec<usize>, initializer: Initializer) -> Self {
        Weight { trainable: false, ..Weight::new(name, shape, initializer) }
    }

    /// Values in the weight.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the weight holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// y = x, `len` values per sample: the forward pass of layers that only
/// rename their input (Flatten, Reshape; a merge of one input).
pub(crate) fn copy_forward(x: &[f32], y: &mut [f32], n: usize, len: usize) {
    crate::device::current().copy(x, y, n * len);
}

/// dx = dy: their backward pass.
pub(crate) fn copy_backward(pass: Backward, len: usize) {
    if let Some(dx) = pass.dx {
        crate::device::current().copy(pass.dy, dx, pass.n * len);
    }
}

/// shift += bias * scale: a convolution's bias moved into the shift of the
/// BatchNormalization folded into it ([`Layer::forward_affine`]).
pub(crate) fn fold_bias(bias: Option<&[f32]>, scale: &[f32], shift: &mut [f32]) {
    if let Some(b) = bias {
        shift.iter_mut().zip(b.iter().zip(scale)).for_each(|(t, (b, s))| *t += b * s);
    }
}

/// Fills a layer's trainable weights (`params`) and state with their
/// initialisers, in declaration order, all drawing from `rng`.
pub fn init_weights(weights: &[Weight], params: &mut [f32], state: &mut [f32], rng: &mut crate::random::Rng) {
    let (mut p, mut s) = (0, 0);
    for w in weights {
        let (buffer, at) = if w.trainable { (&mut *params, &mut p) } else { (&mut *state, &mut s) };
        w.initializer.fill(&mut buffer[*at..*at + w.len()], &w.shape, rng);
        *at += w.len();
    }
}

/// A layer of a [`crate::model::Model`].
///
/// # Gradients: one rule
/// `backward` *writes* dL/dx for its input (it never adds to it); the model
/// sums the gradients of a value that feeds several layers (a residual
/// connection), so a layer never needs to know how often its input is used.
/// Layers with several inputs (Add, Concatenate) implement `build_inputs`,
/// `forward_inputs` and `backward_input` instead of the single-input methods.
pub trait Layer: Send {
    /// Keras' class name, shown by `summary()`: "Conv2D".
    fn class_name(&self) -> &'static str;

    /// The base of automatic layer names: "conv2d" (then "conv2d_1", ...).
    fn base_name(&self) -> &'static str;

    /// The layer's class and arguments, as saved in model files.
    fn config(&self) -> LayerConfig;

    /// The weights this layer declares (after `build`), in order: the one
    /// place where their names, shapes, initialisers and trainability are said.
    fn weights(&self) -> Vec<Weight> {
        Vec::new()
    }

    /// The input shape given on this layer (`input_shape=` in Keras), if any.
    fn declared_input_shape(&self) -> Option<&[usize]> {
        None
    }

    /// Checks the per-sample input shape and returns the per-sample output shape.
    /// The error says what is wrong; the model adds the layer's name.
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String>;

    /// [`Layer::build`] for the shapes of all inputs; layers with one input keep the default.
    fn build_inputs(&mut self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        match inputs {
            [one] => self.build(one),
            _ => Err(format!("takes one input, got {}", inputs.len())),
        }
    }

    /// Number of trainable parameters (after `build`).
    fn param_count(&self) -> usize {
        self.weights().iter().filter(|w| w.trainable).map(Weight::len).sum()
    }

    /// Allocates per-batch state (argmax indices, masks, partial sums) for up to `batch` samples.
    fn allocate(&mut self, _batch: usize) {}

    /// The random draws of the next training batch (dropout masks, augmentations):
    /// sample i of the batch draws from `draws.sample(i)`.
    fn set_draws(&mut self, _draws: BatchDraws) {}

    /// The ranks of a data-parallel group (see [`crate::distributed`]) that
    /// this layer's batch statistics are computed over, so that N ranks train
    /// the model one process would; `None` for a process alone. Only layers
    /// with batch statistics (BatchNormalization) use it, and return true: in
    /// training they then join one collective per statistic, on every rank
    /// and every batch, so the model runs them on an empty share of a batch
    /// (`n` = 0, empty slices) too.
    fn set_group(&mut self, _group: Option<Arc<dyn Communicator>>) -> bool {
        false
    }

    /// The error of a collective the last pass made, if one failed (a pass
    /// cannot return it); the model checks after every training pass.
    fn take_error(&mut self) -> Option<crate::error::Error> {
        None
    }

    /// Tells the layer whether its weights train; a frozen BatchNormalization
    /// runs in inference mode, as in Keras 3.
    fn set_trainable(&mut self, _trainable: bool) {}

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

    /// For a layer that only applies an elementwise activation differentiable
    /// from its output (ReLU, ReLU(6), Activation("relu")...), that activation,
    /// so that the layer before it may apply it itself.
    fn as_activation(&self) -> Option<Activation> {
        None
    }

    /// Asks this layer to also apply the activation `act` of the layer that
    /// follows it (`None` undoes it); returns whether it does. When it does,
    /// `forward` writes the activated output, `backward` receives its
    /// gradient, and the model skips the activation layer.
    fn fuse_activation(&mut self, _act: Option<Activation>) -> bool {
        false
    }

    /// Whether at inference the layer passes its input on unchanged (Dropout):
    /// the model then skips it there, its output being its input's buffer.
    fn identity_at_inference(&self) -> bool {
        false
    }

    /// For ZeroPadding2D, its padding ((top, bottom), (left, right)), so that
    /// the convolution reading its output may pad the input itself.
    fn zero_padding(&self) -> Option<((usize, usize), (usize, usize))> {
        None
    }

    /// Asks a convolution to read, at inference, the input of the
    /// ZeroPadding2D before it (`pad` its padding) in place of that layer's
    /// output, its own window padded by as much (`None` undoes it); returns
    /// whether it does. When it does, the model skips that layer at inference.
    fn absorb_padding(&mut self, _pad: Option<((usize, usize), (usize, usize))>) -> bool {
        false
    }

    /// For a layer that at inference applies a per-channel map over the last
    /// axis, y = act(x * scale + shift) (BatchNormalization), its channels, so
    /// that the convolution before it may apply the map itself.
    fn affine_channels(&self) -> Option<usize> {
        None
    }

    /// The inference map of [`Layer::affine_channels`]: writes `scale` and
    /// `shift` from the layer's weights and state, and returns the activation
    /// after them (a fused one, else linear).
    fn inference_affine(
        &mut self,
        _params: &[f32],
        _state: &[f32],
        _scale: &mut [f32],
        _shift: &mut [f32],
    ) -> Activation {
        Activation::Linear
    }

    /// Whether [`Layer::backward_input`] writes dy itself to every input (an
    /// Add, after its activation's backward): the network may then hand dy's
    /// buffer to the last input instead of copying it.
    fn passes_gradient(&self) -> bool {
        false
    }

    /// For an Add: the activation it applies to the sum (a fused one, else
    /// linear), so that at inference the convolution before it may add its
    /// other input and apply it as it writes ([`Layer::forward_affine`]'s residual).
    fn residual_activation(&self) -> Option<Activation> {
        None
    }

    /// Whether in training this layer may apply the two-input Add that is its
    /// output's only consumer as it writes ([`Layer::forward_residual`]): a
    /// layer whose backward pass reads its input, never its output
    /// (BatchNormalization without an activation of its own).
    fn adds_residual(&self) -> bool {
        false
    }

    /// [`Layer::forward_stateful`] with the Add after the layer applied to
    /// its output: y = act(layer(x) + residual), `residual` the Add's other
    /// input (the batch's n samples, shaped as the output) and `act` its
    /// activation (elementwise). y is the Add's output; the layer's own output
    /// is never written. The model calls it only where
    /// [`Layer::adds_residual`]. This default runs the layer, then the sum and
    /// the activation in passes of their own.
    #[allow(clippy::too_many_arguments)]
    fn forward_residual(
        &mut self,
        params: &[f32],
        state: &mut [f32],
        x: &[f32],
        (residual, act): (&[f32], Activation),
        y: &mut [f32],
        n: usize,
        mode: Mode,
    ) {
        self.forward_stateful(params, state, x, y, n, mode);
        let len = residual.len();
        crate::kernels::add_assign(&mut y[..len], residual);
        crate::device::current().activation_forward(act, &mut y[..len], len.max(1));
    }

    /// Whether [`Layer::forward_affine`] applies a following per-channel map
    /// as it writes its output (a convolution with no activation or pooling of its own).
    fn folds_affine(&self) -> bool {
        false
    }

    /// Whether in training the layer normalises by its input's per-channel
    /// batch moments, and takes them from the layer before where that one
    /// gathers them ([`Layer::take_input_moments`]): BatchNormalization.
    fn uses_input_moments(&self) -> bool {
        false
    }

    /// Asks the layer to sum, in its training passes, its output's
    /// per-channel moments as it writes them (`gather`), for the layer after
    /// it ([`Layer::output_moments`]); returns whether it will.
    fn gather_output_moments(&mut self, _gather: bool) -> bool {
        false
    }

    /// After a training forward pass of a layer that gathers them: its
    /// output's per-channel sums over the batch, sum y then sum y^2 (2C
    /// values), or `None` where that pass did not gather them.
    fn output_moments(&self) -> Option<&[f64]> {
        None
    }

    /// The per-channel sums (as [`Layer::output_moments`]) of the input of
    /// this layer's next training forward pass, which it uses in place of a
    /// pass of its own over the input.
    fn take_input_moments(&mut self, _sums: &[f64]) {}

    /// Inference with the map of the layer after it (see
    /// [`Layer::inference_affine`]) applied to the output: y = act(layer(x) *
    /// scale + shift), or with a residual (the other input of the Add after
    /// that map, shaped as y) y = act((layer(x) * scale + shift) + residual),
    /// `act` then being the Add's. The model skips those layers then. `shift`
    /// is scratch the layer may change (a convolution adds its bias times the
    /// scale). This default runs the layer, then the map in a pass of its own.
    fn forward_affine(
        &mut self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        n: usize,
        (scale, shift, residual): (&[f32], &mut [f32], Option<&[f32]>),
        act: Activation,
    ) {
        self.forward(params, x, y, n, Mode::Infer);
        let c = scale.len();
        for (i, row) in y.chunks_exact_mut(c).enumerate() {
            row.iter_mut().zip(scale.iter().zip(shift.iter())).for_each(|(v, (s, t))| *v = *v * s + t);
            if let Some(r) = residual {
                row.iter_mut().zip(&r[i * c..][..c]).for_each(|(v, r)| *v += r);
            }
        }
        let len = y.len() / c * c;
        crate::device::current().activation_forward(act, &mut y[..len], c);
    }

    /// x: (n, input shape) -> y: (n, output shape).
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode);

    /// The version of the weights the next passes get (the model renews it
    /// whenever they may change, as every optimizer step does; None:
    /// unknown): a layer may keep what it prepared from the same version, as
    /// the Dense head's W^T from a training step's forward pass to its backward.
    fn set_weights_version(&mut self, _version: Option<u64>) {}

    /// [`Layer::forward`] with the layer's slice of the model's state buffer
    /// (non-trainable weights), which training may update. Layers with state
    /// implement this; the model always calls it.
    fn forward_stateful(&mut self, params: &[f32], _state: &mut [f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        self.forward(params, x, y, n, mode)
    }

    /// Gradients of the forward pass; see [`Backward`].
    fn backward(&mut self, pass: Backward);

    /// Whether [`Layer::backward`] can add dL/dx into a buffer holding
    /// another reader's gradient ([`Backward::accumulate`]): the model then
    /// passes it that buffer rather than scratch it adds afterwards.
    fn accumulates_input_gradient(&self) -> bool {
        false
    }

    /// Several inputs `xs[k]`: (n, input k's shape) -> y: (n, output shape).
    fn forward_inputs(&mut self, params: &[f32], xs: &[&[f32]], y: &mut [f32], n: usize, mode: Mode) {
        self.forward(params, xs[0], y, n, mode)
    }

    /// Several inputs, an activation fused in ([`Layer::fuse_activation`]): turns
    /// dy, the gradient of the activated output y, into that of the layer's own
    /// output, in place, before [`Layer::backward_input`] runs for each input.
    fn backward_activation(&mut self, _y: &[f32], _dy: &mut [f32], _n: usize) {}

    /// Several inputs: writes dL/d(input k) to `dx` from `dy` (read-only: it
    /// serves every input). Parameter-free layers only.
    fn backward_input(&mut self, _k: usize, _xs: &[&[f32]], _dy: &[f32], _dx: &mut [f32], _n: usize) {}
}

impl<L: Layer + 'static> From<L> for Box<dyn Layer> {
    fn from(layer: L) -> Self {
        Box::new(layer)
    }
}
