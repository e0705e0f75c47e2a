//! Model files: save/load round trips, exact resume, and files that must be refused.

mod synthetic;

use keel::model::{Architecture, History};
use keel::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;
use synthetic::{quiet, small_cnn, stripes};

/// The small CNN with dropout (so resuming must also restore the random masks).
fn cnn_with_dropout(seed: u64) -> Model {
    cnn_with_recipe(seed, Box::new(Adam::default()), Loss::CategoricalCrossentropy.into())
}

/// The same CNN trained with another optimizer and loss.
fn cnn_with_recipe(seed: u64, optimizer: Box<dyn Optimizer>, loss: LossConfig) -> Model {
    let mut model = Sequential::new()
        .seed(seed)
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu).input_shape([8, 8, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dropout::new(0.3))
        .add(Dense::new(4).activation(Activation::Softmax));
    model.compile(optimizer, loss, &[Metric::Accuracy]).unwrap();
    model
}

/// History without wall-clock times, for comparing runs.
fn logs_of(history: &History) -> Vec<(usize, Vec<(String, u64)>)> {
    history.epochs.iter().map(|e| (e.epoch, e.logs.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect())).collect()
}

fn slots(model: &Model) -> Vec<(&'static str, Vec<f32>)> {
    model.optimizer().unwrap().slots().into_iter().map(|(name, v)| (name, v.to_vec())).collect()
}

#[test]
fn five_epochs_equal_three_then_save_load_and_two_more_bit_for_bit() {
    resume_equals_straight_run(cnn_with_dropout);
}

#[test]
fn resuming_keeps_schedules_clipping_weight_decay_and_smoothing_exact() {
    // Warm-up then cosine decay over the 5 epochs' 50 steps: the rate at the
    // resume point comes from the saved step count alone.
    let warmup = || LearningRateSchedule::cosine_decay(0.0, 40).warmup(0.01, 10);
    let smoothed = Loss::CategoricalCrossentropy.label_smoothing(0.1);
    resume_equals_straight_run(|seed| {
        cnn_with_recipe(seed, Box::new(AdamW::default().schedule(warmup()).clipnorm(1.0)), smoothed)
    });
    resume_equals_straight_run(|seed| {
        cnn_with_recipe(seed, Box::new(Nadam::new(0.002).global_clipnorm(0.5)), smoothed)
    });
    resume_equals_straight_run(|seed| {
        let steps = LearningRateSchedule::PiecewiseConstantDecay { boundaries: vec![20], values: vec![0.05, 0.01] };
        let adagrad = Adagrad::new(0.05).schedule(steps).clipvalue(0.1).weight_decay(0.01);
        cnn_with_recipe(seed, Box::new(adagrad), Loss::CategoricalCrossentropy.into())
    });
}

/// 5 epochs straight equal 3 epochs, save, load and 2 more, bit for bit.
fn resume_equals_straight_run(make: impl Fn(u64) -> Model) {
    let (x, labels) = stripes(300, 4, 11);
    let y = to_categorical(&labels, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.keel");

    let mut straight = make(3);
    straight.fit(&x, &y, &quiet(5, 32, 0.2)).unwrap();

    let mut first = make(3);
    first.fit(&x, &y, &quiet(3, 32, 0.2)).unwrap();
    first.save(&path).unwrap();
    drop(first);
    let mut resumed = Model::load(&path).unwrap();
    assert_eq!(resumed.epochs_trained(), 3);
    let options = FitOptions { initial_epoch: resumed.epochs_trained(), ..quiet(5, 32, 0.2) };
    let tail = resumed.fit(&x, &y, &options).unwrap();

    assert_eq!(tail.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [4, 5]);
    let bits = |m: &Model| m.params().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed), bits(&straight), "weights differ after resuming");
    assert_eq!(slots(&resumed), slots(&straight), "optimizer state differs after resuming");
    assert_eq!(resumed.optimizer().unwrap().iterations(), straight.optimizer().unwrap().iterations());
    assert_eq!(logs_of(resumed.history()), logs_of(straight.history()), "history differs after resuming");
    assert_eq!(resumed.evaluate(&x, &y).unwrap(), straight.evaluate(&x, &y).unwrap());
}

#[test]
fn a_loaded_model_predicts_and_summarises_like_the_saved_one() {
    let (x, labels) = stripes(200, 4, 12);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = small_cnn(5, 4, Activation::Softmax);
    model.compile(RMSprop::default().rho(0.8), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &y, &quiet(2, 16, 0.0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.keel");
    model.save(&path).unwrap();

    let mut loaded = Model::load(&path).unwrap();
    assert_eq!(loaded.predict(&x).unwrap().to_f32_vec(), model.predict(&x).unwrap().to_f32_vec());
    assert_eq!(loaded.summary_string().unwrap(), model.summary_string().unwrap());
    let config = serde_json::to_value(loaded.architecture().unwrap()).unwrap();
    assert_eq!(config["compile"]["optimizer"]["class_name"], "RMSprop");
    assert!((config["compile"]["optimizer"]["rho"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(loaded.history().epochs.len(), 2);

    // An uncompiled, untrained model saves and loads too (architecture + weights only).
    let mut fresh = small_cnn(6, 3, Activation::Softmax);
    fresh.build().unwrap();
    fresh.save(&path).unwrap();
    let again = Model::load(&path).unwrap();
    assert!(again.optimizer().is_none());
    assert_eq!(again.params().unwrap(), fresh.params().unwrap());
}

#[test]
fn weights_alone_round_trip_and_must_match_the_model() {
    let mut a = small_cnn(1, 4, Activation::Softmax);
    a.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    a.save_weights(&path).unwrap();

    let mut b = small_cnn(2, 4, Activation::Softmax);
    b.build().unwrap();
    assert_ne!(a.params().unwrap(), b.params().unwrap());
    b.load_weights(&path).unwrap();
    assert_eq!(a.params().unwrap(), b.params().unwrap());

    let mut other = small_cnn(2, 3, Activation::Softmax);
    other.build().unwrap();
    let err = other.load_weights(&path).unwrap_err().to_string();
    assert!(err.contains("tensor 'dense/kernel' has shape [36, 4] but the model needs [36, 3]"), "{err}");
}

/// A tensor of a file: name, shape, little-endian bytes.
type RawTensor = (String, Vec<usize>, Vec<u8>);

/// A valid model file, taken apart: its metadata and tensors.
fn parts(path: &Path) -> (HashMap<String, String>, Vec<RawTensor>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file.iter().map(|(n, v)| (n.to_string(), v.shape().to_vec(), v.data().to_vec())).collect();
    (header.metadata().clone().unwrap(), tensors)
}

fn assemble(metadata: HashMap<String, String>, tensors: &[RawTensor]) -> Vec<u8> {
    let views: Vec<(&str, TensorView)> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

#[test]
fn bad_files_are_clear_errors_never_panics_or_huge_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.keel");
    let mut model = small_cnn(1, 4, Activation::Softmax);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let (x, labels) = stripes(64, 4, 1);
    model.fit(&x, &to_categorical(&labels, None).unwrap(), &quiet(1, 32, 0.0)).unwrap();
    model.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (mut metadata, tensors) = parts(&good);
    let checksums = metadata.remove("checksums").expect("saved files record tensor checksums");
    let architecture: Architecture = serde_json::from_str(&metadata["architecture"]).unwrap();
    let mut flipped = tensors.clone();
    flipped[0].2[0] ^= 1;
    let with_checksums = |text: &str, tensors: &[RawTensor]| {
        let mut m = metadata.clone();
        m.insert("checksums".into(), text.into());
        assemble(m, tensors)
    };

    let with_architecture = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut value = serde_json::to_value(&architecture).unwrap();
        edit(&mut value);
        let mut m = metadata.clone();
        m.insert("architecture".into(), value.to_string());
        assemble(m, &tensors)
    };
    let with_metadata = |key: &str, value: Option<&str>| {
        let mut m = metadata.clone();
        match value {
            Some(v) => m.insert(key.into(), v.into()),
            None => m.remove(key),
        };
        assemble(m, &tensors)
    };
    let mut fewer = tensors.clone();
    fewer.retain(|(n, _, _)| n != "dense/bias");
    let mut reshaped = tensors.clone();
    for t in reshaped.iter_mut().filter(|t| t.0 == "dense/kernel") {
        t.1 = vec![4, 36];
    }
    let mut extra = tensors.clone();
    extra.push(("dense_7/kernel".into(), vec![1], vec![0; 4]));

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a keel model file"),
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "it may be truncated"),
        ("text", b"hello, this is not a model".to_vec(), "not a keel model file"),
        ("huge header length", [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat(), "not a keel model file"),
        ("no format", with_metadata("format", None), "not a keel model"),
        ("newer version", with_metadata("format_version", Some("99")), "newer keel (format version 99"),
        ("bad version", with_metadata("format_version", Some("one")), "format_version 'one' is not a number"),
        ("no architecture", with_metadata("architecture", None), "no \"architecture\""),
        ("bad training state", with_metadata("training", Some("{\"epochs\": 1}")), "training state is not valid"),
        (
            "unknown layer",
            with_architecture(&|a| a["layers"][1]["class_name"] = "AvgPool3D".into()),
            "unknown variant `AvgPool3D`",
        ),
        ("unknown argument", with_architecture(&|a| a["layers"][3]["unit"] = 3.into()), "unknown field `unit`"),
        (
            "huge input",
            with_architecture(&|a| a["input_shape"] = serde_json::json!([1 << 20, 1 << 20, 1])),
            "more than 67108864 values per sample",
        ),
        (
            "huge dense layer",
            with_architecture(&|a| a["layers"][3]["units"] = (1u64 << 23).into()),
            "parameters but only",
        ),
        ("absurd units", with_architecture(&|a| a["layers"][3]["units"] = u64::MAX.into()), "units"),
        ("missing weight", assemble(metadata.clone(), &fewer), "188 parameters but only 184 are given"),
        ("wrong shape", assemble(metadata.clone(), &reshaped), "has shape [4, 36] but the model needs [36, 4]"),
        ("extra tensor", assemble(metadata.clone(), &extra), "'dense_7/kernel' belongs to no weight"),
        ("flipped bit", with_checksums(&checksums, &flipped), "does not match its checksum"),
        ("tensor without checksum", with_checksums(&checksums, &extra), "'dense_7/kernel' has no checksum"),
        ("bad checksums", with_checksums("[1, 2]", &tensors), "its checksums are not valid"),
    ];
    for (what, file, message) in cases {
        let path = dir.path().join(format!("{what}.keel"));
        std::fs::write(&path, file).unwrap();
        let err = Model::load(&path).err().unwrap_or_else(|| panic!("{what}: loaded")).to_string();
        assert!(err.contains(message), "{what}: {err}");
        assert!(err.contains(&path.display().to_string()), "{what}: error does not name the file: {err}");
    }
    let err = Model::load(dir.path().join("absent.keel")).err().unwrap().to_string();
    assert!(err.contains("absent.keel") && err.contains("No such file"), "{err}");
}

#[test]
fn checkpoints_save_every_epoch_or_only_the_best() {
    use keel::callbacks::{Callback, ModelCheckpoint};
    let (x, labels) = stripes(200, 4, 13);
    let y = to_categorical(&labels, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut every = ModelCheckpoint::new(dir.path().join("e{epoch:02}.keel").to_string_lossy());
    let mut best = ModelCheckpoint::new(dir.path().join("best.keel").to_string_lossy()).save_best_only(true);
    let mut model = cnn_with_dropout(4);
    let mut callbacks: [&mut dyn Callback; 2] = [&mut every, &mut best];
    let history = model.fit_with_callbacks(&x, &y, &quiet(4, 32, 0.25), &mut callbacks).unwrap();

    let names: Vec<String> = every.saved.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["e01.keel", "e02.keel", "e03.keel", "e04.keel"]);
    assert_eq!(Model::load(&every.saved[1]).unwrap().epochs_trained(), 2);
    let val_loss = history.series("val_loss");
    let improvements = (0..val_loss.len()).filter(|&i| val_loss[..i].iter().all(|&v| val_loss[i] < v)).count();
    assert_eq!(best.saved.len(), improvements, "val_loss: {val_loss:?}");
    let best_epoch = Model::load(dir.path().join("best.keel")).unwrap().epochs_trained();
    let argmin = val_loss.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 + 1;
    assert_eq!(best_epoch, argmin);

    let mut on_missing = ModelCheckpoint::new(dir.path().join("x.keel").to_string_lossy()).save_best_only(true);
    let err = model.fit_with_callbacks(&x, &y, &quiet(1, 32, 0.0), &mut [&mut on_missing]).unwrap_err().to_string();
    assert!(err.contains("monitors 'val_loss', which training does not log"), "{err}");
}

#[test]
fn example_model_files_build_and_round_trip_through_the_saved_schema() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    for (file, params) in [
        ("reference.toml", 54_410),
        ("mnist_convnet.toml", 34_826),
        ("cifar10_cnn.toml", 1_250_858),
        ("resnet20.toml", 274_442),
        ("mobilenet_v2.toml", 3_538_984),
        ("mobilenet_v2_cifar.toml", 423_018),
        ("resnet50.toml", 25_636_712),
        ("xception_small.toml", 2_731_065),
    ] {
        let architecture = Architecture::read(dir.join(file)).unwrap();
        let model = Model::from_architecture(&architecture).unwrap();
        assert_eq!(model.count_params().unwrap(), params, "{file}");
        assert!(model.optimizer().is_some(), "{file} compiles");
        let saved = serde_json::to_value(model.architecture().unwrap()).unwrap();
        assert_eq!(saved, serde_json::to_value(&architecture).unwrap(), "{file}: the saved architecture differs");
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "input_shape = [28, 28, 1]\n\n[[layers]]\nclass_name = \"Dense\"\nunit = 10\n").unwrap();
    let err = Architecture::read(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("line 3"), "{err}");
    assert!(err.contains("unknown field `unit`, expected one of `units`, `activation`, `use_bias`"), "{err}");
}
