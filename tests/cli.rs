//! The `keel` binary as a user runs it.

mod synthetic;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use synthetic::write_synthetic_mnist;

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
        (&["train", "--optimizer", "adadelta"], "unknown optimizer 'adadelta'"),
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
    // A dashboard port in use is refused before any data is read.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = keel(&["train", "--dashboard", &port, "--data-dir", "/nonexistent"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("give another --dashboard PORT") && !stderr.contains("not found"), "{stderr}");
}

/// A synthetic digit of class `label` as `write_synthetic_mnist` draws it, `scale` times larger.
fn synthetic_digit(label: usize, scale: u32) -> image::GrayImage {
    image::GrayImage::from_fn(28 * scale, 28 * scale, |x, y| {
        let (r, c) = ((y / scale) as usize, (x / scale) as usize);
        let lit = (2 * label + 4..2 * label + 6).contains(&r) && (4..24).contains(&c);
        image::Luma([if lit { 255 } else { 0 }])
    })
}

fn tensors_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>)> = file.iter().map(|(n, v)| (n.to_string(), v.data().to_vec())).collect();
    tensors.sort();
    tensors
}

#[test]
fn save_evaluate_predict_summary_export_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 600, 100);
    let data = tmp.path().to_str().unwrap();
    let file = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = keel(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let train = ["train", "--batch-size", "32", "--data-dir", data, "-q"];

    // 4 epochs straight, and 2 + resume to 4 in separate processes: bit-identical.
    run(&[&train[..], &["--epochs", "4", "--save", &file("straight.keel")]].concat());
    run(&[&train[..], &["--epochs", "2", "--save", &file("half.keel")]].concat());
    let resumed = run(&[
        &train[..],
        &["--epochs", "4", "--resume", &file("half.keel"), "--save", &file("resumed.keel")],
    ]
    .concat());
    assert!(resumed.contains("Test accuracy: "), "{resumed}");
    assert_eq!(tensors_of(&tmp.path().join("resumed.keel")), tensors_of(&tmp.path().join("straight.keel")));
    let out = keel(&[&train[..], &["--epochs", "2", "--resume", &file("half.keel")]].concat(), &[]);
    assert!(text(&out.stderr).contains("already trained 2 epochs"), "{}", text(&out.stderr));

    let metrics = file("eval.json");
    let evaluated = run(&["evaluate", &file("straight.keel"), "--data-dir", data, "--metrics-out", &metrics]);
    assert!(evaluated.contains("Test loss: ") && evaluated.contains("Test accuracy: "), "{evaluated}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.9, "{report}");

    assert!(run(&["summary", &file("straight.keel")]).contains("Total params: 54,410"));

    // Images: a PNG as trained, and a larger JPEG, dark on light, with --invert.
    synthetic_digit(3, 1).save(file("three.png")).unwrap();
    let mut seven = synthetic_digit(7, 3);
    image::imageops::invert(&mut seven);
    image::DynamicImage::ImageLuma8(seven).to_rgb8().save(file("seven.jpg")).unwrap();
    let printed = run(&["predict", &file("straight.keel"), &file("three.png"), "--top-k", "2"]);
    assert!(printed.starts_with(&format!("{}: 3 (", file("three.png"))), "{printed}");
    let json = run(&["predict", &file("straight.keel"), &file("seven.jpg"), "--invert", "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["file"], file("seven.jpg"));
    assert_eq!(json[0]["top"][0]["class"], "7", "{json}");
    assert_eq!(json[0]["top"].as_array().unwrap().len(), 3);
    let probabilities: Vec<f64> =
        json[0]["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
    assert_eq!(probabilities.len(), 10);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-4);

    std::fs::write(file("notes.png"), "not an image").unwrap();
    let out = keel(&["predict", &file("straight.keel"), &file("notes.png")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("notes.png: not a readable PNG, JPEG or BMP image"), "{}", text(&out.stderr));

    let exported = run(&["export", &file("straight.keel"), "--onnx", &file("m.onnx")]);
    assert!(exported.contains("ONNX opset 13"), "{exported}");
    assert!(std::fs::metadata(file("m.onnx")).unwrap().len() > 4 * 54_410);
}

#[test]
fn killing_training_never_damages_the_checkpoint_it_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 1000, 10);
    let checkpoints = tmp.path().join("ckpt");
    let best = checkpoints.join("best.keel");
    for delay_ms in [400, 700, 1000, 1300, 1600] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["train", "--epochs", "1000", "--batch-size", "500", "--validation-split", "0.5", "-q"])
            .args(["--checkpoint-dir", checkpoints.to_str().unwrap(), "--save-best-only"])
            .args(["--data-dir", tmp.path().to_str().unwrap(), "--learning-rate", "0.0001"])
            .env("KEEL_OFFLINE", "1")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        if best.exists() {
            let model = keel::model::Model::load(&best);
            assert!(model.is_ok(), "killed after {delay_ms} ms: {:?}", model.err());
        }
    }
    assert!(best.exists(), "no checkpoint was written in the runs");
}

#[test]
fn model_files_train_and_summarise_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 300, 50);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    let convnet = models.join("mnist_convnet.toml");
    let history = tmp.path().join("history.csv");
    let args =
        ["train", "--model", convnet.to_str().unwrap(), "--epochs", "1", "--data-dir", tmp.path().to_str().unwrap()];
    let out = keel(&[&args[..], &["--history-out", history.to_str().unwrap()]].concat(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Model: \"mnist_convnet\"") && stdout.contains("dropout (Dropout)"), "{stdout}");
    assert!(stdout.contains("Epoch 1/1") && stdout.contains("Test accuracy: "), "{stdout}");
    let csv = std::fs::read_to_string(&history).unwrap();
    assert!(csv.starts_with("epoch,accuracy,loss,val_accuracy,val_loss,seconds\n1,"), "{csv}");

    // Plots: valid, non-blank pictures.
    let plots = tmp.path().join("plots");
    let saved = tmp.path().join("m.keel");
    let args = [&args[..], &["--plots", plots.to_str().unwrap(), "--save", saved.to_str().unwrap(), "-q"]].concat();
    assert!(keel(&args, &[]).status.success());
    for name in ["curves", "confusion_matrix", "misclassified"] {
        let png = image::open(plots.join(format!("{name}.png"))).unwrap().to_rgb8();
        assert!(png.width() >= 400 && png.height() >= 300, "{name}.png is {}x{}", png.width(), png.height());
        let first = png.get_pixel(0, 0);
        let differing = png.pixels().filter(|p| *p != first).count();
        assert!(differing > 1000, "{name}.png is nearly blank ({differing} pixels differ)");
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>") && svg.contains("<text"), "{name}.svg");
    }
    let evaluated = tmp.path().join("eval_plots");
    let out = keel(
        &[
            "evaluate",
            saved.to_str().unwrap(),
            "--data-dir",
            tmp.path().to_str().unwrap(),
            "--plots",
            evaluated.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut written: Vec<String> =
        std::fs::read_dir(&evaluated).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    written.sort();
    assert_eq!(written, ["confusion_matrix.png", "confusion_matrix.svg", "misclassified.png", "misclassified.svg"]);

    let out = keel(&["summary", "--model", models.join("cifar10_cnn.toml").to_str().unwrap()], &[]);
    assert!(text(&out.stdout).contains("Total params: 1,250,858"), "{}", text(&out.stderr));

    let cifar = models.join("cifar10_cnn.toml");
    let out = keel(&["train", "--model", cifar.to_str().unwrap(), "--data-dir", tmp.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("dataset 'cifar10' not found"), "{}", text(&out.stderr));
}

#[test]
fn other_datasets_train_and_datasets_are_listed_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    // A CIFAR-10 whose class shows as a bright red row band.
    let dir = tmp.path().join("cifar10");
    std::fs::create_dir_all(&dir).unwrap();
    let batch = |n: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let label = (i % 10) as u8;
            out.push(label);
            let red: Vec<u8> = (0..1024).map(|p| if p / 32 / 3 == label as usize { 255 } else { 0 }).collect();
            out.extend(red);
            out.extend(vec![0u8; 2048]);
        }
        out
    };
    for b in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), batch(40)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(50)).unwrap();
    let out = keel(&["train", "--dataset", "cifar10", "--epochs", "2", "--batch-size", "20", "--data-dir", data], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("(None, 30, 30, 32)") && stdout.contains("Test accuracy: "), "{stdout}");

    write_synthetic_mnist(&tmp.path().join("mnist"), 20, 10);
    let out = keel(&["datasets", "list", "--data-dir", data], &[]);
    let listing = text(&out.stdout);
    let cifar = listing.lines().find(|l| l.starts_with("cifar10 ")).unwrap();
    assert!(cifar.contains("10   50000  10000   170.1MB") && cifar.ends_with(&dir.display().to_string()), "{listing}");
    let mnist = listing.lines().find(|l| l.starts_with("mnist ")).unwrap();
    assert!(mnist.contains("NOT verified"), "synthetic MNIST is not the published one: {listing}");
    assert!(listing.lines().any(|l| l.starts_with("kmnist") && l.ends_with("not found")), "{listing}");

    // Our synthetic MNIST is not the published one: verify says so and fails.
    let out = keel(&["datasets", "verify", "mnist", "--data-dir", data], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("CONTENTS DIFFER"), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("do not match the published checksums") && !stderr.contains("download failed"), "{stderr}");
}

#[test]
fn a_folder_of_images_trains_with_its_own_splits() {
    let tmp = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 30u32), ("test", 6)] {
        for (k, class) in ["circle", "square"].iter().enumerate() {
            let dir = tmp.path().join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::GrayImage::from_fn(20 + i % 3, 20, |x, y| {
                    let lit = if k == 0 {
                        (x as i32 - 10).pow(2) + (y as i32 - 10).pow(2) < 40
                    } else {
                        (5..15).contains(&x) && (5..15).contains(&y)
                    };
                    image::Luma([if lit { 255 } else { 0 }])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let root = tmp.path().to_str().unwrap();
    let out = keel(&["train", "--dataset", root, "--epochs", "3", "--batch-size", "10"], &[]);
    assert_eq!(out.status.code(), Some(1), "sizes differ without --image-size");
    assert!(text(&out.stderr).contains("--image-size"), "{}", text(&out.stderr));
    let saved = tmp.path().join("shapes.keel");
    let args = ["train", "--dataset", root, "--image-size", "16x16", "--color-mode", "grayscale", "--epochs", "3"];
    let out = keel(&[&args[..], &["--batch-size", "10", "--save", saved.to_str().unwrap()]].concat(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("(None, 14, 14, 32)") && stdout.contains("Test accuracy: "), "{stdout}");
    // Streaming the folder (batch by batch, prefetched) trains the very same model.
    let streamed = tmp.path().join("streamed.keel");
    let out = keel(
        &[&args[..], &["--batch-size", "10", "--stream", "-q", "--save", streamed.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tensors_of(&streamed), tensors_of(&saved));
    // The saved model knows its classes and evaluates on its folder, resized as in training.
    let out = keel(&["evaluate", saved.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = keel(
        &["predict", saved.to_str().unwrap(), tmp.path().join("test/square/1.png").to_str().unwrap(), "--json"],
        &[],
    );
    let json: Value = serde_json::from_str(&text(&json.stdout)).unwrap();
    assert_eq!(json[0]["probabilities"].as_array().unwrap().len(), 2);
    assert!(["circle", "square"].contains(&json[0]["top"][0]["class"].as_str().unwrap()));
}

#[cfg(not(feature = "mpi"))]
#[test]
fn train_under_an_mpi_launcher_needs_the_mpi_build() {
    let launch = [("OMPI_COMM_WORLD_SIZE", Path::new("2")), ("OMPI_COMM_WORLD_RANK", Path::new("1"))];
    let out = keel(&["train", "--epochs", "1"], &launch);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("error: rank 1: started as rank 1 of 2"), "{stderr}");
    assert!(stderr.contains("cargo build --release --features mpi"), "{stderr}");
}

#[test]
fn functional_model_files_train_on_image_folders_with_every_output() {
    // A residual network with BatchNormalization, from a model file, on a folder of colour images.
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("shapes");
    for (k, class) in ["dots", "lines", "plain"].iter().enumerate() {
        for split in ["train", "test"] {
            std::fs::create_dir_all(folder.join(split).join(class)).unwrap();
        }
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(12, 12, |x, y| {
                let on = match k {
                    0 => (x + y + i) % 4 == 0,
                    1 => (y + i) % 3 == 0,
                    _ => false,
                };
                image::Rgb(if on { [250, 250, 250] } else { [20, 20 + 10 * k as u8, 40] })
            });
            let split = if i < 9 { "train" } else { "test" };
            img.save(folder.join(split).join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let model = tmp.path().join("residual.toml");
    std::fs::write(
        &model,
        r#"name = "tiny_resnet"
input_shape = [12, 12, 3]

[[layers]]
class_name = "Conv2D"
name = "stem"
filters = 8
kernel_size = 3
padding = "same"
kernel_initializer = "he_normal"
kernel_regularizer = { class_name = "L2", l2 = 1e-4 }

[[layers]]
class_name = "BatchNormalization"
name = "bn"

[[layers]]
class_name = "Activation"
name = "relu"
activation = "relu"

[[layers]]
class_name = "Conv2D"
name = "branch"
filters = 8
kernel_size = 3
padding = "same"

[[layers]]
class_name = "Add"
name = "add"
inputs = ["relu", "branch"]

[[layers]]
class_name = "GlobalAveragePooling2D"

[[layers]]
class_name = "Dense"
units = 3
activation = "softmax"

[compile]
optimizer = { class_name = "Adam", learning_rate = 0.01 }
loss = "categorical_crossentropy"
metrics = ["accuracy"]
"#,
    )
    .unwrap();
    let (m, f) = (model.to_str().unwrap(), folder.to_str().unwrap());
    let saved = tmp.path().join("r.keel");
    let plots = tmp.path().join("plots");
    let run = |args: &[&str]| {
        let out = keel(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let stdout = run(&[
        "train",
        "--model",
        m,
        "--dataset",
        f,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--save",
        saved.to_str().unwrap(),
        "--plots",
        plots.to_str().unwrap(),
    ]);
    assert!(stdout.contains("Connected to") && stdout.contains("relu[0][0]"), "{stdout}");
    assert!(stdout.contains("Non-trainable params: 16 "), "{stdout}");
    assert!(plots.join("curves.png").is_file());
    assert!(run(&["summary", saved.to_str().unwrap()]).contains("add (Add)"));
    assert!(run(&["evaluate", saved.to_str().unwrap()]).contains("Test accuracy: "));
    let onnx = tmp.path().join("r.onnx");
    assert!(run(&["export", saved.to_str().unwrap(), "--onnx", onnx.to_str().unwrap()]).contains("ONNX"));
    let resumed = run(&["train", "--resume", saved.to_str().unwrap(), "--epochs", "3", "-q"]);
    assert!(resumed.contains("Test accuracy: "), "{resumed}");
}

/// Two classes of 16x16 colour images (`n` each): mostly red vs mostly green, with texture.
fn two_class_folder(root: &Path, n: usize) {
    for (k, class) in ["red", "green"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let (strong, weak) = (150 + ((x * 7 + y * 3 + i as u32) % 100) as u8, ((x * y + i as u32) % 90) as u8);
                image::Rgb(if k == 0 { [strong, weak, 40] } else { [weak, strong, 40] })
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

#[test]
fn a_binary_logits_model_with_a_training_recipe_trains_evaluates_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("halves");
    two_class_folder(&data.join("train"), 24);
    two_class_folder(&data.join("test"), 6);
    let model = tmp.path().join("binary.toml");
    std::fs::write(
        &model,
        r#"input_shape = [16, 16, 3]

[[layers]]
class_name = "Rescaling"
scale = 0.00392156862745098

[[layers]]
class_name = "SeparableConv2D"
filters = 4
kernel_size = 3
padding = "same"
activation = "silu"

[[layers]]
class_name = "Flatten"

[[layers]]
class_name = "Dense"
units = 1

[compile]
loss = { class_name = "BinaryCrossentropy", from_logits = true, label_smoothing = 0.05 }
metrics = ["accuracy"]
optimizer = { class_name = "AdamW", weight_decay = 0.01, clipnorm = 1.0, learning_rate = { class_name = "CosineDecay", initial_learning_rate = 0.0, decay_steps = 80, warmup_target = 0.03, warmup_steps = 8 } }
"#,
    )
    .unwrap();
    let saved = tmp.path().join("binary.keel");
    let (m, d, s) = (model.to_str().unwrap(), data.to_str().unwrap(), saved.to_str().unwrap());
    let out =
        keel(&["train", "--model", m, "--dataset", d, "--epochs", "10", "--batch-size", "8", "-q", "--save", s], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let accuracy: f64 = stdout.split("Test accuracy: ").nth(1).and_then(|t| t.trim().get(..6)?.parse().ok()).unwrap();
    assert!(accuracy >= 0.9, "red and green are easy to tell apart: {stdout}");
    // A scheduled learning rate cannot be overridden.
    let out = keel(&["train", "--resume", s, "--epochs", "11", "--learning-rate", "0.1", "-q"], &[]);
    assert!(text(&out.stderr).contains("CosineDecay schedule"), "{}", text(&out.stderr));
    // predict gives both classes' probabilities from the one logit.
    let image = data.join("test/red/0.png");
    let out = keel(&["predict", s, image.to_str().unwrap(), "--json"], &[]);
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let p = report[0]["probabilities"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert!((p[0].as_f64().unwrap() + p[1].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(report[0]["top"][0]["class"], "red", "{report}");
    // The classification report names the folder's classes, in their order.
    let out = keel(&["evaluate", s, "--report", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["classes"][0]["name"], "green");
    assert_eq!(report["classes"][1]["support"], 6);
    assert!((report["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-3, "{report}");
    let out = keel(&["evaluate", s, "--report"], &[]);
    assert!(text(&out.stdout).contains("weighted avg") && text(&out.stdout).contains("confusion matrix"));
}

#[test]
fn bench_times_a_model_file_and_export_writes_its_onnx() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mnist_convnet.toml");
    let m = model.to_str().unwrap();
    let out = keel(&["bench", "--model", m, "--batch", "1,4", "--train", "--runs", "2", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4]);
    for row in rows {
        for key in ["latency_ms_p50", "latency_ms_p90", "images_per_s", "train_s_per_step"] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {row}");
        }
    }
    let out = keel(&["bench", "--model", m, "--batch", "0"], &[]);
    assert!(text(&out.stderr).contains("at least 1"), "{}", text(&out.stderr));
    let onnx = tmp.path().join("m.onnx");
    let out = keel(&["export", "--model", m, "--onnx", onnx.to_str().unwrap()], &[]);
    assert!(out.status.success() && onnx.is_file(), "{}", text(&out.stderr));
    let out = keel(&["export", "--onnx", onnx.to_str().unwrap()], &[]);
    assert!(text(&out.stderr).contains("give a .keel file or --model FILE"), "{}", text(&out.stderr));
}
