//! Activation functions by name, as Keras' `activation=` argument.

use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// An elementwise (or, for softmax, row-wise over the last axis) activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// f(x) = x
    #[default]
    Linear,
    /// f(x) = max(x, 0)
    Relu,
    /// f(x) = 1 / (1 + e^-x)
    Sigmoid,
    /// f(x) = tanh(x)
    Tanh,
    /// f(x)_i = e^x_i / sum_j e^x_j over the last axis
    Softmax,
    /// f(x) = min(max(x, 0), 6), MobileNet's
    Relu6,
    /// f(x) = x for x > 0, else 0.2 x (Keras 3's default negative slope)
    LeakyRelu,
    /// f(x) = x for x > 0, else e^x - 1
    Elu,
    /// f(x) = ln(1 + e^x)
    Softplus,
    /// f(x) = relu6(x + 3) / 6 (Keras 3's definition)
    HardSigmoid,
    /// f(x) = x * sigmoid(x) (also "swish")
    Silu,
    /// f(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form (Keras' default)
    Gelu,
    /// f(x) = x * relu6(x + 3) / 6 (also "hard_swish"), MobileNetV3's
    HardSilu,
}

impl Activation {
    /// Keras' name for it.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Elu => "elu",
            Activation::Softplus => "softplus",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::HardSilu => "hard_silu",
        }
    }

    /// Whether the derivative needs the input (it cannot be had from the
    /// output): layers then keep the pre-activation for their backward pass.
    pub fn needs_input(self) -> bool {
        matches!(self, Activation::Silu | Activation::Gelu | Activation::HardSilu)
    }

    /// Every activation, in declaration order.
    pub const ALL: [Activation; 13] = [
        Activation::Linear,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax,
        Activation::Relu6,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Softplus,
        Activation::HardSigmoid,
        Activation::Silu,
        Activation::Gelu,
        Activation::HardSilu,
    ];
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" => return Ok(Activation::Linear),
            "swish" => return Ok(Activation::Silu),
            "hard_swish" => return Ok(Activation::HardSilu),
            _ => {}
        }
        Activation::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Activation::ALL.iter().map(|a| a.name()).collect();
            Error::InvalidArgument(format!("unknown activation '{s}'; expected one of {}", names.join(", ")))
        })
    }
}
