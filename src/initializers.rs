//! Weight initialisers with Keras' defaults.

use crate::random::Rng;
use rand::Rng as _;

/// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)),
/// Keras' default kernel initialiser.
pub fn glorot_uniform(weights: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut Rng) {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    for w in weights {
        *w = rng.random_range(-limit..limit);
    }
}

/// Zeros, Keras' default bias initialiser.
pub fn zeros(weights: &mut [f32]) {
    weights.fill(0.0);
}
