//! Loss functions, as Keras' `loss=` argument. Each returns the summed
//! per-sample loss of a batch and writes d(mean loss)/d(output).
//!
//! Rows: the output is seen as (rows, width) with width its last axis; a
//! sample-level loss is the mean over its rows (one row for classifiers).

mod crossentropy;
mod mean_squared_error;

use crate::activations::Activation;
use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// Keras' clipping constant for probabilities (`keras.backend.epsilon()`).
pub const EPSILON: f32 = 1e-7;

/// A training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// -sum(t * log p) with one-hot (or soft) targets.
    CategoricalCrossentropy,
    /// Categorical cross-entropy with integer class targets, shape (N,) or (N, 1).
    SparseCategoricalCrossentropy,
    /// -(t log p + (1 - t) log(1 - p)), averaged over the last axis.
    BinaryCrossentropy,
    /// mean((y - t)^2) over the last axis.
    MeanSquaredError,
}

impl Loss {
    /// Keras' name for it.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Whether this loss computes `activation` itself from logits (stably):
    /// softmax with the categorical cross-entropies, sigmoid with binary.
    pub fn fuses(self, activation: Activation) -> bool {
        matches!(
            (self, activation),
            (Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy, Activation::Softmax)
                | (Loss::BinaryCrossentropy, Activation::Sigmoid)
        )
    }

    /// Target values per output row: 1 (a class index) for the sparse loss, else `width`.
    pub fn target_width(self, width: usize) -> usize {
        if self == Loss::SparseCategoricalCrossentropy { 1 } else { width }
    }

    /// Sum over the `rows` of the loss of `out` (rows, width) against `target`
    /// (rows, target_width); writes `grad` = d(sum / rows)/d(out).
    /// With `from_logits`, `out` holds logits of the fused activation.
    pub fn compute(self, out: &[f32], target: &[f32], grad: &mut [f32], width: usize, from_logits: bool) -> f64 {
        self.compute_over(out, target, grad, width, from_logits, out.len() / width)
    }

    /// [`Loss::compute`] for a part of a batch of `mean_rows` rows (a rank's
    /// shard): `grad` = d(sum / mean_rows)/d(out).
    pub fn compute_over(
        self,
        out: &[f32],
        target: &[f32],
        grad: &mut [f32],
        width: usize,
        from_logits: bool,
        mean_rows: usize,
    ) -> f64 {
        let scale = 1.0 / mean_rows as f32;
        match self {
            Loss::CategoricalCrossentropy => crossentropy::categorical(out, target, grad, width, scale, from_logits),
            Loss::SparseCategoricalCrossentropy => {
                crossentropy::sparse_categorical(out, target, grad, width, scale, from_logits)
            }
            Loss::BinaryCrossentropy => crossentropy::binary(out, target, grad, width, scale, from_logits),
            Loss::MeanSquaredError => mean_squared_error::mean_squared_error(out, target, grad, width, scale),
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "categorical_crossentropy" => Loss::CategoricalCrossentropy,
            "sparse_categorical_crossentropy" => Loss::SparseCategoricalCrossentropy,
            "binary_crossentropy" => Loss::BinaryCrossentropy,
            "mean_squared_error" | "mse" => Loss::MeanSquaredError,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown loss '{s}'; expected one of categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mean_squared_error"
                )));
            }
        })
    }
}
