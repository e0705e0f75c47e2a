use super::padding::absorb_padding;
use super::{Backward, Layer, LayerConfig, Mode, Padding, Weight};
use crate::activations::Activation;
use crate::device::{self, Affine, DepthwiseOp, WeightGrads, Workspace};
use crate::initializers::Initializer;
use crate::kernels::depthwise::Depthwise;
use crate::regularizers::Regularizer;

/// Depthwise 2-D convolution, as `keras.layers.DepthwiseConv2D`: each input
/// channel is convolved with its own `depth_multiplier` filters (output
/// channel c * depth_multiplier + k), the building block of MobileNet.
///
/// Arguments: `kernel_size`; builder methods `strides` (default (1, 1)),
/// `padding` (default valid), `depth_multiplier` (default 1),
/// `dilation_rate` (default (1, 1)), `activation` (default linear),
/// `use_bias` (default true), `depthwise_initializer` (default
/// glorot_uniform), `depthwise_regularizer`. Kernel (KH, KW, C, depth_multiplier), bias zero.
///
/// ```
/// use keel::prelude::*;
/// let dw = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).use_bias(false);
/// ```
#[derive(Clone, Debug)]
pub struct DepthwiseConv2D {
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    depth_multiplier: usize,
    dilation_rate: (usize, usize),
    activation: Activation,
    use_bias: bool,
    initializer: Initializer,
    regularizer: Option<Regularizer>,
    deferred: bool,
    g: Option<Depthwise>,
    /// The geometry over the input of a ZeroPadding2D before it, its padding
    /// taken in, which this layer reads at inference (see [`Layer::absorb_padding`]).
    unpadded: Option<Depthwise>,
    /// What the device keeps between forward and backward.
    ws: Workspace,
}

impl DepthwiseConv2D {
    /// A depthwise convolution with a `kernel_size` (height, width) window.
    pub fn new(kernel_size: (usize, usize)) -> Self {
        DepthwiseConv2D {
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            depth_multiplier: 1,
            dilation_rate: (1, 1),
            activation: Activation::Linear,
            use_bias: true,
            initializer: Initializer::GlorotUniform,
            regularizer: None,
            deferred: false,
            g: None,
            unpadded: None,
            ws: Workspace::default(),
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

    /// Filters per input channel.
    pub fn depth_multiplier(mut self, depth_multiplier: usize) -> Self {
        self.depth_multiplier = depth_multiplier;
        self
    }

    /// Spacing of the window's taps (rows, columns).
    pub fn dilation_rate(mut self, dilation_rate: (usize, usize)) -> Self {
        self.dilation_rate = dilation_rate;
        self
    }

    /// Activation applied to the output.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias per output channel.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// How the kernel starts (default glorot_uniform).
    pub fn depthwise_initializer(mut self, initializer: Initializer) -> Self {
        self.initializer = initializer;
        self
    }

    /// A penalty on the kernel added to the loss (default none).
    pub fn depthwise_regularizer(mut self, regularizer: Regularizer) -> Self {
        self.regularizer = Some(regularizer);
        self
    }

    fn geometry(&self) -> Depthwise {
        self.g.expect("DepthwiseConv2D used before build")
    }

    fn kernel_len(&self) -> usize {
        let g = self.geometry();
        g.kh * g.kw * g.out_channels()
    }
}

impl Layer for DepthwiseConv2D {
    fn class_name(&self) -> &'static str {
        "DepthwiseConv2D"
    }

    fn base_name(&self) -> &'static str {
        "depthwise_conv2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::DepthwiseConv2D {
            kernel_size: self.kernel_size.into(),
            strides: self.strides.into(),
            padding: self.padding,
            depth_multiplier: self.depth_multiplier,
            dilation_rate: self.dilation_rate.into(),
            activation: self.activation,
            use_bias: self.use_bias,
            depthwise_initializer: self.initializer,
            depthwise_regularizer: self.regularizer,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let g = self.geometry();
        let l2 = self.regularizer.map_or(0.0, Regularizer::l2_factor);
        let shape = vec![g.kh, g.kw, g.c, g.m];
        let mut weights = vec![Weight { l2, ..Weight::new("depthwise_kernel", shape, self.initializer) }];
        if self.use_bias {
            weights.push(Weight::new("bias", vec![g.out_channels()], Initializer::Zeros));
        }
        weights
    }

    // (H,W,C) -> (OH,OW,C*depth_multiplier)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let g =
            geometry(input, self.kernel_size, self.strides, self.dilation_rate, self.depth_multiplier, self.padding)?;
        self.g = Some(g);
        Ok(vec![g.oh, g.ow, g.out_channels()])
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    fn folds_affine(&self) -> bool {
        self.activation == Activation::Linear && !self.deferred
    }

    // y = act(depthwise(x, W) * scale + (b * scale + shift)): the BatchNormalization after it, at inference.
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
        let op = DepthwiseOp { act, affine: Some(Affine { scale, shift, residual }), ..op };
        device::current().depthwise_forward(&op, x, y, n, &mut self.ws);
    }

    fn absorb_padding(&mut self, pad: Option<((usize, usize), (usize, usize))>) -> bool {
        let g = self.geometry();
        let axes = [(g.h, g.pt, g.oh, g.kh, g.sh, g.dh), (g.w, g.pl, g.ow, g.kw, g.sw, g.dw)];
        self.unpadded =
            pad.and_then(|pad| absorb_padding(axes, pad)).map(|[(h, pt), (w, pl)]| Depthwise { h, w, pt, pl, ..g });
        self.unpadded.is_some()
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,C*M);  y = act(depthwise(x, W) + b)
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let op = self.op(params, mode);
        device::current().depthwise_forward(&op, x, y, n, &mut self.ws);
    }

    // dz = dy * act'(y);  dW = sum over taps of x * dz;  db = sum dz;  dx = sum over taps of W * dz
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n, .. } = pass;
        let op = self.op(params, Mode::Train);
        let (gw, gb) = grads.split_at_mut(self.kernel_len());
        let gb = self.use_bias.then_some(gb);
        let pass = WeightGrads { x, y, dy, dx, accumulate: false, kernel: gw, bias: gb, n };
        device::current().depthwise_backward(&op, pass, &mut self.ws);
    }
}

impl DepthwiseConv2D {
    /// The operation this layer runs, over its parameters: at inference over
    /// the unpadded input where it took in the padding before it.
    fn op<'a>(&self, params: &'a [f32], mode: Mode) -> DepthwiseOp<'a> {
        let (kernel, bias) = params.split_at(self.kernel_len());
        DepthwiseOp {
            g: self.unpadded.filter(|_| mode == Mode::Infer).unwrap_or(self.geometry()),
            kernel,
            bias: self.use_bias.then_some(bias),
            act: if self.deferred { Activation::Linear } else { self.activation },
            affine: None,
        }
    }
}

/// The geometry of a depthwise convolution over an (H, W, C) input, or why it does not fit.
pub(super) fn geometry(
    input: &[usize],
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    m: usize,
    padding: Padding,
) -> Result<Depthwise, String> {
    let &[h, w, c] = input else {
        return Err(format!("expects input of shape (height, width, channels), got {input:?}"));
    };
    if [kh, kw, sh, sw, dh, dw, m].contains(&0) {
        return Err("kernel_size, strides, dilation_rate and depth_multiplier must be positive".into());
    }
    if (sh, sw) != (1, 1) && (dh, dw) != (1, 1) {
        return Err(format!(
            "strides {:?} and dilation_rate {:?} cannot both be above 1 (as in Keras)",
            (sh, sw),
            (dh, dw)
        ));
    }
    // The dilated window spans (k - 1) * d + 1 rows and columns.
    let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
    let too_large = || {
        format!(
            "the {kh}x{kw} kernel dilated by {:?} spans {eh}x{ew}, more than the {h}x{w} input with padding '{}'",
            (dh, dw),
            padding.name()
        )
    };
    let (oh, pt) = padding.resolve(h, eh, sh).ok_or_else(too_large)?;
    let (ow, pl) = padding.resolve(w, ew, sw).ok_or_else(too_large)?;
    Ok(Depthwise { h, w, c, kh, kw, m, sh, sw, dh, dw, pt, pl, oh, ow })
}
