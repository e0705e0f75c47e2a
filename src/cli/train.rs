//! `keel train`: the reference workflow, with its knobs as flags; saving,
//! checkpoints and resuming.

use super::{MpiArgs, data, is_root, with_threads, write_json};
use keel::callbacks::{Callback, ModelCheckpoint};
use keel::distributed::Communicator;
use keel::model::{Architecture, Verbosity};
use keel::prelude::*;
use serde_json::json;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// mnist, fashion-mnist, kmnist, cifar10, cifar100, or a folder of class folders [default: the model file's, else mnist]; the reference model's input follows it.
    #[arg(long)]
    dataset: Option<String>,
    #[command(flatten)]
    folder: data::FolderArgs,
    /// A model description (TOML or JSON, the schema of saved architectures) to train instead of the reference model.
    #[arg(long, conflicts_with = "resume")]
    model: Option<PathBuf>,
    /// Epochs to train to [default: the model file's, else 5]; with --resume, the total including those already trained (Keras' `epochs` with `initial_epoch`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per gradient step [default: the model file's, else 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Fraction of the training samples (the last ones) held out for validation [default: the model file's, else 0.1].
    #[arg(long)]
    validation_split: Option<f64>,
    /// adam, adamw, sgd, rmsprop, adagrad or nadam, with Keras' defaults [default: the model file's, else adam].
    #[arg(long, conflicts_with = "resume")]
    optimizer: Option<String>,
    /// Learning rate (default: the optimizer's, or the resumed model's).
    #[arg(long, allow_negative_numbers = true)]
    learning_rate: Option<f32>,
    /// Seed for weights and shuffling; the same seed gives the same run [default: the model file's, else 42].
    #[arg(long, conflicts_with = "resume")]
    seed: Option<u64>,
    /// Write curves.png, confusion_matrix.png and misclassified.png (and .svg) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Also write the History (per-epoch logs) to this file: CSV if it ends in .csv, else JSON.
    #[arg(long)]
    history_out: Option<PathBuf>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Directory holding the dataset's folder, e.g. mnist/ (default: $KEEL_DATA_DIR, then the download cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write test metrics, history, config and timings as JSON to this file.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Save the trained model (architecture, weights, optimizer state) to this .keel file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Save a resumable checkpoint here after every epoch (epoch-001.keel, ...).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// With --checkpoint-dir: keep only best.keel, saved when val_loss improves.
    #[arg(long, requires = "checkpoint_dir")]
    save_best_only: bool,
    /// Continue training a model saved by --save or --checkpoint-dir.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print only the test accuracy.
    #[arg(long, short)]
    quiet: bool,
    /// Serve a live dashboard of the run on this port (TensorBoard's 6006 when no port is given; 0 picks a free one): loss and accuracy curves, progress, ETA, learning rate, and at the end the test scores, confusion matrix and misclassified images. It stays up after training until Ctrl-C; Ctrl-C during training stops training after the batch.
    #[arg(long, num_args = 0..=1, default_missing_value = "6006", value_name = "PORT")]
    dashboard: Option<u16>,
    /// Address of the dashboard; 127.0.0.1 keeps it to this machine.
    #[arg(long, default_value = "127.0.0.1", requires = "dashboard")]
    dashboard_host: IpAddr,
    #[command(flatten)]
    mpi: MpiArgs,
}

/// The reference model: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(classes, softmax).
pub fn reference_model(seed: u64, input_shape: [usize; 3], classes: usize) -> keel::Result<Model> {
    let mut model = Sequential::new()
        .seed(seed)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape(input_shape))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(classes).activation(Activation::Softmax));
    model.build()?;
    Ok(model)
}

pub fn run(args: &TrainArgs) -> keel::Result<()> {
    let communicator = args.mpi.communicator()?;
    with_threads(args.threads, |threads| train(args, threads, communicator))
}

/// The model to train (compiled), the epoch it starts from, and its data: a
/// resumed model, one from a model file, or the reference model shaped for
/// the dataset.
fn model_and_data(args: &TrainArgs) -> keel::Result<(Model, usize, data::Prepared)> {
    // Argument mistakes first, before any data is read.
    keel::optimizers::from_name(args.optimizer.as_deref().unwrap_or("adam"), args.learning_rate)?;
    let load = |trained_on: Option<String>, input: Option<&[usize]>| {
        let dataset = args.dataset.clone().or(trained_on).unwrap_or_else(|| "mnist".into());
        let folder = input.map_or_else(|| args.folder.clone(), |shape| args.folder.for_input(shape));
        data::load(&dataset, args.data_dir.clone(), &folder)
    };
    if let Some(path) = &args.resume {
        let model = Model::load(path)?;
        if model.optimizer().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} holds weights but no training state (it was not compiled); it cannot be resumed",
                path.display()
            )));
        }
        let done = model.epochs_trained();
        if done == 0 && model.optimizer().is_some_and(|o| o.iterations() == 0) {
            eprintln!(
                "note: {} has no training state (epochs trained, optimizer moments): training starts at epoch 1 with a fresh optimizer",
                path.display()
            );
        }
        let folder = args.folder.for_input(&model.shapes()?[0]);
        let (_, data) =
            data::load_for_model(model.data_info(), path, args.dataset.clone(), args.data_dir.clone(), &folder)?;
        return Ok((with_learning_rate(model, args.learning_rate)?, done, data));
    }
    let (mut model, data) = match &args.model {
        Some(path) => {
            let mut architecture = Architecture::read(path)?;
            architecture.seed = args.seed.unwrap_or(architecture.seed);
            let data =
                load(architecture.data.as_ref().and_then(|d| d.dataset.clone()), Some(&architecture.input_shape))?;
            (Model::from_architecture(&architecture)?, data)
        }
        None => {
            let data = load(None, None)?;
            let (x, y) = &data.train;
            let &[h, w, c] = &x.shape()[1..] else { unreachable!("datasets are loaded as (N, H, W, C)") };
            (reference_model(args.seed.unwrap_or(42), [h, w, c], y.row_len())?, data)
        }
    };
    if model.optimizer().is_none() || args.optimizer.is_some() {
        let optimizer = keel::optimizers::from_name(args.optimizer.as_deref().unwrap_or("adam"), None)?;
        let loss = model.architecture()?.compile.map_or(Loss::CategoricalCrossentropy.into(), |c| c.loss);
        model.compile(optimizer, loss, &[Metric::Accuracy])?;
    }
    Ok((with_learning_rate(model, args.learning_rate)?, 0, data))
}

fn with_learning_rate(mut model: Model, learning_rate: Option<f32>) -> keel::Result<Model> {
    if let (Some(lr), Some(optimizer)) = (learning_rate, model.optimizer_mut()) {
        optimizer.set_learning_rate(lr)?;
    }
    Ok(model)
}

/// Warns when the training loss grew by orders of magnitude beyond where a
/// cross-entropy over `classes` starts (ln(classes)): the run diverged even
/// if the loss stayed finite (TerminateOnNaN stops only on NaN/inf).
fn warn_if_diverging(history: &keel::model::History, classes: usize) {
    let start = (classes.max(2) as f64).ln();
    let worst = history
        .epochs
        .iter()
        .filter_map(|e| Some((e.epoch, e.logs.get("loss").copied()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((epoch, loss)) = worst.filter(|(_, loss)| *loss > 100.0 * start) {
        eprintln!(
            "warning: the training loss reached {loss:.3e} (epoch {epoch}), over 100x the {start:.2} an untrained {classes}-class model starts at: training diverged; lower the learning rate"
        );
    }
}

/// Checks that every output path can be written, and locks the save path
/// and the checkpoint directory for this run.
fn check_outputs(args: &TrainArgs) -> keel::Result<Vec<keel::io::OutputLock>> {
    use keel::io::{OutputLock, check_output_dir, check_output_file};
    let files = [(&args.save, "--save"), (&args.metrics_out, "--metrics-out"), (&args.history_out, "--history-out")];
    for (path, what) in files {
        if let Some(path) = path {
            check_output_file(path, what)?;
        }
    }
    for (path, what) in [(&args.plots, "--plots"), (&args.checkpoint_dir, "--checkpoint-dir")] {
        if let Some(path) = path {
            check_output_dir(path, what)?;
        }
    }
    let mut locks = Vec::new();
    if let Some(path) = &args.save {
        locks.push(OutputLock::acquire(path, false, "--save")?);
    }
    if let Some(dir) = &args.checkpoint_dir {
        locks.push(OutputLock::acquire(dir, true, "--checkpoint-dir")?);
    }
    Ok(locks)
}

/// Trains, as the only process or as one rank of `communicator`'s group
/// (then rank 0 alone prints and writes files).
fn train(args: &TrainArgs, threads: usize, communicator: Option<Arc<dyn Communicator>>) -> keel::Result<()> {
    let start = Instant::now();
    let root = is_root(&communicator);
    let ranks = communicator.as_ref().map_or(1, |c| c.size());
    // Every output is checked (and the save path and checkpoint directory
    // locked) before anything is loaded or trained.
    let _locks = if root { check_outputs(args)? } else { Vec::new() };
    let dashboard = match args.dashboard.filter(|_| root) {
        Some(port) => {
            let dashboard = keel::serve::Dashboard::start(args.dashboard_host, port)?;
            eprintln!("Dashboard: http://{}/", dashboard.addr());
            Some(dashboard)
        }
        None => None,
    };
    let (mut model, initial_epoch, data) = model_and_data(args)?;
    let classes = data.train.1.row_len();
    let data = data.targets_for(&model)?;
    if let Some(communicator) = &communicator {
        model.set_communicator(Arc::clone(communicator));
    }
    let defaults = model.architecture()?.fit.unwrap_or_default();
    let epochs = args.epochs.or(defaults.epochs).unwrap_or(5);
    let batch_size = args.batch_size.or(defaults.batch_size).unwrap_or(128);
    let validation_split = args.validation_split.or(defaults.validation_split).unwrap_or(0.1);
    if epochs == 0 {
        return Err(Error::InvalidArgument("--epochs must be at least 1".into()));
    }
    if epochs <= initial_epoch {
        return Err(Error::InvalidArgument(format!(
            "the model has already trained {initial_epoch} epochs; --epochs is the total to reach, so give more than {initial_epoch}"
        )));
    }
    model.set_data_info(data.info.clone());
    let dataset = data.info.dataset.clone().unwrap_or_default();
    let load_s = start.elapsed().as_secs_f64();
    if !args.quiet && root {
        model.summary()?;
    }

    let fit_start = Instant::now();
    let options = FitOptions {
        epochs,
        initial_epoch,
        batch_size,
        validation_split,
        verbose: if args.quiet { Verbosity::Silent } else { Verbosity::ProgressBar },
        ..FitOptions::default()
    };
    let mut checkpoint = args.checkpoint_dir.as_ref().filter(|_| root).map(|dir| {
        let name = if args.save_best_only { "best.keel" } else { "epoch-{epoch:03}.keel" };
        ModelCheckpoint::new(dir.join(name).to_string_lossy().into_owned()).save_best_only(args.save_best_only)
    });
    let title = match &args.model {
        Some(path) => format!("{} on {dataset}", path.file_stem().unwrap_or_default().to_string_lossy()),
        None => format!("the reference model on {dataset}"),
    };
    let mut live = dashboard.as_ref().map(|d| d.callback(title));
    let mut callbacks: Vec<&mut dyn Callback> = checkpoint.iter_mut().map(|c| c as &mut dyn Callback).collect();
    callbacks.extend(live.iter_mut().map(|c| c as &mut dyn Callback));
    let (x, y) = &data.train;
    let history = model.fit_with_callbacks(x.as_ref(), y, &options, &mut callbacks)?;
    let fit_s = fit_start.elapsed().as_secs_f64();
    if root {
        warn_if_diverging(&history, classes);
    }
    // Of which in collectives (all-reduce, broadcast), waiting for slower ranks included.
    let collectives_s = communicator.as_ref().map_or(0.0, |c| c.collective_seconds());
    // Every rank evaluates its share of the test set; then rank 0 alone writes.
    let eval_start = Instant::now();
    let test = match &data.test {
        Some((x, y)) => Some(model.evaluate(x.as_ref(), y)?),
        None => None,
    };
    let evaluate_s = eval_start.elapsed().as_secs_f64();
    if !root {
        return Ok(());
    }
    if let Some(path) = &args.save {
        model.save(path)?;
    }
    if let Some(path) = &args.history_out {
        model.history().save(path)?;
    }
    let mut predict_s = 0.0;
    let mut report = None;
    let mut scored = None;
    // The class probabilities (for the classification report and the pictures) only when something shows them.
    let reported = args.metrics_out.is_some() || args.plots.is_some() || dashboard.is_some();
    match (&data.test, &test) {
        (Some(_), Some(scores)) if !reported => println!("Test accuracy: {:.4}", scores.accuracy().unwrap_or(f64::NAN)),
        (Some((test_images, test_labels)), Some(scores)) => {
            let predict_start = Instant::now();
            let probabilities = model.class_probabilities(test_images.as_ref())?;
            predict_s = predict_start.elapsed().as_secs_f64();
            let names = model.class_names(probabilities.row_len().max(2));
            let truth = keel::utils::class_indices(test_labels);
            report = Some(keel::model::ClassificationReport::from_probabilities(&probabilities, &truth, &names));
            println!("Test accuracy: {:.4}", scores.accuracy().unwrap_or(f64::NAN));
            scored = Some((probabilities, names));
        }
        _ => println!("No test split (the folder has no train/ and test/ subfolders): nothing to evaluate"),
    }
    // The pictures --plots writes and the dashboard shows: curves, then the test set's.
    let mut pictures = Vec::new();
    if args.plots.is_some() || dashboard.is_some() {
        pictures.push(keel::plots::curves_picture(model.history())?);
        if let (Some((x, y)), Some((probabilities, names))) = (&data.test, &scored) {
            let scale = model.data_info().map_or(1.0 / 255.0, |i| i.scale);
            pictures.extend(super::report::test_pictures(probabilities, x.as_ref(), y, names, scale)?);
        }
    }
    if let Some(dir) = &args.plots {
        for picture in &pictures {
            picture.write(dir)?;
        }
    }
    if !args.quiet && !history.epochs.is_empty() {
        let per_epoch = fit_s / history.epochs.len() as f64;
        let processes = match ranks {
            1 => String::new(),
            _ => format!(" x {ranks} processes, {collectives_s:.1}s of it in collectives"),
        };
        println!(
            "Trained {} epochs in {fit_s:.1}s ({per_epoch:.2}s/epoch) on {threads} thread(s){processes}",
            history.epochs.len()
        );
    }
    if let Some(path) = &args.metrics_out {
        let optimizer = model.optimizer().expect("training models are compiled");
        let test_samples = data.test.as_ref().map(|(x, _)| x.rows());
        let metrics = json!({
            "test_accuracy": test.as_ref().and_then(|t| t.accuracy()),
            "test_loss": test.as_ref().map(|t| t.loss),
            "macro_f1": report.as_ref().map(|r| r.macro_avg.f1),
            "train_samples": keel::model::validation_split_at(data.train.0.rows(), validation_split),
            "test_samples": test_samples,
            "predict_images_per_s": test_samples.map(|n| n as f64 / predict_s.max(1e-9)),
            "report": report.as_ref().map(|r| r.to_json()),
            "history": history,
            "config": {
                "dataset": dataset,
                "model": args.model.as_ref().map_or("reference".into(), |p| p.display().to_string()),
                "epochs": epochs,
                "initial_epoch": initial_epoch,
                "batch_size": batch_size,
                "validation_split": validation_split,
                "optimizer": optimizer.name(),
                "learning_rate": optimizer.learning_rate(),
                "seed": model.architecture()?.seed,
                "threads": threads,
                "processes": ranks,
                "params": model.count_params()?,
            },
            "timings": {
                "load_s": load_s,
                "fit_s": fit_s,
                "evaluate_s": evaluate_s,
                "predict_s": predict_s,
                "fit_collectives_s": collectives_s,
                "total_s": start.elapsed().as_secs_f64(),
            },
        });
        write_json(path, &metrics)?;
    }
    if let Some(dashboard) = dashboard {
        let results = json!({
            "test_accuracy": test.as_ref().and_then(|t| t.accuracy()),
            "test_loss": test.as_ref().map(|t| t.loss),
            "macro_f1": report.as_ref().map(|r| r.macro_avg.f1),
        });
        // Its own curves are live; it shows the test set's pictures.
        dashboard.finish(results, pictures.into_iter().filter(|p| p.name != "curves").collect());
        if !dashboard.is_closed() {
            eprintln!("Training finished; the dashboard stays at http://{}/ until Ctrl-C", dashboard.addr());
            dashboard.wait()?;
        }
    }
    Ok(())
}
