//! Keras' functional API: symbolic tensors that record which layer made them
//! from which inputs, and [`Model::new`], which turns that record into a
//! model's graph.
//!
//! ```
//! use keel::prelude::*;
//! let inputs = Input::new([32, 32, 3]);
//! let x = Conv2D::new(16, (3, 3)).padding(Padding::Same).activation(Activation::Relu).apply(&inputs)?;
//! let y = Conv2D::new(16, (3, 3)).padding(Padding::Same).apply(&x)?;
//! let x = Add::new().apply(&[&x, &y])?;
//! let x = GlobalAveragePooling2D::new().apply(&x)?;
//! let outputs = Dense::new(10).activation(Activation::Softmax).apply(&x)?;
//! let model = Model::new(&inputs, &outputs)?;
//! assert_eq!(model.count_params()?, 448 + 2_320 + 170);
//! # Ok::<(), keel::Error>(())
//! ```

use super::functional::{Model, free_name};
use super::network::Inputs;
use super::summary::shape_str;
use crate::error::{Error, Result};
use crate::layers::{Layer, LayerConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Creation order of symbolic tensors: a node is always made after its inputs,
/// so sorting by it gives a topological order (the order the user wrote).
static CREATED: AtomicU64 = AtomicU64::new(0);

/// The output of a layer applied to symbolic inputs (Keras' `KerasTensor`):
/// a per-sample shape and the record of how it is computed.
#[derive(Clone)]
pub struct SymbolicTensor(Arc<Symbol>);

struct Symbol {
    shape: Vec<usize>,
    serial: u64,
    origin: Origin,
}

enum Origin {
    Input {
        name: String,
    },
    Layer {
        config: LayerConfig,
        class: &'static str,
        name: Option<String>,
        trainable: bool,
        inputs: Vec<SymbolicTensor>,
    },
}

impl std::fmt::Debug for SymbolicTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SymbolicTensor({})", self.describe())
    }
}

impl SymbolicTensor {
    /// Its per-sample shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// How errors name it: "'conv1' (Conv2D)", "the Conv2D output" or "Input 'x'".
    fn describe(&self) -> String {
        match &self.0.origin {
            Origin::Input { name } => format!("input '{name}' {}", shape_str(&self.0.shape)),
            Origin::Layer { class, name: Some(name), .. } => format!("'{name}' ({class}) {}", shape_str(&self.0.shape)),
            Origin::Layer { class, name: None, .. } => format!("a {class} output {}", shape_str(&self.0.shape)),
        }
    }

    fn same(&self, other: &SymbolicTensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A model's input, as `keras.Input(shape)`.
pub struct Input;

impl Input {
    /// A symbolic input of per-sample `shape` (no batch axis), named "input_layer".
    #[allow(clippy::new_ret_no_self)] // as keras.Input, it returns a symbolic tensor
    pub fn new(shape: impl Into<Vec<usize>>) -> SymbolicTensor {
        Self::named("input_layer", shape)
    }

    /// A symbolic input with a name.
    pub fn named(name: &str, shape: impl Into<Vec<usize>>) -> SymbolicTensor {
        SymbolicTensor(Arc::new(Symbol {
            shape: shape.into(),
            serial: CREATED.fetch_add(1, Ordering::Relaxed),
            origin: Origin::Input { name: name.into() },
        }))
    }
}

/// A layer with the name and trainability it gets in a model.
pub struct Spec {
    pub(crate) layer: Box<dyn Layer>,
    pub(crate) name: Option<String>,
    pub(crate) trainable: bool,
}

impl<L: Layer + 'static> From<L> for Spec {
    fn from(layer: L) -> Self {
        Spec { layer: Box::new(layer), name: None, trainable: true }
    }
}

impl From<Box<dyn Layer>> for Spec {
    fn from(layer: Box<dyn Layer>) -> Self {
        Spec { layer, name: None, trainable: true }
    }
}

impl Spec {
    /// The layer's name in the model (default: its base name, numbered).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether its weights train (default true); see [`super::LayerHandle::set_trainable`].
    pub fn trainable(mut self, trainable: bool) -> Self {
        self.trainable = trainable;
        self
    }

    /// Applies the layer to symbolic inputs, as calling a Keras layer: checks
    /// the shapes and returns the symbolic output.
    pub fn apply(self, inputs: impl IntoInputs) -> Result<SymbolicTensor> {
        let inputs = inputs.into_inputs();
        let mut layer = self.layer;
        let describe = |name: &Option<String>| match name {
            Some(n) => format!("layer '{n}' ({})", layer.class_name()),
            None => format!("a {} layer", layer.class_name()),
        };
        let what = describe(&self.name);
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.0.shape.clone()).collect();
        let shape = layer.build_inputs(&shapes).map_err(|why| {
            let given: Vec<String> = inputs.iter().map(SymbolicTensor::describe).collect();
            Error::Build(format!("{what} applied to {}: {why}", given.join(" and ")))
        })?;
        let config = layer.config();
        // What the model will rebuild must be valid (arguments in range).
        config.to_layer().map_err(|why| Error::Build(format!("{what}: {why}")))?;
        Ok(SymbolicTensor(Arc::new(Symbol {
            shape,
            serial: CREATED.fetch_add(1, Ordering::Relaxed),
            origin: Origin::Layer {
                config,
                class: layer.class_name(),
                name: self.name,
                trainable: self.trainable,
                inputs,
            },
        })))
    }
}

/// Builder methods every layer has in the functional API.
pub trait LayerExt: Layer + Sized + 'static {
    /// Applies the layer to symbolic inputs: one `&tensor`, or `&[&a, &b]` for merges.
    fn apply(self, inputs: impl IntoInputs) -> Result<SymbolicTensor> {
        Spec::from(self).apply(inputs)
    }

    /// The layer's name in the model.
    fn named(self, name: impl Into<String>) -> Spec {
        Spec::from(self).named(name)
    }

    /// Whether its weights train (default true).
    fn trainable(self, trainable: bool) -> Spec {
        Spec::from(self).trainable(trainable)
    }
}

impl<L: Layer + Sized + 'static> LayerExt for L {}

/// What `apply` takes: one symbolic tensor or several.
pub trait IntoInputs {
    fn into_inputs(self) -> Vec<SymbolicTensor>;
}

impl IntoInputs for &SymbolicTensor {
    fn into_inputs(self) -> Vec<SymbolicTensor> {
        vec![self.clone()]
    }
}

impl IntoInputs for &[&SymbolicTensor] {
    fn into_inputs(self) -> Vec<SymbolicTensor> {
        self.iter().map(|t| (*t).clone()).collect()
    }
}

impl<const N: usize> IntoInputs for &[&SymbolicTensor; N] {
    fn into_inputs(self) -> Vec<SymbolicTensor> {
        self.iter().map(|t| (*t).clone()).collect()
    }
}

impl IntoInputs for &[SymbolicTensor] {
    fn into_inputs(self) -> Vec<SymbolicTensor> {
        self.to_vec()
    }
}

impl IntoInputs for Vec<SymbolicTensor> {
    fn into_inputs(self) -> Vec<SymbolicTensor> {
        self
    }
}

impl Model {
    /// A model from its symbolic input and output, as `keras.Model(inputs,
    /// outputs)`: every layer the output depends on, in the order they were
    /// applied. Layers without a name are named as in Sequential models
    /// ("conv2d", "conv2d_1", ...). The model is built at once.
    pub fn new(inputs: &SymbolicTensor, outputs: &SymbolicTensor) -> Result<Model> {
        let Origin::Input { name: input_name } = &inputs.0.origin else {
            return Err(Error::Build(format!(
                "the model's input must come from Input::new, but {} is a layer's output",
                inputs.describe()
            )));
        };
        // Every symbol the output depends on, once each.
        let mut seen: HashMap<*const Symbol, SymbolicTensor> = HashMap::new();
        let mut stack = vec![outputs.clone()];
        while let Some(t) = stack.pop() {
            if seen.insert(Arc::as_ptr(&t.0), t.clone()).is_some() {
                continue;
            }
            match &t.0.origin {
                Origin::Input { .. } if !t.same(inputs) => {
                    return Err(Error::Build(format!(
                        "the output depends on {}, which is not the model's input (keel models have one input: pass the Input the graph starts from)",
                        t.describe()
                    )));
                }
                Origin::Input { .. } => {}
                Origin::Layer { inputs, .. } => stack.extend(inputs.iter().cloned()),
            }
        }
        if !seen.contains_key(&Arc::as_ptr(&inputs.0)) {
            return Err(Error::Build(format!(
                "the output {} does not depend on the input {}; connect them with layers",
                outputs.describe(),
                inputs.describe()
            )));
        }
        let mut order: Vec<SymbolicTensor> =
            seen.into_values().filter(|t| matches!(t.0.origin, Origin::Layer { .. })).collect();
        order.sort_by_key(|t| t.0.serial);
        let mut model = Model::empty("functional", true).input_shape(inputs.0.shape.clone());
        model.input_name = input_name.clone();
        let mut value_of: HashMap<*const Symbol, usize> = HashMap::from([(Arc::as_ptr(&inputs.0), 0)]);
        let explicit: Vec<&str> = order
            .iter()
            .filter_map(|t| match &t.0.origin {
                Origin::Layer { name, .. } => name.as_deref(),
                Origin::Input { .. } => None,
            })
            .collect();
        if let Some(dup) = explicit.iter().enumerate().find(|(i, n)| explicit[..*i].contains(n)) {
            return Err(Error::Build(format!("two layers are named '{}'; layer names must be unique", dup.1)));
        }
        if explicit.contains(&model.input_name.as_str()) {
            return Err(Error::Build(format!("a layer is named '{}' like the input; rename one", model.input_name)));
        }
        for t in &order {
            let Origin::Layer { config, name, trainable, inputs, .. } = &t.0.origin else { continue };
            let layer = config.to_layer().map_err(Error::Build)?;
            let ids: Inputs = inputs.iter().map(|i| value_of[&Arc::as_ptr(&i.0)]).collect();
            // Automatic names skip the explicit ones, which are reserved.
            let name = name.clone().unwrap_or_else(|| {
                let taken = |n: &str| explicit.contains(&n) || model.nodes.iter().any(|m| m.name == n);
                free_name(layer.base_name(), taken)
            });
            model.push_node(layer, Some(name), Some(ids), *trainable);
            value_of.insert(Arc::as_ptr(&t.0), model.nodes.len());
        }
        model.build()?;
        Ok(model)
    }
}
