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

fn assert_matches(what: &str, model: &mut Model, x: &keel::tensor::Tensor) {
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
    let models: Vec<(&str, [usize; 3], Model)> = vec![
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

/// A graph with every graph layer: residual Add (of a value used twice),
/// Concatenate, BatchNormalization on images and on vectors (trained, so its
/// statistics are not the defaults), average, global and zero-padding layers,
/// Reshape, and a value read in both layouts.
fn graph_model() -> Model {
    let inputs = Input::new([9, 9, 3]);
    let a = Conv2D::new(6, (3, 3)).padding(Padding::Same).activation(Activation::Relu).apply(&inputs).unwrap();
    let b = Conv2D::new(6, (3, 3)).padding(Padding::Same).apply(&a).unwrap();
    let b = BatchNormalization::new().apply(&b).unwrap();
    let sum = Add::new().apply(&[&a, &b]).unwrap();
    let three = Add::new().apply(&[&sum, &a, &b]).unwrap();
    let padded = ZeroPadding2D::new(((1, 0), (2, 1))).apply(&three).unwrap();
    let pooled = AveragePooling2D::new((3, 3)).strides((2, 2)).padding(Padding::Same).apply(&padded).unwrap();
    let side = MaxPooling2D::new((2, 2)).apply(&inputs).unwrap();
    let side = Reshape::new([-1, 3]).apply(&side).unwrap();
    let side = Flatten::new().apply(&side).unwrap();
    let gap = GlobalAveragePooling2D::new().apply(&pooled).unwrap();
    let gmp = GlobalMaxPooling2D::new().apply(&sum).unwrap();
    let joined = Concatenate::new().apply(&[&gap, &gmp, &side]).unwrap();
    let dense = Dense::new(8).apply(&joined).unwrap();
    let dense = BatchNormalization::new().apply(&dense).unwrap();
    let maps = Concatenate::new().apply(&[&a, &three]).unwrap();
    let maps = GlobalAveragePooling2D::new().apply(&maps).unwrap();
    let all = Concatenate::new().apply(&[&dense, &maps]).unwrap();
    let out = Dense::new(4).activation(Activation::Softmax).apply(&all).unwrap();
    Model::new(&inputs, &out).unwrap()
}

#[test]
fn functional_graphs_export_and_run_the_same_in_tract() {
    let mut model = graph_model();
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let x = random_images(40, [9, 9, 3], 11);
    let labels = keel::tensor::Tensor::from_vec(&[40], (0..40).map(|i| (i % 4) as f32).collect()).unwrap();
    model.fit(&x, &to_categorical(&labels, Some(4)).unwrap(), &quiet(2, 10, 0.0)).unwrap();
    assert!(model.state().unwrap().iter().any(|&v| v != 0.0 && v != 1.0), "statistics were trained");
    assert_matches("functional graph", &mut model, &random_images(5, [9, 9, 3], 12));
}

#[test]
fn resnet20_exports_and_runs_the_same_in_tract() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/resnet20.toml");
    let mut model = Model::from_architecture(&keel::model::Architecture::read(path).unwrap()).unwrap();
    // Non-default moving statistics, so that the export must carry them.
    let state: Vec<f32> = (0..model.state().unwrap().len()).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
    model.state_mut().unwrap().copy_from_slice(&state);
    assert_matches("ResNet-20", &mut model, &random_images(3, [32, 32, 3], 13));
}

#[test]
fn every_activation_exports_and_runs_the_same_in_tract() {
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        // As a conv's own activation (channels-first in ONNX) and as a layer on vectors.
        let mut model = Sequential::new()
            .seed(i as u64)
            .add(Conv2D::new(3, (3, 3)).activation(act).input_shape([6, 6, 2]))
            .add(Flatten::new())
            .add(Dense::new(4))
            .add(ActivationLayer::new(act));
        model.build().unwrap();
        // Inputs over [-4, 4], so every part of every activation is used.
        let x = random_images(4, [6, 6, 2], 20 + i as u64);
        let x =
            keel::tensor::Tensor::from_vec(x.shape(), x.to_f32_vec().iter().map(|v| 8.0 * v - 4.0).collect()).unwrap();
        assert_matches(act.name(), &mut model, &x);
    }
}

#[test]
fn depthwise_convolutions_export_as_grouped_convolutions() {
    let mut model = Sequential::new()
        .input_shape([9, 8, 3])
        .add(DepthwiseConv2D::new((3, 3)).padding(Padding::Same).activation(Activation::Relu6))
        .add(DepthwiseConv2D::new((3, 2)).strides((2, 2)).padding(Padding::Same).depth_multiplier(2).use_bias(false))
        .add(DepthwiseConv2D::new((2, 2)).dilation_rate((2, 2)))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    model.build().unwrap();
    assert_matches("depthwise", &mut model, &random_images(3, [9, 8, 3], 30));
}

#[test]
fn imagenet_size_models_export_and_run_the_same_in_tract() {
    for (file, params) in [("mobilenet_v2.toml", 3_538_984), ("resnet50.toml", 25_636_712)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models").join(file);
        let mut model = Model::from_architecture(&keel::model::Architecture::read(path).unwrap()).unwrap();
        assert_eq!(model.count_params().unwrap(), params, "{file}");
        // Non-default moving statistics, so that the export must carry them.
        let state: Vec<f32> = (0..model.state().unwrap().len()).map(|i| 0.5 + (i % 5) as f32 * 0.2).collect();
        model.state_mut().unwrap().copy_from_slice(&state);
        assert_matches(file, &mut model, &random_images(1, [224, 224, 3], 40));
    }
}

#[test]
fn separable_multiply_prelu_cropping_and_upsampling_export_and_run_the_same_in_tract() {
    // A squeeze-and-excitation block (Multiply by one value per channel) among the rest.
    let inputs = Input::new([8, 8, 3]);
    let x = SeparableConv2D::new(6, (3, 3)).padding(Padding::Same).depth_multiplier(2).activation(Activation::Silu);
    let x = x.apply(&inputs).unwrap();
    let x = PReLU::new().shared_axes(vec![1, 2]).apply(&x).unwrap();
    let squeeze = GlobalAveragePooling2D::new().apply(&x).unwrap();
    let excite = Dense::new(6).activation(Activation::HardSigmoid).apply(&squeeze).unwrap();
    let excite = Reshape::new([1, 1, 6]).apply(&excite).unwrap();
    let x = Multiply::new().apply(&[&x, &excite]).unwrap();
    let x = Cropping2D::new(((1, 2), (0, 1))).apply(&x).unwrap();
    let x = UpSampling2D::new((2, 1)).apply(&x).unwrap();
    let x = SpatialDropout2D::new(0.3).apply(&x).unwrap();
    let x = UpSampling2D::new((2, 2)).interpolation(Interpolation::Bilinear).apply(&x).unwrap();
    let x = SeparableConv2D::new(4, (3, 3)).strides((2, 2)).apply(&x).unwrap();
    let x = Flatten::new().apply(&x).unwrap();
    let outputs = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
    let mut model = Model::new(&inputs, &outputs).unwrap();
    model.build().unwrap();
    // Non-zero PReLU slopes, so that the negative side is compared too.
    let alpha = model.weights().unwrap().into_iter().find(|w| w.name.ends_with("/alpha")).unwrap();
    model.params_mut().unwrap()[alpha.range].iter_mut().enumerate().for_each(|(i, a)| *a = 0.1 * i as f32);
    let x = random_images(3, [8, 8, 3], 60);
    let x = keel::tensor::Tensor::from_vec(x.shape(), x.to_f32_vec().iter().map(|v| 4.0 * v - 2.0).collect()).unwrap();
    assert_matches("SeparableConv2D, PReLU, Multiply, Cropping2D, UpSampling2D", &mut model, &x);
}

#[test]
fn dilated_and_grouped_convolutions_export_and_run_the_same_in_tract() {
    let mut model = Sequential::new()
        .input_shape([9, 9, 4])
        .add(Conv2D::new(6, (3, 3)).dilation_rate((2, 2)).padding(Padding::Same).activation(Activation::Relu))
        .add(Conv2D::new(4, (3, 3)).groups(2).strides((2, 2)))
        .add(Conv2D::new(4, (2, 2)).groups(4).dilation_rate((1, 2)).activation(Activation::Gelu))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    model.build().unwrap();
    let x = random_images(3, [9, 9, 4], 70);
    assert_matches("dilated and grouped Conv2D", &mut model, &x);
}

#[test]
fn relu_family_layers_export_and_run_the_same_in_tract() {
    let mut model = Sequential::new()
        .input_shape([5, 5, 2])
        .add(ReLU::new().max_value(6.0))
        .add(Conv2D::new(4, (3, 3)))
        .add(ReLU::new().negative_slope(0.1).threshold(0.2))
        .add(LeakyReLU::default())
        .add(Conv2D::new(3, (2, 2)))
        .add(ELU::new(0.5))
        .add(ReLU::new().negative_slope(0.2).max_value(0.8))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    model.build().unwrap();
    let x = random_images(4, [5, 5, 2], 50);
    let x = keel::tensor::Tensor::from_vec(x.shape(), x.to_f32_vec().iter().map(|v| 16.0 * v - 8.0).collect()).unwrap();
    assert_matches("ReLU, LeakyReLU, ELU", &mut model, &x);
}
