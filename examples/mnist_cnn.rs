//! The Keras MNIST reference workflow, line for line. Run with
//! `KEEL_DATA_DIR=../shared/datasets cargo run --release --example mnist_cnn`.
use keel::prelude::*;

fn main() -> keel::Result<()> {
    let ((train_images, train_labels), (test_images, test_labels)) = mnist::load_data()?;
    let (train_images, test_images) = (train_images / 255.0, test_images / 255.0);
    let (train_labels_cat, test_labels_cat) =
        (to_categorical(&train_labels, None)?, to_categorical(&test_labels, None)?);
    let mut model = Sequential::new()
        .seed(42)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    let options = FitOptions { epochs: 5, batch_size: 128, validation_split: 0.1, ..FitOptions::default() };
    model.fit(&train_images.reshape(&[-1, 28, 28, 1])?, &train_labels_cat, &options)?;
    let scores = model.evaluate(&test_images.reshape(&[-1, 28, 28, 1])?, &test_labels_cat)?;
    println!("Test accuracy: {}", scores.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
