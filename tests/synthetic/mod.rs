//! Synthetic data and small models shared by the model tests.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use keel::model::Verbosity;
use keel::prelude::*;
use keel::random::stream;
use rand::Rng as _;

/// The reference model: Conv2D(32, 3x3, relu) -> MaxPooling2D -> Flatten -> Dense(10, softmax).
pub fn reference_model(seed: u64) -> Model {
    Sequential::new()
        .seed(seed)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax))
}

/// A small CNN for 8x8 single-channel images.
pub fn small_cnn(seed: u64, classes: usize, head: Activation) -> Model {
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

/// A small MNIST-shaped dataset whose classes are easy to tell apart.
pub fn write_synthetic_mnist(dir: &std::path::Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let mut pixels = vec![0u8; n * 784];
        for (img, &label) in pixels.chunks_mut(784).zip(&labels) {
            // Class k lights up rows 2k+4 .. 2k+6.
            for r in (2 * label as usize + 4)..(2 * label as usize + 6) {
                img[r * 28 + 4..r * 28 + 24].fill(255);
            }
        }
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            keel::datasets::idx::encode(&[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), keel::datasets::idx::encode(&[n], &labels))
            .unwrap();
    }
}
