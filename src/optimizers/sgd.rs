use super::{CHUNK, Optimizer, OptimizerConfig, ensure_len};
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
#[serde(default, deny_unknown_fields)]
pub struct SGD {
    pub learning_rate: f32,
    pub momentum: f32,
    pub nesterov: bool,
    #[serde(skip)]
    iterations: u64,
    #[serde(skip)]
    velocity: Vec<f32>,
}

impl Default for SGD {
    fn default() -> Self {
        SGD { learning_rate: 0.01, momentum: 0.0, nesterov: false, iterations: 0, velocity: Vec::new() }
    }
}

impl SGD {
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

    /// SGD with the given learning rate and no momentum.
    pub fn new(learning_rate: f32) -> Self {
        SGD { learning_rate, ..Self::default() }
    }
}

impl Optimizer for SGD {
    fn name(&self) -> &'static str {
        "sgd"
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
        OptimizerConfig::SGD(SGD {
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            nesterov: self.nesterov,
            ..SGD::default()
        })
    }

    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        vec![("velocity", self.velocity.as_slice())]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        vec![("velocity", &mut self.velocity)]
    }

    fn set_iterations(&mut self, iterations: u64) {
        self.iterations = iterations;
    }

    fn step_ranges(&mut self, params: &mut [f32], grads: &[f32], trainable: &[Range<usize>]) {
        self.iterations += 1;
        let (lr, mu, nesterov) = (self.learning_rate, self.momentum, self.nesterov);
        if mu == 0.0 {
            ensure_len(&mut self.velocity, 0);
            for r in trainable {
                for (p, g) in params[r.clone()].iter_mut().zip(&grads[r.clone()]) {
                    *p -= lr * g;
                }
            }
            return;
        }
        ensure_len(&mut self.velocity, params.len());
        for r in trainable {
            params[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(grads[r.clone()].par_chunks(CHUNK))
                .zip(self.velocity[r.clone()].par_chunks_mut(CHUNK))
                .for_each(|((p, g), m)| {
                    for ((p, &g), m) in p.iter_mut().zip(g).zip(m) {
                        *m = mu * *m - lr * g;
                        *p += if nesterov { mu * *m - lr * g } else { *m };
                    }
                });
        }
    }
}
