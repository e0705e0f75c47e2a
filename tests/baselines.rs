//! Classical baselines: each method learns, is deterministic for a seed and
//! across thread counts, saves and loads to the same predictions, and bad
//! input (options, data, files) is a clear error. On real MNIST when
//! KEEL_DATA_DIR is set (CI sets it).

mod synthetic;

use keel::classical::{Baseline, BaselineOptions, Features, Method};
use keel::model::DataInfo;
use keel::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use synthetic::{stripes, write_synthetic_mnist};

fn labels(y: &Tensor) -> Vec<usize> {
    y.to_f32_vec().iter().map(|&v| v as usize).collect()
}

fn accuracy(scores: &Tensor, truth: &[usize]) -> f64 {
    let predicted = argmax(scores);
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

fn options(method: Method, features: Features) -> BaselineOptions {
    BaselineOptions { method, features, trees: 20, ..Default::default() }
}

fn in_pool<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(work)
}

#[test]
fn every_method_learns_and_is_the_same_on_any_thread_count_and_after_saving() {
    let (x, y) = stripes(240, 4, 1);
    let (test_x, test_y) = stripes(120, 4, 2);
    let (y, test_y) = (labels(&y), labels(&test_y));
    let dir = tempfile::tempdir().unwrap();
    let info = DataInfo {
        dataset: Some("stripes".into()),
        class_names: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        scale: 1.0 / 255.0,
    };
    for method in Method::ALL {
        for features in [Features::Pixels, Features::Hog] {
            let o = options(method, features);
            let one = in_pool(1, || Baseline::fit(&x, &y, 4, &o, info.clone()).unwrap());
            let three = in_pool(3, || Baseline::fit(&x, &y, 4, &o, info.clone()).unwrap());
            assert_eq!(one, three, "{method:?} {features:?} depends on the thread count");
            let scores = one.scores(&test_x).unwrap();
            assert_eq!(scores.shape(), &[120, 4]);
            for row in scores.to_f32_vec().chunks(4) {
                assert!(
                    (row.iter().sum::<f32>() - 1.0).abs() < 1e-4 && row.iter().all(|&v| v >= 0.0),
                    "{method:?}: {row:?}"
                );
            }
            let acc = accuracy(&scores, &test_y);
            // HOG keeps the stripes' edges, not their position: it tells fewer of them apart.
            let floor = if features == Features::Pixels { 0.9 } else { 0.4 };
            assert!(acc >= floor, "{method:?} on {features:?}: accuracy {acc}");
            let path = dir.path().join(format!("{}-{features:?}.keel", method.name()));
            one.save(&path).unwrap();
            let loaded = Baseline::load(&path).unwrap();
            assert_eq!(loaded, one, "{method:?} changed in the file");
            assert_eq!(loaded.scores(&test_x).unwrap().to_f32_vec(), scores.to_f32_vec());
            assert_eq!(loaded.class_names(), info.class_names);
        }
    }
    // The forest's seed draws its bootstrap samples and features.
    let o = options(Method::Forest, Features::Pixels);
    let a = Baseline::fit(&x, &y, 4, &o, info.clone()).unwrap();
    let b = Baseline::fit(&x, &y, 4, &BaselineOptions { seed: 7, ..o }, info).unwrap();
    assert_ne!(a, b);
}

#[test]
fn bad_options_and_data_are_errors() {
    let (x, y) = stripes(40, 2, 1);
    let y = labels(&y);
    let fit = |o: BaselineOptions, y: &[usize]| {
        Baseline::fit(&x, y, 2, &o, DataInfo { dataset: None, class_names: vec![], scale: 1.0 }).map(|_| ())
    };
    let message = |r: keel::Result<()>| r.unwrap_err().to_string();
    assert!(message(fit(BaselineOptions { c: 0.0, ..Default::default() }, &y)).contains("C must be"));
    assert!(
        message(fit(BaselineOptions { method: Method::Knn, neighbors: 0, ..Default::default() }, &y))
            .contains("neighbour")
    );
    assert!(
        message(fit(BaselineOptions { method: Method::Forest, trees: 0, ..Default::default() }, &y)).contains("trees")
    );
    assert!(message(fit(Default::default(), &vec![1; 40])).contains("at least two"));
    assert!(message(fit(Default::default(), &y[..10])).contains("labels"));
    assert!(message(fit(Default::default(), &vec![5; 40])).contains("not below"));
    assert!(Method::parse("svc").unwrap_err().to_string().contains("logistic, linear-svm, svm, tree, forest, knn"));
    // HOG needs images of at least 8x8.
    let small = Tensor::from_vec(&[4, 4, 4, 1], vec![0.5; 64]).unwrap();
    let o = BaselineOptions { features: Features::Hog, ..Default::default() };
    let r = Baseline::fit(&small, &[0, 1, 0, 1], 2, &o, DataInfo { dataset: None, class_names: vec![], scale: 1.0 });
    assert!(r.unwrap_err().to_string().contains("--features pixels"));
    // NaN pixels.
    let nan = Tensor::from_vec(&[2, 8, 8, 1], vec![f32::NAN; 128]).unwrap();
    let r = Baseline::fit(
        &nan,
        &[0, 1],
        2,
        &Default::default(),
        DataInfo { dataset: None, class_names: vec![], scale: 1.0 },
    );
    assert!(r.unwrap_err().to_string().contains("finite"));
    // Inputs of another size than the baseline was fitted on.
    let fitted =
        Baseline::fit(&x, &y, 2, &Default::default(), DataInfo { dataset: None, class_names: vec![], scale: 1.0 })
            .unwrap();
    let other = Tensor::from_vec(&[1, 28, 28, 1], vec![0.0; 784]).unwrap();
    assert!(fitted.scores(&other).unwrap_err().to_string().contains("shape [8, 8, 1]"));
}

#[test]
fn damaged_or_edited_baseline_files_are_refused() {
    let (x, y) = stripes(60, 3, 1);
    let y = labels(&y);
    let dir = tempfile::tempdir().unwrap();
    let info = DataInfo { dataset: None, class_names: vec![], scale: 1.0 };
    for method in [Method::Logistic, Method::Tree, Method::Knn, Method::Svm] {
        let path = dir.path().join(format!("{}.keel", method.name()));
        Baseline::fit(&x, &y, 3, &options(method, Features::Pixels), info.clone()).unwrap().save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // Truncated.
        let cut = dir.path().join("cut.keel");
        std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
        let e = Baseline::load(&cut).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{method:?}: {e}");
        // A flipped byte in the tensors.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x40;
        std::fs::write(&cut, &flipped).unwrap();
        let e = Baseline::load(&cut).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{method:?}: {e}");
        // An edited description: a different input size than the tensors hold.
        let (from, to) = (br#"\"input_shape\":[8,8,1]"#, br#"\"input_shape\":[9,8,1]"#);
        let at = bytes.windows(from.len()).position(|w| w == from).expect("the description holds the input shape");
        let mut edited = bytes.clone();
        edited[at..at + from.len()].copy_from_slice(to);
        std::fs::write(&cut, &edited).unwrap();
        let e = Baseline::load(&cut).unwrap_err().to_string();
        assert!(e.contains("edited"), "{method:?}: {e}");
    }
    // A network's file is not a baseline, and a baseline is not a network.
    let mut model = synthetic::small_cnn(0, 3, Activation::Softmax);
    model.build().unwrap();
    let net = dir.path().join("net.keel");
    model.save(&net).unwrap();
    assert!(Baseline::load(&net).unwrap_err().to_string().contains("network"));
    assert!(!Baseline::is_baseline_file(&net).unwrap());
    let baseline = dir.path().join("logistic.keel");
    assert!(Baseline::is_baseline_file(&baseline).unwrap());
    assert!(Model::load(&baseline).err().unwrap().to_string().contains("Baseline::load"));
}

/// A tree file whose node points back at its parent (a cycle) is refused
/// before any prediction could loop.
#[test]
fn a_tree_that_loops_is_refused() {
    let (x, y) = stripes(60, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree.keel");
    let info = DataInfo { dataset: None, class_names: vec![], scale: 1.0 };
    Baseline::fit(&x, &labels(&y), 3, &options(Method::Tree, Features::Pixels), info).unwrap().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let nodes = file.tensor("trees/00000/nodes").unwrap();
    let mut values: Vec<f32> = nodes.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    values[2] = 0.0; // the root's left child: the root itself
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let leaves = file.tensor("trees/00000/leaves").unwrap();
    metadata.remove("checksums");
    let views = vec![
        (
            "trees/00000/nodes",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, nodes.shape().to_vec(), &data).unwrap(),
        ),
        ("trees/00000/leaves", leaves),
    ];
    std::fs::write(&path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
    let e = Baseline::load(&path).unwrap_err().to_string();
    assert!(e.contains("points back"), "{e}");
}

fn keel(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("KEEL_DATA_DIR", data_dir)
        .env("KEEL_OFFLINE", "1")
        .output()
        .expect("keel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn baseline_evaluate_predict_and_compare_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_synthetic_mnist(&data.join("mnist"), 300, 100);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let out = keel(
        &[
            "baseline",
            "--method",
            "forest",
            "--trees",
            "10",
            "--save",
            &p("forest.keel"),
            "--metrics-out",
            &p("forest.json"),
            "--report",
        ],
        &data,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Fitted forest on pixels, 300 training samples: 10 trees")
            && stdout.contains("Test accuracy: 1.0000"),
        "{stdout}"
    );
    assert!(stdout.contains("macro avg") && stdout.contains("support"), "{stdout}");
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(p("forest.json")).unwrap()).unwrap();
    assert_eq!(metrics["test_accuracy"], 1.0);
    assert_eq!(metrics["train_samples"], 300);
    assert_eq!(metrics["report"]["classes"].as_array().unwrap().len(), 10);
    // The saved baseline evaluates and predicts as a model does.
    let out = keel(&["evaluate", &p("forest.keel"), "--report", "--json"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["accuracy"], 1.0);
    let digit = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if (10..12).contains(&y) && (4..24).contains(&x) { 255 } else { 0 }])
    });
    digit.save(p("three.png")).unwrap();
    let out = keel(&["predict", &p("forest.keel"), &p("three.png"), "--json"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(answer[0]["top"][0]["class"], "3", "{answer}");
    // A second run and keel compare.
    let out = keel(&["baseline", "--method", "logistic", "--limit", "5", "--metrics-out", &p("logistic.json")], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = keel(
        &["compare", &p("logistic.json"), &p("forest.json"), "--format", "markdown", "--plots", &p("plots")],
        &data,
    );
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    let forest_at = table.find("forest (pixels)").unwrap();
    let logistic_at = table.find("logistic (pixels)").unwrap();
    assert!(forest_at < logistic_at, "best accuracy first: {table}");
    assert!(table.contains("| 5 |") && table.contains("| 300 |"), "{table}");
    assert!(dir.path().join("plots/comparison.png").exists() && dir.path().join("plots/comparison.svg").exists());
}

#[test]
fn cli_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_synthetic_mnist(&data.join("mnist"), 60, 20);
    let fails = |args: &[&str], needle: &str| {
        let out = keel(args, &data);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    fails(&["baseline", "--method", "svc"], "choose one of logistic");
    fails(&["baseline", "--method", "tree", "--limit", "0"], "--limit 0");
    fails(&["baseline", "--method", "tree", "--limit", "61"], "at most 60");
    fails(&["baseline", "--method", "tree", "--features", "sift"], "pixels or hog");
    fails(&["baseline", "--method", "tree", "--save", dir.path().to_str().unwrap()], "is a directory");
    // A folder with one class.
    let one = dir.path().join("one/only");
    std::fs::create_dir_all(&one).unwrap();
    for i in 0..4u8 {
        image::GrayImage::from_pixel(8, 8, image::Luma([i * 40])).save(one.join(format!("{i}.png"))).unwrap();
    }
    fails(&["baseline", "--method", "knn", "--dataset", dir.path().join("one").to_str().unwrap()], "at least two");
    // A baseline fitted on 8x8 images, evaluated on MNIST's 28x28.
    let folder = dir.path().join("small");
    for (k, class) in ["dark", "light"].iter().enumerate() {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..6u8 {
            image::GrayImage::from_pixel(8, 8, image::Luma([k as u8 * 200 + i]))
                .save(folder.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let saved = dir.path().join("small.keel");
    let args = ["baseline", "--method", "knn", "--neighbors", "1", "--color-mode", "grayscale", "--dataset"];
    let out = keel(&[&args[..], &[folder.to_str().unwrap(), "--save", saved.to_str().unwrap()]].concat(), &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fails(&["evaluate", saved.to_str().unwrap(), "--dataset", "mnist"], "classes");
    // Compare: not a metrics file.
    std::fs::write(dir.path().join("x.json"), "{\"loss\": 1}").unwrap();
    fails(&["compare", dir.path().join("x.json").to_str().unwrap()], "no test_accuracy");
}

/// On the real MNIST: every method on the first 3,000 training images,
/// scored on the 10,000 test images, lands where scikit-learn's same method
/// lands (within a few points; bench/baselines.py compares them exactly).
#[test]
fn real_mnist_baselines_reach_known_accuracy() {
    let Some(dir) = std::env::var_os("KEEL_DATA_DIR") else {
        eprintln!("KEEL_DATA_DIR is not set: skipping the real-MNIST baselines");
        return;
    };
    let source = keel::datasets::DataSource::from_env().with_data_dir(Some(dir.into()));
    let ((x, y), (xt, yt)) = keel::datasets::catalog::find("mnist").unwrap().load(&source).unwrap();
    let (x, xt) = (x / 255.0, xt / 255.0);
    let n = 3000;
    let x = x.slice_rows(0, n).unwrap();
    let y = labels(&y)[..n].to_vec();
    let truth = labels(&yt);
    // scikit-learn 1.9.1 on the same 3,000 images (bench/baselines.py's estimators): logistic
    // 0.8852, linear SVM 0.8614, SVC 0.9408, tree 0.7248, forest 0.9235, k-NN 0.9168.
    for (method, floor) in [
        (Method::Logistic, 0.87),
        (Method::LinearSvm, 0.845),
        (Method::Svm, 0.93),
        (Method::Tree, 0.70),
        (Method::Forest, 0.91),
        (Method::Knn, 0.91),
    ] {
        let o = BaselineOptions { method, ..Default::default() };
        let fitted = Baseline::fit(
            &x,
            &y,
            10,
            &o,
            DataInfo { dataset: Some("mnist".into()), class_names: vec![], scale: 1.0 / 255.0 },
        )
        .unwrap();
        let acc = accuracy(&fitted.scores(&xt).unwrap(), &truth);
        eprintln!("{}: {acc:.4}", method.name());
        assert!(acc >= floor, "{}: {acc} < {floor}", method.name());
        assert_eq!(xt.rows(), 10_000);
    }
}
