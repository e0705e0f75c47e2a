//! Model: build, summary, fit semantics, determinism and error messages.

mod synthetic;

use keel::model::validation_split_at;
use keel::prelude::*;
use synthetic::{quiet, reference_model, small_cnn, stripes};

#[test]
fn reference_model_summary_matches_keras() {
    let mut model = reference_model(0);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    assert_eq!(model.count_params().unwrap(), 54_410);
    let summary = model.summary_string().unwrap();
    let expected = "\
Model: \"sequential\"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                         ┃ Output Shape                ┃         Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ conv2d (Conv2D)                      │ (None, 26, 26, 32)          │             320 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ max_pooling2d (MaxPooling2D)         │ (None, 13, 13, 32)          │               0 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ flatten (Flatten)                    │ (None, 5408)                │               0 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dense (Dense)                        │ (None, 10)                  │          54,090 │
└──────────────────────────────────────┴─────────────────────────────┴─────────────────┘
 Total params: 54,410 (212.54 KB)
 Trainable params: 54,410 (212.54 KB)
 Non-trainable params: 0 (0.00 B)
";
    assert_eq!(summary, expected);
}

#[test]
fn layer_names_are_numbered_per_type() {
    let model = Sequential::new()
        .add(Dense::new(3).input_shape([4]))
        .add(Dense::new(2))
        .add(ActivationLayer::new(Activation::Tanh))
        .add(Dense::new(1));
    assert_eq!(model.layer_names(), ["dense", "dense_1", "activation", "dense_2"]);
}

#[test]
fn glorot_uniform_kernels_and_zero_biases() {
    let mut model = reference_model(3);
    model.build().unwrap();
    let conv = model.layer_params(0).unwrap();
    let limit = (6.0f32 / (9.0 + 9.0 * 32.0)).sqrt();
    assert!(conv[..288].iter().all(|w| w.abs() <= limit));
    assert!(conv[..288].iter().any(|w| w.abs() > limit * 0.9), "weights should fill the range");
    assert!(conv[288..].iter().all(|b| *b == 0.0));
    let dense = model.layer_params(3).unwrap();
    let limit = (6.0f32 / (5408.0 + 10.0)).sqrt();
    assert!(dense[..54_080].iter().all(|w| w.abs() <= limit));
    assert!(dense[54_080..].iter().all(|b| *b == 0.0));
    // The same seed gives the same weights, another seed others.
    let mut again = reference_model(3);
    again.build().unwrap();
    assert_eq!(model.params().unwrap(), again.params().unwrap());
    let mut other = reference_model(4);
    other.build().unwrap();
    assert_ne!(model.params().unwrap(), other.params().unwrap());
}

#[test]
fn impossible_stack_names_the_layer_and_shapes() {
    let mut model = Sequential::new()
        .add(Conv2D::new(8, (3, 3)).input_shape([5, 5, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(8, (3, 3)));
    let err = model.build().unwrap_err().to_string();
    assert!(err.contains("conv2d_1") && err.contains("(None, 1, 1, 8)"), "{err}");
    let mut no_shape = Sequential::new().add(Dense::new(2));
    assert!(no_shape.build().unwrap_err().to_string().contains("input_shape"));
}

#[test]
fn validation_split_takes_the_last_samples_like_keras() {
    assert_eq!(validation_split_at(60_000, 0.1), 54_000);
    assert_eq!(validation_split_at(10, 0.25), 8);
    assert_eq!(validation_split_at(10, 0.0), 10);

    // With a zero learning rate the weights never change, so val_loss must be
    // the loss on exactly the last 25% of the rows.
    let (x, labels) = stripes(40, 4, 1);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = small_cnn(1, 4, Activation::Softmax);
    model.compile(SGD::new(0.0), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let history = model.fit(&x, &y, &quiet(1, 7, 0.25)).unwrap();
    let val_loss = history.epochs[0].get("val_loss").unwrap();
    let last = model.evaluate(&x.slice_rows(30, 40).unwrap(), &y.slice_rows(30, 40).unwrap()).unwrap();
    let first = model.evaluate(&x.slice_rows(0, 10).unwrap(), &y.slice_rows(0, 10).unwrap()).unwrap();
    assert!((val_loss - last.loss).abs() < 1e-6 * last.loss.abs().max(1.0), "{val_loss} vs {}", last.loss);
    assert!((val_loss - first.loss).abs() > 1e-6, "first and last rows should differ");
}

#[test]
fn training_drives_the_loss_down_on_synthetic_images() {
    let (x, labels) = stripes(600, 4, 2);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = small_cnn(2, 4, Activation::Softmax);
    model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let history = model.fit(&x, &y, &quiet(4, 32, 0.2)).unwrap();
    let losses = history.series("loss");
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < losses[0] * 0.5, "loss went {losses:?}");
    assert!(history.last().unwrap().get("val_accuracy").unwrap() > 0.95);
    let (x_test, labels_test) = stripes(100, 4, 3);
    let scores = model.evaluate(&x_test, &to_categorical(&labels_test, None).unwrap()).unwrap();
    assert!(scores.accuracy().unwrap() > 0.95, "{scores:?}");
    // predict: probabilities that sum to one and agree with the labels.
    let probs = model.predict(&x_test).unwrap();
    assert_eq!(probs.shape(), &[100, 4]);
    for row in probs.as_f32().unwrap().chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let predicted = argmax(&probs);
    let correct = predicted.iter().zip(labels_test.to_f32_vec()).filter(|(p, l)| **p == *l as usize).count();
    assert!(correct >= 95);
}

#[test]
fn sparse_labels_and_binary_heads_train_too() {
    let (x, labels) = stripes(400, 3, 4);
    let mut model = small_cnn(4, 3, Activation::Softmax);
    model.compile(RMSprop::new(0.01), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let history = model.fit(&x, &labels, &quiet(4, 16, 0.0)).unwrap();
    assert!(history.last().unwrap().get("accuracy").unwrap() > 0.9, "{history:?}");

    let (x, labels) = stripes(400, 2, 5);
    let y = Tensor::from_vec(&[400, 1], labels.to_f32_vec()).unwrap();
    let mut model = small_cnn(5, 1, Activation::Sigmoid);
    model.compile(SGD::new(0.1).momentum(0.9), Loss::BinaryCrossentropy, &[Metric::Accuracy]).unwrap();
    let history = model.fit(&x, &y, &quiet(4, 16, 0.0)).unwrap();
    assert!(history.last().unwrap().get("accuracy").unwrap() > 0.9, "{history:?}");
}

#[test]
fn same_seed_same_weights_whatever_the_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (x, labels) = stripes(300, 4, 6);
            let y = to_categorical(&labels, None).unwrap();
            let mut model = small_cnn(6, 4, Activation::Softmax).add(Dropout::new(0.0));
            model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
            // Batch 50 covers several parallel tasks, one of them partial.
            let history = model.fit(&x, &y, &quiet(2, 50, 0.1)).unwrap();
            let logs: Vec<_> = history.epochs.iter().map(|e| e.logs.clone()).collect();
            (model.params().unwrap().to_vec(), logs)
        })
    };
    let (one, logs_one) = run(1);
    let (two, logs_two) = run(2);
    let (three, _) = run(3);
    assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()), "1 vs 2 threads differ");
    assert!(one.iter().zip(&three).all(|(a, b)| a.to_bits() == b.to_bits()), "1 vs 3 threads differ");
    assert_eq!(logs_one, logs_two);
}

#[test]
fn fused_conv_and_pooling_train_exactly_like_separate_layers() {
    let run = |fuse: bool| {
        let (x, labels) = stripes(200, 4, 9);
        let y = to_categorical(&labels, None).unwrap();
        let mut model = small_cnn(9, 4, Activation::Softmax).fuse_layers(fuse);
        model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let history = model.fit(&x, &y, &quiet(2, 32, 0.1)).unwrap();
        let probs = model.predict(&x).unwrap().to_f32_vec();
        (model.params().unwrap().to_vec(), history.series("val_loss"), probs)
    };
    let (fused, fused_val, fused_probs) = run(true);
    let (plain, plain_val, plain_probs) = run(false);
    for (a, b) in fused.iter().zip(&plain).chain(fused_probs.iter().zip(&plain_probs)) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
    }
    // The fused backward adds its sums in another order: the weights agree to
    // rounding, and so the losses (a probability one ulp apart moves a mean
    // of 20 by a few 1e-9).
    for (a, b) in fused_val.iter().zip(&plain_val) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn flatten_anywhere_is_a_renaming() {
    let x = Tensor::from_vec(&[8, 2, 4], (0..64).map(|i| (i % 9) as f32 / 9.0).collect()).unwrap();
    // Dense on the last axis, then Flatten as the output layer.
    let mut model = Sequential::new().add(Dense::new(3).input_shape([2, 4])).add(Flatten::new());
    model.compile(SGD::new(0.1), Loss::MeanSquaredError, &[]).unwrap();
    let y = Tensor::zeros(&[8, 6]);
    let history = model.fit(&x, &y, &quiet(3, 4, 0.0)).unwrap();
    let losses = history.series("loss");
    assert!(losses[2] < losses[0], "{losses:?}");
    assert_eq!(model.predict(&x).unwrap().shape(), &[8, 6]);
    // A model that only reshapes: nothing to train, outputs equal inputs.
    let mut reshape = Sequential::new().add(Flatten::new().input_shape([2, 4]));
    reshape.compile(SGD::new(0.1), Loss::MeanSquaredError, &[]).unwrap();
    reshape.fit(&x, &Tensor::zeros(&[8, 8]), &quiet(1, 4, 0.0)).unwrap();
    assert_eq!(reshape.predict(&x).unwrap().to_f32_vec(), x.to_f32_vec());
}

#[test]
fn dropout_changes_training_but_not_inference() {
    let (x, labels) = stripes(64, 4, 7);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = Sequential::new()
        .seed(7)
        .add(Flatten::new().input_shape([8, 8, 1]))
        .add(Dropout::new(0.5))
        .add(Dense::new(4).activation(Activation::Softmax));
    model.compile(SGD::new(0.0), Loss::CategoricalCrossentropy, &[]).unwrap();
    let a = model.evaluate(&x, &y).unwrap().loss;
    let b = model.evaluate(&x, &y).unwrap().loss;
    assert_eq!(a, b, "inference must be deterministic");
    let train = model.fit(&x, &y, &quiet(1, 64, 0.0)).unwrap().epochs[0].get("loss").unwrap();
    assert_ne!(train, a, "dropout should be active while training");
}

#[test]
fn clear_errors_for_bad_input() {
    let (x, labels) = stripes(20, 4, 8);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = small_cnn(8, 4, Activation::Softmax);
    let msg = |r: keel::Result<History>| r.unwrap_err().to_string();
    assert!(msg(model.fit(&x, &y, &quiet(1, 4, 0.0))).contains("compile"));
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();

    let flat = x.clone().reshape(&[-1, 8, 8]).unwrap();
    let err = msg(model.fit(&flat, &y, &quiet(1, 4, 0.0)));
    assert!(err.contains("(None, 8, 8, 1)") && err.contains("reshape"), "{err}");

    let err = msg(model.fit(&x, &labels, &quiet(1, 4, 0.0)));
    assert!(err.contains("to_categorical"), "{err}");

    let err = msg(model.fit(&x, &y.slice_rows(0, 10).unwrap(), &quiet(1, 4, 0.0)));
    assert!(err.contains("20 samples") && err.contains("10"), "{err}");

    assert!(msg(model.fit(&x, &y, &quiet(1, 0, 0.0))).contains("batch_size"));
    assert!(msg(model.fit(&x, &y, &quiet(1, 4, 1.5))).contains("validation_split"));

    let mut bad = x.to_f32_vec();
    bad[5] = f32::NAN;
    let nan_x = Tensor::from_vec(x.shape(), bad).unwrap();
    assert!(msg(model.fit(&nan_x, &y, &quiet(1, 4, 0.0))).contains("not finite"));

    // Finite but huge inputs overflow to an infinite/NaN loss: a clear error, not garbage weights.
    let huge = Tensor::from_vec(x.shape(), vec![3e38; x.len()]).unwrap();
    let err = model.fit(&huge, &y, &quiet(1, 4, 0.0)).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { epoch: 1, batch: 1, .. }), "{err}");
    assert!(model.params().unwrap().iter().all(|p| p.is_finite()), "no step may be taken on a NaN loss");

    let mut sparse = small_cnn(8, 4, Activation::Softmax);
    sparse.compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &[]).unwrap();
    let nine = Tensor::from_u8(&[20], vec![9; 20]).unwrap();
    assert!(msg(sparse.fit(&x, &nine, &quiet(1, 4, 0.0))).contains("0..4"));
}

#[test]
fn predicting_before_training_then_training_works() {
    // predict reserves no gradient buffers; fit and evaluate add them later.
    let (x, labels) = stripes(60, 4, 11);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = small_cnn(11, 4, Activation::Softmax);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    let before = model.predict(&x).unwrap().to_f32_vec();
    model.fit(&x, &y, &quiet(1, 16, 0.0)).unwrap();
    assert!(model.evaluate(&x, &y).unwrap().loss.is_finite());
    let after = model.predict(&x).unwrap().to_f32_vec();
    assert_eq!(before.len(), after.len());
    assert_ne!(before, after, "training changed nothing");
}

/// Convolutions at stride 1 (3x3 same, 3x3 valid, 1x1) and at stride 2
/// predict the same for a batch below one task of samples (split into bands
/// of output rows) as inside a larger batch (split by samples), whatever the
/// thread count: the paths differ only in how the work is cut.
/// (On images with fewer rows than threads have work for, by blocks of output channels.)
/// Batch-1 inference reads kernels packed (1x1 by bands and by blocks of
/// channels, a 3x3 over the padded layout, a stride-2 one by positions and
/// one unfolded by blocks; widths past a panel of 32) or transformed for
/// Winograd's tiles (by bands of tiles, and by blocks of channels) once per
/// version of the weights: its predictions agree with a batch's, and follow
/// the weights wherever they change (written, trained, loaded).
#[test]
fn batch_one_predictions_follow_the_weights_as_they_change() {
    let build = || {
        let mut model = Sequential::new()
            .seed(21)
            .add(Conv2D::new(80, (1, 1)).activation(Activation::Relu).input_shape([28, 28, 8]))
            .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu))
            .add(Conv2D::new(90, (3, 3)).strides((2, 2)).padding(Padding::Same).activation(Activation::Relu))
            .add(Conv2D::new(80, (3, 3)).padding(Padding::Same))
            .add(BatchNormalization::new())
            .add(ReLU::new())
            .add(Conv2D::new(64, (3, 3)).padding(Padding::Same).activation(Activation::Relu))
            .add(Conv2D::new(130, (3, 3)).strides((2, 2)).padding(Padding::Same).activation(Activation::Relu))
            .add(Conv2D::new(200, (1, 1)).activation(Activation::Relu))
            .add(GlobalAveragePooling2D::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        model.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        model
    };
    let mut model = build();
    let (n, len) = (20, 28 * 28 * 8);
    let values: Vec<f32> = (0..n * len).map(|i| ((i * 7919) % 1009) as f32 / 1009.0).collect();
    let x = Tensor::from_vec(&[n, 28, 28, 8], values).unwrap();
    let y =
        Tensor::from_vec(&[n, 3], (0..n * 3).map(|v| if v % 3 == v / 3 % 3 { 1.0 } else { 0.0 }).collect()).unwrap();
    // The model's predictions at batch 1 and on the batch against those of a
    // model given its weights afresh, which has kept nothing.
    let agree = |model: &mut Model, what: &str| {
        let mut fresh = build();
        fresh.params_mut().unwrap().copy_from_slice(model.params().unwrap());
        fresh.state_mut().unwrap().copy_from_slice(model.state().unwrap());
        let want = fresh.predict(&x).unwrap().to_f32_vec();
        // (The same values on any number of threads, to the bit.)
        let alone = |model: &mut Model| {
            let mut first_run = Vec::new();
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut run = Vec::new();
                for i in [0, 13] {
                    let one = pool.install(|| model.predict(&x.slice_rows(i, i + 1).unwrap()).unwrap().to_f32_vec());
                    for (a, b) in one.iter().zip(&want[i * 3..]) {
                        let want = &want[i * 3..][..3];
                        assert!((a - b).abs() <= 2e-5, "{what}, {threads} threads, sample {i}: {one:?} vs {want:?}");
                    }
                    run.extend(one);
                }
                if threads == 1 {
                    first_run = run;
                } else {
                    assert_eq!(run, first_run, "{what}: {threads} threads against 1");
                }
            }
        };
        // Batch 1 first (what the last call at batch 1 kept is still there),
        // and last (keeping its own for the next check).
        alone(model);
        assert_eq!(model.predict(&x).unwrap().to_f32_vec(), want, "{what}: the batch");
        alone(model);
        want
    };
    let first = agree(&mut model, "as built");
    for w in model.params_mut().unwrap() {
        *w = -0.9 * *w + 0.001;
    }
    let written = agree(&mut model, "after writing the weights");
    assert!(first.iter().zip(&written).any(|(a, b)| (a - b).abs() > 1e-3), "the new weights changed nothing");
    // One step on the whole batch.
    model.fit(&x, &y, &quiet(1, 20, 0.0)).unwrap();
    agree(&mut model, "after training");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    model.save_weights(&path).unwrap();
    let saved = model.predict(&x).unwrap().to_f32_vec();
    for w in model.params_mut().unwrap() {
        *w = 0.0;
    }
    agree(&mut model, "after zeroing the weights");
    model.load_weights(&path).unwrap();
    assert_eq!(agree(&mut model, "after loading the weights"), saved);
}

#[test]
fn small_batches_predict_as_large_ones() {
    let first = Sequential::new()
        .seed(11)
        .add(Conv2D::new(8, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape([20, 23, 5]))
        .add(Conv2D::new(12, (1, 1)).activation(Activation::Relu))
        .add(Conv2D::new(6, (3, 3)).activation(Activation::Relu))
        .add(Conv2D::new(10, (3, 3)).strides((2, 2)).padding(Padding::Same))
        .add(Conv2D::new(48, (1, 1)).activation(Activation::Relu))
        .add(Flatten::new())
        .add(Dense::new(4).activation(Activation::Softmax));
    let second = Sequential::new()
        .seed(12)
        .add(Conv2D::new(40, (3, 3)).padding(Padding::Same).input_shape([14, 14, 6]))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    // Few input channels (the direct kernels, split into bands of rows), then a
    // stride-2 convolution with too few positions to split: by blocks of 64
    // output channels, the last one narrower.
    let third = Sequential::new()
        .seed(13)
        .add(Conv2D::new(32, (3, 3)).padding(Padding::Same).activation(Activation::Relu).input_shape([20, 23, 3]))
        .add(Conv2D::new(130, (3, 3)).strides((2, 2)).padding(Padding::Same))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    // A patch too large for the direct kernels (7x7x3), unfolded in bands of
    // positions whatever the batch.
    let fourth = Sequential::new()
        .seed(14)
        .add(Conv2D::new(8, (7, 7)).padding(Padding::Same).activation(Activation::Relu).input_shape([32, 32, 3]))
        .add(Conv2D::new(4, (3, 3)).strides((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    let models = [(first, [20, 23, 5]), (second, [14, 14, 6]), (third, [20, 23, 3]), (fourth, [32, 32, 3])];
    for (mut model, shape) in models {
        model.build().unwrap();
        let (n, len) = (20, shape.iter().product::<usize>());
        let values = (0..n * len).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
        let x = Tensor::from_vec(&[n, shape[0], shape[1], shape[2]], values).unwrap();
        let all = model.predict(&x).unwrap().to_f32_vec();
        let other = x.slice_rows(4, 20).unwrap();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            // Other samples first, so that no buffer still holds the values expected there.
            pool.install(|| model.predict(&other).unwrap());
            let few = pool.install(|| model.predict(&x.slice_rows(0, 3).unwrap()).unwrap().to_f32_vec());
            for (i, (a, b)) in few.iter().zip(&all).enumerate() {
                assert!((a - b).abs() <= 1e-6, "{shape:?}, {threads} threads, value {i}: {a} vs {b}");
            }
        }
    }
}
