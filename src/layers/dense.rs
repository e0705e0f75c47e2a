use super::LayerConfig;
use super::{Backward, Layer, Mode, Weight};
use crate::activations::Activation;
use crate::device::{self, DenseOp, WeightGrads, Workspace};
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;

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
    /// What the device keeps between forward and backward.
    ws: Workspace,
    /// The weights' version (see `Layer::set_weights_version`).
    version: Option<u64>,
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
            ws: Workspace::default(),
            version: None,
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
        let mut out = rest.to_vec();
        out.push(self.units);
        Ok(out)
    }

    fn output_activation(&self) -> Activation {
        self.activation
    }

    fn defer_output_activation(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    // x: (R, D) -> y: (R, U) with R = N * rows_per_sample;  y = act(x . W + b)
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
        let op = self.op(params);
        device::current().dense_forward(&op, x, y, n, &mut self.ws);
    }

    fn set_weights_version(&mut self, version: Option<u64>) {
        self.version = version;
    }

    // Differentiates y = act(x . W + b):
    //   dz = dy * act'(y);  dW = x^T . dz;  db = sum(dz);  dx = dz . W^T
    fn backward(&mut self, pass: Backward) {
        let Backward { params, x, y, dy, dx, grads, n, .. } = pass;
        let op = self.op(params);
        let (gw, gb) = grads.split_at_mut(self.features * self.units);
        let gb = self.use_bias.then_some(gb);
        let pass = WeightGrads { x, y, dy, dx, accumulate: false, kernel: gw, bias: gb, n };
        device::current().dense_backward(&op, pass, &mut self.ws);
    }
}

impl Dense {
    /// The operation this layer runs, over its parameters.
    fn op<'a>(&self, params: &'a [f32]) -> DenseOp<'a> {
        let (d, u) = (self.features, self.units);
        let (kernel, bias) = params.split_at(d * u);
        DenseOp {
            d,
            u,
            rows_per_sample: self.rows_per_sample,
            kernel,
            bias: self.use_bias.then_some(bias),
            act: if self.deferred { Activation::Linear } else { self.activation },
            version: self.version,
        }
    }
}
