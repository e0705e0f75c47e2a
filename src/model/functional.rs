//! The model: a graph of layers (nodes in topological order) with one input
//! and one output, built into a [`Network`]. `Sequential` and the functional
//! API ([`Model::new`]) are two builders of this one type; training, files,
//! export and summary know only the graph.

use super::architecture::{DataInfo, FitDefaults, MAX_SAMPLE_ELEMENTS};
use super::history::History;
use super::network::{Fusion, Inputs, Network};
use super::summary;
use crate::activations::Activation;
use crate::distributed::Communicator;
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::losses::LossConfig;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::random::{self, streams};
use std::ops::Range;
use std::sync::Arc;

/// A linear stack of layers, as `keras.Sequential`: `Sequential::new()` is an
/// empty [`Model`] whose `add` appends a layer fed by the one before.
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
pub struct Sequential;

impl Sequential {
    /// An empty sequential model named "sequential" with seed 0.
    #[allow(clippy::new_ret_no_self)] // Keras' Sequential is a Model too
    pub fn new() -> Model {
        Model::empty("sequential", false)
    }
}

/// A model: layers joined into a graph, as Keras' `Model`/`Functional`
/// (built with [`Model::new`] from [`crate::model::Input`] and layers'
/// `apply`) or `Sequential` (built with [`Sequential::new`] and `add`).
pub struct Model {
    pub(super) name: String,
    pub(crate) nodes: Vec<Node>,
    /// Built by the functional API or a model file with `inputs` (not a chain).
    pub(crate) functional: bool,
    pub(crate) input_name: String,
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

/// One layer in the graph: the layer, its name, the values it reads (0 =
/// the model's input, k + 1 = node k's output) and whether it trains.
pub(crate) struct Node {
    pub layer: Box<dyn Layer>,
    pub name: String,
    pub inputs: Inputs,
    pub trainable: bool,
}

/// One weight tensor of a model: see [`Model::weights`].
#[derive(Clone, Debug, PartialEq)]
pub struct WeightInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// Where it lies in [`Model::params`], or in [`Model::state`] when `state`.
    pub range: Range<usize>,
    /// Non-trainable state (moving statistics), in the state buffer.
    pub state: bool,
    /// Whether an optimizer updates it (a trainable weight of a trainable layer).
    pub trainable: bool,
    /// Its L2 factor (0 for none).
    pub l2: f32,
}

/// What `compile` chose.
pub(crate) struct Compiled {
    pub optimizer: Box<dyn Optimizer>,
    pub loss: LossConfig,
    pub metrics: Vec<Metric>,
    /// The output activation the loss applies itself (from logits), if fused.
    pub head: Option<Activation>,
}

/// A handle on one layer of a model, from [`Model::get_layer`].
pub struct LayerHandle<'a> {
    node: &'a mut Node,
}

impl LayerHandle<'_> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// The layer itself.
    pub fn layer(&self) -> &dyn Layer {
        &*self.node.layer
    }

    /// Whether the layer's weights train.
    pub fn trainable(&self) -> bool {
        self.node.trainable
    }

    /// Freezes (`false`) or unfreezes the layer's weights: frozen weights get
    /// no update from any optimizer, and a frozen BatchNormalization runs in
    /// inference mode, as Keras 3's `layer.trainable = False`.
    pub fn set_trainable(&mut self, trainable: bool) {
        self.node.trainable = trainable;
        self.node.layer.set_trainable(trainable);
    }
}

impl Model {
    pub(crate) fn empty(name: &str, functional: bool) -> Model {
        Model {
            name: name.into(),
            nodes: Vec::new(),
            functional,
            input_name: "input_layer".into(),
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

    /// Appends a layer fed by the last one (Sequential models); its name is
    /// its type's base name, numbered from the second one on ("dense",
    /// "dense_1", ...), unless given with [`crate::model::LayerExt::named`].
    #[allow(clippy::should_implement_trait)] // named after Keras' `model.add`, not `+`
    pub fn add(mut self, layer: impl Into<super::graph::Spec>) -> Self {
        let spec = layer.into();
        let name = spec.name.clone();
        self.push_node(spec.layer, name, None, spec.trainable);
        self
    }

    /// Appends a boxed layer fed by the last one (see [`Model::add`]).
    pub fn push(&mut self, layer: Box<dyn Layer>) {
        self.push_node(layer, None, None, true);
    }

    /// Appends a node reading `inputs` (value ids; default: the last value),
    /// named `name` or automatically.
    pub(crate) fn push_node(
        &mut self,
        mut layer: Box<dyn Layer>,
        name: Option<String>,
        inputs: Option<Inputs>,
        trainable: bool,
    ) {
        let name = name.unwrap_or_else(|| self.unique_name(layer.base_name()));
        let inputs = inputs.unwrap_or_else(|| std::iter::once(self.nodes.len()).collect());
        layer.set_trainable(trainable);
        self.nodes.push(Node { layer, name, inputs, trainable });
        self.net = None;
    }

    /// "dense", then "dense_1", ...: the first of these names no layer has yet.
    fn unique_name(&self, base: &str) -> String {
        free_name(base, |name| self.nodes.iter().any(|n| n.name == name))
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

    /// The group set by [`Model::set_communicator`], if any.
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
    pub fn layer_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// The layer named `name`, to inspect it or change whether it trains:
    /// `model.get_layer("conv2d")?.set_trainable(false)`.
    pub fn get_layer(&mut self, name: &str) -> Result<LayerHandle<'_>> {
        let known = self.layer_names().join(", ");
        match self.nodes.iter_mut().find(|n| n.name == name) {
            Some(node) => Ok(LayerHandle { node }),
            None => {
                Err(Error::InvalidArgument(format!("the model has no layer named '{name}'; its layers are {known}")))
            }
        }
    }

    /// Whether the model is built (shapes known, weights allocated).
    pub fn is_built(&self) -> bool {
        self.net.is_some()
    }

    /// Builds for a known input shape: checks every layer's shapes, lays out
    /// and initialises parameters. Called by `compile`/`fit` as needed.
    pub fn build(&mut self) -> Result<()> {
        let first = self.nodes.iter().find(|n| n.inputs.as_slice() == [0]);
        let declared = self.input_shape.clone().or_else(|| first?.layer.declared_input_shape().map(<[usize]>::to_vec));
        let Some(shape) = declared else {
            return Err(Error::State(
                "the model's input shape is unknown: give `input_shape` on the first layer (e.g. Conv2D::new(32, (3, 3)).input_shape([28, 28, 1])) or on the model, or call fit first".into(),
            ));
        };
        self.build_for(&shape)
    }

    pub(super) fn build_for(&mut self, input: &[usize]) -> Result<()> {
        if self.nodes.is_empty() {
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
        let (mut ranges, mut state_ranges) = (Vec::new(), Vec::new());
        let (mut offset, mut state_offset) = (0, 0);
        for node in self.nodes.iter_mut() {
            let xs: Vec<Vec<usize>> = node.inputs.iter().map(|&v| shapes[v].clone()).collect();
            let y = node.layer.build_inputs(&xs).map_err(|why| {
                let given: Vec<String> = xs.iter().map(|s| summary::shape_str(s)).collect();
                Error::Build(format!(
                    "layer '{}' ({}) with input shape {}: {why}",
                    node.name,
                    node.layer.class_name(),
                    given.join(" and ")
                ))
            })?;
            if too_large(&y) {
                return Err(Error::Build(format!(
                    "layer '{}' ({}) outputs {} values per sample, more than keel allows ({MAX_SAMPLE_ELEMENTS}); use smaller inputs or layers",
                    node.name,
                    node.layer.class_name(),
                    summary::shape_str(&y)
                )));
            }
            // Weight sizes with checked arithmetic: an absurd layer is an error, not a wrapped count.
            let (mut trainable, mut state) = (0usize, 0usize);
            for w in node.layer.weights() {
                let len = w.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let total = if w.trainable { &mut trainable } else { &mut state };
                *total = len.and_then(|len| total.checked_add(len)).ok_or_else(|| {
                    let class = node.layer.class_name();
                    Error::Build(format!("layer '{}' ({class}) has more weights than keel can count", node.name))
                })?;
            }
            let what = || {
                let class = node.layer.class_name();
                format!("layer '{}' ({class}) has {} weights: they and their gradients", node.name, trainable + state)
            };
            crate::utils::check_memory((trainable + state).saturating_mul(8), what, "use fewer units or filters")?;
            ranges.push(offset..offset + trainable);
            state_ranges.push(state_offset..state_offset + state);
            offset = offset.saturating_add(trainable);
            state_offset = state_offset.saturating_add(state);
            shapes.push(y);
        }
        let total = offset.saturating_add(state_offset);
        if let Some(limit) = self.param_limit.filter(|&limit| total > limit) {
            return Err(Error::Build(format!("the architecture has {total} parameters but only {limit} are given")));
        }
        let what = || format!("the model's {total} weights and their gradients");
        crate::utils::check_memory(total.saturating_mul(8), what, "use fewer or smaller layers")?;
        let (mut params, mut state) = (vec![0.0; offset], vec![0.0; state_offset]);
        for (k, node) in self.nodes.iter().enumerate() {
            // Each layer draws from its own stream, its weights in declaration order.
            let mut rng = random::stream(self.seed, streams::INIT + k as u64);
            let (p, s) = (&mut params[ranges[k].clone()], &mut state[state_ranges[k].clone()]);
            crate::layers::init_weights(&node.layer.weights(), p, s, &mut rng);
        }
        self.fuse_head()?;
        let fusion = self.fusion(&shapes);
        self.net = Some(Network::new(shapes, (ranges, state_ranges), (params, state), &self.nodes, &fusion));
        Ok(())
    }

    /// Consumers of each value (0 = input, k + 1 = node k).
    fn consumers(&self) -> Vec<Vec<usize>> {
        let mut consumers = vec![Vec::new(); self.nodes.len() + 1];
        for (k, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                consumers[v].push(k);
            }
        }
        consumers
    }

    /// The graph's fusion passes, where a value has one consumer: a layer
    /// computes the max-pooling (or applies the elementwise activation) that is
    /// its only consumer, a reshape of a value nothing else reads only renames
    /// it, and at inference a convolution applies the BatchNormalization that
    /// is its only consumer (and the residual Add after that) and pads the
    /// input of the ZeroPadding2D before it itself.
    fn fusion(&mut self, shapes: &[Vec<usize>]) -> Fusion {
        let consumers = self.consumers();
        let mut pools = vec![None; self.nodes.len()];
        let mut aliases = vec![false; self.nodes.len()];
        for k in 0..self.nodes.len() {
            let only = match consumers[k + 1][..] {
                [j] => Some(j),
                _ => None,
            };
            let window = only.filter(|_| self.fuse).and_then(|j| self.nodes[j].layer.max_pool_window());
            if self.nodes[k].layer.fuse_max_pool(window) {
                pools[k] = only;
            }
            // A following elementwise activation (BatchNormalization -> ReLU) is applied in the same pass.
            let act =
                only.filter(|_| self.fuse && pools[k].is_none()).and_then(|j| self.nodes[j].layer.as_activation());
            if self.nodes[k].layer.fuse_activation(act) {
                pools[k] = only;
            }
            let node = &self.nodes[k];
            let input = node.inputs[0];
            aliases[k] = node.layer.is_reshape() && consumers[input].len() == 1;
        }
        // In training a convolution sums its output's per-channel moments as it
        // writes them, for the BatchNormalizations that read it: their batch
        // statistics without a pass of their own over it.
        let mut moments = vec![None; self.nodes.len()];
        for k in 0..self.nodes.len() {
            let readers: Vec<usize> =
                consumers[k + 1].iter().copied().filter(|&j| self.nodes[j].layer.uses_input_moments()).collect();
            let wanted = self.fuse && pools[k].is_none() && !readers.is_empty();
            if self.nodes[k].layer.gather_output_moments(wanted) {
                readers.into_iter().for_each(|j| moments[j] = Some(k));
            }
        }
        // At inference a convolution applies the BatchNormalization that is its
        // only consumer (with that one's fused activation) as it writes.
        let mut folds = vec![None; self.nodes.len()];
        for (k, fold) in folds.iter_mut().enumerate() {
            let [j] = consumers[k + 1][..] else { continue };
            let (node, next) = (&self.nodes[k], &self.nodes[j]);
            let channels = shapes[k + 1].last().copied();
            if self.fuse && pools[k].is_none() && node.layer.folds_affine() && next.layer.affine_channels() == channels
            {
                *fold = Some(j);
            }
        }
        // At inference a convolution that applies a BatchNormalization also
        // applies the two-input Add that is that one's only consumer, when the
        // Add's other input is computed before the convolution runs (the
        // residual blocks of ResNet and MobileNetV2): it adds that input and
        // applies the Add's activation as it writes, into the Add's buffer.
        let mut residuals = vec![None; self.nodes.len()];
        for (k, residual) in residuals.iter_mut().enumerate() {
            let Some(j) = folds[k].filter(|&j| pools[j].is_none()) else { continue };
            let [a] = consumers[j + 1][..] else { continue };
            let add = &self.nodes[a];
            let (Some(_), &[u, v]) = (add.layer.residual_activation(), &add.inputs[..]) else { continue };
            let other = if u == j + 1 { v } else { u };
            if other != j + 1 && other <= k {
                *residual = Some((a, other));
            }
        }
        // In training a layer that can (a BatchNormalization with no activation
        // of its own) applies the two-input Add that is its only consumer as it
        // writes, into the Add's buffer, at the Add's turn (its other input is
        // ready then): the Add is not run forward, the layer's own output not
        // written (its backward pass reads only its input).
        let mut train_residuals = vec![None; self.nodes.len()];
        for (a, residual) in train_residuals.iter_mut().enumerate() {
            let add = &self.nodes[a];
            let (true, Some(_), &[u, v]) = (self.fuse, add.layer.residual_activation(), &add.inputs[..]) else {
                continue;
            };
            let fits = |w: usize| {
                w > 0
                    && consumers[w] == [a]
                    && pools[w - 1].is_none()
                    && !aliases[w - 1]
                    && self.nodes[w - 1].layer.adds_residual()
            };
            *residual =
                [(u, v), (v, u)].into_iter().find(|&(w, other)| w != other && fits(w)).map(|(w, other)| (w - 1, other));
        }
        // At inference a convolution reads the input of the ZeroPadding2D that is
        // its input (and feeds nothing else), padding it itself; the padding is skipped.
        let mut unpadded = vec![None; self.nodes.len()];
        for (k, slot) in unpadded.iter_mut().enumerate() {
            let pad = match self.nodes[k].inputs[..] {
                [v] if v > 0 && consumers[v] == [k] && !aliases[v - 1] && pools[v - 1].is_none() => {
                    self.nodes[v - 1].layer.zero_padding().map(|pad| (v - 1, pad))
                }
                _ => None,
            };
            let pad = pad.filter(|_| self.fuse);
            if self.nodes[k].layer.absorb_padding(pad.map(|(_, pad)| pad)) {
                *slot = pad.map(|(p, _)| p);
            }
        }
        // At inference a layer that passes its input on unchanged (Dropout) only renames it.
        let passed = (0..self.nodes.len())
            .map(|k| self.fuse && self.nodes[k].inputs.len() == 1 && self.nodes[k].layer.identity_at_inference())
            .collect();
        Fusion { pools, aliases, folds, residuals, unpadded, train_residuals, passed, moments }
    }

    /// Configures training: optimizer, loss and metrics, as `model.compile`.
    /// Builds the model if its input shape is known.
    pub fn compile(
        &mut self,
        optimizer: impl Into<Box<dyn Optimizer>>,
        loss: impl Into<LossConfig>,
        metrics: &[Metric],
    ) -> Result<()> {
        let loss = loss.into();
        loss.check()?;
        for metric in metrics {
            metric.check()?;
        }
        self.compiled = Some(Compiled { optimizer: optimizer.into(), loss, metrics: metrics.to_vec(), head: None });
        let first = self.nodes.iter().find(|n| n.inputs.as_slice() == [0]);
        if self.net.is_none()
            && (self.input_shape.is_some() || first.and_then(|n| n.layer.declared_input_shape()).is_some())
        {
            self.build()?;
        }
        self.fuse_head()
    }

    /// When the loss can apply the last layer's activation itself (softmax
    /// with cross-entropy, sigmoid with binary cross-entropy), the layer emits
    /// logits and the loss works from them with log-sum-exp: stable, and the
    /// gradient is simply p - t.
    /// With `from_logits`, the last layer must not apply the activation the loss applies.
    fn fuse_head(&mut self) -> Result<()> {
        let (Some(compiled), Some(last)) = (self.compiled.as_mut(), self.nodes.last_mut()) else {
            return Ok(());
        };
        let act = last.layer.output_activation();
        if compiled.loss.from_logits && matches!(act, Activation::Softmax | Activation::Sigmoid) {
            return Err(Error::InvalidArgument(format!(
                "{} has from_logits = true, but the last layer '{}' applies {} (its outputs are probabilities, \
                 not logits): give that layer a linear activation, or set from_logits = false",
                compiled.loss.loss.class_name(),
                last.name,
                act.name()
            )));
        }
        let fused = compiled.loss.fuses(act);
        last.layer.defer_output_activation(fused);
        compiled.head = fused.then_some(act);
        Ok(())
    }

    /// Total number of weights, trainable and not (as Keras' `count_params`);
    /// an error before the model is built.
    pub fn count_params(&self) -> Result<usize> {
        let net = self.network()?;
        Ok(net.params().len() + net.state.len())
    }

    /// The trainable-kind weights (those with gradients; frozen layers' too)
    /// as one flat buffer, layer after layer, each layer in Keras' order
    /// (kernel then bias).
    pub fn params(&self) -> Result<&[f32]> {
        Ok(self.network()?.params())
    }

    /// The flat parameters, writable (for loading weights or averaging across processes).
    pub fn params_mut(&mut self) -> Result<&mut [f32]> {
        Ok(self.network_mut()?.params_mut())
    }

    /// The non-trainable state (BatchNormalization's moving statistics), layer after layer.
    pub fn state(&self) -> Result<&[f32]> {
        Ok(&self.network()?.state)
    }

    /// The state, writable.
    pub fn state_mut(&mut self) -> Result<&mut [f32]> {
        Ok(&mut self.network_mut()?.state)
    }

    /// The gradients of the last training step, same layout as [`Model::params`].
    pub fn grads(&self) -> Result<&[f32]> {
        Ok(&self.network()?.grads)
    }

    /// Layer `i`'s slice of the flat parameters.
    pub fn layer_params(&self, i: usize) -> Result<&[f32]> {
        let net = self.network()?;
        let range = net.ranges.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!("layer index {i} out of range ({} layers)", self.nodes.len()))
        })?;
        Ok(&net.params()[range.clone()])
    }

    /// The model's weight tensors in order: name ("conv2d/kernel"), Keras
    /// shape, and where it lies in [`Model::params`] or [`Model::state`].
    pub fn weights(&self) -> Result<Vec<WeightInfo>> {
        let net = self.network()?;
        let mut out = Vec::new();
        for (k, node) in self.nodes.iter().enumerate() {
            let (mut p, mut s) = (net.ranges[k].start, net.state_ranges[k].start);
            for w in node.layer.weights() {
                let at = if w.trainable { &mut p } else { &mut s };
                out.push(WeightInfo {
                    name: format!("{}/{}", node.name, w.name),
                    shape: w.shape.clone(),
                    range: *at..*at + w.len(),
                    state: !w.trainable,
                    trainable: w.trainable && node.trainable,
                    l2: w.l2,
                });
                *at += w.len();
            }
            debug_assert_eq!(p, net.ranges[k].end, "layer '{}' weights must cover its parameters", node.name);
        }
        Ok(out)
    }

    /// Ranges of [`Model::params`] an optimizer updates: each weight of a
    /// trainable layer (a Keras variable: `clipnorm` clips each on its own).
    pub(crate) fn trainable_ranges(&self) -> Vec<Range<usize>> {
        let weights = self.weights().unwrap_or_default();
        weights.into_iter().filter(|w| w.trainable && !w.range.is_empty()).map(|w| w.range).collect()
    }

    /// The layers, in order.
    pub fn layers(&self) -> Vec<&dyn Layer> {
        self.nodes.iter().map(|n| &*n.layer).collect()
    }

    /// Per-sample shapes: the input's, then each layer's output.
    pub fn shapes(&self) -> Result<&[Vec<usize>]> {
        Ok(&self.network()?.shapes)
    }

    /// The names of `classes` output classes: the dataset's (folder names,
    /// Fashion-MNIST's labels...) when the model records them, else "0", "1", ...
    pub fn class_names(&self, classes: usize) -> Vec<String> {
        match self.data_info().map(|i| i.class_names.clone()).filter(|n| n.len() == classes) {
            Some(names) => names,
            None => (0..classes).map(|i| i.to_string()).collect(),
        }
    }

    /// The compiled loss, if any.
    pub fn loss(&self) -> Option<LossConfig> {
        self.compiled.as_ref().map(|c| c.loss)
    }

    /// The compiled optimizer, if any.
    pub fn optimizer(&self) -> Option<&dyn Optimizer> {
        self.compiled.as_ref().map(|c| &*c.optimizer)
    }

    /// The compiled optimizer, to change its learning rate or restore its state.
    pub fn optimizer_mut(&mut self) -> Option<&mut dyn Optimizer> {
        Some(&mut *self.compiled.as_mut()?.optimizer)
    }

    /// The value the model outputs (0 = input, k + 1 = node k).
    pub(crate) fn network_output(&self) -> usize {
        self.nodes.len()
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> Result<&[usize]> {
        let net = self.network()?;
        Ok(&net.shapes[net.output])
    }

    /// The Keras-style summary table as text (with Keras' "Connected to"
    /// column for functional models). Builds the model first if its input
    /// shape is known, as Keras does.
    pub fn summary_string(&mut self) -> Result<String> {
        if !self.is_built() {
            self.build()?;
        }
        let net = self.network()?;
        let value_name = |v: usize| if v == 0 { self.input_name.clone() } else { self.nodes[v - 1].name.clone() };
        let mut rows = Vec::new();
        if self.functional {
            rows.push(summary::Row {
                name: self.input_name.clone(),
                class: "InputLayer",
                shape: net.shapes[0].clone(),
                params: 0,
                connected: Some(Vec::new()),
            });
        }
        for (k, node) in self.nodes.iter().enumerate() {
            rows.push(summary::Row {
                name: node.name.clone(),
                class: node.layer.class_name(),
                shape: net.shapes[k + 1].clone(),
                params: net.ranges[k].len() + net.state_ranges[k].len(),
                connected: self
                    .functional
                    .then(|| node.inputs.iter().map(|&v| format!("{}[0][0]", value_name(v))).collect()),
            });
        }
        let weights = self.weights()?;
        let trainable = weights.iter().filter(|w| w.trainable).map(|w| w.range.len()).sum();
        let total = net.params().len() + net.state.len();
        Ok(summary::render(&self.name, &rows, (total, trainable)))
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

/// The automatic layer name: `base`, else `base_1`, `base_2`, ... (the first not `taken`).
pub(crate) fn free_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    std::iter::once(base.to_string())
        .chain((1..).map(|i| format!("{base}_{i}")))
        .find(|n| !taken(n))
        .expect("a free name")
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

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    /// In training a BatchNormalization applies the two-input Add that is its
    /// only consumer (identity and projection blocks, either input), and only
    /// then: not one Add of three inputs, a normalisation read twice, one
    /// with an activation of its own, or any with fusion off.
    #[test]
    fn batch_normalizations_apply_the_add_after_them_in_training_where_they_can() {
        let fused_adds = |fuse: bool| {
            let bn = |x: &SymbolicTensor, name: &str| BatchNormalization::new().named(name).apply(x).unwrap();
            let add = |xs: &[&SymbolicTensor], name: &str| Add::new().named(name).apply(xs).unwrap();
            let conv = |x: &SymbolicTensor| Conv2D::new(16, (3, 3)).padding(Padding::Same).apply(x).unwrap();
            let relu = |x: &SymbolicTensor| ReLU::new().apply(x).unwrap();
            let inputs = Input::new([8, 8, 16]);
            let x = relu(&add(&[&inputs, &bn(&conv(&inputs), "identity_bn")], "identity"));
            let main = bn(&conv(&x), "projection_bn");
            let x = relu(&add(&[&conv(&x), &main], "projection"));
            let x = add(&[&bn(&conv(&x), "first_bn"), &x], "first");
            let x = add(&[&bn(&conv(&x), "of_three_bn"), &x, &x], "of_three");
            let twice = bn(&conv(&x), "twice_bn");
            let x = add(&[&twice, &add(&[&twice, &x], "twice_inner")], "twice_outer");
            let x = add(&[&x, &relu(&bn(&conv(&x), "with_relu_bn"))], "with_relu");
            let outputs = Dense::new(3).apply(&GlobalAveragePooling2D::new().apply(&x).unwrap()).unwrap();
            let mut model = Model::new(&inputs, &outputs).unwrap().fuse_layers(fuse);
            model.build().unwrap();
            let net = model.net.as_ref().unwrap();
            let name = |k: usize| model.nodes[k].name.clone();
            let fused =
                net.train_residuals().iter().enumerate().filter_map(|(a, f)| f.map(|(j, _)| (name(a), name(j))));
            fused.collect::<Vec<_>>()
        };
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, j)| (a.to_string(), j.to_string())).collect::<Vec<_>>();
        let expected = [("identity", "identity_bn"), ("projection", "projection_bn"), ("first", "first_bn")];
        assert_eq!(fused_adds(true), pairs(&expected));
        assert_eq!(fused_adds(false), pairs(&[]));
    }
}
