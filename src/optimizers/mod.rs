//! Optimizers with Keras' defaults and update rules. Each updates the model's
//! flat parameter buffer from the flat gradient buffer, elementwise (so in
//! parallel and still deterministic).

mod adam;
mod rmsprop;
mod sgd;

pub use adam::Adam;
pub use rmsprop::RMSprop;
pub use sgd::SGD;

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task of an update.
const CHUNK: usize = 1 << 14;

/// Updates parameters from gradients.
pub trait Optimizer: Send {
    /// Keras' name for it: "adam".
    fn name(&self) -> &'static str;

    /// Current learning rate.
    fn learning_rate(&self) -> f32;

    /// Changes the learning rate (schedules, plateaus).
    fn set_learning_rate(&mut self, learning_rate: f32);

    /// Updates done so far.
    fn iterations(&self) -> u64;

    /// One update of every parameter: `params -= f(grads, state)`. State
    /// buffers are sized (as long as `params`) on the first call.
    fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        let all = 0..params.len();
        self.step_ranges(params, grads, std::slice::from_ref(&all));
    }

    /// One update of the parameters in `trainable` (ranges of the flat
    /// buffer); the others (frozen layers) and their state stay as they are.
    fn step_ranges(&mut self, params: &mut [f32], grads: &[f32], trainable: &[Range<usize>]);

    /// Its class and hyper-parameters, as saved in model files.
    fn config(&self) -> OptimizerConfig;

    /// State buffers by name ("m", "v"), each as long as the parameters, or
    /// empty before the first step. With `iterations`, all a resume needs.
    fn slots(&self) -> Vec<(&'static str, &[f32])>;

    /// The state buffers, to restore them.
    fn slots_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)>;

    /// Restores the update count (Adam's bias correction depends on it).
    fn set_iterations(&mut self, iterations: u64);
}

/// An optimizer's class and hyper-parameters (no state), as saved in model
/// files: `{"class_name": "Adam", "learning_rate": 0.001, ...}`; omitted
/// arguments take Keras' defaults.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "class_name")]
pub enum OptimizerConfig {
    Adam(Adam),
    SGD(SGD),
    RMSprop(RMSprop),
}

impl OptimizerConfig {
    /// A fresh optimizer (no state), after checking the hyper-parameters.
    pub fn to_optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let unit = |name: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!("{name} must be in [0, 1), got {v}")))
            }
        };
        let optimizer: Box<dyn Optimizer> = match self {
            OptimizerConfig::Adam(a) => {
                unit("beta_1", a.beta_1)?;
                unit("beta_2", a.beta_2)?;
                positive("epsilon", a.epsilon)?;
                Box::new(a.clone())
            }
            OptimizerConfig::SGD(s) => {
                unit("momentum", s.momentum)?;
                Box::new(s.clone())
            }
            OptimizerConfig::RMSprop(r) => {
                unit("rho", r.rho)?;
                unit("momentum", r.momentum)?;
                positive("epsilon", r.epsilon)?;
                Box::new(r.clone())
            }
        };
        check_learning_rate(optimizer.learning_rate())?;
        Ok(optimizer)
    }
}

fn positive(name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{name} must be a positive number, got {v}")))
    }
}

/// Learning rates must be positive and finite.
pub fn check_learning_rate(lr: f32) -> Result<()> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("learning rate must be a positive number, got {lr}")))
    }
}

impl<O: Optimizer + 'static> From<O> for Box<dyn Optimizer> {
    fn from(optimizer: O) -> Self {
        Box::new(optimizer)
    }
}

/// An optimizer by Keras name with its defaults, optionally with another learning rate.
pub fn from_name(name: &str, learning_rate: Option<f32>) -> Result<Box<dyn Optimizer>> {
    let mut opt: Box<dyn Optimizer> = match name.to_ascii_lowercase().as_str() {
        "adam" => Box::new(Adam::default()),
        "sgd" => Box::new(SGD::default()),
        "rmsprop" => Box::new(RMSprop::default()),
        _ => {
            return Err(Error::InvalidArgument(format!("unknown optimizer '{name}'; expected adam, sgd or rmsprop")));
        }
    };
    if let Some(lr) = learning_rate {
        check_learning_rate(lr)?;
        opt.set_learning_rate(lr);
    }
    Ok(opt)
}

/// Runs `update(param, grad, slot_a, slot_b)` over every element of the
/// `trainable` ranges in parallel chunks (slots as long as the parameters).
fn update_each(
    params: &mut [f32],
    grads: &[f32],
    (a, b): (&mut [f32], &mut [f32]),
    trainable: &[Range<usize>],
    update: impl Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
) {
    for r in trainable {
        params[r.clone()]
            .par_chunks_mut(CHUNK)
            .zip(grads[r.clone()].par_chunks(CHUNK))
            .zip(a[r.clone()].par_chunks_mut(CHUNK).zip(b[r.clone()].par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (a, b))| {
                for (((p, &g), a), b) in p.iter_mut().zip(g).zip(a.iter_mut()).zip(b.iter_mut()) {
                    update(p, g, a, b);
                }
            });
    }
}

/// Sizes an optimizer's state buffer to the parameters (zeros), once.
fn ensure_len(slot: &mut Vec<f32>, len: usize) {
    if slot.len() != len {
        *slot = vec![0.0; len];
    }
}
