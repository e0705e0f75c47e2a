//! Loss functions, as Keras' `loss=` argument. Each returns the summed
//! per-sample loss of a batch and writes d(mean loss)/d(output).
//!
//! Rows: the output is seen as (rows, width) with width its last axis; a
//! sample-level loss is the mean over its rows (one row for classifiers).

mod crossentropy;
mod mean_squared_error;

use crate::activations::Activation;
use crate::error::{Error, Result};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Keras' clipping constant for probabilities (`keras.backend.epsilon()`).
pub const EPSILON: f32 = 1e-7;

/// A training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Keras' class name: "CategoricalCrossentropy".
    pub fn class_name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy => "CategoricalCrossentropy",
            Loss::SparseCategoricalCrossentropy => "SparseCategoricalCrossentropy",
            Loss::BinaryCrossentropy => "BinaryCrossentropy",
            Loss::MeanSquaredError => "MeanSquaredError",
        }
    }

    /// The loss with `from_logits`: the model outputs logits (no softmax or
    /// sigmoid layer) and the loss applies the activation itself.
    pub fn from_logits(self, from_logits: bool) -> LossConfig {
        LossConfig::from(self).from_logits(from_logits)
    }

    /// The loss with `label_smoothing`: targets t become t * (1 - s) + s / classes
    /// (s / 2 for binary cross-entropy).
    pub fn label_smoothing(self, label_smoothing: f32) -> LossConfig {
        LossConfig::from(self).label_smoothing(label_smoothing)
    }

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
        LossConfig::from(self).compute(out, target, grad, width, from_logits)
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
            "categorical_crossentropy" | "CategoricalCrossentropy" => Loss::CategoricalCrossentropy,
            "sparse_categorical_crossentropy" | "SparseCategoricalCrossentropy" => Loss::SparseCategoricalCrossentropy,
            "binary_crossentropy" | "BinaryCrossentropy" => Loss::BinaryCrossentropy,
            "mean_squared_error" | "mse" | "MeanSquaredError" => Loss::MeanSquaredError,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown loss '{s}'; expected one of categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mean_squared_error"
                )));
            }
        })
    }
}

/// A loss with its arguments, as Keras' loss objects
/// (`CategoricalCrossentropy(from_logits=False, label_smoothing=0.0)`).
/// `model.compile` takes a [`Loss`] or this; in model files it is the loss's
/// name or a table: `loss = { class_name = "CategoricalCrossentropy", label_smoothing = 0.1 }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub loss: Loss,
    /// The model outputs logits; the loss applies softmax (sigmoid for binary) itself.
    pub from_logits: bool,
    /// Targets t become t * (1 - s) + s / classes (s / 2 for binary); 0 for none.
    pub label_smoothing: f32,
}

impl From<Loss> for LossConfig {
    fn from(loss: Loss) -> Self {
        LossConfig { loss, from_logits: false, label_smoothing: 0.0 }
    }
}

impl LossConfig {
    /// See [`Loss::from_logits`].
    pub fn from_logits(mut self, from_logits: bool) -> Self {
        self.from_logits = from_logits;
        self
    }

    /// See [`Loss::label_smoothing`].
    pub fn label_smoothing(mut self, label_smoothing: f32) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// Checks the arguments against the loss, as Keras' constructors do.
    pub fn check(&self) -> Result<()> {
        let class = self.loss.class_name();
        if self.from_logits && self.loss == Loss::MeanSquaredError {
            return Err(Error::InvalidArgument(format!("{class} has no from_logits argument")));
        }
        if self.label_smoothing != 0.0 {
            if !matches!(self.loss, Loss::CategoricalCrossentropy | Loss::BinaryCrossentropy) {
                return Err(Error::InvalidArgument(format!(
                    "{class} has no label_smoothing argument (CategoricalCrossentropy and BinaryCrossentropy have; \
                     one-hot encode the targets to smooth them)"
                )));
            }
            if !(0.0..=1.0).contains(&self.label_smoothing) {
                return Err(Error::InvalidArgument(format!(
                    "{class}: label_smoothing must be in [0, 1], got {}",
                    self.label_smoothing
                )));
            }
        }
        Ok(())
    }

    /// Keras' name for the loss.
    pub fn name(&self) -> &'static str {
        self.loss.name()
    }

    /// See [`Loss::fuses`]: never with `from_logits` (the model already outputs logits).
    pub fn fuses(&self, activation: Activation) -> bool {
        !self.from_logits && self.loss.fuses(activation)
    }

    /// With `from_logits`, the activation that turns the outputs into probabilities (for metrics).
    pub fn logits_activation(&self) -> Option<Activation> {
        match (self.from_logits, self.loss) {
            (true, Loss::BinaryCrossentropy) => Some(Activation::Sigmoid),
            (true, Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy) => Some(Activation::Softmax),
            _ => None,
        }
    }

    /// See [`Loss::target_width`].
    pub fn target_width(&self, width: usize) -> usize {
        self.loss.target_width(width)
    }

    /// Whether a batch's loss is, bit for bit, the sum in order (from zero)
    /// of [`LossConfig::compute_over`] over each row alone, each row's
    /// gradient its own: then rows may be computed apart, in parallel, and
    /// their losses added in order after. Mean squared error adds a batch's
    /// squares before dividing by the width, so it is not.
    pub fn sums_by_rows(&self) -> bool {
        !matches!(self.loss, Loss::MeanSquaredError)
    }

    /// See [`Loss::compute`]; `fused`: the outputs are logits of an activation the loss applies.
    pub fn compute(&self, out: &[f32], target: &[f32], grad: &mut [f32], width: usize, fused: bool) -> f64 {
        self.compute_over(out, target, grad, width, fused, out.len() / width)
    }

    /// [`LossConfig::compute`] for a part of a batch of `mean_rows` rows (a
    /// rank's shard): `grad` = d(sum / mean_rows)/d(out).
    pub fn compute_over(
        &self,
        out: &[f32],
        target: &[f32],
        grad: &mut [f32],
        width: usize,
        fused: bool,
        mean_rows: usize,
    ) -> f64 {
        let scale = 1.0 / mean_rows as f32;
        let (logits, smoothing) = (fused || self.from_logits, self.label_smoothing);
        match self.loss {
            Loss::CategoricalCrossentropy => {
                crossentropy::categorical(out, target, grad, width, scale, logits, smoothing)
            }
            Loss::SparseCategoricalCrossentropy => {
                crossentropy::sparse_categorical(out, target, grad, width, scale, logits)
            }
            Loss::BinaryCrossentropy => crossentropy::binary(out, target, grad, width, scale, logits, smoothing),
            Loss::MeanSquaredError => mean_squared_error::mean_squared_error(out, target, grad, width, scale),
        }
    }
}

impl fmt::Display for LossConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The table form in model files.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LossTable {
    class_name: String,
    #[serde(default)]
    from_logits: bool,
    #[serde(default)]
    label_smoothing: f32,
}

impl Serialize for LossConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if !self.from_logits && self.label_smoothing == 0.0 {
            return serializer.serialize_str(self.name());
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("class_name", self.loss.class_name())?;
        if self.from_logits {
            map.serialize_entry("from_logits", &true)?;
        }
        if self.label_smoothing != 0.0 {
            map.serialize_entry("label_smoothing", &self.label_smoothing)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LossConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct LossVisitor;
        impl<'de> Visitor<'de> for LossVisitor {
            type Value = LossConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a loss name or a table such as { class_name = \"CategoricalCrossentropy\", label_smoothing = 0.1 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<LossConfig, E> {
                v.parse::<Loss>().map(LossConfig::from).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<LossConfig, A::Error> {
                let table = LossTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let loss = table.class_name.parse::<Loss>().map_err(de::Error::custom)?;
                let config =
                    LossConfig { loss, from_logits: table.from_logits, label_smoothing: table.label_smoothing };
                config.check().map_err(de::Error::custom)?;
                Ok(config)
            }
        }
        deserializer.deserialize_any(LossVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::{Loss, LossConfig};

    #[test]
    fn the_losses_said_to_sum_by_rows_do_so_bit_for_bit() {
        let (rows, width) = (7, 5);
        let out: Vec<f32> = (0..rows * width).map(|i| ((i * 37 % 23) as f32 / 23.0) * 0.9 + 0.05).collect();
        let one_hot: Vec<f32> = (0..rows * width).map(|i| (i % width == (i / width) % width) as u8 as f32).collect();
        let classes: Vec<f32> = (0..rows).map(|r| (r % width) as f32).collect();
        for loss in [Loss::CategoricalCrossentropy, Loss::SparseCategoricalCrossentropy, Loss::BinaryCrossentropy] {
            for (from_logits, label_smoothing) in [(false, 0.0), (true, 0.0), (true, 0.1)] {
                let smoothing = if loss == Loss::SparseCategoricalCrossentropy { 0.0 } else { label_smoothing };
                let config = LossConfig { loss, from_logits, label_smoothing: smoothing };
                assert!(config.sums_by_rows());
                let targets = if loss == Loss::SparseCategoricalCrossentropy { &classes } else { &one_hot };
                let tw = targets.len() / rows;
                let mut whole_grad = vec![0.0; out.len()];
                let whole = config.compute_over(&out, targets, &mut whole_grad, width, false, 11);
                let mut row_grad = vec![0.0; out.len()];
                let by_rows = (0..rows).fold(0.0f64, |sum, r| {
                    let o = &out[r * width..][..width];
                    sum + config.compute_over(
                        o,
                        &targets[r * tw..][..tw],
                        &mut row_grad[r * width..][..width],
                        width,
                        false,
                        11,
                    )
                });
                assert_eq!(whole.to_bits(), by_rows.to_bits(), "{loss:?} from_logits={from_logits}");
                assert_eq!(whole_grad, row_grad);
            }
        }
        let mse = LossConfig { loss: Loss::MeanSquaredError, from_logits: false, label_smoothing: 0.0 };
        assert!(!mse.sums_by_rows());
    }
}
