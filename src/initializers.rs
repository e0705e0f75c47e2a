//! Weight initialisers with Keras' names, defaults and fan computation.

use crate::random::Rng;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// How a weight starts, as Keras' `kernel_initializer=` / `bias_initializer=`
/// strings. Fans come from the weight's shape as Keras computes them: a
/// vector has fan_in = fan_out = its length, a matrix (in, out), and a
/// convolution kernel (KH, KW, in, out) multiplies both by KH * KW.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initializer {
    /// U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Keras' default for kernels.
    #[default]
    GlorotUniform,
    /// Truncated normal (cut at 2 standard deviations), stddev sqrt(2 / fan_in).
    HeNormal,
    /// U(-l, l), l = sqrt(6 / fan_in).
    HeUniform,
    /// Truncated normal, stddev sqrt(2 / (fan_in + fan_out)).
    GlorotNormal,
    /// Truncated normal, stddev sqrt(1 / fan_in) (for selu networks).
    LecunNormal,
    /// U(-l, l), l = sqrt(3 / fan_in).
    LecunUniform,
    /// Normal with stddev 0.05, redrawn beyond two standard deviations (Keras' `TruncatedNormal()`).
    TruncatedNormal,
    /// Keras' default for biases and BatchNormalization's beta and moving mean.
    Zeros,
    /// BatchNormalization's gamma and moving variance.
    Ones,
}

impl Initializer {
    /// Keras' name.
    pub fn name(self) -> &'static str {
        match self {
            Initializer::GlorotUniform => "glorot_uniform",
            Initializer::HeNormal => "he_normal",
            Initializer::HeUniform => "he_uniform",
            Initializer::GlorotNormal => "glorot_normal",
            Initializer::LecunNormal => "lecun_normal",
            Initializer::LecunUniform => "lecun_uniform",
            Initializer::TruncatedNormal => "truncated_normal",
            Initializer::Zeros => "zeros",
            Initializer::Ones => "ones",
        }
    }

    /// Fills `weights`, of Keras shape `shape`, drawing from `rng`.
    pub fn fill(self, weights: &mut [f32], shape: &[usize], rng: &mut Rng) {
        let (fan_in, fan_out) = fans(shape);
        match self {
            Initializer::GlorotUniform => glorot_uniform(weights, fan_in, fan_out, rng),
            Initializer::HeUniform => uniform(weights, (6.0 / fan_in.max(1) as f64).sqrt(), rng),
            Initializer::LecunUniform => uniform(weights, (3.0 / fan_in.max(1) as f64).sqrt(), rng),
            // Keras' VarianceScaling(scale, mode, truncated_normal): the stddev is
            // divided by that of a standard normal cut at +-2 (0.8796...).
            Initializer::HeNormal => variance_scaling(weights, 2.0 / fan_in.max(1) as f64, rng),
            Initializer::GlorotNormal => variance_scaling(weights, 2.0 / (fan_in + fan_out).max(1) as f64, rng),
            Initializer::LecunNormal => variance_scaling(weights, 1.0 / fan_in.max(1) as f64, rng),
            Initializer::TruncatedNormal => {
                for w in weights {
                    *w = (truncated_normal(rng) * 0.05) as f32;
                }
            }
            Initializer::Zeros => weights.fill(0.0),
            Initializer::Ones => weights.fill(1.0),
        }
    }
}

/// (fan_in, fan_out) of a weight shape, as Keras' `compute_fans`.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [i, o] => (*i, *o),
        [spatial @ .., i, o] => {
            let receptive: usize = spatial.iter().product();
            (receptive * i, receptive * o)
        }
    }
}

/// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)),
/// Keras' default kernel initialiser.
pub fn glorot_uniform(weights: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut Rng) {
    uniform(weights, (6.0 / (fan_in + fan_out).max(1) as f64).sqrt(), rng);
}

/// Truncated normal draws of variance `variance` (before the cut at 2 standard deviations).
fn variance_scaling(weights: &mut [f32], variance: f64, rng: &mut Rng) {
    let std = variance.sqrt() / 0.879_625_661_034_239_8;
    for w in weights {
        *w = (truncated_normal(rng) * std) as f32;
    }
}

fn uniform(weights: &mut [f32], limit: f64, rng: &mut Rng) {
    let limit = limit as f32;
    for w in weights {
        *w = rng.random_range(-limit..limit);
    }
}

/// A standard normal draw cut at +-2 (redrawn outside), by Box-Muller.
fn truncated_normal(rng: &mut Rng) -> f64 {
    loop {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// Zeros, Keras' default bias initialiser.
pub fn zeros(weights: &mut [f32]) {
    weights.fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::stream;

    #[test]
    fn every_initializer_has_its_keras_spread() {
        // (initializer, expected standard deviation) for a (3, 3, 16, 32) kernel: fans 144 and 288.
        let cases = [
            (Initializer::GlorotUniform, (6.0f64 / 432.0).sqrt() / 3f64.sqrt()),
            (Initializer::GlorotNormal, (2.0f64 / 432.0).sqrt()),
            (Initializer::HeNormal, (2.0f64 / 144.0).sqrt()),
            (Initializer::HeUniform, (6.0f64 / 144.0).sqrt() / 3f64.sqrt()),
            (Initializer::LecunNormal, (1.0f64 / 144.0).sqrt()),
            (Initializer::LecunUniform, (3.0f64 / 144.0).sqrt() / 3f64.sqrt()),
            (Initializer::TruncatedNormal, 0.05 * 0.879_625_661_034_239_8),
        ];
        for (init, want) in cases {
            let mut w = vec![0.0; 100_000];
            init.fill(&mut w, &[3, 3, 16, 32], &mut stream(5, 1));
            let std = (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
            assert!((std / want - 1.0).abs() < 0.02, "{}: std {std} vs {want}", init.name());
            let parsed: Initializer = serde_json::from_str(&format!("\"{}\"", init.name())).unwrap();
            assert_eq!(parsed, init);
        }
    }

    #[test]
    fn fans_follow_keras() {
        assert_eq!(fans(&[3, 3, 16, 32]), (144, 288));
        assert_eq!(fans(&[5408, 10]), (5408, 10));
        assert_eq!(fans(&[10]), (10, 10));
    }

    #[test]
    fn he_normal_has_the_keras_spread_and_cut() {
        let mut w = vec![0.0; 200_000];
        Initializer::HeNormal.fill(&mut w, &[3, 3, 16, 32], &mut stream(1, 2));
        let std = (2.0f64 / 144.0).sqrt();
        let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var.sqrt() / std - 1.0).abs() < 0.01, "std {} vs {std}", var.sqrt());
        let cut = 2.0 * std / 0.879_625_661_034_239_8;
        assert!(w.iter().all(|&v| (v as f64).abs() <= cut + 1e-6));
        let mut u = vec![0.0; 10_000];
        Initializer::HeUniform.fill(&mut u, &[100, 10], &mut stream(1, 3));
        let limit = (6.0f32 / 100.0).sqrt();
        assert!(u.iter().all(|v| v.abs() <= limit) && u.iter().any(|v| v.abs() > 0.9 * limit));
    }
}
