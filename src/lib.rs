//! keel: Keras-style deep learning for image classification, in pure Rust.
//!
//! The reference workflow, as in Keras:
//!
//! ```no_run
//! use keel::prelude::*;
//!
//! # fn main() -> keel::Result<()> {
//! let ((train_images, train_labels), (test_images, test_labels)) = mnist::load_data()?;
//! let (train_images, test_images) = (train_images / 255.0, test_images / 255.0);
//! let train_labels_cat = to_categorical(&train_labels, None)?;
//! let test_labels_cat = to_categorical(&test_labels, None)?;
//! let mut model = Sequential::new()
//!     .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
//!     .add(MaxPooling2D::new((2, 2)))
//!     .add(Flatten::new())
//!     .add(Dense::new(10).activation(Activation::Softmax));
//! model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
//! let train_images = train_images.reshape(&[-1, 28, 28, 1])?;
//! model.fit(&train_images, &train_labels_cat, &FitOptions { epochs: 5, batch_size: 128, validation_split: 0.1, ..Default::default() })?;
//! let scores = model.evaluate(&test_images.reshape(&[-1, 28, 28, 1])?, &test_labels_cat)?;
//! println!("Test accuracy: {}", scores.accuracy().unwrap_or(f64::NAN));
//! # Ok(())
//! # }
//! ```
//!
//! Architecture: [`tensor`] holds data, [`kernels`] the math over plain slices,
//! [`layers`] wrap kernels with shapes and parameters, [`model`] joins them
//! into a graph (`Sequential` or the functional API), builds, trains
//! ([`model::Model::fit`]), evaluates and predicts, [`optimizers`],
//! [`losses`] and [`metrics`] are what `compile` takes, [`datasets`] loads data
//! and [`io`] writes files safely; [`distributed`] trains across processes.

pub mod activations;
pub mod callbacks;
pub mod classical;
pub mod datasets;
pub mod device;
pub mod distributed;
pub mod error;
pub mod initializers;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod optimizers;
pub mod plots;
pub mod random;
pub mod regularizers;
pub mod serve;
pub mod tensor;
pub mod utils;

pub use error::{Error, Result};

/// Everything the reference workflow needs, in one `use`.
pub mod prelude {
    pub use crate::activations::Activation;
    pub use crate::datasets::mnist;
    pub use crate::error::{Error, Result};
    pub use crate::initializers::Initializer;
    pub use crate::layers::{
        ActivationLayer, Add, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Cropping2D, Dense,
        DepthwiseConv2D, Dropout, ELU, Flatten, FlipMode, GlobalAveragePooling2D, GlobalMaxPooling2D, Interpolation,
        Layer, LeakyReLU, MaxPooling2D, Multiply, Normalization, PReLU, Padding, RandomCrop, RandomFlip,
        RandomRotation, RandomTranslation, ReLU, Rescaling, Reshape, Resizing, SeparableConv2D, SpatialDropout2D,
        UpSampling2D, ZeroPadding2D,
    };
    pub use crate::losses::{Loss, LossConfig};
    pub use crate::metrics::Metric;
    pub use crate::model::{Evaluation, FitOptions, History, Input, LayerExt, Model, Sequential, SymbolicTensor};
    pub use crate::optimizers::{Adagrad, Adam, AdamW, LearningRateSchedule, Nadam, Optimizer, RMSprop, SGD};
    pub use crate::regularizers::Regularizer;
    pub use crate::tensor::Tensor;
    pub use crate::utils::{argmax, to_categorical};
}
