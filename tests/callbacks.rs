//! Callbacks and fit options against Keras' semantics: some driven through
//! `fit`, some fed hand-made logs so every counter can be checked.

mod synthetic;

use keel::callbacks::*;
use keel::model::{History, Logs};
use keel::prelude::*;
use std::collections::BTreeMap;
use synthetic::{quiet, small_cnn, stripes};

fn compiled(optimizer: impl Into<Box<dyn Optimizer>>) -> Model {
    let mut model = small_cnn(1, 4, Activation::Softmax);
    model.compile(optimizer, Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model
}

fn logs(name: &str, value: f64) -> Logs {
    Logs::from([(name.to_string(), value)])
}

/// Feeds `values` of `monitor` to `callback` as epochs 1, 2, ...; returns the
/// epoch it stopped at, if it did.
fn feed(callback: &mut dyn Callback, model: &mut Model, monitor: &str, values: &[f64]) -> Option<usize> {
    callback.on_train_begin(model).unwrap();
    for (i, &v) in values.iter().enumerate() {
        if callback.on_epoch_end(model, i + 1, &logs(monitor, v)).unwrap() == Control::Stop {
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn early_stopping_counts_patience_like_keras() {
    let mut model = compiled(Adam::default());
    // Keras 3: wait resets on improvement, stops once `patience` epochs pass without one.
    let cases: [(usize, f64, &[f64], Option<usize>); 5] = [
        (0, 0.0, &[1.0, 0.9, 0.95], Some(3)),
        (2, 0.0, &[1.0, 0.9, 0.95, 0.91, 0.92], Some(4)),
        (2, 0.0, &[1.0, 1.1, 0.8, 0.9, 0.75, 0.8], None),
        (1, 0.2, &[1.0, 0.85, 0.7], Some(2)), // 0.85 is not better by more than min_delta
        (3, 0.0, &[f64::NAN, 1.0, 1.0, 1.0, 1.0], Some(5)),
    ];
    for (patience, min_delta, values, stop) in cases {
        let mut es = EarlyStopping::new().patience(patience).min_delta(min_delta);
        assert_eq!(feed(&mut es, &mut model, "val_loss", values), stop, "patience {patience}, {values:?}");
    }
    let mut es = EarlyStopping::new().monitor("val_accuracy").patience(1);
    assert_eq!(feed(&mut es, &mut model, "val_accuracy", &[0.5, 0.7, 0.6, 0.9]), Some(3));
    let mut es = EarlyStopping::new().monitor("val_score").mode(Mode::Max).patience(1);
    assert_eq!(feed(&mut es, &mut model, "val_score", &[1.0, 0.5, 0.4]), Some(2));
}

#[test]
fn early_stopping_restores_the_best_epochs_weights() {
    let mut model = compiled(Adam::default());
    model.build().unwrap();
    let mut es = EarlyStopping::new().patience(2).restore_best_weights(true);
    es.on_train_begin(&mut model).unwrap();
    let mut snapshots = Vec::new();
    for (epoch, val_loss) in [0.9, 0.5, 0.7, 0.8].into_iter().enumerate() {
        model.params_mut().unwrap().iter_mut().for_each(|p| *p += 1.0); // "training"
        snapshots.push(model.params().unwrap().to_vec());
        let control = es.on_epoch_end(&mut model, epoch + 1, &logs("val_loss", val_loss)).unwrap();
        assert_eq!(control == Control::Stop, epoch == 3);
    }
    es.on_train_end(&mut model, &History::default()).unwrap();
    assert_eq!(model.params().unwrap(), snapshots[1].as_slice(), "weights of epoch 2 (val_loss 0.5)");
    assert_eq!((es.best_epoch, es.stopped_epoch), (Some(2), Some(4)));
}

#[test]
fn early_stopping_ends_fit_and_needs_what_it_monitors() {
    let (x, labels) = stripes(200, 4, 21);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = compiled(Adam::default());
    let mut es = EarlyStopping::new().monitor("loss").min_delta(100.0);
    let history = model.fit_with_callbacks(&x, &y, &quiet(10, 32, 0.0), &mut [&mut es]).unwrap();
    assert_eq!(history.epochs.len(), 2, "the first epoch sets the best, the second cannot beat it by 100");
    let mut es = EarlyStopping::new();
    let err = model.fit_with_callbacks(&x, &y, &quiet(2, 32, 0.0), &mut [&mut es]).unwrap_err().to_string();
    assert!(err.contains("EarlyStopping monitors 'val_loss'") && err.contains("accuracy, loss"), "{err}");
}

#[test]
fn reduce_lr_on_plateau_waits_reduces_cools_down_and_floors() {
    let mut model = compiled(Adam::new(1.0));
    let mut plateau = ReduceLROnPlateau::new().factor(0.5).patience(2).cooldown(2).min_lr(0.2);
    plateau.on_train_begin(&mut model).unwrap();
    let mut rates = Vec::new();
    for (epoch, v) in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5].into_iter().enumerate() {
        plateau.on_epoch_end(&mut model, epoch + 1, &logs("val_loss", v)).unwrap();
        rates.push(model.optimizer().unwrap().learning_rate());
    }
    // Keras counts the cooldown down before checking it: cooldown 2 rests one epoch.
    // wait 1, 2 -> halve; rest; wait 1, 2 -> halve; 0.5 improves (during the rest);
    // wait 1, 2 -> halve, floored at 0.2; rest; wait 1, 2: already at the floor.
    assert_eq!(rates, [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]);
    let mut bad = ReduceLROnPlateau::new().factor(1.5);
    assert!(bad.on_train_begin(&mut model).unwrap_err().to_string().contains("factor must be in (0, 1)"));
}

#[test]
fn schedules_set_the_rate_of_each_epoch() {
    let step = Schedule::Step { initial: 0.1, drop: 0.5, every: 2 };
    assert_eq!((0..5).map(|e| step.rate(e, 0.0)).collect::<Vec<_>>(), [0.1, 0.1, 0.05, 0.05, 0.025]);
    let exp = Schedule::Exponential { initial: 1.0, rate: 0.9 };
    assert!((exp.rate(3, 0.0) - 0.729).abs() < 1e-6);
    let cos = Schedule::Cosine { initial: 1.0, epochs: 4, alpha: 0.1 };
    let cosine: Vec<f32> = (0..6).map(|e| cos.rate(e, 0.0)).collect();
    for (got, want) in cosine.iter().zip([1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]) {
        assert!((got - want).abs() < 1e-4, "{cosine:?}");
    }

    let (x, labels) = stripes(100, 4, 22);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = compiled(SGD::new(1.0));
    let mut scheduler = LearningRateScheduler::new(Schedule::Custom(Box::new(|epoch, lr| lr / (epoch + 1) as f32)));
    model.fit_with_callbacks(&x, &y, &quiet(3, 50, 0.0), &mut [&mut scheduler]).unwrap();
    assert_eq!(scheduler.rates, [1.0, 0.5, 0.5 / 3.0]);
    assert_eq!(model.optimizer().unwrap().learning_rate(), 0.5 / 3.0);
}

#[test]
fn csv_logger_writes_keras_rows_and_appends() {
    let (x, labels) = stripes(120, 4, 23);
    let y = to_categorical(&labels, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.csv");
    let mut model = compiled(Adam::default());
    let mut csv = CSVLogger::new(&path);
    let history = model.fit_with_callbacks(&x, &y, &quiet(2, 32, 0.25), &mut [&mut csv]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    let row: Vec<f64> = lines[2].split(',').map(|v| v.parse().unwrap()).collect();
    let last = history.last().unwrap();
    assert_eq!(row, [1.0, last.logs["accuracy"], last.logs["loss"], last.logs["val_accuracy"], last.logs["val_loss"]]);

    let mut more = CSVLogger::new(&path).append(true);
    model.fit_with_callbacks(&x, &y, &quiet(1, 32, 0.25), &mut [&mut more]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("epoch")).count(), 1);
}

#[test]
fn terminate_on_nan_stops_cleanly_where_fit_would_fail() {
    let (x, labels) = stripes(256, 4, 24);
    let y = to_categorical(&labels, None).unwrap();
    let diverging = || {
        let mut model = small_cnn(2, 4, Activation::Linear);
        model.compile(SGD::new(1e30), Loss::MeanSquaredError, &[]).unwrap();
        model
    };
    let err = diverging().fit(&x, &y, &quiet(3, 32, 0.0)).unwrap_err().to_string();
    assert!(err.contains("training diverged"), "{err}");

    let mut model = diverging();
    let mut guard = TerminateOnNaN::default();
    let history = model.fit_with_callbacks(&x, &y, &quiet(3, 32, 0.0), &mut [&mut guard]).unwrap();
    let (epoch, batch) = guard.terminated_at.expect("training diverges");
    assert_eq!(history.epochs.len(), epoch - 1, "the diverged epoch is not logged");
    assert!(batch >= 1);
    assert!(model.params().unwrap().iter().all(|p| p.is_finite()), "the bad step is not applied");
}

#[test]
fn class_weight_scales_each_samples_loss_and_gradient() {
    let (x, labels) = stripes(64, 4, 25);
    let y = to_categorical(&labels, None).unwrap();
    let options = |weights: Option<BTreeMap<usize, f32>>| FitOptions {
        class_weight: weights,
        shuffle: false,
        ..quiet(1, 64, 0.0)
    };

    // Every class weighing 2 is plain SGD at twice the rate, with twice the loss.
    let mut doubled = compiled(SGD::new(0.05));
    let h2 = doubled.fit(&x, &y, &options(Some((0..4).map(|c| (c, 2.0)).collect()))).unwrap();
    let mut faster = compiled(SGD::new(0.1));
    let h1 = faster.fit(&x, &y, &options(None)).unwrap();
    assert!((h2.last().unwrap().logs["loss"] - 2.0 * h1.last().unwrap().logs["loss"]).abs() < 1e-5);
    for (a, b) in doubled.params().unwrap().iter().zip(faster.params().unwrap()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    // Samples of a class weighing 0 teach nothing.
    let ones: Vec<u8> = vec![1; 32];
    let x1 = x.slice_rows(0, 32).unwrap();
    let y1 = to_categorical(&Tensor::from_u8(&[32], ones).unwrap(), Some(4)).unwrap();
    let mut model = compiled(SGD::new(0.5));
    model.build().unwrap();
    let before = model.params().unwrap().to_vec();
    model.fit(&x1, &y1, &FitOptions { class_weight: Some(BTreeMap::from([(1, 0.0)])), ..quiet(1, 32, 0.0) }).unwrap();
    assert_eq!(model.params().unwrap(), before.as_slice());

    let bad = FitOptions { class_weight: Some(BTreeMap::from([(0, f32::NAN)])), ..quiet(1, 32, 0.0) };
    assert!(model.fit(&x, &y, &bad).unwrap_err().to_string().contains("class_weight for class 0 is NaN"));
}

#[test]
fn validation_data_is_evaluated_every_epoch() {
    let (x, labels) = stripes(160, 4, 26);
    let y = to_categorical(&labels, None).unwrap();
    let (x_val, labels_val) = stripes(48, 4, 27);
    let y_val = to_categorical(&labels_val, None).unwrap();
    let mut model = compiled(Adam::default());
    let options = FitOptions { validation_data: Some((x_val.clone(), y_val.clone())), ..quiet(2, 32, 0.5) };
    let history = model.fit(&x, &y, &options).unwrap();
    let last = history.last().unwrap();
    let scores = model.evaluate(&x_val, &y_val).unwrap();
    assert!((last.logs["val_loss"] - scores.loss).abs() < 1e-9);
    assert_eq!(last.logs["val_accuracy"], scores.accuracy().unwrap());
    assert_eq!(model.history().epochs.len(), 2);

    let wrong = FitOptions { validation_data: Some((x_val, y_val.slice_rows(0, 10).unwrap())), ..quiet(1, 32, 0.0) };
    let err = model.fit(&x, &y, &wrong).unwrap_err().to_string();
    assert!(err.contains("validation_data: x has 48 samples but y has 10"), "{err}");
}

#[test]
fn history_exports_to_json_and_csv() {
    let (x, labels) = stripes(64, 4, 28);
    let y = to_categorical(&labels, None).unwrap();
    let mut model = compiled(Adam::default());
    let history = model.fit(&x, &y, &quiet(2, 32, 0.25)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&history.to_json()).unwrap();
    assert_eq!(json[1]["epoch"], 2);
    assert_eq!(json[1]["val_loss"].as_f64().unwrap(), history.epochs[1].logs["val_loss"]);
    let csv = history.to_csv();
    assert_eq!(csv.lines().next().unwrap(), "epoch,accuracy,loss,val_accuracy,val_loss,seconds");
    assert!(csv.lines().nth(2).unwrap().starts_with("2,"), "{csv}");
    let dir = tempfile::tempdir().unwrap();
    history.save(dir.path().join("h.csv")).unwrap();
    history.save(dir.path().join("h.json")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("h.csv")).unwrap(), csv);
    let back: History = serde_json::from_str(&std::fs::read_to_string(dir.path().join("h.json")).unwrap()).unwrap();
    assert_eq!(back, history);
}
