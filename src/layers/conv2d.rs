use super::LayerConfig;
use super::padding::{absorb_padding, dilated_window};
use super::{Backward, Layer, Mode, Padding, Weight};
use crate::activations::Activation;
use crate::device::{self, Affine, ConvOp, WeightGrads, Workspace};
use crate::initializers::Initializer;
use crate::kernels::Window;
use crate::regularizers::Regularizer;

/// 2-D convolution over channels-last images, as `keras.layers.Conv2D`.
///
/// Arguments: `filters`, `kernel_size`, and with builder methods `strides`
/// (default (1, 1)), `padding` (default valid), `dilation_rate` (default
/// (1, 1); not with strides above 1, as Keras), `groups` (default 1: with G,
/// output filter f sees only the input channels of group f / (filters / G)),
/// `activation` (default linear), `use_bias` (default true), `input_shape`
/// (first layer only). Kernel (KH, KW, C_in / groups, filters) is
/// glorot-uniform initialised, bias zero.
///
/// ```
/// use keel::prelude::*;
/// let conv = Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2D {
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    dilation_rate: (usize, usize),
    groups: usize,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    kernel_regularizer: Option<Regularizer>,
    input_shape: Option<Vec<usize>>,
    deferred: bool,
    g: Option<Window>,
    /// The window over the input of a ZeroPadding2D before it, its padding
    /// taken in, which this layer reads at inference (see [`Layer::absorb_padding`]).
    unpadded: Option<Window>,
    /// A following max-pooling layer (its window) this layer computes in the
    /// same pass, if any: the convolution's output then lives only in a
    /// per-thread scratch buffer (cache), never in memory, which is where most
    /// of the time of small CNNs goes otherwise.
    pool: Option<Window>,
    /// What the device keeps between forward and backward.
    ws: Workspace,
    /// The weights' version (see `Layer::set_weights_version`), kept only at
    /// inference (in training the prepared forms would be built every step
    /// and kept for none).
    version: Option<u64>,
    /// The per-channel sums of the output (sum y, then sum y^2) that
    /// training passes gather for the BatchNormalization after it (empty:
    /// not gathered; see [`Layer::gather_output_moments`]), and whether the
    /// last pass did.
    moments: Vec<f64>,
    moments_ready: bool,
}

impl Conv2D {
    /// `filters` output channels with a `kernel_size` (height, width) window.
    pub fn new(filters: usize, kernel_size: (usize, usize)) -> Self {
        Conv2D {
            filters,
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            dilation_rate: (1, 1),
            groups: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
            input_shape: None,
            deferred: false,
            g: None,
            unpadded: None,
            pool: None,
            ws: Workspace::default(),
            version: None,
            moments: Vec::new(),
            moments_ready: false,
        }
    }

    /// Step of the window (rows, columns).
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.strides = strides;
        self
    }

    /// Border handling.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Activation applied to the output.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias per filter.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// How the kernel starts (default glorot_uniform).
    pub fn kernel_initializer(mut self, initializer: Initializer) -> Self {
        self.kernel_initializer = initializer;
        self
    }

    /// A penalty on the kernel added to the loss (default none).
    pub fn kernel_regularizer(mut self, regularizer: Regularizer) -> Self {
        self.kernel_regularizer = Some(regularizer);
        self
    }

    /// Per-sample input shape (height, width, channels) when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    /// Spacing of the window's taps (rows, columns).
    pub fn dilation_rate(mut self, dilation_rate: (usize, usize)) -> Self {
        self.dilation_rate = dilation_rate;
        self
    }

    /// Channel groups convolved separately (default 1).
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    fn geometry(&self) -> Window {
        self.g.expect("Conv2D used before build")
    }

    fn kernel_len(&self) -> usize {
        self.geometry().patch_len() / self.groups * self.filters
    }
}

impl Layer for Conv2D {
    fn class_name(&self) -> &'static str {
        "Conv2D"
    }

    fn base_name(&self) -> &'static str {
        "conv2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Conv2D {
            filters: self.filters,
            kernel_size: self.kernel_size.into(),
            strides: self.strides.into(),
            padding: self.padding,
            dilation_rate: self.dilation_rate.into(),
            groups: self.groups,
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer,
            kernel_regularizer: self.kernel_regularizer,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let g = self.geometry();
        let l2 = self.kernel_regularizer.map_or(0.0, Regularizer::l2_factor);
        let mut weights = vec![Weight {
            l2,
            ..Weight::new("kernel", vec![g.kh, g.kw, g.c / self.groups, self.filters], self.kernel_initializer)
        }];
        if self.use_bias {
            weights.push(Weight::new("bias", vec![self.filters], Initializer::Zeros));
        }
        weights
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (H,W,C) -> (OH,OW,filters)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if self.filters == 0 || self.groups == 0 {
            return Err("filters and groups must be positive".into());
        }
        if self.strides != (1, 1) && self.dilation_rate != (1, 1) {
            return Err(format!(
                "strides {:?} and dilation_rate {:?} cannot both be above 1 (as in Keras)",
                self.strides, self.dilation_rate
            ));
        }
        let channels = input.last().copied().unwrap_or(0);
        if !channels.is_multiple_of(self.groups) || !self.filters.is_multiple_of(self.groups) {
            return Err(format!(
                "groups {} must divide the {channels} input channels and the {} filters",
                self.groups, self.filters
            ));
        }
        let g = dilated_window(input, self.kernel_size, self.strides, self.dilation_rate, self.padding)?;
        self.g = Some(g);
        Ok(vec![g.oh, g.ow, self.filters])
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    fn folds_affine(&self) -> bool {
        self.activation == Activation::Linear && self.pool.is_none() && !self.deferred
    }

    // y = act(conv(x, W) * scale + (b * scale + shift)): the BatchNormalization after it, at inference.
    fn forward_affine(
        &mut self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        n: usize,
        (scale, shift, residual): (&[f32], &mut [f32], Option<&[f32]>),
        act: Activation,
    ) {
        let op = self.op(params, Mode::Infer);
        super::fold_bias(op.bias, scale, shift);
        let op = ConvOp { act, affine: Some(Affine { scale, shift, residual }), ..op };
        device::current().conv2d_forward(&op, x, y, n, &mut self.ws);
    }

    fn fuse_max_pool(&mut self, pool: Option<Window>) -> bool {
        let g = self.geometry();
        let fits = |p: &Window| p.h == g.oh && p.w == g.ow && p.c == self.filters;
        // Pooled values are differentiated from the output: an activation that needs its input cannot fuse.
        let elementwise = self.activation != Activation::Softmax && !self.activation.needs_input();
        self.pool = match pool {
            Some(p) if elementwise && !self.deferred && self.groups == 1 && fits(&p) => Some(p),
            _ => None,
        };
        self.pool.is_some()
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,F);  y = act(conv(x, W) + b)
    // With a fused pool, y is the pooled output: y = maxpool(act(conv(x, W) + b)).
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let op = self.op(params, mode);
        let (device, ws) = (device::current(), &mut self.ws);
        self.moments_ready = if mode == Mode::Train && !self.moments.is_empty() {
            device.conv2d_forward_moments(&op, x, y, n, ws, &mut self.moments)
        } else {
            device.conv2d_forward(&op, x, y, n, ws);
            false
        };
    }

    fn gather_output_moments(&mut self, gather: bool) -> bool {
        let gather = gather && self.pool.is_none() && !self.deferred;
        self.moments = vec![0.0; if gather { 2 * self.filters } else { 0 }];
        gather
    }

    fn output_moments(&self) -> Option<&[f64]> {
        self.moments_ready.then_some(&self.moments[..])
    }

    fn set_weights_version(&mut self, version: Option<u64>) {
        self.version = version;
    }

    fn absorb_padding(&mut self, pad: Option<((usize, usize), (usize, usize))>) -> bool {
        let g = self.geometry();
        let axes = [(g.h, g.pt, g.oh, g.kh, g.sh, g.dh), (g.w, g.pl, g.ow, g.kw, g.sw, g.dw)];
        self.unpadded =
            pad.and_then(|pad| absorb_padding(axes, pad)).map(|[(h, pt), (w, pl)]| Window { h, w, pt, pl, ..g });
        self.unpadded.is_some()
    }

    // Differentiates y = act(z), z = conv(x, W) + b:
    //   dz = dy * act'(y);  dW = conv_weight_grad(x, dz);  db = sum(dz);  dx = conv_input_grad(dz, W)
    // With a fused pool, y = maxpool(act(z)) and dz is first scattered to the
    // argmax positions: dz[argmax[i]] += dy[i] * act'(y[i]).
    fn accumulates_input_gradient(&self) -> bool {
        true
    }

    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, accumulate, grads, n } = pass;
        let op = self.op(params, Mode::Train);
        let (gw, gb) = grads.split_at_mut(self.kernel_len());
        let gb = self.use_bias.then_some(gb);
        let pass = WeightGrads { x, y, dy, dx, accumulate, kernel: gw, bias: gb, n };
        device::current().conv2d_backward(&op, pass, &mut self.ws);
    }
}

impl Conv2D {
    /// The operation this layer runs, over its parameters: at inference over
    /// the unpadded input where it took in the padding before it.
    fn op<'a>(&self, params: &'a [f32], mode: Mode) -> ConvOp<'a> {
        let (kernel, bias) = params.split_at(self.kernel_len());
        ConvOp {
            g: self.unpadded.filter(|_| mode == Mode::Infer).unwrap_or(self.geometry()),
            filters: self.filters,
            groups: self.groups,
            kernel,
            bias: self.use_bias.then_some(bias),
            act: if self.deferred { Activation::Linear } else { self.activation },
            pool: self.pool,
            winners: mode == Mode::Train,
            affine: None,
            version: self.version.filter(|_| mode == Mode::Infer),
        }
    }
}
