//! Keras' "Simple MNIST convnet" example: two conv/pool blocks, dropout, softmax.
//! Run with `KEEL_DATA_DIR=../shared/datasets cargo run --release --example mnist_convnet`.
use keel::prelude::*;

fn main() -> keel::Result<()> {
    let ((x_train, y_train), (x_test, y_test)) = mnist::load_data()?;
    let x_train = (x_train / 255.0).reshape(&[-1, 28, 28, 1])?;
    let x_test = (x_test / 255.0).reshape(&[-1, 28, 28, 1])?;
    let (y_train, y_test) = (to_categorical(&y_train, Some(10))?, to_categorical(&y_test, Some(10))?);
    let mut model = Sequential::new()
        .seed(42)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(64, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    model.summary()?;
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    let epochs = std::env::var("EPOCHS").ok().and_then(|e| e.parse().ok()).unwrap_or(15);
    let options = FitOptions { epochs, batch_size: 128, validation_split: 0.1, ..FitOptions::default() };
    model.fit(&x_train, &y_train, &options)?;
    let scores = model.evaluate(&x_test, &y_test)?;
    println!("Test loss: {:.4}", scores.loss);
    println!("Test accuracy: {:.4}", scores.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
