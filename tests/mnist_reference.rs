//! The reference workflow on real MNIST must reach Keras' accuracy. Runs when
//! KEEL_DATA_DIR points at a directory holding mnist/ (CI sets it); run it in
//! release mode (`cargo test --release`), where it takes seconds.
//!
//! Single runs spread around 0.980, for Keras as for keel: keel's seeds 1-8
//! gave 0.9789-0.9816 (mean 0.9802), Keras' own runs here 0.9784-0.9811. The
//! threshold, 0.978, is the bottom of that spread: a run below it is a
//! regression, not bad luck. The reference model's kernels add in a fixed
//! order (no cache-dependent blocking), so this run, seed 42, is bit-identical
//! on x86-64 CPUs with AVX2 and FMA (same libm), whatever the thread count: it
//! gives 0.9797 there.

use keel::model::Verbosity;
use keel::prelude::*;

#[test]
fn reference_workflow_reaches_098_test_accuracy() {
    if std::env::var_os("KEEL_DATA_DIR").is_none() {
        eprintln!("KEEL_DATA_DIR is not set: skipping the real-MNIST accuracy check");
        return;
    }
    let ((train_images, train_labels), (test_images, test_labels)) = mnist::load_data().unwrap();
    assert_eq!(train_images.shape(), &[60_000, 28, 28]);
    assert_eq!(test_images.shape(), &[10_000, 28, 28]);
    let train_images = (train_images / 255.0).reshape(&[-1, 28, 28, 1]).unwrap();
    let test_images = (test_images / 255.0).reshape(&[-1, 28, 28, 1]).unwrap();
    let train_labels = to_categorical(&train_labels, None).unwrap();
    let test_labels = to_categorical(&test_labels, None).unwrap();
    let mut model = Sequential::new()
        .seed(42)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let options = FitOptions {
        epochs: 5,
        batch_size: 128,
        validation_split: 0.1,
        verbose: Verbosity::OneLinePerEpoch,
        ..FitOptions::default()
    };
    let history = model.fit(&train_images, &train_labels, &options).unwrap();
    assert_eq!(history.epochs.len(), 5);
    assert!(history.last().unwrap().get("val_accuracy").unwrap() >= 0.975, "{history:?}");
    let test_accuracy = model.evaluate(&test_images, &test_labels).unwrap().accuracy().unwrap();
    println!("Test accuracy: {test_accuracy}");
    assert!(test_accuracy >= 0.978, "test accuracy {test_accuracy} below the spread of Keras' runs (0.978-0.981)");
}
