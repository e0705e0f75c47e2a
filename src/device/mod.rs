//! The operations layers run, behind one interface.
//!
//! A layer knows shapes, weights and what to compute; a [`Device`] knows how:
//! how the batch is split over threads, which kernel (direct, im2col + matrix
//! product, a narrow SIMD path) fits a shape, and what scratch it needs.
//! Layers call [`current()`] and never spawn threads or choose kernels
//! themselves, so a second device (a GPU) implements this trait without
//! touching `layers/`.
//!
//! Buffers are plain `f32` slices laid out channels-last, as everywhere in
//! keel; every operation takes the batch size `n` and reads or writes the first
//! `n` samples of its buffers. Backward operations write (never add to) their
//! input gradient: the graph sums the gradients of a value used twice.
//! What an operation keeps between calls (per-task partial sums, packed
//! weights) lives in a [`Workspace`] that the layer owns and the device sizes.

mod buffer;
mod cpu;

pub use buffer::Buffer;
pub use cpu::Cpu;
pub(crate) use cpu::team::ForEachTask;

use crate::activations::Activation;
use crate::kernels::Window;
use crate::kernels::activation::Rectifier;
use crate::kernels::batch_norm::{Gate, InputGrad};
use crate::kernels::depthwise::Depthwise;
use crate::kernels::resample::Tap;

/// The device layers run on: the CPU today.
pub fn current() -> &'static dyn Device {
    static CPU: Cpu = Cpu;
    &CPU
}

/// Buffers an operation keeps between calls, owned by the layer that runs it
/// and sized by the device: they grow to the largest batch seen and are then
/// reused, so steady-state training allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    f32s: Vec<Buffer>,
    f64s: Buffer<f64>,
    u32s: Buffer<u32>,
    prepared: Prepared,
}

/// Values a kernel prepares from a layer's weights (packed, transformed),
/// kept between inference calls while the weights stay the same: a batch-1
/// pass then reads them as they are, where preparing them again would cost
/// a pass over megabytes of weights per layer.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// What `values` were prepared from (none: nothing kept).
    key: Option<PreparedKey>,
    values: Buffer,
}

/// What a [`Prepared`] holds: the weights' version (`ConvOp::version`),
/// the form the kernel prepared them in (its own tag), and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PreparedKey {
    version: u64,
    form: u64,
    len: usize,
}

impl Prepared {
    /// `len` values that `prepare` writes in the kernel's `form` from weights
    /// of `version`; when the last call's were of the same version and form,
    /// the values it kept, as they are. Without a version, prepared anew.
    pub fn get(&mut self, version: Option<u64>, form: u64, len: usize, prepare: impl FnOnce(&mut [f32])) -> &[f32] {
        let key = version.map(|version| PreparedKey { version, form, len });
        if key.is_none() || key != self.key {
            self.key = None;
            self.values.resize(len, 0.0);
            prepare(&mut self.values[..len]);
            self.key = key;
        }
        &self.values[..len]
    }
}

/// The first `K` of `f32s`, at least `lens[i]` long each, and `indices` of
/// `u32s` (contents kept); see [`Workspace::with_indices`].
fn buffers<'a, const K: usize>(
    f32s: &'a mut Vec<Buffer>,
    u32s: &'a mut Buffer<u32>,
    lens: [usize; K],
    indices: usize,
) -> ([&'a mut [f32]; K], &'a mut [u32]) {
    if f32s.len() < K {
        f32s.resize_with(K, Buffer::default);
    }
    let mut buffers = f32s.iter_mut();
    let f32s = lens.map(|len| {
        let buffer = buffers.next().expect("K buffers exist");
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        &mut buffer[..len]
    });
    if u32s.len() < indices {
        u32s.resize(indices, 0);
    }
    (f32s, &mut u32s[..indices])
}

impl Workspace {
    /// The first `K` f32 buffers, at least `lens[i]` long each (contents kept).
    pub fn f32s<const K: usize>(&mut self, lens: [usize; K]) -> [&mut [f32]; K] {
        self.with_indices(lens, 0).0
    }

    /// As [`Workspace::f32s`], and a u32 buffer of `indices` values (contents
    /// kept): positions saved for backward, such as a pooling's argmax.
    pub fn with_indices<const K: usize>(&mut self, lens: [usize; K], indices: usize) -> ([&mut [f32]; K], &mut [u32]) {
        buffers(&mut self.f32s, &mut self.u32s, lens, indices)
    }

    /// [`Workspace::with_indices`], the weights kept prepared, and an f64
    /// buffer of `wide` values (contents kept).
    pub fn with_prepared<const K: usize>(
        &mut self,
        lens: [usize; K],
        indices: usize,
        wide: usize,
    ) -> (&mut Prepared, [&mut [f32]; K], &mut [u32], &mut [f64]) {
        let (f32s, u32s) = buffers(&mut self.f32s, &mut self.u32s, lens, indices);
        if self.f64s.len() < wide {
            self.f64s.resize(wide, 0.0);
        }
        (&mut self.prepared, f32s, u32s, &mut self.f64s[..wide])
    }

    /// An f64 buffer of `len` values (contents kept).
    pub fn f64s(&mut self, len: usize) -> &mut [f64] {
        if self.f64s.len() < len {
            self.f64s.resize(len, 0.0);
        }
        &mut self.f64s[..len]
    }

    /// A u32 buffer of `len` values (contents kept).
    pub fn u32s(&mut self, len: usize) -> &mut [u32] {
        self.with_indices([], len).1
    }

    /// Values held, for memory estimates.
    pub fn len(&self) -> usize {
        let f32s = self.f32s.iter().map(|b| b.len()).sum::<usize>() + self.prepared.values.len();
        f32s + self.f64s.len() * 2 + self.u32s.len()
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// y = act(x . W + b) over rows of `d` features: Dense.
#[derive(Clone, Copy, Debug)]
pub struct DenseOp<'a> {
    /// Input features and units.
    pub d: usize,
    pub u: usize,
    /// Rows per sample (1 for a flat input; a Dense on (..., D) maps every row).
    pub rows_per_sample: usize,
    /// Kernel (D, U) and bias (U).
    pub kernel: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// The weights' version (`Layer::set_weights_version`): the kernel's
    /// prepared form is kept while it holds. None: prepared on every call.
    pub version: Option<u64>,
}

/// y = act(conv(x, W) + b), optionally max-pooled in the same pass: Conv2D.
/// With `groups` G, output channel f sees only input channels of group
/// f / (F/G); the kernel is then (KH, KW, C/G, F) and `g.c` is C.
#[derive(Clone, Copy, Debug)]
pub struct ConvOp<'a> {
    pub g: Window,
    pub filters: usize,
    pub groups: usize,
    /// Kernel (KH, KW, C, F) and bias (F).
    pub kernel: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// A max pooling over the activated output, fused into the convolution.
    pub pool: Option<Window>,
    /// With a pool: whether the forward pass keeps each pooled value's
    /// winner for the backward pass (training); kernels that can skip
    /// finding them do where it does not (inference).
    pub winners: bool,
    /// At inference, the BatchNormalization after the layer folded in (no pool then).
    pub affine: Option<Affine<'a>>,
    /// At inference, the weights' version (see [`Prepared`]): the same
    /// version is the same kernel, so what a kernel prepared from it may be
    /// kept across calls. None: prepare it on every call.
    pub version: Option<u64>,
}

/// y = z * scale + shift per output channel, in place of a convolution's bias:
/// the BatchNormalization after it at inference, folded in (`shift` includes
/// the bias), so that its output is written once instead of normalised in a
/// pass of its own. With a `residual`, the Add after that normalisation is
/// folded in too: y = (z * scale + shift) + residual, the op's activation then
/// being the Add's.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    /// The Add's other input, shaped as the output (N, OH, OW, F).
    pub residual: Option<&'a [f32]>,
}

/// y = act(depthwise(x, W) + b): DepthwiseConv2D.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseOp<'a> {
    pub g: Depthwise,
    /// Kernel (KH, KW, C, M) and bias (C*M).
    pub kernel: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// At inference, the BatchNormalization after the layer folded in.
    pub affine: Option<Affine<'a>>,
}

/// Zeros around each image: (H, W, C) -> (H + top + bottom, W + left + right, C).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pad2D {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad2D {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (self.h + self.top + self.bottom, self.w + self.left + self.right)
    }
}

/// Per-sample, per-output-pixel taps (see `kernels::resample`): images
/// (H, W, C) -> (OH, OW, C).
#[derive(Clone, Copy, Debug)]
pub struct ResampleOp<'a> {
    pub input: (usize, usize, usize),
    pub output: (usize, usize),
    /// OH*OW taps per sample.
    pub taps: &'a [Tap],
}

/// How one input of an elementwise product covers the output, per sample:
/// all its values, or one value per channel (Keras' broadcasting of a
/// (1, 1, C) input against (H, W, C), as squeeze-and-excitation blocks use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Full,
    Channels,
}

/// An elementwise product of inputs over samples of `sample_len` values, `c` channels last.
#[derive(Clone, Copy, Debug)]
pub struct ProductOp<'a> {
    pub spans: &'a [Span],
    pub sample_len: usize,
    pub c: usize,
}

/// Per-channel sums over a batch that BatchNormalization needs, in f64.
#[derive(Clone, Copy, Debug)]
pub enum ChannelSums<'a> {
    /// `sums[ch] = sum x`, `sums[c + ch] = sum x^2`.
    Moments,
    /// `sums[ch] = sum dz`, `sums[c + ch] = sum dz * (x - mean) * inv_std`, with
    /// dz = dy through the fused activation's `gate` if any.
    Gradients { dy: &'a [f32], mean: &'a [f32], inv_std: &'a [f32], gate: Option<Gate<'a>> },
}

/// What the backward pass of an operation with weights reads and writes, for
/// a batch of `n` samples: the forward input and output, dL/dy (turned into
/// dL/dz in place), dL/dx when it is asked for (written, or with `accumulate`
/// added to what dx holds: convolutions only), and the kernel's and bias'
/// gradients (written).
pub struct WeightGrads<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub dy: &'a mut [f32],
    pub dx: Option<&'a mut [f32]>,
    pub accumulate: bool,
    pub kernel: &'a mut [f32],
    pub bias: Option<&'a mut [f32]>,
    pub n: usize,
}

/// What [`Device::stay_warm`] holds: dropping it lets the device rest.
pub struct Warm(Option<fn()>);

impl Warm {
    /// Nothing held.
    pub fn cold() -> Warm {
        Warm(None)
    }

    /// Held until dropped, which calls `release`.
    pub fn until(release: fn()) -> Warm {
        Warm(Some(release))
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// The operations. Shapes in each comment are per batch of `n` samples.
pub trait Device: Send + Sync {
    /// A name for messages ("cpu").
    fn name(&self) -> &'static str;

    /// Keeps the device ready for the next operation, with no wait to wake
    /// it, until the returned guard drops: held while a model runs a batch.
    /// By default nothing is held.
    fn stay_warm(&self) -> Warm {
        Warm::cold()
    }

    // ---- copies and elementwise -------------------------------------------------

    /// y = x over `len` values.
    fn copy(&self, x: &[f32], y: &mut [f32], len: usize);

    /// z: (rows, width) -> act(z), in place; width is the softmax axis.
    fn activation_forward(&self, act: Activation, z: &mut [f32], width: usize);

    /// dy -> dy * act'(z), in place, from y = act(z) (rows of `width`).
    fn activation_backward(&self, act: Activation, y: &[f32], dy: &mut [f32], width: usize);

    /// dy -> dy * act'(z), in place, from z: the activations that need their
    /// input (`Activation::needs_input`). Layers with weights and such an
    /// activation keep z themselves (in their workspace).
    fn activation_backward_from_input(&self, act: Activation, z: &[f32], dy: &mut [f32]);

    /// y = f(x) over `len` values.
    fn rectifier_forward(&self, f: Rectifier, x: &[f32], y: &mut [f32], len: usize);

    /// dx = dy * f'(x) over `len` values.
    fn rectifier_backward(&self, f: Rectifier, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize);

    /// `y = act(x * a[ch] + b[ch])` over `len` values, channels last (`a.len()` of them), in one pass;
    /// with a residual (shaped as x), `y = act((x * a[ch] + b[ch]) + residual)`.
    fn scale_shift(
        &self,
        x: &[f32],
        ab: (&[f32], &[f32]),
        residual: Option<&[f32]>,
        act: Activation,
        y: &mut [f32],
        len: usize,
    );

    /// y += x over `len` values (a second contribution to a gradient).
    fn add_to(&self, x: &[f32], y: &mut [f32], len: usize);

    /// `y = act(xs[0] + xs[1] + ...)`, added in input order, over `len` values;
    /// `act` is elementwise (no softmax).
    fn add(&self, xs: &[&[f32]], y: &mut [f32], len: usize, act: Activation);

    /// `y = xs[0] * xs[1] * ...`, each input broadcast by its span.
    fn multiply_forward(&self, op: &ProductOp, xs: &[&[f32]], y: &mut [f32], n: usize);

    /// dx = dy * (the product of the other inputs), summed over positions for a per-channel input.
    fn multiply_backward(&self, op: &ProductOp, k: usize, xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize);

    /// y = x where x > 0, `alpha[map[i]] * x` elsewhere (PReLU); `map` gives each
    /// of a sample's values its alpha.
    fn prelu_forward(&self, x: &[f32], alpha: &[f32], map: &[u32], y: &mut [f32], n: usize);

    /// dx = dy where x > 0, alpha * dy elsewhere; `dalpha[j]` = sum of dy * x over x <= 0 mapped to j.
    #[allow(clippy::too_many_arguments)]
    fn prelu_backward(
        &self,
        x: &[f32],
        alpha: &[f32],
        map: &[u32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dalpha: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    );

    /// `xs[k]`: (rows, `widths[k]`) -> y: (rows, sum widths), joined along the last axis.
    fn concat_forward(&self, xs: &[&[f32]], widths: &[usize], y: &mut [f32], rows: usize);

    /// dx = input `k`'s columns of dy (rows, sum widths).
    fn concat_backward(&self, k: usize, widths: &[usize], dy: &[f32], dx: &mut [f32], rows: usize);

    /// x: (N,H,W,C) -> y: (N,OH,OW,C), zeros around.
    fn pad2d_forward(&self, p: &Pad2D, x: &[f32], y: &mut [f32], n: usize);

    /// dx = the inner window of dy.
    fn pad2d_backward(&self, p: &Pad2D, dy: &[f32], dx: &mut [f32], n: usize);

    /// x: (N,H,W,C) -> y: (N,OH,OW,C) along each sample's taps.
    fn resample_forward(&self, op: &ResampleOp, x: &[f32], y: &mut [f32], n: usize);

    /// dx = taps^T dy.
    fn resample_backward(&self, op: &ResampleOp, dy: &[f32], dx: &mut [f32], n: usize);

    // ---- layers with weights ----------------------------------------------------

    /// x: (N*R, D) -> y: (N*R, U) = act(x . W + b).
    fn dense_forward(&self, op: &DenseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace);

    /// From dL/dy in `dy` (overwritten with dL/dz): dW = x^T . dz, db = sum dz, dx = dz . W^T.
    fn dense_backward(&self, op: &DenseOp, pass: WeightGrads, ws: &mut Workspace);

    /// x: (N,H,W,C) -> y: (N,OH,OW,F), or the pooled (N,PH,PW,F) with `op.pool`.
    fn conv2d_forward(&self, op: &ConvOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace);

    /// [`Device::conv2d_forward`], summing as it goes the output's per-channel
    /// moments into `sums` (2F values: sum y, then sum y^2) as
    /// [`ChannelSums::Moments`] would, bit for bit, for the
    /// BatchNormalization that reads y. False (sums untouched) where the
    /// pass does not gather them: the reader then sums them itself.
    fn conv2d_forward_moments(
        &self,
        op: &ConvOp,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        ws: &mut Workspace,
        sums: &mut [f64],
    ) -> bool;

    /// dW, db and (when asked) dx from dL/dy (overwritten). Runs after this
    /// layer's forward on the same batch (it reads what that saved in `ws`).
    fn conv2d_backward(&self, op: &ConvOp, pass: WeightGrads, ws: &mut Workspace);

    /// x: (N,H,W,C) -> y: (N,OH,OW,C*M).
    fn depthwise_forward(&self, op: &DepthwiseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace);

    /// dW, db and (when asked) dx from dL/dy (overwritten).
    fn depthwise_backward(&self, op: &DepthwiseOp, pass: WeightGrads, ws: &mut Workspace);

    // ---- pooling ----------------------------------------------------------------

    /// x: (N,H,W,C) -> y: (N,OH,OW,C), the maximum of each window; argmax saved in `ws`.
    fn max_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace);

    /// [`Device::max_pool_forward`] without recording the argmax (inference).
    fn max_pool_values(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize);

    /// `dx[argmax[i]] += dy[i]`, zero elsewhere.
    fn max_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize, ws: &mut Workspace);

    /// x: (N,H,W,C) -> y: (N,OH,OW,C), the mean of each window.
    fn avg_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize);

    /// `dx[i]` = sum over the windows w covering i of `dy[w] / |w|`.
    fn avg_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize);

    /// x: (N, P, C) -> y: (N, C), the mean (or, with `max`, the maximum; argmax saved in `ws`) over P positions.
    #[allow(clippy::too_many_arguments)]
    fn global_pool_forward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    );

    /// Mean: dx = dy / P everywhere; max: `dx[argmax] = dy`, zero elsewhere.
    #[allow(clippy::too_many_arguments)]
    fn global_pool_backward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    );

    // ---- normalisation ----------------------------------------------------------

    /// Per-channel sums over `len` values of x (channels last, `c` of them),
    /// written to `sums` (c, or 2c for gradients), in a fixed order whatever
    /// the number of threads. `sample_len`: values per sample.
    #[allow(clippy::too_many_arguments)]
    fn channel_sums(
        &self,
        what: ChannelSums,
        x: &[f32],
        c: usize,
        sample_len: usize,
        len: usize,
        sums: &mut [f64],
        ws: &mut Workspace,
    );

    /// dx = a * (dy - k1 - xhat * k2) over `len` values: BatchNormalization's input gradient.
    fn batch_norm_input_grad(&self, grad: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize);
}
