//! Metrics, as Keras' `metrics=` argument. Each gives a per-batch sum over
//! samples; the model divides by the number of samples seen.

use crate::error::Error;
use crate::losses::Loss;
use std::str::FromStr;

/// A quality measure reported during `fit` and by `evaluate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Keras' "accuracy": resolved from the shapes to one of the three below.
    Accuracy,
    /// argmax(prediction) == argmax(target).
    CategoricalAccuracy,
    /// argmax(prediction) == integer target.
    SparseCategoricalAccuracy,
    /// (prediction > 0.5) == target, averaged over the last axis.
    BinaryAccuracy,
}

impl Metric {
    /// The name shown in logs and history, as the user asked for it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
        }
    }

    /// What "accuracy" means for this output and target, as Keras decides it:
    /// binary for one output, sparse for integer targets, else categorical.
    pub fn resolve(self, loss: Loss, width: usize) -> Metric {
        if self != Metric::Accuracy {
            return self;
        }
        if width == 1 {
            Metric::BinaryAccuracy
        } else if loss.target_width(width) == 1 {
            Metric::SparseCategoricalAccuracy
        } else {
            Metric::CategoricalAccuracy
        }
    }

    /// Sum over rows of the (resolved) metric for probabilities `out`
    /// (rows, width) against `target` (rows, target width).
    pub fn sum(self, out: &[f32], target: &[f32], width: usize) -> f64 {
        let rows = out.chunks_exact(width);
        match self {
            Metric::Accuracy | Metric::CategoricalAccuracy => rows
                .zip(target.chunks_exact(width))
                .filter(|(o, t)| crate::utils::argmax_row(o) == crate::utils::argmax_row(t))
                .count() as f64,
            Metric::SparseCategoricalAccuracy => {
                rows.zip(target).filter(|(o, t)| crate::utils::argmax_row(o) == **t as usize).count() as f64
            }
            Metric::BinaryAccuracy => rows
                .zip(target.chunks_exact(width))
                .map(|(o, t)| o.iter().zip(t).filter(|(p, t)| (**p > 0.5) == (**t > 0.5)).count() as f64 / width as f64)
                .sum(),
        }
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "accuracy" | "acc" => Metric::Accuracy,
            "categorical_accuracy" => Metric::CategoricalAccuracy,
            "sparse_categorical_accuracy" => Metric::SparseCategoricalAccuracy,
            "binary_accuracy" => Metric::BinaryAccuracy,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown metric '{s}'; expected one of accuracy, categorical_accuracy, sparse_categorical_accuracy, binary_accuracy"
                )));
            }
        })
    }
}
