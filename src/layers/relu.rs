//! Keras' rectifier layers with arguments: `ReLU(max_value, negative_slope,
//! threshold)`, `LeakyReLU(negative_slope)` and `ELU(alpha)`. They work from
//! the input x (which the model keeps), so any slope or threshold is exact.

use super::{Backward, Layer, LayerConfig, Mode};
use crate::activations::Activation;
use crate::device;
use crate::kernels::activation::Rectifier;

/// The shared body: the elementwise pass and its gradient.
#[derive(Clone, Debug)]
struct Elementwise {
    f: Rectifier,
    len: usize,
}

impl Elementwise {
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.len = input.iter().product();
        Ok(input.to_vec())
    }

    /// The same function as one of the activations, when it is one: max(x, 0) or relu6.
    fn as_activation(&self) -> Option<Activation> {
        match self.f {
            Rectifier::Relu { max_value: None, negative_slope: 0.0, threshold: 0.0 } => Some(Activation::Relu),
            Rectifier::Relu { max_value: Some(6.0), negative_slope: 0.0, threshold: 0.0 } => Some(Activation::Relu6),
            _ => None,
        }
    }

    // x: (N, ...) -> y: (N, ...);  y = f(x)
    fn forward(&self, x: &[f32], y: &mut [f32], n: usize) {
        device::current().rectifier_forward(self.f, x, y, n * self.len);
    }

    // dx = dy * f'(x)
    fn backward(&self, pass: Backward) {
        let Some(dx) = pass.dx else { return };
        device::current().rectifier_backward(self.f, pass.x, pass.dy, dx, pass.n * self.len);
    }
}

macro_rules! rectifier_layer {
    ($(#[$doc:meta])* $name:ident, $base:literal, |$s:ident| $config:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(Elementwise);

        impl Layer for $name {
            fn class_name(&self) -> &'static str {
                stringify!($name)
            }

            fn base_name(&self) -> &'static str {
                $base
            }

            fn config(&self) -> LayerConfig {
                let $s = self.0.f;
                $config
            }

            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                self.0.build(input)
            }

            fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], n: usize, _mode: Mode) {
                self.0.forward(x, y, n)
            }

            fn as_activation(&self) -> Option<crate::activations::Activation> {
                self.0.as_activation()
            }

            fn backward(&mut self, pass: Backward) {
                self.0.backward(pass)
            }
        }
    };
}

rectifier_layer!(
    /// `keras.layers.ReLU(max_value=None, negative_slope=0, threshold=0)`:
    /// max_value above it, x from the threshold up, negative_slope * (x - threshold) below.
    ///
    /// ```
    /// use keel::prelude::*;
    /// let relu6 = ReLU::new().max_value(6.0);
    /// ```
    ReLU,
    "re_lu",
    |f| match f {
        Rectifier::Relu { max_value, negative_slope, threshold } => LayerConfig::ReLU { max_value, negative_slope, threshold },
        Rectifier::Elu { .. } => unreachable!("a ReLU layer holds a ReLU"),
    }
);

rectifier_layer!(
    /// `keras.layers.LeakyReLU(negative_slope=0.3)`: x, or negative_slope * x below zero.
    LeakyReLU,
    "leaky_re_lu",
    |f| match f {
        Rectifier::Relu { negative_slope, .. } => LayerConfig::LeakyReLU { negative_slope },
        Rectifier::Elu { .. } => unreachable!("a LeakyReLU layer holds a ReLU"),
    }
);

rectifier_layer!(
    /// `keras.layers.ELU(alpha=1.0)`: x, or alpha * (e^x - 1) below zero.
    ELU,
    "elu",
    |f| match f {
        Rectifier::Elu { alpha } => LayerConfig::ELU { alpha },
        Rectifier::Relu { .. } => unreachable!("an ELU layer holds an ELU"),
    }
);

impl Default for ReLU {
    fn default() -> Self {
        Self::new()
    }
}

impl ReLU {
    /// max(x, 0), with Keras' defaults.
    pub fn new() -> Self {
        ReLU(Elementwise { f: Rectifier::Relu { max_value: None, negative_slope: 0.0, threshold: 0.0 }, len: 0 })
    }

    fn with(mut self, change: impl FnOnce(&mut Option<f32>, &mut f32, &mut f32)) -> Self {
        if let Rectifier::Relu { max_value, negative_slope, threshold } = &mut self.0.f {
            change(max_value, negative_slope, threshold);
        }
        self
    }

    /// The largest output (none by default).
    pub fn max_value(self, max_value: f32) -> Self {
        self.with(|m, _, _| *m = Some(max_value))
    }

    /// The slope below the threshold (default 0).
    pub fn negative_slope(self, slope: f32) -> Self {
        self.with(|_, s, _| *s = slope)
    }

    /// Where the identity starts (default 0).
    pub fn threshold(self, threshold: f32) -> Self {
        self.with(|_, _, t| *t = threshold)
    }
}

impl Default for LeakyReLU {
    fn default() -> Self {
        Self::new(0.3)
    }
}

impl LeakyReLU {
    /// A leaky rectifier (Keras' default slope: 0.3).
    pub fn new(negative_slope: f32) -> Self {
        LeakyReLU(Elementwise { f: Rectifier::Relu { max_value: None, negative_slope, threshold: 0.0 }, len: 0 })
    }
}

impl Default for ELU {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl ELU {
    /// An exponential linear unit (Keras' default alpha: 1.0).
    pub fn new(alpha: f32) -> Self {
        ELU(Elementwise { f: Rectifier::Elu { alpha }, len: 0 })
    }
}
