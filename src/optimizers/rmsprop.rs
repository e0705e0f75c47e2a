use super::{LearningRate, Optimizer, OptimizerBase, OptimizerConfig, State, ensure_len, update_each};
use super::{base_builders, optimizer_fields};
use std::ops::Range;

/// RMSprop, as `keras.optimizers.RMSprop` (defaults: learning_rate 0.001,
/// rho 0.9, momentum 0, epsilon 1e-7). Update:
///
/// ```text
/// v = rho * v + (1 - rho) * g^2
/// step = lr * g / sqrt(v + epsilon)
/// momentum == 0:  p -= step
/// else:           m = momentum * m + step;  p -= m
/// ```
///
/// ```
/// use keel::prelude::*;
/// let rms = RMSprop::new(1e-3).rho(0.95);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RMSprop {
    pub learning_rate: LearningRate,
    pub rho: f32,
    pub momentum: f32,
    pub epsilon: f32,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
}

impl Default for RMSprop {
    fn default() -> Self {
        RMSprop {
            learning_rate: 1e-3.into(),
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            base: OptimizerBase::default(),
            state: State::with_slots(2),
        }
    }
}

impl RMSprop {
    /// RMSprop with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        RMSprop { learning_rate: learning_rate.into(), ..Self::default() }
    }

    /// Decay of the squared-gradient average.
    pub fn rho(mut self, rho: f32) -> Self {
        self.rho = rho;
        self
    }

    /// Momentum factor (0 disables it).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added inside the square root for stability.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
}

base_builders!(RMSprop, weight_decay);

impl Optimizer for RMSprop {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn config_class(&self) -> &'static str {
        "RMSprop"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::RMSprop(RMSprop {
            learning_rate: self.learning_rate.clone(),
            rho: self.rho,
            momentum: self.momentum,
            epsilon: self.epsilon,
            base: self.base.clone(),
            state: State::with_slots(2),
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["velocity", "moment"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, _step: u64) {
        let (rho, mu, eps) = (self.rho, self.momentum, self.epsilon);
        let [velocity, moment] = &mut self.state.slots[..] else { unreachable!("RMSprop keeps two slots") };
        ensure_len(velocity, params.len());
        ensure_len(moment, params.len());
        update_each(params, grads, (velocity, moment), variables, |p, g, v, m| {
            *v = rho * *v + (1.0 - rho) * g * g;
            let step = lr * g / (*v + eps).sqrt();
            if mu > 0.0 {
                *m = mu * *m + step;
                *p -= *m;
            } else {
                *p -= step;
            }
        });
    }
}
