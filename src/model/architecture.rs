//! A model's architecture as data (layers, input shape, compile settings, the
//! classes it predicts): what model files store as JSON, and what
//! `Sequential::from_architecture` rebuilds a model from.

use super::sequential::Sequential;
use crate::error::{Error, Result};
use crate::layers::LayerConfig;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::OptimizerConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest per-sample activation (elements) a described model may have. A
/// bound, so that an untrusted file cannot make keel allocate absurd buffers;
/// 2^26 floats is a 1024x1024x64 feature map, beyond any model keel trains.
pub const MAX_SAMPLE_ELEMENTS: usize = 1 << 26;

/// Everything about a model except its weights and training state.
///
/// ```
/// use keel::prelude::*;
/// let text = r#"{"input_shape": [28, 28, 1], "layers": [
///     {"class_name": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
///     {"class_name": "MaxPooling2D", "pool_size": 2},
///     {"class_name": "Flatten"},
///     {"class_name": "Dense", "units": 10, "activation": "softmax"}]}"#;
/// let architecture: keel::model::Architecture = serde_json::from_str(text).unwrap();
/// let model = Sequential::from_architecture(&architecture)?;
/// assert_eq!(model.count_params()?, 54_410);
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// The model's name (default "sequential").
    #[serde(default = "default_name")]
    pub name: String,
    /// Per-sample input shape, e.g. `[28, 28, 1]`.
    pub input_shape: Vec<usize>,
    /// Seed of the initial weights, shuffling and dropout.
    #[serde(default)]
    pub seed: u64,
    pub layers: Vec<LayerConfig>,
    /// Optimizer, loss and metrics, when the model is compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileConfig>,
    /// What the inputs and outputs mean, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
    /// Training defaults for `keel train --model` (its flags override them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitDefaults>,
}

/// `fit` arguments a model file may set; unset ones take the CLI's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_split: Option<f64>,
}

impl Architecture {
    /// Reads a model description: TOML when the file name ends in `.toml`,
    /// else JSON. Errors name the file, the line and column, and for an
    /// unknown layer or argument list the valid ones.
    ///
    /// ```no_run
    /// let architecture = keel::model::Architecture::read("examples/models/reference.toml")?;
    /// # Ok::<(), keel::Error>(())
    /// ```
    pub fn read(path: impl AsRef<Path>) -> Result<Architecture> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")) {
            toml::from_str(&text).map_err(|e| corrupt(format!("not a valid model description: {e}")))
        } else {
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not a valid model description: {e}")))
        }
    }
}

fn default_name() -> String {
    "sequential".into()
}

/// What `compile` was given.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileConfig {
    pub optimizer: OptimizerConfig,
    pub loss: Loss,
    #[serde(default)]
    pub metrics: Vec<Metric>,
}

/// What a model's inputs and outputs mean: the dataset it was trained on,
/// its class names (by output index), and the factor its input pixels were
/// scaled by (1/255 for bytes scaled to [0, 1]), so that `keel predict` can
/// prepare new images the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Input = pixel byte * scale.
    #[serde(default = "unit_scale")]
    pub scale: f32,
}

fn unit_scale() -> f32 {
    1.0
}

impl Sequential {
    /// The architecture of this (built) model.
    pub fn architecture(&self) -> Result<Architecture> {
        let net = self.network()?;
        let compile = self.compiled.as_ref().map(|c| CompileConfig {
            optimizer: c.optimizer.config(),
            loss: c.loss,
            metrics: c.metrics.clone(),
        });
        Ok(Architecture {
            name: self.name.clone(),
            input_shape: net.shapes[0].clone(),
            seed: self.seed,
            layers: self.layers.iter().map(|l| l.config()).collect(),
            compile,
            data: self.data_info.clone(),
            fit: self.fit_defaults.clone(),
        })
    }

    /// A new model from an architecture: built (fresh initial weights from its
    /// seed) and, when the architecture says how, compiled. Every argument is
    /// checked first, so untrusted descriptions give errors, not huge allocations.
    pub fn from_architecture(architecture: &Architecture) -> Result<Sequential> {
        Self::from_architecture_within(architecture, None)
    }

    /// As [`Sequential::from_architecture`], refusing to allocate more than
    /// `param_limit` parameters (a loaded file's architecture must fit its weights).
    pub(crate) fn from_architecture_within(
        architecture: &Architecture,
        param_limit: Option<usize>,
    ) -> Result<Sequential> {
        let mut model = Sequential::new().seed(architecture.seed).input_shape(architecture.input_shape.clone());
        model.name = architecture.name.clone();
        for (i, config) in architecture.layers.iter().enumerate() {
            let layer =
                config.to_layer().map_err(|why| Error::Build(format!("layer {i} ({}): {why}", class_of(config))))?;
            model.push(layer);
        }
        model.data_info = architecture.data.clone();
        model.fit_defaults = architecture.fit.clone();
        model.param_limit = param_limit;
        model.build()?;
        model.param_limit = None;
        if let Some(c) = &architecture.compile {
            model.compile(c.optimizer.to_optimizer()?, c.loss, &c.metrics)?;
        }
        Ok(model)
    }
}

fn class_of(config: &LayerConfig) -> String {
    serde_json::to_value(config).ok().and_then(|v| Some(v.get("class_name")?.as_str()?.to_string())).unwrap_or_default()
}
