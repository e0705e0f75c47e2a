//! ONNX export checked by an independent runtime: tract loads the exported
//! file and must compute what keel's predict does, within 1e-5.

mod synthetic;

use keel::datasets::{DataSource, mnist};
use keel::prelude::*;
use keel::random::stream;
use rand::Rng as _;
use synthetic::quiet;
use tract_onnx::prelude::*;

/// Runs the ONNX file at `path` on `x` with tract; returns the flat output.
fn run_tract(path: &std::path::Path, x: &keel::tensor::Tensor) -> Vec<f32> {
    let input = tract_onnx::prelude::Tensor::from_shape(x.shape(), &x.to_f32_vec()).unwrap();
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(x.shape()).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

fn assert_matches(what: &str, model: &mut Sequential, x: &keel::tensor::Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    model.export_onnx(&path).unwrap();
    let want = model.predict(x).unwrap().to_f32_vec();
    let got = run_tract(&path, x);
    assert_eq!(got.len(), want.len(), "{what}: output sizes differ");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: tract and keel differ by up to {worst}");
}

fn random_images(n: usize, shape: [usize; 3], seed: u64) -> keel::tensor::Tensor {
    let mut rng = stream(seed, 0);
    let len = n * shape.iter().product::<usize>();
    let mut dims = vec![n];
    dims.extend(shape);
    keel::tensor::Tensor::from_vec(&dims, (0..len).map(|_| rng.random_range(0.0..1.0)).collect()).unwrap()
}

#[test]
fn every_layer_exports_and_runs_the_same_in_tract() {
    let models: Vec<(&str, [usize; 3], Sequential)> = vec![
        (
            "reference",
            [28, 28, 1],
            Sequential::new()
                .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu))
                .add(MaxPooling2D::new((2, 2)))
                .add(Flatten::new())
                .add(Dense::new(10).activation(Activation::Softmax)),
        ),
        (
            "same padding, strides, colour, tanh, no bias, dropout",
            [9, 11, 3],
            Sequential::new()
                .add(Conv2D::new(8, (3, 3)).padding(Padding::Same).strides((2, 1)).activation(Activation::Tanh))
                .add(MaxPooling2D::new((2, 2)).strides((1, 2)).padding(Padding::Same))
                .add(Conv2D::new(6, (2, 3)).use_bias(false).activation(Activation::Sigmoid))
                .add(Flatten::new())
                .add(Dropout::new(0.5))
                .add(Dense::new(16).activation(Activation::Relu))
                .add(Dense::new(3))
                .add(ActivationLayer::new(Activation::Softmax)),
        ),
        (
            "preprocessing: rescaling, normalization, resizing, augmentations, centre crop",
            [10, 9, 3],
            Sequential::new()
                .add(Rescaling::new(2.0).offset(-0.5))
                .add(Normalization::with_statistics(vec![0.1, 0.2, 0.3], vec![1.5, 0.5, 2.0]))
                .add(RandomFlip::new(FlipMode::Horizontal))
                .add(Resizing::new(13, 7))
                .add(RandomTranslation::new(0.1, 0.1))
                .add(RandomRotation::new(0.1))
                .add(RandomCrop::new(9, 5).padding(1))
                .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
                .add(Flatten::new())
                .add(Dense::new(3).activation(Activation::Softmax)),
        ),
        (
            "dense on feature maps, softmax over channels",
            [5, 5, 2],
            Sequential::new()
                .add(Conv2D::new(4, (1, 1)))
                .add(Dense::new(7).activation(Activation::Tanh))
                .add(Conv2D::new(5, (3, 3)).activation(Activation::Softmax)),
        ),
    ];
    for (i, (what, shape, model)) in models.into_iter().enumerate() {
        let mut model = model.seed(i as u64).input_shape(shape);
        model.build().unwrap();
        assert_matches(what, &mut model, &random_images(5, shape, i as u64));
    }
}

#[test]
fn a_trained_mnist_model_exports_exactly() {
    // Real inputs where the dataset is available (CI sets KEEL_DATA_DIR).
    let Ok(((x, y), (x_test, _))) = mnist::load_data_from(&DataSource::from_env()) else {
        eprintln!("MNIST not found (set KEEL_DATA_DIR); checking on random inputs only");
        return;
    };
    let x = (x / 255.0).reshape(&[-1, 28, 28, 1]).unwrap().slice_rows(0, 6000).unwrap();
    let y = to_categorical(&y, Some(10)).unwrap().slice_rows(0, 6000).unwrap();
    let mut model = Sequential::new()
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &y, &quiet(1, 128, 0.0)).unwrap();
    let test = (x_test / 255.0).reshape(&[-1, 28, 28, 1]).unwrap().slice_rows(0, 500).unwrap();
    assert_matches("trained on MNIST", &mut model, &test);
}
