use super::{CHUNK, LearningRate, Optimizer, OptimizerBase, OptimizerConfig, State, ensure_len};
use super::{base_builders, optimizer_fields};
use crate::device::ForEachTask;
use rayon::prelude::*;
use std::ops::Range;

/// Stochastic gradient descent, as `keras.optimizers.SGD` (defaults:
/// learning_rate 0.01, momentum 0, nesterov false). Update:
///
/// ```text
/// momentum == 0:  p -= lr * g
/// else:           m = momentum * m - lr * g
///                 p += m                          (classic)
///                 p += momentum * m - lr * g      (nesterov)
/// ```
///
/// ```
/// use keel::prelude::*;
/// let sgd = SGD::new(0.01).momentum(0.9).nesterov(true);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SGD {
    pub learning_rate: LearningRate,
    pub momentum: f32,
    pub nesterov: bool,
    #[serde(flatten)]
    pub base: OptimizerBase,
    #[serde(skip)]
    state: State,
}

impl Default for SGD {
    fn default() -> Self {
        SGD {
            learning_rate: 0.01.into(),
            momentum: 0.0,
            nesterov: false,
            base: OptimizerBase::default(),
            state: State::with_slots(1),
        }
    }
}

impl SGD {
    /// SGD with the given learning rate and no momentum.
    pub fn new(learning_rate: f32) -> Self {
        SGD { learning_rate: learning_rate.into(), ..Self::default() }
    }

    /// Momentum factor (0 disables it).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Use Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
}

base_builders!(SGD, weight_decay);

impl Optimizer for SGD {
    optimizer_fields!();

    fn name(&self) -> &'static str {
        "sgd"
    }

    fn config_class(&self) -> &'static str {
        "SGD"
    }

    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::SGD(SGD {
            learning_rate: self.learning_rate.clone(),
            momentum: self.momentum,
            nesterov: self.nesterov,
            base: self.base.clone(),
            state: State::with_slots(1),
        })
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["velocity"]
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, _step: u64) {
        let (mu, nesterov) = (self.momentum, self.nesterov);
        let velocity = &mut self.state.slots[0];
        if mu == 0.0 {
            ensure_len(velocity, 0);
            for r in super::runs(variables) {
                params[r.clone()]
                    .par_chunks_mut(CHUNK)
                    .zip(grads[r.clone()].par_chunks(CHUNK))
                    .for_each_task(|(p, g)| p.iter_mut().zip(g).for_each(|(p, g)| *p -= lr * g));
            }
            return;
        }
        ensure_len(velocity, params.len());
        for r in super::runs(variables) {
            params[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(grads[r.clone()].par_chunks(CHUNK))
                .zip(velocity[r.clone()].par_chunks_mut(CHUNK))
                .for_each_task(|((p, g), m)| {
                    for ((p, &g), m) in p.iter_mut().zip(g).zip(m) {
                        *m = mu * *m - lr * g;
                        *p += if nesterov { mu * *m - lr * g } else { *m };
                    }
                });
        }
    }
}
