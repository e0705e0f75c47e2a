//! Functional models: residual and multi-branch graphs trained, checked
//! against finite differences, saved and loaded; BatchNormalization state,
//! trainable flags, regularisation, model files with `inputs`, ResNet-20, and
//! the errors a bad graph gets.

mod synthetic;

use keel::model::{Architecture, Verbosity};
use keel::prelude::*;
use synthetic::{quiet, stripes};

/// 8x8x1 -> a residual block whose first convolution's output feeds both the
/// second convolution and the Add, a concatenation with a branch of the
/// input, frozen BatchNormalization, padding and pooling, a softmax head.
fn residual_model(seed: u64, frozen_bn: bool) -> Model {
    let inputs = Input::new([8, 8, 1]);
    let a = Conv2D::new(4, (3, 3))
        .padding(Padding::Same)
        .activation(Activation::Tanh)
        .kernel_regularizer(Regularizer::l2(0.01))
        .apply(&inputs)
        .unwrap();
    let b = Conv2D::new(4, (3, 3)).padding(Padding::Same).kernel_initializer(Initializer::HeNormal).apply(&a).unwrap();
    let sum = Add::new().named("residual").apply(&[&a, &b]).unwrap();
    let bn = BatchNormalization::new().trainable(!frozen_bn).apply(&sum).unwrap();
    let branch = AveragePooling2D::new((2, 2)).strides((1, 1)).padding(Padding::Same).apply(&inputs).unwrap();
    let joined = Concatenate::new().apply(&[&bn, &branch]).unwrap();
    let padded = ZeroPadding2D::symmetric(1).apply(&joined).unwrap();
    let pooled = GlobalAveragePooling2D::new().apply(&padded).unwrap();
    let peak = GlobalMaxPooling2D::new().apply(&joined).unwrap();
    let both = Concatenate::new().apply(&[&pooled, &peak]).unwrap();
    let outputs = Dense::new(4).activation(Activation::Softmax).kernel_initializer(Initializer::HeUniform).apply(&both);
    Model::new(&inputs, &outputs.unwrap()).unwrap().seed(seed)
}

fn compiled(mut model: Model, optimizer: impl Into<Box<dyn Optimizer>>) -> Model {
    model.compile(optimizer, Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model
}

#[test]
fn graph_gradients_match_finite_differences_of_the_loss() {
    check_gradients(residual_model(3, true));
}

/// Residual blocks whose Add hands its output's gradient to its last input
/// (a buffer swap, not a copy), the first input also feeding the block.
#[test]
fn gradients_an_add_hands_to_its_input_match_finite_differences() {
    let inputs = Input::new([8, 8, 1]);
    let conv = || Conv2D::new(4, (3, 3)).padding(Padding::Same).activation(Activation::Tanh);
    let a = conv().apply(&inputs).unwrap();
    let b = conv().apply(&a).unwrap();
    let sum = Add::new().apply(&[&a, &b]).unwrap();
    let c = conv().apply(&sum).unwrap();
    let sum = Add::new().apply(&[&sum, &c]).unwrap();
    let flat = Flatten::new().apply(&sum).unwrap();
    let outputs = Dense::new(4).activation(Activation::Softmax).apply(&flat).unwrap();
    check_gradients(Model::new(&inputs, &outputs).unwrap().seed(4));
}

/// The gradient of one full-batch step against central differences of the
/// loss, every fifth parameter.
fn check_gradients(model: Model) {
    let (x, labels) = stripes(12, 4, 1);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = compiled(model, SGD::new(1e-9));
    let start = model.params().unwrap().to_vec();
    // One full-batch step: grads() is then the gradient at `start`, L2 included.
    let options = FitOptions { shuffle: false, ..quiet(1, 12, 0.0) };
    model.fit(&x, &y, &options).unwrap();
    let grads = model.grads().unwrap().to_vec();
    let mut loss_at = |params: &[f32]| {
        model.params_mut().unwrap().copy_from_slice(params);
        model.evaluate(&x, &y).unwrap().loss
    };
    let eps = 1e-2f32;
    let mut checked = 0;
    for i in (0..start.len()).step_by(5) {
        let (mut plus, mut minus) = (start.clone(), start.clone());
        plus[i] += eps;
        minus[i] -= eps;
        let numeric = ((loss_at(&plus) - loss_at(&minus)) / (2.0 * eps as f64)) as f32;
        let scale = 1.0f32.max(numeric.abs()).max(grads[i].abs());
        assert!((grads[i] - numeric).abs() <= 5e-3 * scale, "param {i}: analytic {} vs numeric {numeric}", grads[i]);
        checked += 1;
    }
    assert!(checked > 40, "{checked} parameters checked");
}

#[test]
fn functional_models_train_bit_identically_on_any_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (x, labels) = stripes(120, 4, 2);
            let y = to_categorical(&labels, None).unwrap();
            let mut model = compiled(residual_model(5, false), Adam::default());
            let history = model.fit(&x, &y, &quiet(2, 40, 0.25)).unwrap();
            let logs: Vec<_> = history.epochs.iter().map(|e| e.logs.clone()).collect();
            (model.params().unwrap().to_vec(), model.state().unwrap().to_vec(), logs)
        })
    };
    let (one, two) = (run(1), run(2));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one.0), bits(&two.0), "weights differ between 1 and 2 threads");
    assert_eq!(bits(&one.1), bits(&two.1), "moving statistics differ");
    assert_eq!(one.2, two.2);
    // Training moved the moving statistics away from (0, 1).
    assert!(one.1.iter().any(|&v| v != 0.0 && v != 1.0));
}

#[test]
fn a_residual_network_learns_and_its_batch_norm_infers_with_moving_statistics() {
    let (x, labels) = stripes(400, 4, 3);
    let y = to_categorical(&labels, None).unwrap();
    let mut bn = BatchNormalization::new();
    bn = bn.momentum(0.8);
    let inputs = Input::new([8, 8, 1]);
    let c = Conv2D::new(8, (3, 3)).padding(Padding::Same).apply(&inputs).unwrap();
    let n = bn.apply(&c).unwrap();
    let r = ActivationLayer::new(Activation::Relu).apply(&n).unwrap();
    let c2 = Conv2D::new(8, (3, 3)).padding(Padding::Same).apply(&r).unwrap();
    let s = Add::new().apply(&[&r, &c2]).unwrap();
    // The class is where the stripe is: flatten, not global pooling, keeps that.
    let g = Flatten::new().apply(&s).unwrap();
    let out = Dense::new(4).activation(Activation::Softmax).apply(&g).unwrap();
    let mut model = compiled(Model::new(&inputs, &out).unwrap().seed(1), Adam::new(0.01));
    let history = model.fit(&x, &y, &quiet(6, 32, 0.2)).unwrap();
    let last = history.last().unwrap();
    assert!(last.get("val_accuracy").unwrap() > 0.9, "{history:?}");
    // Validation (inference, moving statistics) agrees with training (batch statistics).
    assert!((last.get("val_loss").unwrap() - last.get("loss").unwrap()).abs() < 0.3, "{history:?}");
}

#[test]
fn frozen_layers_keep_their_weights_and_batch_norm_its_statistics() {
    let (x, labels) = stripes(64, 4, 4);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = compiled(residual_model(7, false), Adam::default());
    model.get_layer("conv2d").unwrap().set_trainable(false);
    model.get_layer("batch_normalization").unwrap().set_trainable(false);
    assert!(model.get_layer("nope").err().unwrap().to_string().contains("no layer named 'nope'"));
    let weights = model.weights().unwrap();
    let find = |name: &str| weights.iter().find(|w| w.name == name).unwrap().clone();
    let (frozen, live) = (find("conv2d/kernel"), find("conv2d_1/kernel"));
    assert!(!frozen.trainable && live.trainable && !find("batch_normalization/gamma").trainable);
    let before = model.params().unwrap().to_vec();
    let state = model.state().unwrap().to_vec();
    model.fit(&x, &y, &quiet(2, 16, 0.0)).unwrap();
    let after = model.params().unwrap();
    assert_eq!(&after[frozen.range.clone()], &before[frozen.range.clone()], "a frozen kernel moved");
    assert_ne!(&after[live.range.clone()], &before[live.range.clone()], "a trainable kernel did not move");
    assert_eq!(model.state().unwrap(), &state[..], "a frozen BatchNormalization updated its statistics");
    let summary = model.summary_string().unwrap();
    let frozen_count = frozen.range.len() + find("conv2d/bias").range.len() + 4 * 4;
    let total = model.count_params().unwrap();
    assert!(summary.contains(&format!("Non-trainable params: {frozen_count} ")), "{summary}");
    assert!(summary.contains(&format!("Trainable params: {} ", total - frozen_count)), "{summary}");

    // Saved and loaded: flags, weights, moving statistics and predictions survive.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frozen.keel");
    model.save(&path).unwrap();
    let mut loaded = Model::load(&path).unwrap();
    assert!(!loaded.get_layer("conv2d").unwrap().trainable());
    assert_eq!(loaded.params().unwrap(), model.params().unwrap());
    assert_eq!(loaded.state().unwrap(), model.state().unwrap());
    assert_eq!(loaded.predict(&x).unwrap().to_f32_vec(), model.predict(&x).unwrap().to_f32_vec());
    assert_eq!(loaded.summary_string().unwrap(), summary);
}

#[test]
fn training_resumes_exactly_through_a_file_with_moving_statistics() {
    let (x, labels) = stripes(80, 4, 5);
    let y = to_categorical(&labels, None).unwrap();
    let mut whole = compiled(residual_model(9, false), Adam::default());
    whole.fit(&x, &y, &quiet(3, 16, 0.0)).unwrap();
    let mut first = compiled(residual_model(9, false), Adam::default());
    first.fit(&x, &y, &quiet(2, 16, 0.0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    first.save(dir.path().join("m.keel")).unwrap();
    let mut resumed = Model::load(dir.path().join("m.keel")).unwrap();
    let options = FitOptions { initial_epoch: 2, ..quiet(3, 16, 0.0) };
    resumed.fit(&x, &y, &options).unwrap();
    assert_eq!(resumed.params().unwrap(), whole.params().unwrap());
    assert_eq!(resumed.state().unwrap(), whole.state().unwrap());
}

#[test]
fn functional_summary_has_keras_connected_to_column() {
    let mut model = residual_model(1, false);
    let summary = model.summary_string().unwrap();
    assert!(summary.starts_with("Model: \"functional\""), "{summary}");
    assert!(summary.contains("┃ Connected to"), "{summary}");
    assert!(summary.contains("│ input_layer (InputLayer)"), "{summary}");
    let residual = summary.lines().find(|l| l.contains("residual (Add)")).unwrap();
    assert!(residual.contains("conv2d[0][0]"), "{residual}");
    let next = summary.lines().skip_while(|l| !l.contains("residual (Add)")).nth(1).unwrap();
    assert!(next.contains("conv2d_1[0][0]"), "{next}");
}

#[test]
fn functional_architectures_round_trip_through_model_files() {
    let model = compiled(residual_model(4, true), Adam::default());
    let architecture = model.architecture().unwrap();
    let json = serde_json::to_string(&architecture).unwrap();
    assert!(json.contains(r#""inputs":["conv2d","conv2d_1"]"#), "{json}");
    assert!(json.contains(r#""trainable":false"#), "{json}");
    let again = Model::from_architecture(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&again.architecture().unwrap()).unwrap(), json);
    assert_eq!(again.params().unwrap(), model.params().unwrap(), "same seed, same initial weights");
}

#[test]
fn resnet20_has_keras_parameter_counts_and_trains() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/resnet20.toml");
    let mut model = Model::from_architecture(&Architecture::read(path).unwrap()).unwrap();
    assert_eq!(model.count_params().unwrap(), 274_442);
    let summary = model.summary_string().unwrap();
    assert!(summary.contains("Non-trainable params: 1,376 (5.38 KB)"), "{summary}");
    assert!(summary.contains("Trainable params: 273,066"), "{summary}");
    // Two steps on random CIFAR-shaped images: finite losses, moving statistics updated.
    let x = keel::tensor::Tensor::from_vec(
        &[16, 32, 32, 3],
        (0..16 * 32 * 32 * 3).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect(),
    )
    .unwrap();
    let labels = keel::tensor::Tensor::from_vec(&[16], (0..16).map(|i| (i % 10) as f32).collect()).unwrap();
    let y = to_categorical(&labels, Some(10)).unwrap();
    let history = model.fit(&x, &y, &quiet(1, 8, 0.0)).unwrap();
    assert!(history.last().unwrap().get("loss").unwrap().is_finite());
    assert!(model.state().unwrap().iter().any(|&v| v != 0.0 && v != 1.0));
}

#[test]
fn bad_graphs_get_clear_errors_at_build_time() {
    // Add of two shapes: both shapes and both layers named.
    let inputs = Input::new([8, 8, 3]);
    let a = Conv2D::new(4, (3, 3)).named("left").apply(&inputs).unwrap();
    let b = Conv2D::new(4, (3, 3)).padding(Padding::Same).named("right").apply(&inputs).unwrap();
    let err = Add::new().apply(&[&a, &b]).unwrap_err().to_string();
    for part in ["'left' (Conv2D) (None, 6, 6, 4)", "'right' (Conv2D) (None, 8, 8, 4)", "same shape"] {
        assert!(err.contains(part), "{err}");
    }
    // A layer with the wrong number of inputs.
    let err = Dense::new(2).apply(&[&a, &a]).unwrap_err().to_string();
    assert!(err.contains("takes one input, got 2"), "{err}");
    assert!(Add::new().apply(&a).unwrap_err().to_string().contains("at least 2 inputs"));
    // An output that does not depend on the input, and a second input.
    let other = Input::named("other", [8, 8, 3]);
    let out = Flatten::new().apply(&other).unwrap();
    let err = Model::new(&inputs, &out).err().unwrap().to_string();
    assert!(err.contains("input 'other'") && err.contains("not the model's input"), "{err}");
    let mixed = Concatenate::new().apply(&[&a, &Conv2D::new(2, (3, 3)).apply(&other).unwrap()]).unwrap();
    let err = Model::new(&inputs, &mixed).err().unwrap().to_string();
    assert!(err.contains("input 'other'"), "{err}");
    let err = Model::new(&inputs, &inputs).err().unwrap().to_string();
    assert!(err.contains("does not depend on the input") || err.contains("no layers"), "{err}");
    // Duplicate names.
    let c = Dense::new(2).named("left").apply(&Flatten::new().apply(&a).unwrap()).unwrap();
    let err = Model::new(&inputs, &c).err().unwrap().to_string();
    assert!(err.contains("two layers are named 'left'"), "{err}");
}

#[test]
fn bad_model_files_get_clear_errors() {
    let build = |layers: &str| {
        let text = format!("input_shape = [4, 4, 2]\n{layers}");
        let architecture: Architecture = toml::from_str(&text).map_err(|e| e.to_string())?;
        Model::from_architecture(&architecture).map(|_| ()).map_err(|e| e.to_string())
    };
    let conv = |name: &str, inputs: &str| {
        format!(
            "[[layers]]\nclass_name = \"Conv2D\"\nname = \"{name}\"\ninputs = [{inputs}]\nfilters = 2\nkernel_size = 1\n"
        )
    };
    let ok = build(
        &(conv("a", "\"input_layer\"")
            + &conv("b", "\"a\"")
            + "[[layers]]\nclass_name = \"Add\"\ninputs = [\"a\", \"b\"]\n"),
    );
    assert_eq!(ok, Ok(()));
    let err = build(&(conv("a", "\"b\"") + &conv("b", "\"a\""))).unwrap_err();
    assert!(err.contains("'a'") && err.contains("comes later") && err.contains("cycles"), "{err}");
    let err = build(&conv("a", "\"nowhere\"")).unwrap_err();
    assert!(err.contains("takes 'nowhere' as input") && err.contains("input_layer"), "{err}");
    let err = build(&(conv("a", "\"input_layer\"") + &conv("a", "\"input_layer\""))).unwrap_err();
    assert!(err.contains("named 'a'") && err.contains("unique"), "{err}");
    let err = build(&(conv("a", "\"input_layer\"") + &conv("b", "\"input_layer\""))).unwrap_err();
    assert!(err.contains("layer 'a' feeds no other layer"), "{err}");
    let err = build(
        &(conv("a", "\"input_layer\"") + "[[layers]]\nclass_name = \"Dense\"\nunits = 2\ninputs = [\"a\", \"a\"]\n"),
    )
    .unwrap_err();
    assert!(err.contains("takes one input, got 2"), "{err}");
    let err = build(&(conv("a", "\"input_layer\"") + &conv("b", "\"input_layer\"") + "[[layers]]\nclass_name = \"Add\"\ninputs = [\"a\", \"b\"]\n[[layers]]\nclass_name = \"Add\"\ninputs = [\"add\"]\n")).unwrap_err();
    assert!(err.contains("at least 2 inputs"), "{err}");
    let err = build("[[layers]]\nclass_name = \"Flatten\"\ninputs = 3\n").unwrap_err();
    assert!(err.contains("inputs must be a list of layer names"), "{err}");
}

#[test]
fn sequential_models_accept_named_and_frozen_layers() {
    let mut model = Sequential::new()
        .add(Conv2D::new(2, (3, 3)).input_shape([8, 8, 1]).named("features").trainable(false))
        .add(Flatten::new())
        .add(Dense::new(4).activation(Activation::Softmax));
    model.build().unwrap();
    assert_eq!(model.layer_names(), ["features", "flatten", "dense"]);
    let summary = model.summary_string().unwrap();
    assert!(summary.contains("Non-trainable params: 20 "), "{summary}");
    assert!(!summary.contains("Connected to"), "{summary}");
    let _ = Verbosity::Silent;
}

#[test]
fn a_sample_predicts_the_same_alone_and_in_a_batch() {
    // Batches under one task of samples split each sample's positions (convolutions)
    // and rows (depthwise) over threads instead: the values must not change.
    let inputs = Input::new([19, 17, 6]);
    let x = Conv2D::new(8, (3, 3)).padding(Padding::Same).activation(Activation::Relu).apply(&inputs).unwrap();
    let x = DepthwiseConv2D::new((3, 3)).strides((2, 2)).padding(Padding::Same).apply(&x).unwrap();
    let x = DepthwiseConv2D::new((5, 3)).padding(Padding::Same).depth_multiplier(2).apply(&x).unwrap();
    let x = Conv2D::new(4, (3, 3)).dilation_rate((2, 2)).activation(Activation::Silu).apply(&x).unwrap();
    let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
    let outputs = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
    let mut model = Model::new(&inputs, &outputs).unwrap();
    model.build().unwrap();
    let n = 20;
    let values: Vec<f32> = (0..n * 19 * 17 * 6).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let batch = Tensor::from_vec(&[n, 19, 17, 6], values.clone()).unwrap();
    let together = model.predict(&batch).unwrap().to_f32_vec();
    for i in [0, 7, 19] {
        let one = Tensor::from_vec(&[1, 19, 17, 6], values[i * 1938..(i + 1) * 1938].to_vec()).unwrap();
        let alone = model.predict(&one).unwrap().to_f32_vec();
        for (a, b) in alone.iter().zip(&together[i * 3..(i + 1) * 3]) {
            assert!((a - b).abs() < 1e-6, "sample {i}: {alone:?} vs {:?}", &together[i * 3..(i + 1) * 3]);
        }
    }
}

#[test]
fn batch_one_predictions_are_bit_identical_on_any_thread_count() {
    // Batch-1 inference splits each sample's work by bands of rows or blocks of
    // filters, whose sizes may follow the thread count; no sum may. Winograd's
    // tiles by bands (28x28) and by blocks of filters (14x14, 96 filters),
    // strided windows read in place with padding (7x7, stride 2) and without
    // (1x1, stride 2), unfolded patches by blocks of filters (3x3 on 7x7, 128 filters).
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let conv = |f: usize, k: usize, s: usize, x: &SymbolicTensor| {
                Conv2D::new(f, (k, k))
                    .strides((s, s))
                    .padding(Padding::Same)
                    .activation(Activation::Relu)
                    .apply(x)
                    .unwrap()
            };
            let inputs = Input::new([28, 28, 16]);
            let x = conv(32, 3, 1, &inputs);
            let x = conv(32, 7, 2, &x);
            let x = conv(96, 3, 1, &x);
            let x = conv(64, 1, 2, &x);
            let x = conv(128, 3, 1, &x);
            let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
            let outputs = Dense::new(3).apply(&x).unwrap();
            let mut model = Model::new(&inputs, &outputs).unwrap().seed(3);
            model.build().unwrap();
            let values: Vec<f32> = (0..28 * 28 * 16).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.3).collect();
            let one = Tensor::from_vec(&[1, 28, 28, 16], values).unwrap();
            model.predict(&one).unwrap().to_f32_vec()
        })
    };
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let one = run(1);
    assert!(one.iter().any(|v| *v != 0.0), "{one:?}");
    for threads in [2, 3] {
        assert_eq!(bits(&one), bits(&run(threads)), "1 against {threads} threads");
    }
}

#[test]
fn batch_normalization_and_add_apply_the_activation_after_them_with_the_same_results() {
    // BatchNormalization -> ReLU, -> ReLU(6) and -> Activation("relu") at the end, and
    // Add -> ReLU (a residual block's end) are fused into one pass; the unfused model
    // must train to the same weights.
    let make = |fuse: bool| {
        let inputs = Input::new([6, 6, 2]);
        let x = Conv2D::new(4, (3, 3)).padding(Padding::Same).apply(&inputs).unwrap();
        let x = BatchNormalization::new().momentum(0.9).apply(&x).unwrap();
        let x = ReLU::new().apply(&x).unwrap();
        let y = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).apply(&x).unwrap();
        let y = BatchNormalization::new().apply(&y).unwrap();
        let y = ReLU::new().max_value(6.0).apply(&y).unwrap();
        let x = Add::new().apply(&[&x, &y]).unwrap();
        let x = ReLU::new().apply(&x).unwrap();
        let y = Conv2D::new(4, (1, 1)).apply(&x).unwrap();
        let x = Add::new().apply(&[&x, &y]).unwrap();
        let x = ActivationLayer::new(Activation::Relu6).apply(&x).unwrap();
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let x = Dense::new(5).apply(&x).unwrap();
        let x = BatchNormalization::new().apply(&x).unwrap();
        let x = ActivationLayer::new(Activation::Relu).apply(&x).unwrap();
        let outputs = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(5).fuse_layers(fuse);
        model.compile(SGD::new(0.05), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        model
    };
    let n = 40;
    let (x, y) = patterned([n, 6, 6, 2]);
    let options = FitOptions { epochs: 3, batch_size: 8, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut fused, mut separate) = (make(true), make(false));
    fused.fit(&x, &y, &options).unwrap();
    separate.fit(&x, &y, &options).unwrap();
    for (a, b) in fused.params().unwrap().iter().zip(separate.params().unwrap()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    for (a, b) in fused.state().unwrap().iter().zip(separate.state().unwrap()) {
        assert!((a - b).abs() < 1e-4, "moving statistics {a} vs {b}");
    }
    let (p, q) = (fused.predict(&x).unwrap().to_f32_vec(), separate.predict(&x).unwrap().to_f32_vec());
    assert!(p.iter().zip(&q).all(|(a, b)| (a - b).abs() < 1e-4));
}

#[test]
fn batch_normalizations_apply_the_add_after_them_in_training_with_the_same_results() {
    // In training a BatchNormalization whose only consumer is a two-input Add
    // writes the Add's output at the Add's turn: ResNet's identity block (the
    // normalisation second, a ReLU after the Add), its projection block (the
    // shortcut's convolution computed after the normalisation), the
    // normalisation first with no activation (MobileNetV2), ReLU(6), a frozen
    // normalisation (moving statistics), 16 channels (the blocked kernel) and
    // 3 (the reference). Not fused: one of three inputs, a normalisation read
    // twice, one with a ReLU of its own. Training must give the weights,
    // moving statistics and losses of the model run layer by layer, bit for bit.
    let make = |fuse: bool| {
        let bn = |x: &SymbolicTensor| BatchNormalization::new().momentum(0.5).apply(x).unwrap();
        let frozen = |x: &SymbolicTensor| BatchNormalization::new().trainable(false).apply(x).unwrap();
        let relu = |x: &SymbolicTensor| ReLU::new().apply(x).unwrap();
        let add = |xs: &[&SymbolicTensor]| Add::new().apply(xs).unwrap();
        let conv = |f: usize, x: &SymbolicTensor| Conv2D::new(f, (3, 3)).padding(Padding::Same).apply(x).unwrap();
        let inputs = Input::new([8, 8, 3]);
        let x = relu(&add(&[&inputs, &bn(&conv(3, &inputs))]));
        let x = relu(&bn(&conv(16, &x)));
        let x = relu(&add(&[&x, &bn(&conv(16, &relu(&bn(&conv(16, &x)))))]));
        let main = bn(&conv(16, &x));
        let x = relu(&add(&[&conv(16, &x), &main]));
        let x = add(&[&bn(&conv(16, &x)), &x]);
        let x = ReLU::new().max_value(6.0).apply(&add(&[&x, &frozen(&conv(16, &x))])).unwrap();
        let x = add(&[&bn(&conv(16, &x)), &x, &x]);
        let twice = bn(&conv(16, &x));
        let x = add(&[&twice, &add(&[&twice, &x])]);
        let x = add(&[&x, &relu(&bn(&conv(16, &x)))]);
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let outputs = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(12).fuse_layers(fuse);
        model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        model
    };
    trains_as_layer_by_layer(make, [24, 8, 8, 3], 3, 8);
}

/// `make(fuse)`'s model with its layers fused trains as it does run layer by
/// layer, bit for bit (weights, moving statistics, losses), on `shape`'s
/// patterned images over `epochs` of batches of `batch_size`.
fn trains_as_layer_by_layer(make: impl Fn(bool) -> Model, shape: [usize; 4], epochs: usize, batch_size: usize) {
    let (x, y) = patterned(shape);
    let options = FitOptions { epochs, batch_size, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut fused, mut separate) = (make(true), make(false));
    let (a, b) = (fused.fit(&x, &y, &options).unwrap(), separate.fit(&x, &y, &options).unwrap());
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(fused.params().unwrap()), bits(separate.params().unwrap()), "weights");
    assert_eq!(bits(fused.state().unwrap()), bits(separate.state().unwrap()), "moving statistics");
    let logs = |h: &keel::model::History| h.epochs.iter().map(|e| e.logs.clone()).collect::<Vec<_>>();
    assert_eq!(logs(&a), logs(&b));
    // Training moved the weights: the comparison is not of two untouched models.
    let mut untrained = make(true);
    untrained.build().unwrap();
    assert_ne!(bits(fused.params().unwrap()), bits(untrained.params().unwrap()), "training changed nothing");
}

#[test]
fn convolutions_gather_the_moments_of_the_batch_normalization_after_them_with_the_same_results() {
    // In training a convolution sums its output's per-channel moments as it
    // writes each task of samples, and the BatchNormalizations that read it
    // take them in place of a pass of their own: 16 channels through
    // Winograd's tiles and strided (the blocked sums), 3 (the plain ones), a
    // convolution read by two normalisations and by an Add, one with a fused
    // Add after it, a frozen one. Batches of 32 then a last one of 8 (below a
    // task: summed by the normalisation itself). Training must give the
    // weights, moving statistics and losses of the model run layer by layer,
    // bit for bit.
    let make = |fuse: bool| {
        let bn = |x: &SymbolicTensor| BatchNormalization::new().momentum(0.5).apply(x).unwrap();
        let relu = |x: &SymbolicTensor| ReLU::new().apply(x).unwrap();
        let conv = |f: usize, s: usize, x: &SymbolicTensor| {
            Conv2D::new(f, (3, 3)).strides((s, s)).padding(Padding::Same).apply(x).unwrap()
        };
        let inputs = Input::new([8, 8, 3]);
        let x = relu(&bn(&conv(3, 1, &inputs)));
        let x = relu(&bn(&conv(16, 1, &x)));
        let shared = conv(16, 1, &x);
        let x = Add::new().apply(&[&bn(&shared), &relu(&bn(&shared)), &shared]).unwrap();
        let x = relu(&Add::new().apply(&[&x, &bn(&conv(16, 1, &x))]).unwrap());
        let x = BatchNormalization::new().trainable(false).apply(&conv(16, 1, &x)).unwrap();
        let x = relu(&bn(&conv(16, 2, &x)));
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let outputs = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(14).fuse_layers(fuse);
        model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        model
    };
    trains_as_layer_by_layer(make, [40, 8, 8, 3], 2, 32);
}

#[test]
fn dropout_passes_its_input_on_at_inference_with_the_same_predictions() {
    // At inference a Dropout (or SpatialDropout2D) is skipped, its output being
    // its input's buffer: after a convolution with a fused pool, two in a row,
    // one whose output feeds two layers, one before a Flatten, and one that is
    // the model's output (run: the output keeps its own buffer). Predictions
    // and the evaluation must be those of the model run layer by layer, bit for bit.
    let make = |fuse: bool| {
        let inputs = Input::new([8, 8, 3]);
        let x = Conv2D::new(16, (3, 3)).padding(Padding::Same).activation(Activation::Relu).apply(&inputs).unwrap();
        let x = MaxPooling2D::new((2, 2)).apply(&x).unwrap();
        let x = Dropout::new(0.25).apply(&x).unwrap();
        let x = SpatialDropout2D::new(0.5).apply(&Dropout::new(0.5).apply(&x).unwrap()).unwrap();
        let y = Conv2D::new(16, (3, 3)).padding(Padding::Same).apply(&x).unwrap();
        let x = Add::new().apply(&[&x, &y]).unwrap();
        let x = Flatten::new().apply(&Dropout::new(0.3).apply(&x).unwrap()).unwrap();
        let x = Dense::new(3).activation(Activation::Softmax).apply(&x).unwrap();
        let outputs = Dropout::new(0.1).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(14).fuse_layers(fuse);
        model.compile(SGD::new(0.05), Loss::MeanSquaredError, &[]).unwrap();
        model
    };
    let (n, len) = (20, 8 * 8 * 3);
    let (x, y) = patterned([n, 8, 8, 3]);
    let options = FitOptions { epochs: 2, batch_size: 8, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut fused, mut separate) = (make(true), make(false));
    fused.fit(&x, &y, &options).unwrap();
    separate.build().unwrap();
    separate.params_mut().unwrap().copy_from_slice(fused.params().unwrap());
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for batch in [&x, &Tensor::from_vec(&[1, 8, 8, 3], x.to_f32_vec()[..len].to_vec()).unwrap()] {
        let (p, q) = (fused.predict(batch).unwrap().to_f32_vec(), separate.predict(batch).unwrap().to_f32_vec());
        assert!(bits(&p) == bits(&q), "predictions {p:?} against {q:?}");
    }
    // The evaluation agrees too (the loss reads the output's buffer).
    assert_eq!(fused.evaluate(&x, &y).unwrap().loss.to_bits(), separate.evaluate(&x, &y).unwrap().loss.to_bits());
}

#[test]
fn convolutions_apply_the_batch_normalization_after_them_at_inference() {
    // At inference a Conv2D, DepthwiseConv2D or SeparableConv2D applies the
    // BatchNormalization that is its only consumer (and the activation fused
    // into it) as it writes: the direct kernels (3 channels), the padded layout
    // in bands and whole, unfolded patches by blocks of channels (batch 1) and
    // whole, depthwise, separable (the map folded into its pointwise kernel), 1x1. Not folded:
    // a convolution read twice, one with an activation of its own. Predictions
    // must agree with the model run layer by layer, at batch 20 and batch 1.
    let make = |fuse: bool| {
        let bn = || BatchNormalization::new().momentum(0.5);
        let inputs = Input::new([24, 30, 3]);
        let x = Conv2D::new(32, (3, 3)).padding(Padding::Same).apply(&inputs).unwrap();
        let x = ReLU::new().apply(&bn().apply(&x).unwrap()).unwrap();
        let x = Conv2D::new(16, (3, 3)).padding(Padding::Same).use_bias(false).apply(&x).unwrap();
        let x = bn().apply(&x).unwrap();
        let x = Conv2D::new(130, (3, 3)).strides((2, 2)).padding(Padding::Same).apply(&x).unwrap();
        let x = ReLU::new().max_value(6.0).apply(&bn().apply(&x).unwrap()).unwrap();
        let x = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).apply(&x).unwrap();
        let x = ReLU::new().apply(&bn().apply(&x).unwrap()).unwrap();
        let x = SeparableConv2D::new(24, (3, 3)).padding(Padding::Same).apply(&x).unwrap();
        let x = ReLU::new().apply(&bn().apply(&x).unwrap()).unwrap();
        let y = Conv2D::new(16, (1, 1)).apply(&x).unwrap();
        let y = bn().apply(&y).unwrap();
        let z = Conv2D::new(16, (3, 3)).padding(Padding::Same).apply(&x).unwrap();
        let x = Add::new().apply(&[&y, &z]).unwrap();
        let x = Add::new().apply(&[&bn().apply(&z).unwrap(), &x]).unwrap();
        let x = Conv2D::new(8, (3, 3)).activation(Activation::Relu).apply(&x).unwrap();
        let x = bn().apply(&x).unwrap();
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let outputs = Dense::new(3).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(8).fuse_layers(fuse);
        model.compile(SGD::new(0.01), Loss::MeanSquaredError, &[]).unwrap();
        model
    };
    let n = 20;
    let (x, y) = patterned([n, 24, 30, 3]);
    // Training moves the moving statistics away from (0, 1) and gamma, beta from (1, 0).
    let options = FitOptions { epochs: 2, batch_size: 10, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut folded, mut separate) = (make(true), make(false));
    folded.fit(&x, &y, &options).unwrap();
    // Biases and betas away from zero, gammas from one, everywhere.
    for (i, p) in folded.params_mut().unwrap().iter_mut().enumerate() {
        *p = *p * 1.25 + ((i * 7919) % 1000) as f32 / 10_000.0 - 0.05;
    }
    separate.params_mut().unwrap().copy_from_slice(folded.params().unwrap());
    separate.state_mut().unwrap().copy_from_slice(folded.state().unwrap());
    let state = folded.state().unwrap();
    assert!(state.iter().any(|v| (v - 1.0).abs() > 0.1 && v.abs() > 0.1), "the statistics did not move");
    predictions_agree(&mut folded, &mut separate, &x, &[24, 30, 3]);
}

#[test]
fn convolutions_add_the_residual_after_their_batch_normalization_at_inference() {
    // At inference a convolution that applies the BatchNormalization after it
    // also applies the two-input Add after that normalisation, when the Add's
    // other input is computed before the convolution runs: ResNet's identity
    // block (the block's input first, a ReLU after the Add), its projection
    // block (the shortcut's convolution and normalisation computed first),
    // MobileNetV2's block (the normalisation first, no activation); through the
    // direct kernels (3 channels), Winograd's tiles, the padded layout in bands,
    // 1x1 in groups of samples, strided windows' patches (7x7, 3x3, 1x1 at
    // stride 2) unfolded whole and, below a task of samples, read in place in
    // bands of rows, grouped, depthwise and separable convolutions. Not fused: an Add
    // whose other input is computed after the convolution, one of three inputs.
    // Predictions must agree with the model run layer by layer, at batch 20,
    // 3 and 1.
    let make = |fuse: bool| {
        let bn = |x: &SymbolicTensor| BatchNormalization::new().momentum(0.5).apply(x).unwrap();
        let relu = |x: &SymbolicTensor| ReLU::new().apply(x).unwrap();
        let add = |xs: &[&SymbolicTensor]| Add::new().apply(xs).unwrap();
        let conv = |f: usize, k: usize, s: usize, x: &SymbolicTensor| {
            Conv2D::new(f, (k, k)).strides((s, s)).padding(Padding::Same).apply(x).unwrap()
        };
        let inputs = Input::new([24, 24, 3]);
        let x = relu(&add(&[&inputs, &bn(&conv(3, 3, 1, &inputs))]));
        let x = relu(&bn(&conv(32, 3, 1, &x)));
        let x = relu(&add(&[&x, &bn(&conv(32, 3, 1, &x))]));
        let x = add(&[&x, &bn(&conv(32, 1, 1, &x))]);
        let shortcut = conv(24, 1, 1, &x);
        let x = add(&[&shortcut, &bn(&conv(24, 3, 1, &x))]);
        let shortcut = bn(&conv(64, 1, 2, &x));
        let x = relu(&add(&[&shortcut, &bn(&conv(64, 7, 2, &x))]));
        let shortcut = bn(&conv(64, 1, 2, &x));
        let x = relu(&add(&[&shortcut, &bn(&conv(64, 3, 2, &x))]));
        let e = ReLU::new().max_value(6.0).apply(&bn(&conv(96, 1, 1, &x))).unwrap();
        let d = DepthwiseConv2D::new((3, 3)).padding(Padding::Same).apply(&e).unwrap();
        let d = ReLU::new().max_value(6.0).apply(&bn(&d)).unwrap();
        let p = bn(&Conv2D::new(64, (1, 1)).use_bias(false).apply(&d).unwrap());
        let x = add(&[&p, &x]);
        let d = bn(&DepthwiseConv2D::new((3, 3)).padding(Padding::Same).apply(&x).unwrap());
        let x = add(&[&x, &d]);
        let g = bn(&Conv2D::new(64, (3, 3)).padding(Padding::Same).groups(4).apply(&x).unwrap());
        let x = relu(&add(&[&g, &x]));
        let x = add(&[&bn(&SeparableConv2D::new(64, (3, 3)).padding(Padding::Same).apply(&x).unwrap()), &x]);
        let main = bn(&conv(64, 3, 1, &x));
        let x = add(&[&main, &conv(64, 1, 1, &x)]);
        let x = add(&[&bn(&conv(64, 1, 1, &x)), &x, &x]);
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let outputs = Dense::new(3).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(10).fuse_layers(fuse);
        model.compile(SGD::new(0.01), Loss::MeanSquaredError, &[]).unwrap();
        model
    };
    let n = 20;
    let (x, y) = patterned([n, 24, 24, 3]);
    let options = FitOptions { epochs: 2, batch_size: 10, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut fused, mut separate) = (make(true), make(false));
    fused.fit(&x, &y, &options).unwrap();
    for (i, p) in fused.params_mut().unwrap().iter_mut().enumerate() {
        *p = *p * 1.25 + ((i * 7919) % 1000) as f32 / 10_000.0 - 0.05;
    }
    separate.params_mut().unwrap().copy_from_slice(fused.params().unwrap());
    separate.state_mut().unwrap().copy_from_slice(fused.state().unwrap());
    predictions_agree(&mut fused, &mut separate, &x, &[24, 24, 3]);
}

/// `fused`'s predictions agree with `separate`'s (the same model run layer by
/// layer), on the batch `x`, on its first 3 samples (a batch below one task)
/// and on samples 0 and 13 alone (batch 1): 3 outputs each.
fn predictions_agree(fused: &mut Model, separate: &mut Model, x: &Tensor, sample: &[usize]) {
    let (p, q) = (fused.predict(x).unwrap().to_f32_vec(), separate.predict(x).unwrap().to_f32_vec());
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
    for (i, (a, b)) in p.iter().zip(&q).enumerate() {
        assert!(close(*a, *b), "value {i}: fused {a} vs layer by layer {b}");
    }
    let (values, len) = (x.to_f32_vec(), sample.iter().product::<usize>());
    let three = Tensor::from_vec(&[&[3], sample].concat(), values[..3 * len].to_vec()).unwrap();
    for (i, (a, b)) in fused.predict(&three).unwrap().to_f32_vec().iter().zip(&q).enumerate() {
        assert!(close(*a, *b), "value {i} of a batch of 3: fused {a} vs layer by layer {b}");
    }
    for i in [0, 13] {
        let one = Tensor::from_vec(&[&[1], sample].concat(), values[i * len..(i + 1) * len].to_vec()).unwrap();
        let alone = fused.predict(&one).unwrap().to_f32_vec();
        for (a, b) in alone.iter().zip(&q[i * 3..(i + 1) * 3]) {
            assert!(close(*a, *b), "sample {i} alone: fused {a} vs layer by layer {b}");
        }
    }
}

#[test]
fn convolutions_pad_their_own_input_in_place_of_a_zero_padding_at_inference() {
    // At inference a Conv2D or DepthwiseConv2D whose input is a ZeroPadding2D's
    // output (read by nothing else) reads that layer's input and pads it itself:
    // MobileNetV2's ((0, 1), (0, 1)) before a stride-2 depthwise convolution (its
    // input written by the convolution before, which applies the BatchNormalization
    // between them), the direct kernels (3 channels) with padding of their own added to, uneven
    // padding on every side before the padded layout, 1x1. Not absorbed: a
    // padding read twice. Predictions must agree with the model run layer by
    // layer, at batch 20 and batch 1; training runs layer by layer either way.
    let make = |fuse: bool| {
        let pad = |p: ((usize, usize), (usize, usize))| ZeroPadding2D::new(p);
        let inputs = Input::new([17, 15, 3]);
        let x = pad(((1, 0), (2, 1))).apply(&inputs).unwrap();
        let x = Conv2D::new(32, (3, 3)).strides((2, 2)).padding(Padding::Same).apply(&x).unwrap();
        let x = ReLU::new().apply(&BatchNormalization::new().momentum(0.5).apply(&x).unwrap()).unwrap();
        let x = pad(((0, 1), (0, 1))).apply(&x).unwrap();
        let x = DepthwiseConv2D::new((3, 3)).strides((2, 2)).apply(&x).unwrap();
        let x = ReLU::new().max_value(6.0).apply(&BatchNormalization::new().momentum(0.5).apply(&x).unwrap()).unwrap();
        let x = pad(((2, 1), (1, 2))).apply(&x).unwrap();
        let x = Conv2D::new(16, (3, 3)).activation(Activation::Relu).apply(&x).unwrap();
        let shared = pad(((1, 1), (1, 1))).apply(&x).unwrap();
        let a = Conv2D::new(16, (3, 3)).apply(&shared).unwrap();
        let b = Conv2D::new(16, (3, 3)).apply(&shared).unwrap();
        let x = Add::new().apply(&[&a, &b]).unwrap();
        let x = pad(((1, 1), (0, 0))).apply(&x).unwrap();
        let x = Conv2D::new(8, (1, 1)).apply(&x).unwrap();
        let x = GlobalAveragePooling2D::new().apply(&x).unwrap();
        let outputs = Dense::new(3).apply(&x).unwrap();
        let mut model = Model::new(&inputs, &outputs).unwrap().seed(9).fuse_layers(fuse);
        model.compile(SGD::new(0.01), Loss::MeanSquaredError, &[]).unwrap();
        model
    };
    let n = 20;
    let (x, y) = patterned([n, 17, 15, 3]);
    let options = FitOptions { epochs: 1, batch_size: 10, verbose: Verbosity::Silent, ..FitOptions::default() };
    let (mut absorbed, mut separate) = (make(true), make(false));
    absorbed.fit(&x, &y, &options).unwrap();
    separate.params_mut().unwrap().copy_from_slice(absorbed.params().unwrap());
    separate.state_mut().unwrap().copy_from_slice(absorbed.state().unwrap());
    predictions_agree(&mut absorbed, &mut separate, &x, &[17, 15, 3]);
}

/// A batch of `shape` (n, H, W, C) with values spread over [-1, 1) in a fixed
/// pattern, and one-hot labels of three classes in turn.
fn patterned(shape: [usize; 4]) -> (Tensor, Tensor) {
    let n = shape[0];
    let values = (0..shape.iter().product::<usize>()).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let x = Tensor::from_vec(&shape, values).unwrap();
    let y = to_categorical(&Tensor::from_vec(&[n], (0..n).map(|i| (i % 3) as f32).collect()).unwrap(), None).unwrap();
    (x, y)
}
