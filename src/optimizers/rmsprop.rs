use super::{Optimizer, OptimizerConfig, ensure_len, update_each};
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
#[serde(default, deny_unknown_fields)]
pub struct RMSprop {
    pub learning_rate: f32,
    pub rho: f32,
    pub momentum: f32,
    pub epsilon: f32,
    #[serde(skip)]
    iterations: u64,
    #[serde(skip)]
    velocity: Vec<f32>,
    #[serde(skip)]
    moment: Vec<f32>,
}

impl Default for RMSprop {
    fn default() -> Self {
        RMSprop {
            learning_rate: 1e-3,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            iterations: 0,
            velocity: Vec::new(),
            moment: Vec::new(),
        }
    }
}

impl RMSprop {
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

    /// RMSprop with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        RMSprop { learning_rate, ..Self::default() }
    }
}

impl Optimizer for RMSprop {
    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    fn set_learning_rate(&mut self, learning_rate: f32) {
        self.learning_rate = learning_rate;
    }

    fn iterations(&self) -> u64 {
        self.iterations
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::RMSprop(RMSprop {
            learning_rate: self.learning_rate,
            rho: self.rho,
            momentum: self.momentum,
            epsilon: self.epsilon,
            ..RMSprop::default()
        })
    }

    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        vec![("velocity", self.velocity.as_slice()), ("moment", self.moment.as_slice())]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        vec![("velocity", &mut self.velocity), ("moment", &mut self.moment)]
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.iterations = iterations;
    }

    fn step_ranges(&mut self, params: &mut [f32], grads: &[f32], trainable: &[Range<usize>]) {
        ensure_len(&mut self.velocity, params.len());
        ensure_len(&mut self.moment, params.len());
        self.iterations += 1;
        let (lr, rho, mu, eps) = (self.learning_rate, self.rho, self.momentum, self.epsilon);
        update_each(params, grads, (&mut self.velocity, &mut self.moment), trainable, |p, g, v, m| {
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
