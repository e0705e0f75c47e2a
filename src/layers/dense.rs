use super::LayerConfig;
use super::{Backward, Layer, Mode, Weight};
use crate::activations::Activation;
use crate::initializers::Initializer;
use crate::kernels::matmul::{MatRef, matmul};
use crate::kernels::{SAMPLES_PER_TASK, activation, narrow, sum_rows};
use crate::regularizers::Regularizer;
use rayon::prelude::*;

/// Input features per task of the weight gradient (a fixed split keeps it deterministic).
const FEATURES_PER_TASK: usize = 256;

/// A fully connected layer on the last axis, as `keras.layers.Dense`.
///
/// Arguments: `units`; builder methods `activation` (default linear),
/// `use_bias` (default true), `input_shape` (first layer only). Kernel
/// (in, units) is glorot-uniform initialised, bias zero.
///
/// ```
/// use keel::prelude::*;
/// let dense = Dense::new(10).activation(Activation::Softmax);
/// ```
#[derive(Clone, Debug)]
pub struct Dense {
    units: usize,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Initializer,
    kernel_regularizer: Option<Regularizer>,
    input_shape: Option<Vec<usize>>,
    deferred: bool,
    /// Input features (last axis) and rows per sample (product of the other axes).
    features: usize,
    rows_per_sample: usize,
    /// For few units (the `narrow` kernels): W padded to WIDTH columns, W^T,
    /// and dz padded to WIDTH columns.
    narrow: Option<NarrowBuffers>,
}

#[derive(Clone, Debug, Default)]
struct NarrowBuffers {
    kernel: Vec<f32>,
    kernel_t: Vec<f32>,
    dz: Vec<f32>,
}

impl Dense {
    /// A layer with `units` outputs.
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
            input_shape: None,
            deferred: false,
            features: 0,
            rows_per_sample: 0,
            narrow: None,
        }
    }

    /// Activation applied to the output.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias per unit.
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

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }

    fn base_name(&self) -> &'static str {
        "dense"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Dense {
            units: self.units,
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer,
            kernel_regularizer: self.kernel_regularizer,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let l2 = self.kernel_regularizer.map_or(0.0, Regularizer::l2_factor);
        let kernel = vec![self.features, self.units];
        let mut weights = vec![Weight { l2, ..Weight::new("kernel", kernel, self.kernel_initializer) }];
        if self.use_bias {
            weights.push(Weight::new("bias", vec![self.units], Initializer::Zeros));
        }
        weights
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (..., D) -> (..., units)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let Some((&d, rest)) = input.split_last() else {
            return Err("needs an input with at least one axis".into());
        };
        if self.units == 0 || d == 0 {
            return Err(format!("units ({}) and input features ({d}) must be positive", self.units));
        }
        self.features = d;
        self.rows_per_sample = rest.iter().product();
        self.narrow = (self.units <= narrow::WIDTH).then(NarrowBuffers::default);
        let mut out = rest.to_vec();
        out.push(self.units);
        Ok(out)
    }

    fn allocate(&mut self, batch: usize) {
        let (d, u, rows) = (self.features, self.units, batch * self.rows_per_sample);
        if let Some(nb) = &mut self.narrow {
            nb.kernel.resize(d * narrow::WIDTH, 0.0);
            nb.kernel_t.resize(u * d, 0.0);
            nb.dz.resize(rows * narrow::WIDTH, 0.0);
        }
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    // x: (R, D) -> y: (R, U) with R = N * rows_per_sample;  y = act(x . W + b)
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let (d, u) = (self.features, self.units);
        let (w, b) = params.split_at(d * u);
        let rows = n * self.rows_per_sample;
        let task_rows = SAMPLES_PER_TASK * self.rows_per_sample;
        let act = if self.deferred { Activation::Linear } else { self.activation };
        let bias = self.use_bias.then_some(b);
        let wp = self.narrow.as_mut().map(|nb| {
            narrow::pad_columns(w, u, &mut nb.kernel);
            &nb.kernel[..]
        });
        y[..rows * u].par_chunks_mut(task_rows * u).zip(x[..rows * d].par_chunks(task_rows * d)).for_each(
            |(yt, xt)| {
                match wp {
                    Some(wp) => narrow::x_times_w(xt, wp, d, u, yt),
                    None => matmul(MatRef::new(xt, xt.len() / d, d), MatRef::new(w, d, u), yt, false),
                }
                activation::forward(act, yt, bias, u);
            },
        );
    }

    // Differentiates y = act(x . W + b):
    //   dz = dy * act'(y);  dW = x^T . dz;  db = sum(dz);  dx = dz . W^T
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n } = pass;
        let (d, u) = (self.features, self.units);
        let rows = n * self.rows_per_sample;
        let task_rows = SAMPLES_PER_TASK * self.rows_per_sample;
        let (x, dz) = (&x[..rows * d], &mut dy[..rows * u]);
        if !self.deferred {
            let act = self.activation;
            dz.par_chunks_mut(task_rows * u)
                .zip(y[..rows * u].par_chunks(task_rows * u))
                .for_each(|(dzt, yt)| activation::backward(act, yt, dzt, u));
        }
        let dz = &*dz;
        let w = &params[..d * u];
        let (gw, gb) = grads.split_at_mut(d * u);
        if self.use_bias {
            sum_rows(dz, u, gb);
        }
        let Some(nb) = &mut self.narrow else {
            gw.par_chunks_mut(FEATURES_PER_TASK * u).enumerate().for_each(|(t, gwt)| {
                let first = t * FEATURES_PER_TASK;
                let xt = MatRef::with_ld(&x[first..], rows, gwt.len() / u, d);
                matmul(xt.t(), MatRef::new(dz, rows, u), gwt, false);
            });
            if let Some(dx) = dx {
                dx[..rows * d].par_chunks_mut(task_rows * d).zip(dz.par_chunks(task_rows * u)).for_each(
                    |(dxt, dzt)| matmul(MatRef::new(dzt, dzt.len() / u, u), MatRef::new(w, d, u).t(), dxt, false),
                );
            }
            return;
        };
        let dzp = &mut nb.dz[..rows * narrow::WIDTH];
        narrow::pad_columns(dz, u, dzp);
        let dzp = &*dzp;
        gw.par_chunks_mut(FEATURES_PER_TASK * u)
            .enumerate()
            .for_each(|(t, gwt)| narrow::xt_times_dz(x, d, t * FEATURES_PER_TASK, dzp, u, gwt));
        if let Some(dx) = dx {
            narrow::transpose(w, d, u, &mut nb.kernel_t);
            let wt = &nb.kernel_t;
            dx[..rows * d]
                .par_chunks_mut(task_rows * d)
                .zip(dz.par_chunks(task_rows * u))
                .for_each(|(dxt, dzt)| narrow::dz_times_wt(dzt, wt, u, d, dxt));
        }
    }
}
