use super::{LearningRate, Optimizer, OptimizerBase, OptimizerConfig, State, ensure_len, update_each};
use super::{base_builders, moment_builders, optimizer_fields};
use std::ops::Range;

/// Nadam (Adam with Nesterov momentum), as `keras.optimizers.Nadam`
/// (defaults: learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7).
/// With t the step number and the momentum schedule
/// u_t = beta_1 * (1 - 0.5 * 0.96^t), U_t = u_1 * ... * u_t:
///
/// ```text
/// m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
/// m_hat = u_{t+1} * m / (1 - U_t * u_{t+1}) + (1 - u_t) * g / (1 - U_t)
/// v_hat = v / (1 - beta_2^t)
/// p -= lr * m_hat / (sqrt(v_hat) + epsilon)
/// ```
///
/// U_t depends on t alone, so the step count is all a resume needs.
///
/// ```
/// use keel::prelude::*;
/// let nadam = Nadam::new(2e-3);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Nadam {
    pub learning_rate: LearningRate,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
    /// (t, U_t), kept so each step multiplies in one factor.
    #[serde(skip)]
    product: (u64, f64),
}

impl Default for Nadam {
    fn default() -> Self {
        Nadam {
            learning_rate: 1e-3.into(),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            base: OptimizerBase::default(),
            state: State::with_slots(2),
            product: (0, 1.0),
        }
    }
}

impl Nadam {
    /// Nadam with the given learning rate and Keras' other defaults.
    pub fn new(learning_rate: f32) -> Self {
        Nadam { learning_rate: learning_rate.into(), ..Self::default() }
    }

    /// u_t = beta_1 * (1 - 0.5 * 0.96^t).
    fn momentum_at(&self, t: u64) -> f64 {
        self.beta_1 as f64 * (1.0 - 0.5 * 0.96f64.powf(t as f64))
    }
}

base_builders!(Nadam, weight_decay);
moment_builders!(Nadam);

impl Optimizer for Nadam {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "nadam"
    }

    fn config_class(&self) -> &'static str {
        "Nadam"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Nadam(Nadam {
            learning_rate: self.learning_rate.clone(),
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            base: self.base.clone(),
            state: State::with_slots(2),
            product: (0, 1.0),
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, step: u64) {
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        let u_t = self.momentum_at(step);
        let u_next = self.momentum_at(step + 1);
        if self.product.0 + 1 == step {
            self.product = (step, self.product.1 * u_t);
        } else if self.product.0 != step {
            self.product = (step, (1..=step).map(|i| self.momentum_at(i)).product());
        }
        let product = self.product.1;
        let (ca, cb) = ((u_next / (1.0 - product * u_next)) as f32, ((1.0 - u_t) / (1.0 - product)) as f32);
        let v_scale = (1.0 / (1.0 - (b2 as f64).powf(step as f64))) as f32;
        let [m, v] = &mut self.state.slots[..] else { unreachable!("Nadam keeps two slots") };
        ensure_len(m, params.len());
        ensure_len(v, params.len());
        update_each(params, grads, (m, v), variables, |p, g, m, v| {
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            let m_hat = ca * *m + cb * g;
            *p -= lr * m_hat / ((*v * v_scale).sqrt() + eps);
        });
    }
}
