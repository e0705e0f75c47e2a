//! A model's architecture as data (layers, input shape, compile settings, the
//! classes it predicts): what model files store as JSON, and what
//! `Model::from_architecture` rebuilds a model from.

use super::functional::{Model, free_name};
use super::network::Inputs;
use crate::error::{Error, Result};
use crate::layers::LayerConfig;
use crate::losses::LossConfig;
use crate::metrics::Metric;
use crate::optimizers::OptimizerConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
/// let model = Model::from_architecture(&architecture)?;
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
    /// The input's name, which `inputs` lists refer to (default "input_layer").
    #[serde(default = "default_input_name", skip_serializing_if = "is_default_input_name")]
    pub input_name: String,
    #[serde(default)]
    pub seed: u64,
    /// The layers in order; the last one is the output. A layer without
    /// `inputs` reads the one before it (or the input), as in Sequential.
    pub layers: Vec<LayerEntry>,
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
        Self::parse(&text, path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")), path)
    }

    /// A model description from its text, TOML or JSON; `origin` names it in errors.
    pub fn parse(text: &str, is_toml: bool, origin: &Path) -> Result<Architecture> {
        let corrupt = |message: String| Error::CorruptFile { path: origin.into(), message };
        if is_toml {
            toml::from_str(text).map_err(|e| corrupt(format!("not a valid model description: {e}")))
        } else {
            serde_json::from_str(text).map_err(|e| corrupt(format!("not a valid model description: {e}")))
        }
    }
}

fn default_name() -> String {
    "sequential".into()
}

fn default_input_name() -> String {
    "input_layer".into()
}

fn is_default_input_name(name: &String) -> bool {
    *name == default_input_name()
}

/// One layer of a model file: its class and arguments, and optionally its
/// `name`, the `inputs` it reads (names of earlier layers or of the input),
/// and `trainable = false` to freeze it. In TOML:
///
/// ```toml
/// [[layers]]
/// class_name = "Add"
/// name = "block1_add"
/// inputs = ["block1_bn2", "stem_relu"]
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerEntry {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub trainable: bool,
    pub config: LayerConfig,
}

impl From<LayerConfig> for LayerEntry {
    fn from(config: LayerConfig) -> Self {
        LayerEntry { name: None, inputs: None, trainable: true, config }
    }
}

impl Serialize for LayerEntry {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut value = serde_json::to_value(&self.config).map_err(S::Error::custom)?;
        let map = value.as_object_mut().ok_or_else(|| S::Error::custom("a layer's config is a map"))?;
        if let Some(name) = &self.name {
            map.insert("name".into(), name.clone().into());
        }
        if let Some(inputs) = &self.inputs {
            map.insert("inputs".into(), inputs.clone().into());
        }
        if !self.trainable {
            map.insert("trainable".into(), false.into());
        }
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LayerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut value = serde_json::Value::deserialize(d)?;
        let map = value.as_object_mut().ok_or_else(|| D::Error::custom("a layer must be a table of arguments"))?;
        let name = match map.remove("name") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => return Err(D::Error::custom(format!("a layer's name must be a string, got {other}"))),
        };
        let inputs = match map.remove("inputs") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(vec![s]),
            Some(other) => Some(serde_json::from_value::<Vec<String>>(other).map_err(|_| {
                D::Error::custom("a layer's inputs must be a list of layer names, e.g. inputs = [\"conv2d\", \"add\"]")
            })?),
        };
        let trainable = match map.remove("trainable") {
            None => true,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => return Err(D::Error::custom(format!("trainable must be true or false, got {other}"))),
        };
        let config = LayerConfig::deserialize(value).map_err(|e| {
            D::Error::custom(match &name {
                Some(n) => format!("layer '{n}': {e}"),
                None => e.to_string(),
            })
        })?;
        Ok(LayerEntry { name, inputs, trainable, config })
    }
}

/// What `compile` was given.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileConfig {
    pub optimizer: OptimizerConfig,
    pub loss: LossConfig,
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

impl Model {
    /// The architecture of this (built) model.
    pub fn architecture(&self) -> Result<Architecture> {
        let net = self.network()?;
        let compile = self.compiled.as_ref().map(|c| CompileConfig {
            optimizer: c.optimizer.config(),
            loss: c.loss,
            metrics: c.metrics.clone(),
        });
        let value_name = |v: usize| if v == 0 { self.input_name.clone() } else { self.nodes[v - 1].name.clone() };
        // Sequential models leave out names that loading would give anyway.
        let mut names: Vec<Option<String>> = Vec::new();
        for (k, node) in self.nodes.iter().enumerate() {
            let auto = free_name(node.layer.base_name(), |n| self.nodes[..k].iter().any(|m| m.name == n));
            names.push((self.functional || auto != node.name).then(|| node.name.clone()));
        }
        let layers = self
            .nodes
            .iter()
            .zip(names)
            .map(|(node, name)| LayerEntry {
                name,
                inputs: self.functional.then(|| node.inputs.iter().map(|&v| value_name(v)).collect()),
                trainable: node.trainable,
                config: node.layer.config(),
            })
            .collect();
        Ok(Architecture {
            name: self.name.clone(),
            input_name: self.input_name.clone(),
            input_shape: net.shapes[0].clone(),
            seed: self.seed,
            layers,
            compile,
            data: self.data_info.clone(),
            fit: self.fit_defaults.clone(),
        })
    }

    /// A new model from an architecture: built (fresh initial weights from its
    /// seed) and, when the architecture says how, compiled. Every argument is
    /// checked first, so untrusted descriptions give errors, not huge allocations.
    pub fn from_architecture(architecture: &Architecture) -> Result<Model> {
        Self::from_architecture_within(architecture, None)
    }

    /// As [`Model::from_architecture`], refusing to allocate more than
    /// `param_limit` parameters (a loaded file's architecture must fit its weights).
    pub(crate) fn from_architecture_within(architecture: &Architecture, param_limit: Option<usize>) -> Result<Model> {
        if let Some(scale) = architecture.data.as_ref().map(|d| d.scale).filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Build(format!(
                "data.scale is {scale}; it is the factor pixel bytes are multiplied by (1/255 for [0, 1]) and must be positive"
            )));
        }
        let functional = architecture.layers.iter().any(|l| l.inputs.is_some());
        let mut model = Model::empty(&architecture.name, functional)
            .seed(architecture.seed)
            .input_shape(architecture.input_shape.clone());
        model.input_name = architecture.input_name.clone();
        let all_names: Vec<&str> = architecture.layers.iter().filter_map(|l| l.name.as_deref()).collect();
        for (i, entry) in architecture.layers.iter().enumerate() {
            let class = class_of(&entry.config);
            let layer = entry.config.to_layer().map_err(|why| Error::Build(format!("layer {i} ({class}): {why}")))?;
            let name = entry.name.clone().unwrap_or_else(|| {
                let taken = |n: &str| {
                    all_names.contains(&n) || model.nodes.iter().any(|m| m.name == n) || n == model.input_name
                };
                free_name(layer.base_name(), taken)
            });
            if name == model.input_name || model.nodes.iter().any(|n| n.name == name) {
                return Err(Error::Build(format!(
                    "layer {i} ({class}) is named '{name}' like an earlier layer or the input; names must be unique"
                )));
            }
            let inputs = match &entry.inputs {
                None => None,
                Some(names) if names.is_empty() => {
                    return Err(Error::Build(format!("layer '{name}' ({class}) has an empty inputs list")));
                }
                Some(names) => Some(
                    names
                        .iter()
                        .map(|input| {
                            value_named(&model, input, &all_names).map_err(|why| {
                                Error::Build(format!("layer '{name}' ({class}) takes '{input}' as input, but {why}"))
                            })
                        })
                        .collect::<Result<Inputs>>()?,
                ),
            };
            model.push_node(layer, Some(name), inputs, entry.trainable);
        }
        let mut used = vec![false; model.nodes.len() + 1];
        for node in &model.nodes {
            node.inputs.iter().for_each(|&v| used[v] = true);
        }
        if let Some(k) = (0..model.nodes.len().saturating_sub(1)).find(|&k| !used[k + 1]) {
            return Err(Error::Build(format!(
                "layer '{}' feeds no other layer and is not the output (the last layer); every layer must lead to the output",
                model.nodes[k].name
            )));
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

/// The value named `name` (0 for the input, k + 1 for node k), or why there is none.
fn value_named(model: &Model, name: &str, all_names: &[&str]) -> std::result::Result<usize, String> {
    if name == model.input_name {
        return Ok(0);
    }
    if let Some(k) = model.nodes.iter().position(|n| n.name == name) {
        return Ok(k + 1);
    }
    if all_names.contains(&name) {
        return Err(format!(
            "'{name}' comes later in the file; list every layer after its inputs (a model cannot have cycles)"
        ));
    }
    let mut known: Vec<&str> = vec![&model.input_name];
    known.extend(model.nodes.iter().map(|n| n.name.as_str()));
    Err(format!("no earlier layer is named '{name}'; the names so far are {}", known.join(", ")))
}

fn class_of(config: &LayerConfig) -> String {
    serde_json::to_value(config).ok().and_then(|v| Some(v.get("class_name")?.as_str()?.to_string())).unwrap_or_default()
}
