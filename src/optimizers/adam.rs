use super::{Optimizer, OptimizerConfig, ensure_len, update_each};
use std::ops::Range;

/// Adam, as `keras.optimizers.Adam` (defaults: learning_rate 0.001, beta_1 0.9,
/// beta_2 0.999, epsilon 1e-7). Update, with t the step number:
///
/// ```text
/// alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
/// m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
/// p -= alpha * m / (sqrt(v) + epsilon)
/// ```
///
/// ```
/// use keel::prelude::*;
/// let adam = Adam::new(3e-4).beta_2(0.99);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    #[serde(skip)]
    iterations: u64,
    #[serde(skip)]
    m: Vec<f32>,
    #[serde(skip)]
    v: Vec<f32>,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            iterations: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

impl Adam {
    /// Decay of the first-moment average.
    pub fn beta_1(mut self, beta_1: f32) -> Self {
        self.beta_1 = beta_1;
        self
    }

    /// Decay of the second-moment average.
    pub fn beta_2(mut self, beta_2: f32) -> Self {
        self.beta_2 = beta_2;
        self
    }

    /// Added to the denominator for stability.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Adam with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        Adam { learning_rate, ..Self::default() }
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "adam"
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
        OptimizerConfig::Adam(Adam {
            learning_rate: self.learning_rate,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            ..Adam::default()
        })
    }

    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        vec![("m", self.m.as_slice()), ("v", self.v.as_slice())]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        vec![("m", &mut self.m), ("v", &mut self.v)]
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.iterations = iterations;
    }

    fn step_ranges(&mut self, params: &mut [f32], grads: &[f32], trainable: &[Range<usize>]) {
        ensure_len(&mut self.m, params.len());
        ensure_len(&mut self.v, params.len());
        self.iterations += 1;
        let t = self.iterations as f64;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        let alpha =
            (self.learning_rate as f64 * (1.0 - (b2 as f64).powf(t)).sqrt() / (1.0 - (b1 as f64).powf(t))) as f32;
        update_each(params, grads, (&mut self.m, &mut self.v), trainable, |p, g, m, v| {
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            *p -= alpha * *m / (v.sqrt() + eps);
        });
    }
}
