use super::{CHUNK, LearningRate, Optimizer, OptimizerBase, OptimizerConfig, State};
use super::{base_builders, optimizer_fields};
use crate::device::ForEachTask;
use rayon::prelude::*;
use std::ops::Range;

/// Adagrad, as `keras.optimizers.Adagrad` (defaults: learning_rate 0.001,
/// initial_accumulator_value 0.1, epsilon 1e-7). Update:
///
/// ```text
/// a += g^2;  p -= lr * g / sqrt(a + epsilon)
/// ```
///
/// ```
/// use keel::prelude::*;
/// let adagrad = Adagrad::new(0.01).initial_accumulator_value(0.1);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Adagrad {
    pub learning_rate: LearningRate,
    pub initial_accumulator_value: f32,
    pub epsilon: f32,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad {
            learning_rate: 1e-3.into(),
            initial_accumulator_value: 0.1,
            epsilon: 1e-7,
            base: OptimizerBase::default(),
            state: State::with_slots(1),
        }
    }
}

impl Adagrad {
    /// Adagrad with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        Adagrad { learning_rate: learning_rate.into(), ..Self::default() }
    }

    /// Where each accumulator starts (default 0.1).
    pub fn initial_accumulator_value(mut self, value: f32) -> Self {
        self.initial_accumulator_value = value;
        self
    }

    /// Added inside the square root for stability.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
}

base_builders!(Adagrad, weight_decay);

impl Optimizer for Adagrad {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "adagrad"
    }

    fn config_class(&self) -> &'static str {
        "Adagrad"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Adagrad(Adagrad {
            learning_rate: self.learning_rate.clone(),
            initial_accumulator_value: self.initial_accumulator_value,
            epsilon: self.epsilon,
            base: self.base.clone(),
            state: State::with_slots(1),
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["accumulator"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, _step: u64) {
        let eps = self.epsilon;
        let accumulator = &mut self.state.slots[0];
        if accumulator.len() != params.len() {
            *accumulator = vec![self.initial_accumulator_value; params.len()];
        }
        for r in super::runs(variables) {
            params[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(grads[r.clone()].par_chunks(CHUNK))
                .zip(accumulator[r.clone()].par_chunks_mut(CHUNK))
                .for_each_task(|((p, g), a)| {
                    for ((p, &g), a) in p.iter_mut().zip(g).zip(a) {
                        *a += g * g;
                        *p -= lr * g / (*a + eps).sqrt();
                    }
                });
        }
    }
}
