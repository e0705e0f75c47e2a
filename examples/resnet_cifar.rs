//! ResNet-20 v1 on CIFAR-10 with the functional API, as the classic Keras
//! CIFAR-10 ResNet example builds it (`resnet_v1`, depth 20). Run with
//! `KEEL_DATA_DIR=DIR cargo run --release --example resnet_cifar -- [EPOCHS]`
//! (DIR holding cifar10/, else CIFAR-10 is downloaded into the cache).
//! `examples/models/resnet20.toml` is the same network as a model file.
use keel::datasets::cifar;
use keel::prelude::*;

/// Conv2D (3x3 by default, same padding, he_normal, L2 1e-4) -> BatchNormalization -> activation,
/// as the example's `resnet_layer`.
fn conv_bn(
    x: &SymbolicTensor,
    filters: usize,
    kernel: usize,
    strides: usize,
    relu: bool,
) -> keel::Result<SymbolicTensor> {
    let conv = Conv2D::new(filters, (kernel, kernel))
        .strides((strides, strides))
        .padding(Padding::Same)
        .kernel_initializer(Initializer::HeNormal)
        .kernel_regularizer(Regularizer::l2(1e-4));
    let x = BatchNormalization::new().apply(&conv.apply(x)?)?;
    if relu { ActivationLayer::new(Activation::Relu).apply(&x) } else { Ok(x) }
}

/// ResNet v1 of `depth` = 6n + 2 layers: three stages of n basic blocks with
/// 16, 32 and 64 filters, a 1x1 convolution shortcut where the shape changes.
fn resnet_v1(input_shape: [usize; 3], depth: usize, classes: usize) -> keel::Result<Model> {
    let inputs = Input::new(input_shape);
    let mut x = conv_bn(&inputs, 16, 3, 1, true)?;
    let mut filters = 16;
    for stage in 0..3 {
        for block in 0..(depth - 2) / 6 {
            let strides = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = conv_bn(&x, filters, 3, strides, true)?;
            let y = conv_bn(&y, filters, 3, 1, false)?;
            if strides == 2 {
                // The shortcut: a 1x1 convolution without BatchNormalization.
                let conv = Conv2D::new(filters, (1, 1))
                    .strides((2, 2))
                    .padding(Padding::Same)
                    .kernel_initializer(Initializer::HeNormal)
                    .kernel_regularizer(Regularizer::l2(1e-4));
                x = conv.apply(&x)?;
            }
            let sum = Add::new().apply(&[&x, &y])?;
            x = ActivationLayer::new(Activation::Relu).apply(&sum)?;
        }
        filters *= 2;
    }
    let x = GlobalAveragePooling2D::new().apply(&x)?;
    let outputs =
        Dense::new(classes).activation(Activation::Softmax).kernel_initializer(Initializer::HeNormal).apply(&x)?;
    Model::new(&inputs, &outputs)
}

fn main() -> keel::Result<()> {
    let epochs = std::env::args()
        .nth(1)
        .map_or(Ok(5), |e| e.parse())
        .map_err(|_| keel::Error::InvalidArgument("the argument is the number of epochs, e.g. 5".into()))?;
    let ((x_train, y_train), (x_test, y_test)) = cifar::load_cifar10()?;
    let (x_train, x_test) = (x_train / 255.0, x_test / 255.0);
    let (y_train, y_test) = (to_categorical(&y_train, Some(10))?, to_categorical(&y_test, Some(10))?);
    let mut model = resnet_v1([32, 32, 3], 20, 10)?.seed(42);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    model.summary()?;
    let options = FitOptions { epochs, batch_size: 128, validation_split: 0.1, ..FitOptions::default() };
    model.fit(&x_train, &y_train, &options)?;
    let scores = model.evaluate(&x_test, &y_test)?;
    println!("Test accuracy: {}", scores.accuracy().unwrap_or(f64::NAN));
    Ok(())
}
