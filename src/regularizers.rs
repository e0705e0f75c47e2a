//! Weight penalties added to the loss, as `keras.regularizers`.

use serde::{Deserialize, Serialize};

/// A penalty on a weight, written in model files with Keras' class name:
/// `kernel_regularizer = { class_name = "L2", l2 = 1e-4 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name", deny_unknown_fields)]
pub enum Regularizer {
    /// `l2 * sum(w^2)` added to the loss (Keras' default factor is 0.01).
    L2 {
        #[serde(default = "default_l2")]
        l2: f32,
    },
}

fn default_l2() -> f32 {
    0.01
}

impl Regularizer {
    /// `keras.regularizers.L2(l2)`.
    pub fn l2(factor: f32) -> Self {
        Regularizer::L2 { l2: factor }
    }

    /// The L2 factor.
    pub fn l2_factor(self) -> f32 {
        match self {
            Regularizer::L2 { l2 } => l2,
        }
    }

    /// Checks the factor (finite, non-negative).
    pub fn check(self) -> Result<Self, String> {
        let f = self.l2_factor();
        if f.is_finite() && f >= 0.0 { Ok(self) } else { Err(format!("L2 factor {f} must be finite and non-negative")) }
    }
}
