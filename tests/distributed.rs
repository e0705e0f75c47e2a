//! Data-parallel training: N ranks train the same model as one process.
//!
//! In every build: ranks as threads of this test, joined by an in-process
//! communicator. With `--features mpi`: `mpirun -np 2 keel train` against a
//! one-process run, resuming with another number of ranks, and a rank that
//! is stopped or killed ending the job.

mod synthetic;

use keel::distributed::{Communicator, shard};
use keel::metrics::F1Average;
use keel::model::History;
use keel::prelude::*;
use keel::random::BatchDraws;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use synthetic::{quiet, stripes};

/// Ranks as threads: each deposits its values, then every rank sums all
/// deposits in rank order (so the sums are the same on every rank).
struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

impl ThreadGroup {
    fn new(size: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared { size, barrier: Barrier::new(size), slots: Mutex::new(vec![Vec::new(); size]) });
        (0..size).map(|rank| ThreadGroup { rank, shared: Arc::clone(&shared) }).collect()
    }

    fn sum(&self, values: Vec<f64>) -> Vec<f64> {
        let len = values.len();
        self.shared.slots.lock().unwrap()[self.rank] = values;
        self.shared.barrier.wait();
        let sums = {
            let slots = self.shared.slots.lock().unwrap();
            assert!(slots.iter().all(|s| s.len() == len), "ranks reduced buffers of different lengths");
            (0..len).map(|i| slots.iter().map(|s| s[i]).sum()).collect()
        };
        self.shared.barrier.wait();
        sums
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> keel::Result<()> {
        let sums = self.sum(values.iter().map(|&v| v as f64).collect());
        values.iter_mut().zip(sums).for_each(|(v, s)| *v = s as f32);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> keel::Result<()> {
        let sums = self.sum(values.to_vec());
        values.copy_from_slice(&sums);
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32]) -> keel::Result<()> {
        let mine = if self.rank == 0 { values.iter().map(|&v| v as f64).collect() } else { vec![0.0; values.len()] };
        let root = self.sum(mine);
        values.iter_mut().zip(root).for_each(|(v, s)| *v = s as f32);
        Ok(())
    }
}

/// A CNN with every kind of per-sample randomness: flips, translations, dropout.
fn augmented_cnn(seed: u64) -> Model {
    let mut model = Sequential::new()
        .seed(seed)
        .add(RandomFlip::new(FlipMode::Horizontal).input_shape([8, 8, 1]))
        .add(RandomTranslation::new(0.1, 0.1))
        .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dropout::new(0.3))
        .add(Dense::new(3).activation(Activation::Softmax));
    // Metrics kept as sums over the epoch (counts, histograms) are summed over ranks too.
    let metrics = [
        Metric::Accuracy,
        Metric::SparseTopKCategoricalAccuracy(2),
        Metric::F1Score(F1Average::Macro),
        Metric::Auc { multi_label: true },
    ];
    model.compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &metrics).unwrap();
    model
}

/// A residual CNN with BatchNormalization (batch statistics over the global
/// batch), one of them applying the Add after it in training, at the Add's
/// turn: after the normalisation of its other input, defined after it.
fn batch_norm_cnn(seed: u64) -> Model {
    let inputs = Input::new([8, 8, 1]);
    let c = Conv2D::new(4, (3, 3)).padding(Padding::Same).apply(&inputs).unwrap();
    let n = BatchNormalization::new().momentum(0.9).apply(&c).unwrap();
    let r = ActivationLayer::new(Activation::Relu).apply(&n).unwrap();
    let c2 = Conv2D::new(4, (3, 3)).padding(Padding::Same).apply(&r).unwrap();
    let s = Add::new().apply(&[&r, &c2]).unwrap();
    let main = Conv2D::new(4, (3, 3)).padding(Padding::Same).apply(&s).unwrap();
    let main = BatchNormalization::new().momentum(0.9).apply(&main).unwrap();
    let shortcut = Conv2D::new(4, (1, 1)).apply(&s).unwrap();
    let shortcut = BatchNormalization::new().momentum(0.8).apply(&shortcut).unwrap();
    let s = Add::new().apply(&[&main, &shortcut]).unwrap();
    let f = Flatten::new().apply(&s).unwrap();
    let out = Dense::new(3).activation(Activation::Softmax).apply(&f).unwrap();
    let mut model = Model::new(&inputs, &out).unwrap().seed(seed);
    // SGD: the bias of a convolution before BatchNormalization has a zero
    // gradient, whose rounding noise Adam would scale up to full steps.
    model.compile(SGD::new(0.05), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
    model
}

struct Run {
    params: Vec<f32>,
    state: Vec<f32>,
    history: History,
    test: Evaluation,
}

/// Trains `augmented_cnn` on `ranks` threads; returns rank 0's result after
/// checking that every rank ended with the same weights and logs.
fn train_on(ranks: usize, options: &FitOptions) -> Run {
    train_model_on(ranks, options, augmented_cnn)
}

/// [`train_on`] for the model `make(seed)` makes.
fn train_model_on(ranks: usize, options: &FitOptions, make: fn(u64) -> Model) -> Run {
    let group = ThreadGroup::new(ranks);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let (x, y) = stripes(301, 3, 5);
                    let (x_test, y_test) = stripes(97, 3, 6);
                    // Each rank starts from its own weights: fit must broadcast rank 0's.
                    let mut model = make(100 + comm.rank() as u64);
                    model.set_communicator(Arc::new(comm));
                    let history = model.fit(&x, &y, options).unwrap();
                    let test = model.evaluate(&x_test, &y_test).unwrap();
                    let state = model.state().unwrap().to_vec();
                    Run { params: model.params().unwrap().to_vec(), state, history, test }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs[1..] {
        assert_eq!(run.params, runs[0].params, "ranks ended with different weights");
        assert_eq!(run.state, runs[0].state, "ranks ended with different moving statistics");
        let logs = |h: &History| h.epochs.iter().map(|e| e.logs.clone()).collect::<Vec<_>>();
        assert_eq!(logs(&run.history), logs(&runs[0].history), "ranks logged different histories");
    }
    runs.into_iter().next().unwrap()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn ranks_train_the_same_model_as_one_process() {
    // 301 samples, 10% validation: 271 to train in batches of 45, so the last
    // global batch has 1 sample and rank 1 of 2 (and ranks 1, 2 of 3) get none.
    let mut options = quiet(3, 45, 0.1);
    options.seed = Some(7);
    options.class_weight = Some(BTreeMap::from([(0, 2.0)]));
    let one = train_on(1, &options);
    for ranks in [2, 3] {
        let many = train_on(ranks, &options);
        let diff = max_difference(&one.params, &many.params);
        println!("{ranks} ranks: max |weights - weights(1 process)| = {diff:e}");
        assert!(diff < 1e-5, "{ranks} ranks: weights differ from one process by {diff}");
        for (a, b) in one.history.epochs.iter().zip(&many.history.epochs) {
            for (key, value) in &a.logs {
                assert!(
                    (value - b.logs[key]).abs() < 1e-4,
                    "{ranks} ranks, epoch {}: {key} {value} vs {}",
                    a.epoch,
                    b.logs[key]
                );
            }
        }
        assert!((one.test.loss - many.test.loss).abs() < 1e-4);
        assert_eq!(format!("{:.3}", one.test.accuracy().unwrap()), format!("{:.3}", many.test.accuracy().unwrap()));
    }
    // The training did something: the weights moved away from rank 0's initial ones.
    let initial = augmented_cnn(100).params().unwrap().to_vec();
    assert!(max_difference(&initial, &one.params) > 1e-2);
}

#[test]
fn batch_normalization_statistics_span_the_global_batch() {
    // As above: the last global batch has 1 sample, so ranks 1 and 2 join the
    // statistics' collectives with an empty share.
    let options = quiet(2, 45, 0.1);
    let one = train_model_on(1, &options, batch_norm_cnn);
    for ranks in [2, 3] {
        let many = train_model_on(ranks, &options, batch_norm_cnn);
        let diff = max_difference(&one.params, &many.params);
        assert!(diff < 1e-5, "{ranks} ranks: weights differ from one process by {diff}");
        let diff = max_difference(&one.state, &many.state);
        assert!(diff < 1e-5, "{ranks} ranks: moving statistics differ from one process by {diff}");
        assert!((one.test.loss - many.test.loss).abs() < 1e-4);
    }
    assert!(one.state.iter().any(|&v| v != 0.0 && v != 1.0), "the statistics moved");
}

#[test]
fn a_sample_draws_the_same_augmentation_however_the_batch_is_split() {
    let (x, _) = stripes(6, 3, 1);
    let x = x.to_f32_vec();
    let forward = |layer: &mut dyn Layer, first: u64, x: &[f32]| {
        let n = x.len() / 64;
        layer.set_draws(BatchDraws::new(9, first));
        let mut y = vec![0.0; x.len()];
        layer.forward(&[], x, &mut y, n, keel::layers::Mode::Train);
        y
    };
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Dropout::new(0.5)),
        Box::new(RandomFlip::new(FlipMode::HorizontalAndVertical)),
        Box::new(RandomTranslation::new(0.2, 0.2)),
        Box::new(RandomRotation::new(0.2)),
        Box::new(RandomCrop::new(6, 6)),
    ];
    for mut layer in layers {
        let out = layer.build(&[8, 8, 1]).unwrap().iter().product::<usize>();
        layer.allocate(6);
        let whole = forward(layer.as_mut(), 0, &x);
        let mut parts = forward(layer.as_mut(), 0, &x[..2 * 64]);
        parts.truncate(2 * out);
        let mut rest = forward(layer.as_mut(), 2, &x[2 * 64..]);
        rest.truncate(4 * out);
        parts.extend(rest);
        assert_eq!(&whole[..6 * out], &parts[..], "{}", layer.class_name());
    }
}

#[test]
fn shards_cover_the_batch_in_order() {
    for (len, size) in [(128, 2), (1, 2), (0, 3), (10, 3), (7, 8)] {
        let parts: Vec<_> = (0..size).map(|r| shard(len, r, size)).collect();
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts[size - 1].end, len);
        for pair in parts.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert!(parts.iter().all(|p| p.len() <= len.div_ceil(size) && p.len() + 1 >= len / size));
    }
}

#[test]
fn ranks_with_different_data_are_refused() {
    let group = ThreadGroup::new(2);
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let (x, y) = stripes(60 + 10 * comm.rank(), 3, 5);
                    let mut model = augmented_cnn(1);
                    model.set_communicator(Arc::new(comm));
                    model.fit(&x, &y, &quiet(1, 16, 0.0)).err().map(|e| e.to_string()).unwrap_or_default()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Both ranks stop (neither waits for the other), each saying why.
    assert!(errors[0].contains("1 rank(s) have other (samples,"), "{}", errors[0]);
    assert!(errors[1].contains("rank 1 has") && errors[1].contains("rank 0 has [60.0"), "{}", errors[1]);
}

#[cfg(feature = "mpi")]
mod mpi {
    //! `mpirun -np 2 keel train` on synthetic MNIST (needs Open MPI's mpirun on PATH).

    use super::synthetic::write_synthetic_mnist;
    use keel::prelude::*;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    const KEEL: &str = env!("CARGO_BIN_EXE_keel");

    /// A small CNN with dropout and augmentation, as a model file.
    const MODEL: &str = r#"
input_shape = [28, 28, 1]
seed = 3
[[layers]]
class_name = "RandomTranslation"
height_factor = 0.1
width_factor = 0.1
[[layers]]
class_name = "Conv2D"
filters = 8
kernel_size = [3, 3]
activation = "relu"
[[layers]]
class_name = "MaxPooling2D"
pool_size = [2, 2]
[[layers]]
class_name = "Flatten"
[[layers]]
class_name = "Dropout"
rate = 0.25
[[layers]]
class_name = "Dense"
units = 10
activation = "softmax"
"#;

    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            // 1,130 training images: with 10% validation, 1,017 train in batches of 64 (last: 57).
            write_synthetic_mnist(&dir.path().join("mnist"), 1130, 200);
            std::fs::write(dir.path().join("model.toml"), MODEL).unwrap();
            Setup { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// `keel train` arguments on this setup's data and model.
        fn train_args(&self, epochs: usize, extra: &[&str]) -> Vec<String> {
            let mut args: Vec<String> = ["train", "-q", "--threads", "1", "--batch-size", "64", "--epochs"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.push(epochs.to_string());
            for (flag, value) in [("--data-dir", self.path("")), ("--model", self.path("model.toml"))] {
                args.push(flag.into());
                args.push(value.to_string_lossy().into_owned());
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        }
    }

    fn mpirun(ranks: usize, args: &[String]) -> Command {
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string(), KEEL]).args(args);
        cmd.env("KEEL_OFFLINE", "1").env_remove("KEEL_DATA_DIR");
        cmd
    }

    fn alone(args: &[String]) -> Command {
        let mut cmd = Command::new(KEEL);
        cmd.args(args).env("KEEL_OFFLINE", "1").env_remove("KEEL_DATA_DIR");
        cmd
    }

    fn run(mut cmd: Command) -> Output {
        let out = cmd.output().expect("the command starts (is Open MPI's mpirun on PATH?)");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "{:?} failed:\n{}\n{}", cmd, text(&out.stdout), text(&out.stderr));
        out
    }

    fn max_difference(a: &Path, b: &Path) -> f32 {
        let (a, b) = (Model::load(a).unwrap(), Model::load(b).unwrap());
        super::max_difference(a.params().unwrap(), b.params().unwrap())
    }

    fn test_accuracy(metrics: &Path) -> f64 {
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(metrics).unwrap()).unwrap();
        report["test_accuracy"].as_f64().unwrap()
    }

    #[test]
    fn two_ranks_match_one_process_and_resume_with_either() {
        let setup = Setup::new();
        let s = |name: &str| setup.path(name).to_string_lossy().into_owned();
        let one = setup.train_args(3, &["--save", &s("one.keel"), "--metrics-out", &s("one.json")]);
        run(alone(&one));
        let two = setup.train_args(3, &["--save", &s("two.keel"), "--metrics-out", &s("two.json")]);
        let out = run(mpirun(2, &two));
        // Rank 0 alone prints.
        assert_eq!(String::from_utf8_lossy(&out.stdout).matches("Test accuracy").count(), 1);

        let diff = max_difference(&setup.path("one.keel"), &setup.path("two.keel"));
        println!("max |weights(2 ranks) - weights(1 process)| after 3 epochs: {diff:e}");
        assert!(diff < 1e-5, "2 ranks differ from 1 process by {diff}");
        let (a, b) = (test_accuracy(&setup.path("one.json")), test_accuracy(&setup.path("two.json")));
        assert!(a > 0.5, "the synthetic task is learnt: {a}");
        assert_eq!(format!("{a:.3}"), format!("{b:.3}"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(setup.path("two.json")).unwrap()).unwrap();
        assert_eq!(report["config"]["processes"], 2);

        // A checkpoint of 2 ranks resumes in 1 process, and one of 1 process on 2 ranks.
        let first = setup.train_args(2, &["--checkpoint-dir", &s("ckpt")]);
        run(mpirun(2, &first));
        let resume = |from: &str, to: &str| {
            let mut args = setup.train_args(3, &["--save", &s(to)]);
            let model = args.iter().position(|a| a == "--model").unwrap();
            args.drain(model..model + 2);
            args.extend(["--resume".into(), from.to_string()]);
            args
        };
        run(alone(&resume(&s("ckpt/epoch-002.keel"), "resumed_alone.keel")));
        run(alone(&setup.train_args(2, &["--save", &s("two_epochs.keel")])));
        run(mpirun(2, &resume(&s("two_epochs.keel"), "resumed_on_two.keel")));
        for resumed in ["resumed_alone.keel", "resumed_on_two.keel"] {
            let diff = max_difference(&setup.path("one.keel"), &setup.path(resumed));
            println!("max |weights({resumed}) - weights(1 process)|: {diff:e}");
            assert!(diff < 1e-5, "{resumed} differs from 3 epochs in one process by {diff}");
        }
    }

    /// Pid of the rank-`rank` process that mpirun `parent` started.
    fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let is_rank = environ.split(|&b| b == 0).any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes());
            if ppid == Some(parent) && is_rank {
                return Some(pid);
            }
        }
        None
    }

    /// Starts a long 2-rank training run, waits until rank 0 has trained an
    /// epoch, sends `signal` to rank 1, and returns how long mpirun took to
    /// end after that, and what it printed.
    fn signal_rank_one(signal: &str) -> (Duration, Output) {
        let setup = Setup::new();
        let checkpoints = setup.path("ckpt");
        let args = setup.train_args(1000, &["--checkpoint-dir", &checkpoints.to_string_lossy(), "--mpi-timeout", "3"]);
        let mut cmd = mpirun(2, &args);
        let child: Child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        while !checkpoints.join("epoch-001.keel").exists() {
            assert!(started.elapsed() < Duration::from_secs(60), "training did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = rank_pid(child.id(), 1).expect("rank 1 runs under mpirun");
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success());
        let signalled = Instant::now();
        let out = child.wait_with_output().unwrap();
        (signalled.elapsed(), out)
    }

    #[test]
    fn a_stopped_rank_ends_the_job_within_the_timeout() {
        let (took, out) = signal_rank_one("-STOP");
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("rank 1 stopped: mpirun ended {took:?} later:\n{stderr}");
        assert!(!out.status.success());
        assert!(stderr.contains("error: rank 0: all-reduce waited"), "{stderr}");
        assert!(stderr.contains("a rank died, hangs or was stopped"), "{stderr}");
        // 3 s timeout, then mpirun's own clean-up.
        assert!(took < Duration::from_secs(30), "took {took:?}");
    }

    #[test]
    fn a_killed_rank_ends_the_job() {
        let (took, out) = signal_rank_one("-KILL");
        println!("rank 1 killed: mpirun ended {took:?} later:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success());
        assert!(took < Duration::from_secs(30), "took {took:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
