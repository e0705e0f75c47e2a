//! What goes wrong when a user (or an attacker) gives odd paths, flags and
//! files: each case a clear error or a safe outcome, never a lost run, a
//! replaced device or a silent wrong answer.

mod synthetic;

use keel::io::{OutputLock, write_atomic};
use keel::prelude::*;
use std::path::Path;
use std::process::{Command, Output};
use synthetic::{quiet, small_cnn, stripes, write_synthetic_mnist};

fn keel(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.args(args).env_remove("KEEL_DATA_DIR").env("KEEL_OFFLINE", "1");
    cmd.output().expect("keel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs keel expecting exit 1 and an error containing every part; returns stdout.
fn fails(args: &[&str], parts: &[&str]) -> String {
    let out = keel(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    for part in parts {
        assert!(stderr.contains(part), "{args:?}: wanted '{part}' in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    text(&out.stdout)
}

#[test]
fn output_paths_are_checked_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 60, 20);
    let data = tmp.path().to_str().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let missing = tmp.path().join("nodir/m.keel");
    let (file, missing) = (file.to_str().unwrap(), missing.to_str().unwrap());
    let train = ["train", "--epochs", "1", "--data-dir", data];
    for (flag, path, why) in [
        ("--save", missing, "does not exist"),
        ("--metrics-out", missing, "does not exist"),
        ("--history-out", missing, "does not exist"),
        ("--save", data, "is a directory"),
        ("--plots", file, "is not a directory"),
        ("--checkpoint-dir", file, "is not a directory"),
    ] {
        let stdout = fails(&[&train[..], &[flag, path]].concat(), &[flag, path, why]);
        assert!(!stdout.contains("Epoch 1/1"), "{flag} {path}: trained before failing: {stdout}");
    }
}

#[test]
fn writes_follow_links_and_never_replace_what_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    // A symbolic link is written through: it stays a link, its target gets the bytes.
    let target = tmp.path().join("real.json");
    std::fs::write(&target, "old").unwrap();
    let link = tmp.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_atomic(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    // A device is written, not replaced by a regular file.
    write_atomic(Path::new("/dev/null"), b"bytes").unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // A directory is refused, naming it.
    let err = write_atomic(tmp.path(), b"x").unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    // A missing folder is named, not a temporary file.
    let err = write_atomic(&tmp.path().join("nodir/m.keel"), b"x").unwrap_err().to_string();
    assert!(err.contains("nodir/m.keel") && err.contains("does not exist") && !err.contains(".tmp-"), "{err}");
}

#[test]
fn temporary_files_of_dead_writers_are_removed_on_the_next_write() {
    let tmp = tempfile::tempdir().unwrap();
    // Process ids are below 2^22 on Linux: 4,000,000,000 is never alive.
    let stale = tmp.path().join(".m.keel.tmp-4000000000-0");
    let live = tmp.path().join(format!(".m.keel.tmp-{}-999", std::process::id()));
    let other = tmp.path().join(".other.keel.tmp-4000000000-0");
    for path in [&stale, &live, &other] {
        std::fs::write(path, "partial").unwrap();
    }
    write_atomic(&tmp.path().join("m.keel"), b"done").unwrap();
    assert!(!stale.exists(), "a dead writer's temporary file stayed");
    assert!(live.exists(), "a live writer's temporary file was removed");
    assert!(other.exists(), "another file's temporary file was removed");
}

#[test]
fn a_second_run_on_the_same_outputs_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let save = tmp.path().join("m.keel");
    let _held = OutputLock::acquire(&save, false, "--save").unwrap();
    let err = OutputLock::acquire(&save, false, "--save").err().unwrap().to_string();
    assert!(err.contains("in use by another keel run") && err.contains("m.keel"), "{err}");
    let dir = tmp.path().join("checkpoints");
    let _held_dir = OutputLock::acquire(&dir, true, "--checkpoint-dir").unwrap();
    assert!(dir.is_dir());
    // The binary: another process holds the checkpoint directory.
    write_synthetic_mnist(&tmp.path().join("mnist"), 60, 20);
    let args = ["train", "--epochs", "1", "--data-dir", tmp.path().to_str().unwrap()];
    fails(&[&args[..], &["--checkpoint-dir", dir.to_str().unwrap()]].concat(), &["in use by another keel run"]);
    drop(_held);
    let out = keel(&[&args[..], &["-q", "--save", save.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn odd_flags_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 60, 20);
    let data = tmp.path().to_str().unwrap();
    fails(&["train", "--threads", "100000", "--data-dir", data], &["--threads 100000 is out of range"]);
    fails(&["train", "--learning-rate", "-1", "--data-dir", data], &["learning rate must be a positive number"]);
    fails(&["train", "--epochs", "0", "--data-dir", data], &["--epochs must be at least 1"]);
    let out = keel(&["train", "--dataset", "nope", "--data-dir", data]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown dataset 'nope'") && stderr.matches("invalid argument").count() == 1, "{stderr}");
    let out = keel(&["predict", "m.keel", "x.png", "--top-k", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--top-k"), "{}", text(&out.stderr));
}

#[test]
fn predict_reports_every_file_and_valid_json_when_some_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, labels) = stripes(40, 4, 1);
    let mut model = small_cnn(1, 4, Activation::Softmax);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &to_categorical(&labels, None).unwrap(), &quiet(1, 8, 0.0)).unwrap();
    let path = tmp.path().join("m.keel");
    model.save(&path).unwrap();
    let good = tmp.path().join("good.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([120])).save(&good).unwrap();
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "not an image").unwrap();
    let (m, g, b) = (path.to_str().unwrap(), good.to_str().unwrap(), bad.to_str().unwrap());
    let out = keel(&["predict", m, g, b, g, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("valid JSON on stdout");
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["probabilities"].is_array() && rows[2]["probabilities"].is_array());
    assert_eq!(rows[1]["file"], b);
    assert!(rows[1]["error"].as_str().unwrap().contains("not a readable PNG"), "{json}");
    assert_eq!(rows[0]["probabilities"], rows[2]["probabilities"]);
    assert!(text(&out.stderr).contains("1 of 3 images could not be read"));
    // An image on standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["predict", m, "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&std::fs::read(&good).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json[0]["probabilities"], rows[0]["probabilities"]);
}

/// A model file's metadata, and its tensors as (name, shape, bytes).
type Metadata = std::collections::HashMap<String, String>;
type Tensors = Vec<(String, Vec<usize>, Vec<u8>)>;

/// Rewrites a saved model file with `edit` applied to its metadata and tensors.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Metadata, &mut Tensors)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors =
        file.iter().map(|(n, v)| (n.to_string(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort();
    // As a file written before tensor checksums existed (which loads as it is).
    metadata.remove("checksums");
    edit(&mut metadata, &mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

#[test]
fn model_files_that_lie_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, labels) = stripes(40, 4, 2);
    let mut model = small_cnn(2, 4, Activation::Softmax);
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model.fit(&x, &to_categorical(&labels, None).unwrap(), &quiet(1, 8, 0.0)).unwrap();
    let path = tmp.path().join("m.keel");
    let load_error = |edit: &dyn Fn(&mut Metadata, &mut Tensors)| {
        model.save(&path).unwrap();
        rewrite(&path, edit);
        Model::load(&path).err().map(|e| e.to_string()).unwrap_or_default()
    };
    // A flipped bit in a tensor: its checksum says so.
    model.save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let err = Model::load(&path).err().unwrap().to_string();
    assert!(err.contains("does not match its checksum"), "{err}");
    // Without checksums (an older file) it loads.
    let err = load_error(&|_, _| {});
    assert_eq!(err, "");
    // NaN weights, named.
    let err = load_error(&|_, tensors| {
        let (_, _, data) = tensors.iter_mut().find(|(n, _, _)| n == "dense/kernel").unwrap();
        data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(err.contains("'dense/kernel'") && err.contains("NaN at index 2"), "{err}");
    // An optimizer step count that would wrap.
    let err = load_error(&|metadata, _| {
        let mut value: serde_json::Value = serde_json::from_str(&metadata["training"]).unwrap();
        value["optimizer_iterations"] = serde_json::json!(u64::MAX);
        metadata.insert("training".into(), value.to_string());
    });
    assert!(err.contains("optimizer steps"), "{err}");
    // Two stray tensors: always the same one named.
    let strays = |_: &mut std::collections::HashMap<String, String>,
                  tensors: &mut Vec<(String, Vec<usize>, Vec<u8>)>| {
        tensors.push(("zz/extra".into(), vec![1], vec![0; 4]));
        tensors.push(("aa/extra".into(), vec![1], vec![0; 4]));
    };
    for _ in 0..3 {
        let err = load_error(&strays);
        assert!(err.contains("'aa/extra'"), "{err}");
    }
    // Arguments out of range in the architecture.
    let err = load_error(&|metadata, _| {
        let text = metadata["architecture"].replace("\"epsilon\":1e-7", "\"epsilon\":0.0");
        assert_ne!(text, metadata["architecture"], "the architecture holds Adam's epsilon");
        metadata.insert("architecture".into(), text);
    });
    assert!(err.contains("epsilon must be a positive number"), "{err}");
}

#[test]
fn a_diverging_run_is_called_so() {
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_mnist(&tmp.path().join("mnist"), 300, 50);
    let args = ["train", "-q", "--epochs", "1", "--batch-size", "16", "--learning-rate", "1e6", "--data-dir"];
    let out = keel(&[&args[..], &[tmp.path().to_str().unwrap()]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the training loss reached") && stderr.contains("diverged"), "{stderr}");
    let calm = keel(&["train", "-q", "--epochs", "1", "--data-dir", tmp.path().to_str().unwrap()]);
    assert!(!text(&calm.stderr).contains("warning"), "{}", text(&calm.stderr));
}

#[test]
fn models_too_large_for_memory_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, layers: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, format!("input_shape = [28, 28, 1]\n{layers}")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let dense = write(
        "dense.toml",
        "[[layers]]\nclass_name = \"Conv2D\"\nfilters = 64\nkernel_size = 3\n[[layers]]\nclass_name = \"Flatten\"\n[[layers]]\nclass_name = \"Dense\"\nunits = 16777216\n",
    );
    fails(&["summary", "--model", &dense], &["layer 'dense' (Dense)", "GB of memory", "use fewer units or filters"]);
    let conv = write(
        "conv.toml",
        "[[layers]]\nclass_name = \"Conv2D\"\nfilters = 65536\nkernel_size = 3\n[[layers]]\nclass_name = \"Flatten\"\n[[layers]]\nclass_name = \"Dense\"\nunits = 10\nactivation = \"softmax\"\n",
    );
    write_synthetic_mnist(&tmp.path().join("mnist"), 200, 20);
    let args = ["train", "--model", &conv, "--epochs", "1", "--data-dir", tmp.path().to_str().unwrap()];
    fails(&args, &["activations of a batch of 128", "GB of memory", "--batch-size"]);
}

#[test]
fn a_huge_sparse_model_file_is_refused_by_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = small_cnn(3, 4, Activation::Softmax);
    model.build().unwrap();
    let path = tmp.path().join("sparse.keel");
    model.save(&path).unwrap();
    // 3 GB of nothing after the tensors (a sparse file: no disk is used).
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(3 << 30).unwrap();
    // Refused by the header check, which runs before the body is read.
    let err = Model::load(&path).err().unwrap().to_string();
    assert!(err.contains("bytes of tensors but the file holds"), "{err}");
}

/// A folder dataset of 8x8 grey images: `classes` class folders of `n` images each.
fn image_folder(root: &Path, classes: &[&str], n: usize) {
    for (k, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img =
                image::GrayImage::from_fn(8, 8, |x, _| image::Luma([((x as usize * 30 + k * 90 + i) % 256) as u8]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

#[test]
fn a_dataset_folder_taken_from_a_model_file_is_named_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("shapes");
    image_folder(&folder, &["circle", "square"], 6);
    let model = tmp.path().join("m.keel");
    let (m, f) = (model.to_str().unwrap(), folder.to_str().unwrap());
    let out = keel(&["train", "-q", "--epochs", "1", "--dataset", f, "--color-mode", "grayscale", "--save", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Evaluated on the recorded folder: said on standard error.
    let out = keel(&["evaluate", m]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("note: reading {}", folder.canonicalize().unwrap().display())), "{stderr}");
    // The folder now holds other classes: refused before reading images.
    std::fs::rename(folder.join("square"), folder.join("triangle")).unwrap();
    fails(&["evaluate", m], &["holds class folders [circle, triangle]", "trained on [circle, square]"]);
    fails(&["train", "--epochs", "2", "--resume", m], &["holds class folders [circle, triangle]"]);
    // A model file that records "/" as its dataset does not make keel read the whole disk.
    let mut architecture = Model::load(&model).unwrap();
    let mut info = architecture.data_info().unwrap().clone();
    info.dataset = Some("/".into());
    architecture.set_data_info(info);
    architecture.save(&model).unwrap();
    fails(&["evaluate", m], &["note: reading /", "trained on [circle, square]"]);
}

#[test]
fn one_class_folders_and_bad_input_scales_are_called_out() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("only");
    image_folder(&folder, &["cats"], 8);
    let out = keel(&["train", "-q", "--epochs", "1", "--dataset", folder.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning:") && stderr.contains("one class folder (cats)"), "{stderr}");
    // (A value beyond f32, such as 1e39, is refused by the parser: "number out of range".)
    for scale in ["0", "-1"] {
        let text = format!(
            r#"{{"input_shape": [4], "layers": [{{"class_name": "Dense", "units": 2}}], "data": {{"scale": {scale}}}}}"#
        );
        let architecture = keel::model::Architecture::parse(&text, false, Path::new("m.json")).unwrap();
        let err = Model::from_architecture(&architecture).err().unwrap().to_string();
        assert!(err.contains(&format!("data.scale is {scale}")), "{scale}: {err}");
    }
}
