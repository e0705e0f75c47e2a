//! Metrics against hand-computed values, and through compile/fit/evaluate.

use keel::metrics::{F1Average, Metric};
use keel::prelude::*;

/// A metric's values on one batch of probabilities and targets.
fn values(metric: Metric, out: &[f32], target: &[f32], width: usize, sparse: bool) -> Vec<f64> {
    let mut state = vec![0.0; metric.state_len(width)];
    metric.update(out, target, width, sparse, &mut state);
    metric.results(&state, (out.len() / width) as f64, width)
}

// Four samples over three classes; true classes 0, 1, 2, 2.
const OUT: [f32; 12] = [0.7, 0.2, 0.1, /**/ 0.1, 0.3, 0.6, /**/ 0.2, 0.2, 0.6, /**/ 0.5, 0.4, 0.1];
const ONE_HOT: [f32; 12] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
const CLASSES: [f32; 4] = [0.0, 1.0, 2.0, 2.0];

#[test]
fn accuracies_and_top_k() {
    // Predicted 0, 2, 2, 0: samples 0 and 2 right.
    assert_eq!(values(Metric::CategoricalAccuracy, &OUT, &ONE_HOT, 3, false), [0.5]);
    assert_eq!(values(Metric::SparseCategoricalAccuracy, &OUT, &CLASSES, 3, true), [0.5]);
    // Top 2: sample 1's class 1 (0.3) is second, sample 3's class 2 (0.1) is third.
    assert_eq!(values(Metric::TopKCategoricalAccuracy(2), &OUT, &ONE_HOT, 3, false), [0.75]);
    assert_eq!(values(Metric::SparseTopKCategoricalAccuracy(2), &OUT, &CLASSES, 3, true), [0.75]);
    assert_eq!(values(Metric::TopKCategoricalAccuracy(3), &OUT, &ONE_HOT, 3, false), [1.0]);
}

#[test]
fn precision_and_recall_threshold_every_value_at_half_as_keras() {
    // Values above 0.5: (0, 0) true, (1, 2) false, (2, 2) true; positives missed: (1, 1), (3, 2).
    let p = values(Metric::Precision, &OUT, &ONE_HOT, 3, false)[0];
    let r = values(Metric::Recall, &OUT, &ONE_HOT, 3, false)[0];
    assert!((p - 2.0 / 3.0).abs() < 1e-12 && (r - 2.0 / 4.0).abs() < 1e-12, "{p} {r}");
    assert_eq!(values(Metric::Recall, &OUT, &CLASSES, 3, true)[0], r);
}

#[test]
fn f1_per_class_and_averaged() {
    // Predicted 0, 2, 2, 0 against 0, 1, 2, 2:
    // class 0: TP 1, FP 1, FN 0 -> 2/3; class 1: TP 0, FN 1 -> 0; class 2: TP 1, FP 1, FN 1 -> 1/2.
    let per_class = values(Metric::F1Score(F1Average::None), &OUT, &ONE_HOT, 3, false);
    let want = [2.0 / 3.0, 0.0, 0.5];
    assert!(per_class.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{per_class:?}");
    let macro_ = values(Metric::F1Score(F1Average::Macro), &OUT, &ONE_HOT, 3, false)[0];
    assert!((macro_ - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
    // Supports 1, 1, 2.
    let weighted = values(Metric::F1Score(F1Average::Weighted), &OUT, &CLASSES, 3, true)[0];
    assert!((weighted - (2.0 / 3.0 + 2.0 * 0.5) / 4.0).abs() < 1e-12);
    // Micro: TP 2, FP 2, FN 2 -> 0.5 (the accuracy, for single-label data).
    assert_eq!(values(Metric::F1Score(F1Average::Micro), &OUT, &ONE_HOT, 3, false), [0.5]);
    let names = Metric::F1Score(F1Average::None).names(3);
    assert_eq!(names, ["f1_score/0", "f1_score/1", "f1_score/2"]);
}

#[test]
fn auc_from_keras_thresholds() {
    // One output: positives score 0.9 and 0.4, negatives 0.35 and 0.1: every positive
    // above every negative -> 1.0; swapping one pair (0.4 vs 0.35 -> 0.3 vs 0.35) -> 3/4.
    let auc = Metric::Auc { multi_label: false };
    assert!((values(auc, &[0.9, 0.4, 0.35, 0.1], &[1.0, 1.0, 0.0, 0.0], 1, false)[0] - 1.0).abs() < 1e-9);
    let swapped = values(auc, &[0.9, 0.3, 0.35, 0.1], &[1.0, 1.0, 0.0, 0.0], 1, false)[0];
    assert!((swapped - 0.75).abs() < 1e-9, "{swapped}");
    // Scores within one threshold gap tie: half credit, as Keras' interpolation gives.
    let tied = values(auc, &[0.501, 0.502], &[1.0, 0.0], 1, false)[0];
    assert!((tied - 0.5).abs() < 1e-9, "{tied}");
    // One-vs-rest per class, averaged (multi_label), against sparse targets.
    let ovr = values(Metric::Auc { multi_label: true }, &OUT, &CLASSES, 3, true)[0];
    // class 0: positive 0.7 vs negatives 0.1, 0.2, 0.5 -> 1; class 1: 0.3 vs 0.2, 0.2, 0.4 -> 2/3;
    // class 2: 0.6, 0.1 vs 0.1, 0.6 -> ties count half: (0.5 + 1 + 0 + 0.5) / 4 = 0.5.
    assert!((ovr - (1.0 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-9, "{ovr}");
}

#[test]
fn metrics_in_compile_fit_evaluate_and_model_files() {
    let x = Tensor::from_vec(&[8, 4], (0..32).map(|i| ((i * 7) % 11) as f32 / 11.0).collect()).unwrap();
    let y =
        to_categorical(&Tensor::from_vec(&[8], vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]).unwrap(), None).unwrap();
    let mut model = Sequential::new().add(Dense::new(3).activation(Activation::Softmax).input_shape([4]));
    let metrics = [
        Metric::Accuracy,
        Metric::TopKCategoricalAccuracy(2),
        Metric::Precision,
        Metric::Recall,
        Metric::F1Score(F1Average::Macro),
        Metric::Auc { multi_label: true },
    ];
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &metrics).unwrap();
    let history = model
        .fit(
            &x,
            &y,
            &FitOptions {
                epochs: 2,
                verbose: keel::model::Verbosity::Silent,
                validation_split: 0.25,
                ..FitOptions::default()
            },
        )
        .unwrap();
    for name in ["top_k_categorical_accuracy", "precision", "recall", "f1_score", "auc", "val_auc", "val_f1_score"] {
        let v = history.epochs[1].get(name).unwrap_or_else(|| panic!("{name} logged"));
        assert!((0.0..=1.0).contains(&v), "{name} = {v}");
    }
    let scores = model.evaluate(&x, &y).unwrap();
    // evaluate's values are the metrics of predict's output, computed here directly.
    let probs = model.predict(&x).unwrap().to_f32_vec();
    for metric in metrics {
        let want = values(metric, &probs, &y.to_f32_vec(), 3, false)[0];
        let got = scores.metrics[metric.name()];
        assert!((got - want).abs() < 1e-9, "{}: {got} vs {want}", metric.name());
    }
    // Model files: names, or tables with arguments.
    let text = r#"["accuracy", "precision", { class_name = "TopKCategoricalAccuracy", k = 3 }, { class_name = "F1Score", average = "weighted" }, { class_name = "AUC", multi_label = true }]"#;
    let parsed: Vec<Metric> =
        toml::from_str::<toml::Table>(&format!("m = {text}")).unwrap()["m"].clone().try_into().unwrap();
    assert_eq!(parsed[2], Metric::TopKCategoricalAccuracy(3));
    assert_eq!(parsed[3], Metric::F1Score(F1Average::Weighted));
    assert_eq!(parsed[4], Metric::Auc { multi_label: true });
    let json = serde_json::to_string(&parsed).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Metric>>(&json).unwrap(), parsed);
    for bad in
        [r#"{ class_name = "Precision", k = 3 }"#, r#"{ class_name = "TopKCategoricalAccuracy", k = 0 }"#, r#""mape""#]
    {
        let parsed: Result<Vec<Metric>, _> =
            toml::from_str::<toml::Table>(&format!("m = [{bad}]")).unwrap()["m"].clone().try_into();
        assert!(parsed.is_err(), "{bad}");
    }
}

#[test]
fn classification_report_as_scikit_learn_computes_it() {
    use keel::model::ClassificationReport;
    let names: Vec<String> = ["cat", "dog", "emu"].map(String::from).to_vec();
    let probs = Tensor::from_vec(&[4, 3], OUT.to_vec()).unwrap();
    // Predicted 0, 2, 2, 0 against 0, 1, 2, 2.
    let report = ClassificationReport::from_probabilities(&probs, &[0, 1, 2, 2], &names);
    let scores: Vec<(f64, f64, f64, usize)> =
        report.classes.iter().map(|c| (c.precision, c.recall, c.f1, c.support)).collect();
    assert_eq!(scores, [(0.5, 1.0, 2.0 / 3.0, 1), (0.0, 0.0, 0.0, 1), (0.5, 0.5, 0.5, 2)]);
    assert_eq!(report.accuracy, 0.5);
    assert!((report.macro_avg.precision - 1.0 / 3.0).abs() < 1e-12);
    assert!((report.weighted_avg.f1 - (2.0 / 3.0 + 1.0) / 4.0).abs() < 1e-12);
    assert_eq!(report.top_k, [(1, 0.5)]);
    assert_eq!(report.confusion, [[1, 0, 0], [0, 0, 1], [1, 0, 1]]);
    let pairs: Vec<(&str, &str, usize)> =
        report.most_confused.iter().map(|c| (c.truth.as_str(), c.predicted.as_str(), c.count)).collect();
    assert_eq!(pairs, [("dog", "emu", 1), ("emu", "cat", 1)]);
    let text = report.to_string();
    assert!(text.contains("         emu     0.5000     0.5000     0.5000          2"), "{text}");
    assert!(text.contains("weighted avg"), "{text}");
    assert_eq!(report.to_json()["classes"][0]["name"], "cat");
}
