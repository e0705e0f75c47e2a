use super::depthwise_conv2d::geometry;
use super::{Backward, Layer, LayerConfig, Mode, Padding, Weight};
use crate::activations::Activation;
use crate::device::{self, DenseOp, DepthwiseOp, WeightGrads, Workspace};
use crate::initializers::Initializer;
use crate::kernels::depthwise::Depthwise;
use crate::regularizers::Regularizer;

/// A depthwise convolution followed by a 1x1 convolution mixing the channels,
/// as `keras.layers.SeparableConv2D` (Xception's building block): each input
/// channel is convolved with `depth_multiplier` filters of `kernel_size`, then
/// `filters` pointwise filters combine the C * depth_multiplier results.
///
/// Arguments: `filters`, `kernel_size`; builder methods `strides`, `padding`,
/// `depth_multiplier`, `dilation_rate`, `activation`, `use_bias` (default
/// true), `depthwise_initializer` and `pointwise_initializer` (glorot_uniform),
/// `depthwise_regularizer`, `pointwise_regularizer`. Weights: depthwise_kernel
/// (KH, KW, C, M), pointwise_kernel (1, 1, C*M, F), bias (F).
///
/// ```
/// use keel::prelude::*;
/// let sep = SeparableConv2D::new(128, (3, 3)).padding(Padding::Same).use_bias(false);
/// ```
#[derive(Clone, Debug)]
pub struct SeparableConv2D {
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    depth_multiplier: usize,
    dilation_rate: (usize, usize),
    activation: Activation,
    use_bias: bool,
    initializers: (Initializer, Initializer),
    regularizers: (Option<Regularizer>, Option<Regularizer>),
    deferred: bool,
    g: Option<Depthwise>,
    /// The depthwise output (N, OH, OW, C*M) and its gradient, and what the
    /// device keeps for each of the two operations.
    mid: Vec<f32>,
    dmid: Vec<f32>,
    ws: (Workspace, Workspace),
    /// At inference with the BatchNormalization after it folded in: the
    /// pointwise kernel times the map's scale, column by column.
    folded: Vec<f32>,
}

impl SeparableConv2D {
    /// `filters` outputs from a `kernel_size` (height, width) depthwise window.
    pub fn new(filters: usize, kernel_size: (usize, usize)) -> Self {
        SeparableConv2D {
            filters,
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            depth_multiplier: 1,
            dilation_rate: (1, 1),
            activation: Activation::Linear,
            use_bias: true,
            initializers: (Initializer::GlorotUniform, Initializer::GlorotUniform),
            regularizers: (None, None),
            deferred: false,
            g: None,
            mid: Vec::new(),
            dmid: Vec::new(),
            ws: (Workspace::default(), Workspace::default()),
            folded: Vec::new(),
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

    /// Depthwise filters per input channel.
    pub fn depth_multiplier(mut self, depth_multiplier: usize) -> Self {
        self.depth_multiplier = depth_multiplier;
        self
    }

    /// Spacing of the depthwise window's taps (rows, columns).
    pub fn dilation_rate(mut self, dilation_rate: (usize, usize)) -> Self {
        self.dilation_rate = dilation_rate;
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

    /// How the depthwise kernel starts (default glorot_uniform).
    pub fn depthwise_initializer(mut self, initializer: Initializer) -> Self {
        self.initializers.0 = initializer;
        self
    }

    /// How the pointwise kernel starts (default glorot_uniform).
    pub fn pointwise_initializer(mut self, initializer: Initializer) -> Self {
        self.initializers.1 = initializer;
        self
    }

    /// A penalty on the depthwise kernel added to the loss (default none).
    pub fn depthwise_regularizer(mut self, regularizer: Regularizer) -> Self {
        self.regularizers.0 = Some(regularizer);
        self
    }

    /// A penalty on the pointwise kernel added to the loss (default none).
    pub fn pointwise_regularizer(mut self, regularizer: Regularizer) -> Self {
        self.regularizers.1 = Some(regularizer);
        self
    }

    fn geometry(&self) -> Depthwise {
        self.g.expect("SeparableConv2D used before build")
    }

    /// Values of the depthwise kernel, and of the pointwise one.
    fn kernel_lens(&self) -> (usize, usize) {
        let g = self.geometry();
        (g.kh * g.kw * g.out_channels(), g.out_channels() * self.filters)
    }

    /// The two operations this layer runs, over its parameters.
    fn ops<'a>(&self, params: &'a [f32]) -> (DepthwiseOp<'a>, DenseOp<'a>) {
        let g = self.geometry();
        let (kd, kp) = self.kernel_lens();
        let (depthwise, rest) = params.split_at(kd);
        let (pointwise, bias) = rest.split_at(kp);
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let dw = DepthwiseOp { g, kernel: depthwise, bias: None, act: Activation::Linear, affine: None };
        let pw = DenseOp {
            d: g.out_channels(),
            u: self.filters,
            rows_per_sample: g.oh * g.ow,
            kernel: pointwise,
            bias: self.use_bias.then_some(bias),
            act,
            version: None,
        };
        (dw, pw)
    }
}

impl Layer for SeparableConv2D {
    fn class_name(&self) -> &'static str {
        "SeparableConv2D"
    }

    fn base_name(&self) -> &'static str {
        "separable_conv2d"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::SeparableConv2D {
            filters: self.filters,
            kernel_size: self.kernel_size.into(),
            strides: self.strides.into(),
            padding: self.padding,
            depth_multiplier: self.depth_multiplier,
            dilation_rate: self.dilation_rate.into(),
            activation: self.activation,
            use_bias: self.use_bias,
            depthwise_initializer: self.initializers.0,
            pointwise_initializer: self.initializers.1,
            depthwise_regularizer: self.regularizers.0,
            pointwise_regularizer: self.regularizers.1,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let g = self.geometry();
        let l2 = |r: Option<Regularizer>| r.map_or(0.0, Regularizer::l2_factor);
        let mut weights = vec![
            Weight {
                l2: l2(self.regularizers.0),
                ..Weight::new("depthwise_kernel", vec![g.kh, g.kw, g.c, g.m], self.initializers.0)
            },
            Weight {
                l2: l2(self.regularizers.1),
                ..Weight::new("pointwise_kernel", vec![1, 1, g.out_channels(), self.filters], self.initializers.1)
            },
        ];
        if self.use_bias {
            weights.push(Weight::new("bias", vec![self.filters], Initializer::Zeros));
        }
        weights
    }

    // (H,W,C) -> (OH,OW,filters)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if self.filters == 0 {
            return Err("filters must be positive".into());
        }
        let g =
            geometry(input, self.kernel_size, self.strides, self.dilation_rate, self.depth_multiplier, self.padding)?;
        self.g = Some(g);
        Ok(vec![g.oh, g.ow, self.filters])
    }

    fn allocate(&mut self, batch: usize) {
        let g = self.geometry();
        let len = batch * g.oh * g.ow * g.out_channels();
        self.mid.resize(len, 0.0);
        self.dmid.resize(len, 0.0);
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

    // y = act(depthwise(x) . (P * scale) + (b * scale + shift)): the
    // BatchNormalization after it, at inference, folded into the pointwise
    // kernel (rewritten per call: C*M x F values against the product's
    // N*OH*OW times as many multiply-adds).
    fn forward_affine(
        &mut self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        n: usize,
        (scale, shift, residual): (&[f32], &mut [f32], Option<&[f32]>),
        act: Activation,
    ) {
        let (dw, pw) = self.ops(params);
        super::fold_bias(pw.bias, scale, shift);
        self.folded.resize(pw.d * pw.u, 0.0);
        for (folded, row) in self.folded.chunks_exact_mut(pw.u).zip(pw.kernel.chunks_exact(pw.u)) {
            folded.iter_mut().zip(row.iter().zip(scale)).for_each(|(f, (w, s))| *f = w * s);
        }
        let device = device::current();
        device.depthwise_forward(&dw, x, &mut self.mid, n, &mut self.ws.0);
        let applied = if residual.is_some() { Activation::Linear } else { act };
        let pw = DenseOp { kernel: &self.folded, bias: Some(shift), act: applied, ..pw };
        device.dense_forward(&pw, &self.mid, y, n, &mut self.ws.1);
        if let Some(residual) = residual {
            let len = n * pw.rows_per_sample * pw.u;
            crate::kernels::add_assign(&mut y[..len], &residual[..len]);
            device.activation_forward(act, &mut y[..len], pw.u);
        }
    }

    // x: (N,H,W,C) -> mid: (N,OH,OW,C*M) = depthwise(x) -> y: (N,OH,OW,F) = act(mid . P + b)
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let (dw, pw) = self.ops(params);
        let device = device::current();
        device.depthwise_forward(&dw, x, &mut self.mid, n, &mut self.ws.0);
        device.dense_forward(&pw, &self.mid, y, n, &mut self.ws.1);
    }

    // The pointwise step's backward gives dP, db and dmid; the depthwise one dD and dx from dmid.
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n, .. } = pass;
        let (dw, pw) = self.ops(params);
        let (kd, kp) = self.kernel_lens();
        let (g_depthwise, rest) = grads.split_at_mut(kd);
        let (g_pointwise, g_bias) = rest.split_at_mut(kp);
        let g_bias = self.use_bias.then_some(g_bias);
        let device = device::current();
        let pointwise = WeightGrads {
            x: &self.mid,
            y,
            dy,
            dx: Some(&mut self.dmid),
            accumulate: false,
            kernel: g_pointwise,
            bias: g_bias,
            n,
        };
        device.dense_backward(&pw, pointwise, &mut self.ws.1);
        let depthwise = WeightGrads {
            x,
            y: &self.mid,
            dy: &mut self.dmid,
            dx,
            accumulate: false,
            kernel: g_depthwise,
            bias: None,
            n,
        };
        device.depthwise_backward(&dw, depthwise, &mut self.ws.0);
    }
}
