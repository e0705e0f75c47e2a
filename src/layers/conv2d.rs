use super::padding::window;
use super::{Backward, Layer, Mode, Padding};
use crate::activations::Activation;
use crate::initializers::glorot_uniform;
use crate::kernels::conv_direct;
use crate::kernels::im2col::{col2im_add, im2col};
use crate::kernels::matmul::{MatRef, matmul};
use crate::kernels::{SAMPLES_PER_TASK, Window, activation, add_assign, sum_rows, task_count, with_scratch};
use crate::random::Rng;
use rayon::prelude::*;

/// Up to this many input channels the direct kernels are used (measured faster
/// for 1 and 3 channels; im2col + gemm wins from about 8 on).
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
    input_shape: Option<Vec<usize>>,
    deferred: bool,
    g: Option<Window>,
    /// Per-task partial weight and bias gradients, summed in task order.
    dw_parts: Vec<f32>,
    /// The kernel with filters padded to whole register blocks (direct path).
    padded_kernel: Vec<f32>,
    db_parts: Vec<f32>,
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
            input_shape: None,
            deferred: false,
            g: None,
            dw_parts: Vec::new(),
            db_parts: Vec::new(),
            padded_kernel: Vec::new(),
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

    fn param_count(&self) -> usize {
        self.kernel_len() + if self.use_bias { self.filters } else { 0 }
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng) {
        let (kernel, bias) = params.split_at_mut(self.kernel_len());
        let g = self.geometry();
        let receptive = g.kh * g.kw;
        glorot_uniform(kernel, receptive * g.c, receptive * self.filters, rng);
        bias.fill(0.0);
    }

    fn allocate(&mut self, batch: usize) {
        let tasks = task_count(batch);
        self.dw_parts.resize(tasks * self.kernel_len(), 0.0);
        self.db_parts.resize(tasks * self.filters, 0.0);
        if self.direct() {
            self.padded_kernel.resize(self.geometry().patch_len() * conv_direct::padded_filters(self.filters), 0.0);
        }
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    // x: (N,H,W,C) -> y: (N,OH,OW,F);  y = act(im2col(x) . W + b)
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let g = self.geometry();
        let (p, k, f) = (g.positions(), g.patch_len(), self.filters);
        let (w, b) = params.split_at(k * f);
        let (in_len, out_len) = (g.h * g.w * g.c, p * f);
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let (use_bias, direct) = (self.use_bias, self.direct());
        if direct {
            conv_direct::pad_filters(w, f, &mut self.padded_kernel);
        }
        let wp = &self.padded_kernel;
        y[..n * out_len]
            .par_chunks_mut(SAMPLES_PER_TASK * out_len)
            .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
            .for_each(|(yt, xt)| {
                if direct {
                    for (xs, ys) in xt.chunks_exact(in_len).zip(yt.chunks_exact_mut(out_len)) {
                        conv_direct::conv_forward(&g, xs, wp, f, ys);
                    }
                } else {
                    let s = xt.len() / in_len;
                    with_scratch(s * p * k, |cols| {
                        for (xs, cs) in xt.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
                            im2col(&g, xs, cs);
                        }
                        matmul(MatRef::new(cols, s * p, k), MatRef::new(w, k, f), yt, false);
                    });
                }
                activation::forward(act, yt, use_bias.then_some(b), f);
            });
    }

    // Differentiates y = act(cols . W + b) with cols = im2col(x):
    //   dz = dy * act'(y);  dW = cols^T . dz;  db = sum(dz);  dx = col2im(dz . W^T)
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n } = pass;
        let g = self.geometry();
        let (p, k, f) = (g.positions(), g.patch_len(), self.filters);
        let (in_len, out_len) = (g.h * g.w * g.c, p * f);
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let direct = self.direct();
        let tasks = task_count(n);
        let (dw_parts, db_parts) = (&mut self.dw_parts[..tasks * k * f], &mut self.db_parts[..tasks * f]);
        dy[..n * out_len]
            .par_chunks_mut(SAMPLES_PER_TASK * out_len)
            .zip(y[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
            .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
            .zip(dw_parts.par_chunks_mut(k * f).zip(db_parts.par_chunks_mut(f)))
            .for_each(|(((dz, yt), xt), (dw, db))| {
                activation::backward(act, yt, dz, f);
                if direct {
                    dw.fill(0.0);
                    for (xs, dzs) in xt.chunks_exact(in_len).zip(dz.chunks_exact(out_len)) {
                        conv_direct::conv_weight_grad(&g, xs, dzs, f, dw);
                    }
                } else {
                    let s = xt.len() / in_len;
                    with_scratch(s * p * k, |cols| {
                        for (xs, cs) in xt.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
                            im2col(&g, xs, cs);
                        }
                        matmul(MatRef::new(cols, s * p, k).t(), MatRef::new(dz, s * p, f), dw, false);
                    });
                }
                sum_rows(dz, f, db);
            });
        let (gw, gb) = grads.split_at_mut(k * f);
        gw.copy_from_slice(&dw_parts[..k * f]);
        dw_parts.chunks_exact(k * f).skip(1).for_each(|part| add_assign(gw, part));
        if self.use_bias {
            gb.copy_from_slice(&db_parts[..f]);
            db_parts.chunks_exact(f).skip(1).for_each(|part| add_assign(gb, part));
        }
        let Some(dx) = dx else { return };
        let w = &params[..k * f];
        dx[..n * in_len]
            .par_chunks_mut(SAMPLES_PER_TASK * in_len)
            .zip(dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
            .for_each(|(dxt, dz)| {
                let s = dxt.len() / in_len;
                dxt.fill(0.0);
                with_scratch(s * p * k, |dcols| {
                    matmul(MatRef::new(dz, s * p, f), MatRef::new(w, k, f).t(), dcols, false);
                    for (dxs, dc) in dxt.chunks_exact_mut(in_len).zip(dcols.chunks_exact(p * k)) {
                        col2im_add(&g, dc, dxs);
                    }
                });
            });
    }
}
