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

    /// One update: `params -= f(grads, state)`. State buffers are sized on the first call.
    fn step(&mut self, params: &mut [f32], grads: &[f32]);
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
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidArgument(format!("learning rate must be a positive number, got {lr}")));
        }
        opt.set_learning_rate(lr);
    }
    Ok(opt)
}

/// Runs `update(param, grad, slot_a, slot_b)` over every element in parallel chunks.
fn update_each(
    params: &mut [f32],
    grads: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    update: impl Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
) {
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(a.par_chunks_mut(CHUNK).zip(b.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (a, b))| {
            for (((p, &g), a), b) in p.iter_mut().zip(g).zip(a.iter_mut()).zip(b.iter_mut()) {
                update(p, g, a, b);
            }
        });
}

/// Sizes an optimizer's state buffer to the parameters (zeros), once.
fn ensure_len(slot: &mut Vec<f32>, len: usize) {
    if slot.len() != len {
        *slot = vec![0.0; len];
    }
}
