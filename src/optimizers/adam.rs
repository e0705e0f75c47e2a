use super::{LearningRate, Optimizer, OptimizerBase, OptimizerConfig, State, ensure_len, update_each};
use super::{base_builders, moment_builders, optimizer_fields};
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
/// let adam = Adam::new(3e-4).beta_2(0.99).clipnorm(1.0);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Adam {
    pub learning_rate: LearningRate,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 1e-3.into(),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            base: OptimizerBase::default(),
            state: State::with_slots(2),
        }
    }
}

impl Adam {
    /// Adam with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        Adam { learning_rate: learning_rate.into(), ..Self::default() }
    }
}

base_builders!(Adam, weight_decay);
moment_builders!(Adam);

impl Optimizer for Adam {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "adam"
    }

    fn config_class(&self) -> &'static str {
        "Adam"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Adam(Adam {
            learning_rate: self.learning_rate.clone(),
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            base: self.base.clone(),
            state: State::with_slots(2),
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, step: u64) {
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        adam_update(&mut self.state, params, grads, variables, lr, step, (b1, b2, eps));
    }
}

/// AdamW, as `keras.optimizers.AdamW`: Adam with decoupled weight decay
/// (defaults: learning_rate 0.001, weight_decay 0.004, beta_1 0.9, beta_2
/// 0.999, epsilon 1e-7). Each step first decays every trainable weight,
/// `p -= p * weight_decay * lr`, then takes Adam's step.
///
/// ```
/// use keel::prelude::*;
/// let adamw = AdamW::new(1e-3).weight_decay(0.05).global_clipnorm(1.0);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdamW {
    pub learning_rate: LearningRate,
    pub weight_decay: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            learning_rate: 1e-3.into(),
            weight_decay: 0.004,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            base: OptimizerBase::default(),
            state: State::with_slots(2),
        }
    }
}

impl AdamW {
    /// AdamW with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        AdamW { learning_rate: learning_rate.into(), ..Self::default() }
    }

    /// Decay of the weights per step, times the learning rate (default 0.004).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

base_builders!(AdamW);
moment_builders!(AdamW);

impl Optimizer for AdamW {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "adamw"
    }

    fn config_class(&self) -> &'static str {
        "AdamW"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::AdamW(AdamW {
            learning_rate: self.learning_rate.clone(),
            weight_decay: self.weight_decay,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            base: self.base.clone(),
            state: State::with_slots(2),
        })
    }

    fn weight_decay(&self) -> Option<f32> {
        Some(self.weight_decay)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, step: u64) {
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        adam_update(&mut self.state, params, grads, variables, lr, step, (b1, b2, eps));
    }
}

/// Adam's rule over the state's slots m and v.
fn adam_update(
    state: &mut State,
    params: &mut [f32],
    grads: &[f32],
    variables: &[Range<usize>],
    lr: f32,
    step: u64,
    (b1, b2, eps): (f32, f32, f32),
) {
    let [m, v] = &mut state.slots[..] else { unreachable!("Adam keeps two slots") };
    ensure_len(m, params.len());
    ensure_len(v, params.len());
    let t = step as f64;
    let alpha = (lr as f64 * (1.0 - (b2 as f64).powf(t)).sqrt() / (1.0 - (b1 as f64).powf(t))) as f32;
    update_each(params, grads, (m, v), variables, |p, g, m, v| {
        *m += (g - *m) * (1.0 - b1);
        *v += (g * g - *v) * (1.0 - b2);
        *p -= alpha * *m / (v.sqrt() + eps);
    });
}
