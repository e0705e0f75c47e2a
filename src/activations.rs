//! Activation functions by name, as Keras' `activation=` argument.

use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// An elementwise (or, for softmax, row-wise over the last axis) activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "linear" | "none" => Activation::Linear,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown activation '{s}'; expected one of linear, relu, sigmoid, tanh, softmax"
                )));
            }
        })
    }
}
