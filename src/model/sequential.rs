use super::architecture::{DataInfo, FitDefaults, MAX_SAMPLE_ELEMENTS};
use super::history::History;
use super::network::Network;
use super::summary;
use crate::activations::Activation;
use crate::distributed::Communicator;
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::random::{self, streams};
use std::sync::Arc;

/// A linear stack of layers, as `keras.Sequential`.
///
/// The model is built (shapes checked, parameters laid out and initialised)
/// as soon as its input shape is known: from `input_shape` on the first layer
/// or the model, else from the data given to `fit`.
///
/// ```
/// use keel::prelude::*;
/// let mut model = Sequential::new()
///     .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
///     .add(MaxPooling2D::new((2, 2)))
///     .add(Flatten::new())
///     .add(Dense::new(10).activation(Activation::Softmax));
/// model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
/// assert_eq!(model.count_params().unwrap(), 54_410);
/// ```
pub struct Sequential {
    pub(super) name: String,
    pub(super) layers: Vec<Box<dyn Layer>>,
    pub(super) names: Vec<String>,
    input_shape: Option<Vec<usize>>,
    pub(super) seed: u64,
    fuse: bool,
    pub(super) net: Option<Network>,
    pub(crate) compiled: Option<Compiled>,
    pub(crate) data_info: Option<DataInfo>,
    /// Training defaults from a model file, kept so that saving loses nothing.
    pub(crate) fit_defaults: Option<FitDefaults>,
    /// Epochs trained so far, over all `fit` calls: the shuffle and dropout
    /// of epoch e depend only on (seed, e), so training resumes exactly.
    pub(crate) epochs_trained: usize,
    /// Logs of every epoch trained so far.
    pub(crate) history: History,
    /// Most parameters `build` may allocate (set when loading a file, to what it holds).
    pub(crate) param_limit: Option<usize>,
    /// The group this model trains in (see [`crate::distributed`]).
    pub(crate) communicator: Option<Arc<dyn Communicator>>,
}

/// One weight tensor of a model: see [`Sequential::weights`].
#[derive(Clone, Debug, PartialEq)]
pub struct WeightInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
}

/// What `compile` chose.
pub(crate) struct Compiled {
    pub optimizer: Box<dyn Optimizer>,
    pub loss: Loss,
    pub metrics: Vec<Metric>,
    /// The output activation the loss applies itself (from logits), if fused.
    pub head: Option<Activation>,
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequential {
    /// An empty model named "sequential" with seed 0.
    pub fn new() -> Self {
        Sequential {
            name: "sequential".into(),
            layers: Vec::new(),
            names: Vec::new(),
            input_shape: None,
            seed: 0,
            fuse: true,
            net: None,
            compiled: None,
            data_info: None,
            fit_defaults: None,
            epochs_trained: 0,
            history: History::default(),
            param_limit: None,
            communicator: None,
        }
    }

    /// Appends a layer; its name is its type's base name, numbered from the
    /// second one on ("dense", "dense_1", ...).
    #[allow(clippy::should_implement_trait)] // named after Keras' `model.add`, not `+`
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        self.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer (see [`Sequential::add`]).
    pub fn push(&mut self, layer: Box<dyn Layer>) {
        let base = layer.base_name();
        let same = self.layers.iter().filter(|l| l.base_name() == base).count();
        self.names.push(if same == 0 { base.to_string() } else { format!("{base}_{same}") });
        self.layers.push(layer);
        self.net = None;
    }

    /// The per-sample input shape, e.g. `[28, 28, 1]` (instead of on the first layer).
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self.net = None;
        self
    }

    /// Seed for initial weights, shuffling and dropout: the same seed gives the
    /// same run, bit for bit, whatever the number of threads.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.net = None;
        self
    }

    /// Whether layers may compute the max-pooling that follows them (on by
    /// default). Fusion changes where intermediate values live, not the
    /// results; turning it off is for comparison and debugging.
    pub fn fuse_layers(mut self, on: bool) -> Self {
        self.fuse = on;
        self.net = None;
        self
    }

    /// What the inputs and outputs mean (dataset, class names, input scale), if set.
    pub fn data_info(&self) -> Option<&DataInfo> {
        self.data_info.as_ref()
    }

    /// Makes this model one rank of a data-parallel group: `fit` and
    /// `evaluate` then share their work with the other ranks, which must make
    /// the same calls with the same data (see [`crate::distributed`]).
    /// `predict` stays local. Only rank 0 prints progress.
    pub fn set_communicator(&mut self, communicator: Arc<dyn Communicator>) {
        self.communicator = Some(communicator);
    }

    /// The group set by [`Sequential::set_communicator`], if any.
    pub fn communicator(&self) -> Option<&Arc<dyn Communicator>> {
        self.communicator.as_ref()
    }

    /// Records what the inputs and outputs mean; saved with the model.
    pub fn set_data_info(&mut self, info: DataInfo) {
        self.data_info = Some(info);
    }

    /// Epochs trained so far, over all `fit` calls (and before saving, for a loaded model).
    pub fn epochs_trained(&self) -> usize {
        self.epochs_trained
    }

    /// Logs of every epoch trained so far, over all `fit` calls.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The model's name, shown by `summary()`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Layer names in order.
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Whether the model is built (shapes known, weights allocated).
    pub fn is_built(&self) -> bool {
        self.net.is_some()
    }

    /// Builds for a known input shape: checks every layer's shapes, lays out
    /// and initialises parameters. Called by `compile`/`fit` as needed.
    pub fn build(&mut self) -> Result<()> {
        let declared =
            self.input_shape.clone().or_else(|| self.layers.first()?.declared_input_shape().map(<[usize]>::to_vec));
        let Some(shape) = declared else {
            return Err(Error::State(
                "the model's input shape is unknown: give `input_shape` on the first layer (e.g. Conv2D::new(32, (3, 3)).input_shape([28, 28, 1])) or on the model, or call fit first".into(),
            ));
        };
        self.build_for(&shape)
    }

    pub(super) fn build_for(&mut self, input: &[usize]) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Build("the model has no layers; add some with `.add(...)`".into()));
        }
        if input.is_empty() || input.contains(&0) {
            return Err(Error::Build(format!(
                "input shape {} must have positive dimensions",
                summary::shape_str(input)
            )));
        }
        if too_large(input) {
            return Err(Error::Build(format!(
                "input shape {} has more than {MAX_SAMPLE_ELEMENTS} values per sample; use smaller inputs",
                summary::shape_str(input)
            )));
        }
        let mut shapes = vec![input.to_vec()];
        let mut ranges = Vec::with_capacity(self.layers.len());
        let mut offset = 0;
        for (layer, name) in self.layers.iter_mut().zip(&self.names) {
            let x = shapes.last().expect("input shape pushed first");
            let y = layer.build(x).map_err(|why| {
                Error::Build(format!(
                    "layer '{name}' ({}) with input shape {}: {why}",
                    layer.class_name(),
                    summary::shape_str(x)
                ))
            })?;
            if too_large(&y) {
                return Err(Error::Build(format!(
                    "layer '{name}' ({}) outputs {} values per sample, more than keel allows ({MAX_SAMPLE_ELEMENTS}); use smaller inputs or layers",
                    layer.class_name(),
                    summary::shape_str(&y)
                )));
            }
            let count = layer.param_count();
            ranges.push(offset..offset + count);
            offset += count;
            shapes.push(y);
        }
        if let Some(limit) = self.param_limit.filter(|&limit| offset > limit) {
            return Err(Error::Build(format!("the architecture has {offset} parameters but only {limit} are given")));
        }
        let mut params = vec![0.0; offset];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let mut rng = random::stream(self.seed, streams::INIT + i as u64);
            layer.init_params(&mut params[ranges[i].clone()], &mut rng);
        }
        self.fuse_head();
        let fused: Vec<bool> = (0..self.layers.len())
            .map(|i| {
                let pool =
                    if self.fuse { self.layers.get(i + 1).and_then(|next| next.max_pool_window()) } else { None };
                self.layers[i].fuse_max_pool(pool)
            })
            .collect();
        let net = Network::new(shapes, ranges, params, &self.layers, &fused);
        self.net = Some(net);
        Ok(())
    }

    /// Configures training: optimizer, loss and metrics, as `model.compile`.
    /// Builds the model if its input shape is known.
    pub fn compile(&mut self, optimizer: impl Into<Box<dyn Optimizer>>, loss: Loss, metrics: &[Metric]) -> Result<()> {
        self.compiled = Some(Compiled { optimizer: optimizer.into(), loss, metrics: metrics.to_vec(), head: None });
        if self.net.is_none()
            && (self.input_shape.is_some() || self.layers.first().and_then(|l| l.declared_input_shape()).is_some())
        {
            self.build()?;
        }
        self.fuse_head();
        Ok(())
    }

    /// When the loss can apply the last layer's activation itself (softmax
    /// with cross-entropy, sigmoid with binary cross-entropy), the layer emits
    /// logits and the loss works from them with log-sum-exp: stable, and the
    /// gradient is simply p - t.
    fn fuse_head(&mut self) {
        let (Some(compiled), Some(last)) = (self.compiled.as_mut(), self.layers.last_mut()) else {
            return;
        };
        let act = last.output_activation();
        let fused = compiled.loss.fuses(act);
        last.defer_output_activation(fused);
        compiled.head = fused.then_some(act);
    }

    /// Total number of parameters; an error before the model is built.
    pub fn count_params(&self) -> Result<usize> {
        Ok(self.network()?.params.len())
    }

    /// All parameters as one flat buffer, layer after layer, each layer in
    /// Keras' order (kernel then bias).
    pub fn params(&self) -> Result<&[f32]> {
        Ok(&self.network()?.params)
    }

    /// The flat parameters, writable (for loading weights or averaging across processes).
    pub fn params_mut(&mut self) -> Result<&mut [f32]> {
        Ok(&mut self.network_mut()?.params)
    }

    /// The gradients of the last training step, same layout as [`Sequential::params`].
    pub fn grads(&self) -> Result<&[f32]> {
        Ok(&self.network()?.grads)
    }

    /// Layer `i`'s slice of the flat parameters.
    pub fn layer_params(&self, i: usize) -> Result<&[f32]> {
        let net = self.network()?;
        let range = net.ranges.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!("layer index {i} out of range ({} layers)", self.layers.len()))
        })?;
        Ok(&net.params[range.clone()])
    }

    /// The model's weight tensors in order: name ("conv2d/kernel"), Keras
    /// shape, and where it lies in [`Sequential::params`].
    pub fn weights(&self) -> Result<Vec<WeightInfo>> {
        let net = self.network()?;
        let mut out = Vec::new();
        for ((layer, name), range) in self.layers.iter().zip(&self.names).zip(&net.ranges) {
            let mut start = range.start;
            for (weight, shape) in layer.weight_shapes() {
                let len: usize = shape.iter().product();
                out.push(WeightInfo { name: format!("{name}/{weight}"), shape, range: start..start + len });
                start += len;
            }
            debug_assert_eq!(start, range.end, "layer '{name}' weight shapes must cover its parameters");
        }
        Ok(out)
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Per-sample shapes: the input's, then each layer's output.
    pub fn shapes(&self) -> Result<&[Vec<usize>]> {
        Ok(&self.network()?.shapes)
    }

    /// The compiled optimizer, if any.
    pub fn optimizer(&self) -> Option<&dyn Optimizer> {
        self.compiled.as_ref().map(|c| &*c.optimizer)
    }

    /// The compiled optimizer, to change its learning rate or restore its state.
    pub fn optimizer_mut(&mut self) -> Option<&mut dyn Optimizer> {
        Some(&mut *self.compiled.as_mut()?.optimizer)
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> Result<&[usize]> {
        Ok(self.network()?.shapes.last().expect("built networks have an output"))
    }

    /// The Keras-style summary table as text. Builds the model first if its
    /// input shape is known, as Keras does.
    pub fn summary_string(&mut self) -> Result<String> {
        if !self.is_built() {
            self.build()?;
        }
        let net = self.network()?;
        let rows: Vec<summary::Row> = self
            .layers
            .iter()
            .zip(&self.names)
            .enumerate()
            .map(|(i, (layer, name))| summary::Row {
                name: name.clone(),
                class: layer.class_name(),
                shape: net.shapes[i + 1].clone(),
                params: layer.param_count(),
            })
            .collect();
        Ok(summary::render(&self.name, &rows))
    }

    /// Prints the summary table, as `model.summary()`.
    pub fn summary(&mut self) -> Result<()> {
        print!("{}", self.summary_string()?);
        Ok(())
    }

    pub(super) fn network(&self) -> Result<&Network> {
        self.net.as_ref().ok_or_else(not_built)
    }

    fn network_mut(&mut self) -> Result<&mut Network> {
        self.net.as_mut().ok_or_else(not_built)
    }
}

/// Whether a per-sample shape holds more values than keel allows (or overflows).
fn too_large(shape: &[usize]) -> bool {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|len| len > MAX_SAMPLE_ELEMENTS)
}

fn not_built() -> Error {
    Error::State(
        "the model is not built yet: give an input shape (on the first layer or the model) or call fit first".into(),
    )
}
