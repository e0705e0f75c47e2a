//! Synthetic data and small models shared by the model tests.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use keel::model::Verbosity;
use keel::prelude::*;
use keel::random::stream;
use rand::Rng as _;

/// A small CNN for 8x8 single-channel images.
pub fn small_cnn(seed: u64, classes: usize, head: Activation) -> Sequential {
    Sequential::new()
        .seed(seed)
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu).input_shape([8, 8, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(classes).activation(head))
}

/// `n` 8x8 images of `classes` kinds (a bright row band whose position is the
/// class) with noise, as bytes scaled by 1/255, and their labels.
pub fn stripes(n: usize, classes: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = stream(seed, 0);
    let mut pixels = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % classes;
        let band = class * 8 / classes;
        for r in 0..8 {
            for _ in 0..8 {
                let base = if r == band || r == band + 1 { 200 } else { 30 };
                pixels.push((base + rng.random_range(0..50)) as u8);
            }
        }
        labels.push(class as u8);
    }
    (Tensor::from_u8(&[n, 8, 8, 1], pixels).unwrap() / 255.0, Tensor::from_u8(&[n], labels).unwrap())
}

pub fn quiet(epochs: usize, batch_size: usize, validation_split: f64) -> FitOptions {
    FitOptions { epochs, batch_size, validation_split, verbose: Verbosity::Silent, ..FitOptions::default() }
}
