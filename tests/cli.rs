//! The `keel` binary as a user runs it.

use keel::datasets::idx;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn keel(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.args(args).env_remove("KEEL_DATA_DIR").env("KEEL_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("keel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small MNIST-shaped dataset whose classes are easy to tell apart.
fn write_synthetic_mnist(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let mut pixels = vec![0u8; n * 784];
        for (img, &label) in pixels.chunks_mut(784).zip(&labels) {
            // Class k lights up rows 2k+4 .. 2k+6.
            for r in (2 * label as usize + 4)..(2 * label as usize + 6) {
                img[r * 28 + 4..r * 28 + 24].fill(255);
            }
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), idx::encode(&[n, 28, 28], &pixels)).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx::encode(&[n], &labels)).unwrap();
    }
}

#[test]
fn summary_prints_the_reference_table() {
    let out = keel(&["summary"], &[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("conv2d (Conv2D)") && stdout.contains(" Total params: 54,410 (212.54 KB)"), "{stdout}");
}

#[test]
fn train_runs_end_to_end_and_writes_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 400, 100);
    let metrics = tmp.path().join("m.json");
    let args = [
        "train",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--metrics-out",
        metrics.to_str().unwrap(),
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ];
    let out = keel(&args, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("Epoch 1/2") && stdout.contains("Epoch 2/2"), "{stdout}");
    assert!(stdout.contains("12/12 ━━━━━━━━━━━━━━━━━━━━") && stdout.contains("val_accuracy"), "{stdout}");
    assert!(stdout.contains("Test accuracy: "), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.9, "{report}");
    assert!(report["test_loss"].as_f64().unwrap().is_finite());
    let history = report["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    for key in ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"] {
        assert!(history[1][key].is_number(), "history lacks {key}: {report}");
    }
    assert_eq!(report["config"]["batch_size"], 32);
    assert_eq!(report["config"]["params"], 54_410);
    for key in ["load_s", "fit_s", "evaluate_s", "predict_s", "total_s"] {
        assert!(report["timings"][key].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn user_mistakes_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["train", "--data-dir", tmp.path().to_str().unwrap()], "dataset 'mnist' not found"),
        (&["train", "--optimizer", "adagrad"], "unknown optimizer 'adagrad'"),
        (&["train", "--learning-rate=0"], "learning rate must be a positive number"),
    ];
    for (args, message) in cases {
        let out = keel(args, &[("KEEL_CACHE_DIR", tmp.path())]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    write_synthetic_mnist(&tmp.path().join("mnist"), 20, 10);
    let out = keel(&["train", "--validation-split", "1.5", "--data-dir", tmp.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("validation_split"));
}
