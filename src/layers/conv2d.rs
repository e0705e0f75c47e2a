use super::LayerConfig;
use super::padding::window;
use super::{Backward, Layer, Mode, Padding, Weight};
use crate::activations::Activation;
use crate::initializers::Initializer;
use crate::kernels::conv_direct;
use crate::kernels::conv_pool_grad::conv_pool_weight_grad;
use crate::kernels::im2col::{col2im_add, im2col};
use crate::kernels::matmul::{MatRef, matmul};
use crate::kernels::pool::{max_pool_backward_through, max_pool_forward};
use crate::kernels::{SAMPLES_PER_TASK, Window, activation, add_rows, sum_rows, task_count, with_scratch};
use crate::regularizers::Regularizer;
use rayon::iter::Either;
use rayon::prelude::*;

/// Up to this many input channels the direct kernels are used: with K = KH*KW*C
/// this small (grey or colour images) a matrix product spends its time packing.
/// Measured for 1 channel (3-5x faster); the bound itself is not tuned.
const DIRECT_MAX_CHANNELS: usize = 4;

/// 2-D convolution over channels-last images, as `keras.layers.Conv2D`.
///
/// Arguments: `filters`, `kernel_size`, and with builder methods `strides`
/// (default (1, 1)), `padding` (default valid), `activation` (default linear),
/// `use_bias` (default true), `input_shape` (first layer only).
/// Kernel (KH, KW, C_in, filters) is glorot-uniform initialised, bias zero.
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
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    kernel_regularizer: Option<Regularizer>,
    input_shape: Option<Vec<usize>>,
    deferred: bool,
    g: Option<Window>,
    /// Per-task partial weight and bias gradients, summed in task order.
    dw_parts: Vec<f32>,
    db_parts: Vec<f32>,
    /// Kernel and bias with filters padded to whole register blocks (direct path).
    padded_kernel: Vec<f32>,
    /// A following max-pooling layer this layer computes itself, if any.
    pool: Option<FusedPool>,
}

/// Max-pooling computed inside the convolution, one sample at a time: the
/// convolution's output lives only in a per-thread scratch buffer (cache), never
/// in memory, which is where most of the time of small CNNs goes otherwise.
#[derive(Clone, Debug)]
struct FusedPool {
    g: Window,
    /// Flat index (within a sample's convolution output) of each pooled value.
    argmax: Vec<u32>,
}

impl Conv2D {
    /// `filters` output channels with a `kernel_size` (height, width) window.
    pub fn new(filters: usize, kernel_size: (usize, usize)) -> Self {
        Conv2D {
            filters,
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
            input_shape: None,
            deferred: false,
            g: None,
            dw_parts: Vec::new(),
            db_parts: Vec::new(),
            padded_kernel: Vec::new(),
            pool: None,
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

    fn geometry(&self) -> Window {
        self.g.expect("Conv2D used before build")
    }

    /// Few input channels: direct loops beat unfolding + matrix product.
    fn direct(&self) -> bool {
        self.geometry().c <= DIRECT_MAX_CHANNELS
    }

    fn kernel_len(&self) -> usize {
        self.geometry().patch_len() * self.filters
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
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer,
            kernel_regularizer: self.kernel_regularizer,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let g = self.geometry();
        let l2 = self.kernel_regularizer.map_or(0.0, Regularizer::l2_factor);
        let mut weights =
            vec![Weight { l2, ..Weight::new("kernel", vec![g.kh, g.kw, g.c, self.filters], self.kernel_initializer) }];
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
        if self.filters == 0 {
            return Err("filters must be positive".into());
        }
        let g = window(input, self.kernel_size, self.strides, self.padding)?;
        self.g = Some(g);
        Ok(vec![g.oh, g.ow, self.filters])
    }

    fn allocate(&mut self, batch: usize) {
        let tasks = task_count(batch);
        self.dw_parts.resize(tasks * self.kernel_len(), 0.0);
        self.db_parts.resize(tasks * self.filters, 0.0);
        if let Some(pool) = &mut self.pool {
            pool.argmax.resize(batch * pool.g.positions() * pool.g.c, 0);
        }
        if self.direct() {
            self.padded_kernel.resize(conv_direct::padded_len(self.geometry().patch_len(), self.filters), 0.0);
        }
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    fn fuse_max_pool(&mut self, pool: Option<Window>) -> bool {
        let g = self.geometry();
        let fits = |p: &Window| p.h == g.oh && p.w == g.ow && p.c == self.filters;
        let elementwise = self.activation != Activation::Softmax;
        self.pool = match pool {
            Some(p) if elementwise && !self.deferred && fits(&p) => Some(FusedPool { g: p, argmax: Vec::new() }),
            _ => None,
        };
        self.pool.is_some()
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,F);  y = act(conv(x, W) + b)
    // With a fused pool, y is the pooled output: y = maxpool(act(conv(x, W) + b)).
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let g = self.geometry();
        let f = self.filters;
        let (w, b) = params.split_at(g.patch_len() * f);
        let bias = self.use_bias.then_some(b);
        if self.direct() {
            conv_direct::pad_filters(w, bias, f, &mut self.padded_kernel);
        }
        let conv = ConvKernel { g, f, direct: self.direct(), w, wp: &self.padded_kernel };
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let (in_len, conv_len) = (g.h * g.w * g.c, g.positions() * f);
        let xs = x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len);
        match &mut self.pool {
            None => y[..n * conv_len].par_chunks_mut(SAMPLES_PER_TASK * conv_len).zip(xs).for_each(|(yt, xt)| {
                with_scratch(conv.cols_len(xt.len() / in_len, false), |cols| conv.forward(xt, yt, cols, bias, act));
            }),
            Some(pool) => {
                let pg = pool.g;
                let pooled_len = pg.positions() * pg.c;
                y[..n * pooled_len]
                    .par_chunks_mut(SAMPLES_PER_TASK * pooled_len)
                    .zip(pool.argmax[..n * pooled_len].par_chunks_mut(SAMPLES_PER_TASK * pooled_len))
                    .zip(xs)
                    .for_each(|((yt, at), xt)| {
                        with_scratch(conv_len + conv.cols_len(1, false), |buf| {
                            let (z, cols) = buf.split_at_mut(conv_len);
                            let samples = xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(pooled_len));
                            for ((xs, ys), a) in samples.zip(at.chunks_exact_mut(pooled_len)) {
                                if !conv.forward_relu_pool2x2(&pg, xs, ys, a, act) {
                                    conv.forward(xs, z, cols, bias, act);
                                    max_pool_forward(&pg, z, ys, a);
                                }
                            }
                        });
                    });
            }
        }
    }

    // Differentiates y = act(z), z = conv(x, W) + b:
    //   dz = dy * act'(y);  dW = conv_weight_grad(x, dz);  db = sum(dz);  dx = conv_input_grad(dz, W)
    // With a fused pool, y = maxpool(act(z)) and dz is first scattered to the
    // argmax positions: dz[argmax[i]] += dy[i] * act'(y[i]).
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n } = pass;
        let g = self.geometry();
        let (k, f) = (g.patch_len(), self.filters);
        let conv = ConvKernel { g, f, direct: self.direct(), w: &params[..k * f], wp: &self.padded_kernel };
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let (in_len, conv_len) = (g.h * g.w * g.c, g.positions() * f);
        let tasks = task_count(n);
        let (dw_parts, db_parts) = (&mut self.dw_parts[..tasks * k * f], &mut self.db_parts[..tasks * f]);
        let parts = dw_parts.par_chunks_mut(k * f).zip(db_parts.par_chunks_mut(f));
        let xs = x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len);
        let dx = dx.map(|dx| &mut dx[..n * in_len]);
        match &self.pool {
            None => {
                dy[..n * conv_len]
                    .par_chunks_mut(SAMPLES_PER_TASK * conv_len)
                    .zip(y[..n * conv_len].par_chunks(SAMPLES_PER_TASK * conv_len))
                    .zip(xs)
                    .zip(parts)
                    .for_each(|(((dz, yt), xt), (dw, db))| {
                        activation::backward(act, yt, dz, f);
                        dw.fill(0.0);
                        with_scratch(conv.cols_len(xt.len() / in_len, false), |cols| {
                            conv.weight_grad(xt, dz, dw, cols)
                        });
                        sum_rows(dz, f, db);
                    });
                if let Some(dx) = dx {
                    dx.par_chunks_mut(SAMPLES_PER_TASK * in_len)
                        .zip(dy[..n * conv_len].par_chunks(SAMPLES_PER_TASK * conv_len))
                        .for_each(|(dxt, dz)| {
                            with_scratch(conv.cols_len(dxt.len() / in_len, true), |dcols| {
                                conv.input_grad(dz, dxt, dcols)
                            });
                        });
                }
            }
            Some(pool) => {
                let pooled_len = pool.g.positions() * pool.g.c;
                let chunk = SAMPLES_PER_TASK * pooled_len;
                let dx_tasks = match dx {
                    Some(dx) => Either::Left(dx.par_chunks_mut(SAMPLES_PER_TASK * in_len).map(Some)),
                    None => Either::Right((0..tasks).into_par_iter().map(|_| None)),
                };
                dy[..n * pooled_len]
                    .par_chunks(chunk)
                    .zip(y[..n * pooled_len].par_chunks(chunk))
                    .zip(pool.argmax[..n * pooled_len].par_chunks(chunk))
                    .zip(xs)
                    .zip(parts)
                    .zip(dx_tasks)
                    .for_each(|(((((dyt, yt), at), xt), (dw, db)), mut dxt)| {
                        dw.fill(0.0);
                        db.fill(0.0);
                        if dxt.is_none() && conv.direct {
                            // First layer: no input gradient, so no need for dz at all.
                            let samples = xt.chunks_exact(in_len).zip(dyt.chunks_exact(pooled_len));
                            let pooled = yt.chunks_exact(pooled_len).zip(at.chunks_exact(pooled_len));
                            for ((xs, dys), (ys, argmax)) in samples.zip(pooled) {
                                conv_pool_weight_grad(&g, &pool.g, act, xs, dys, ys, argmax, f, dw, db);
                            }
                            return;
                        }
                        with_scratch(conv_len + conv.cols_len(1, dxt.is_some()), |buf| {
                            let (dz, cols) = buf.split_at_mut(conv_len);
                            for (s, xs) in xt.chunks_exact(in_len).enumerate() {
                                let sample = s * pooled_len..(s + 1) * pooled_len;
                                max_pool_backward_through(
                                    act,
                                    &dyt[sample.clone()],
                                    &yt[sample.clone()],
                                    &at[sample],
                                    dz,
                                );
                                add_rows(dz, f, db);
                                conv.weight_grad(xs, dz, dw, cols);
                                if let Some(dxt) = dxt.as_deref_mut() {
                                    conv.input_grad(dz, &mut dxt[s * in_len..][..in_len], cols);
                                }
                            }
                        });
                    });
            }
        }
        let (gw, gb) = grads.split_at_mut(k * f);
        // The tasks' partial sums, added in task order.
        sum_rows(dw_parts, k * f, gw);
        if self.use_bias {
            sum_rows(db_parts, f, gb);
        }
    }
}

/// The convolution of one layer over whole samples, by the direct kernels
/// (few input channels) or by unfolding patches and a matrix product.
struct ConvKernel<'a> {
    g: Window,
    f: usize,
    direct: bool,
    /// Kernel (K, F) and, for the direct path, the same padded to register blocks.
    w: &'a [f32],
    wp: &'a [f32],
}

impl ConvKernel<'_> {
    /// Scratch values needed for `s` samples: unfolded patches, which the
    /// direct path only needs for the input gradient.
    fn cols_len(&self, s: usize, input_grad: bool) -> usize {
        if self.direct && !input_grad { 0 } else { s * self.g.positions() * self.g.patch_len() }
    }

    // x: (s,H,W,C) -> y: (s,OH,OW,F) = act(conv(x, W) + b)
    // (the direct path takes the bias from `wp` and applies a ReLU in registers)
    fn forward(&self, x: &[f32], y: &mut [f32], cols: &mut [f32], bias: Option<&[f32]>, act: Activation) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        if self.direct {
            let relu = act == Activation::Relu;
            for (xs, ys) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(p * f)) {
                conv_direct::conv_forward(g, xs, self.wp, f, relu, ys);
            }
            if !matches!(act, Activation::Relu | Activation::Linear) {
                activation::forward(act, y, None, f);
            }
            return;
        }
        let s = x.len() / in_len;
        for (xs, cs) in x.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
            im2col(g, xs, cs);
        }
        matmul(MatRef::new(&cols[..s * p * k], s * p, k), MatRef::new(self.w, k, f), y, false);
        activation::forward(act, y, bias, f);
    }

    /// The whole of conv, bias, ReLU (or no activation) and 2x2 pooling of one
    /// sample in registers, where the direct kernels cover the shapes; false otherwise.
    fn forward_relu_pool2x2(
        &self,
        pool: &Window,
        x: &[f32],
        y: &mut [f32],
        argmax: &mut [u32],
        act: Activation,
    ) -> bool {
        let relu = match act {
            Activation::Relu => true,
            Activation::Linear => false,
            _ => return false,
        };
        self.direct && conv_direct::conv_relu_pool2x2(&self.g, pool, x, self.wp, self.f, relu, y, argmax)
    }

    // dw (K,F) += conv_weight_grad(x (s,H,W,C), dz (s,OH,OW,F)) = im2col(x)^T . dz
    fn weight_grad(&self, x: &[f32], dz: &[f32], dw: &mut [f32], cols: &mut [f32]) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        if self.direct {
            for (xs, dzs) in x.chunks_exact(in_len).zip(dz.chunks_exact(p * f)) {
                conv_direct::conv_weight_grad(g, xs, dzs, f, dw);
            }
            return;
        }
        let s = x.len() / in_len;
        for (xs, cs) in x.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
            im2col(g, xs, cs);
        }
        matmul(MatRef::new(&cols[..s * p * k], s * p, k).t(), MatRef::new(dz, s * p, f), dw, true);
    }

    // dx (s,H,W,C) = col2im(dz (s,OH,OW,F) . W^T)
    fn input_grad(&self, dz: &[f32], dx: &mut [f32], dcols: &mut [f32]) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        let s = dx.len() / in_len;
        dx.fill(0.0);
        let dcols = &mut dcols[..s * p * k];
        matmul(MatRef::new(dz, s * p, f), MatRef::new(self.w, k, f).t(), dcols, false);
        for (dxs, dc) in dx.chunks_exact_mut(in_len).zip(dcols.chunks_exact(p * k)) {
            col2im_add(g, dc, dxs);
        }
    }
}
