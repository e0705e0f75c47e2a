//! `keel train`: the reference workflow, with its knobs as flags.

use keel::datasets::{DataSource, mnist};
use keel::model::Verbosity;
use keel::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Passes over the training data.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Samples per gradient step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Fraction of the training samples (the last ones) held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation_split: f64,
    /// adam, sgd or rmsprop (Keras defaults).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate (default: the optimizer's Keras default).
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Seed for weights and shuffling; the same seed gives the same run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Directory holding mnist/ (default: $KEEL_DATA_DIR, then the download cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write test metrics, history, config and timings as JSON to this file.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Print only the test accuracy.
    #[arg(long, short)]
    quiet: bool,
}

/// The reference model: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(10, softmax).
pub fn reference_model(seed: u64) -> keel::Result<Sequential> {
    let mut model = Sequential::new()
        .seed(seed)
        .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape([28, 28, 1]))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Activation::Softmax));
    model.build()?;
    Ok(model)
}

pub fn run(args: &TrainArgs) -> keel::Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(Error::InvalidArgument("--threads must be at least 1".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| train(args, threads))
}

fn train(args: &TrainArgs, threads: usize) -> keel::Result<()> {
    let start = Instant::now();
    let optimizer = keel::optimizers::from_name(&args.optimizer, args.learning_rate)?;
    let learning_rate = optimizer.learning_rate();
    let source = DataSource::from_env().with_data_dir(args.data_dir.clone());
    let ((train_images, train_labels), (test_images, test_labels)) = mnist::load_data_from(&source)?;
    let train_images = (train_images / 255.0).reshape(&[-1, 28, 28, 1])?;
    let test_images = (test_images / 255.0).reshape(&[-1, 28, 28, 1])?;
    let train_labels = to_categorical(&train_labels, Some(10))?;
    let test_labels = to_categorical(&test_labels, Some(10))?;
    let load_s = start.elapsed().as_secs_f64();

    let mut model = reference_model(args.seed)?;
    model.compile(optimizer, Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    if !args.quiet {
        model.summary()?;
    }
    let fit_start = Instant::now();
    let options = FitOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        validation_split: args.validation_split,
        verbose: if args.quiet { Verbosity::Silent } else { Verbosity::ProgressBar },
        ..FitOptions::default()
    };
    let history = model.fit(&train_images, &train_labels, &options)?;
    let fit_s = fit_start.elapsed().as_secs_f64();
    let eval_start = Instant::now();
    let scores = model.evaluate(&test_images, &test_labels)?;
    let evaluate_s = eval_start.elapsed().as_secs_f64();
    let predict_start = Instant::now();
    model.predict(&test_images)?;
    let predict_s = predict_start.elapsed().as_secs_f64();
    let test_accuracy = scores.accuracy().unwrap_or(f64::NAN);
    println!("Test accuracy: {test_accuracy:.4}");
    if !args.quiet && !history.epochs.is_empty() {
        let per_epoch = fit_s / history.epochs.len() as f64;
        println!(
            "Trained {} epochs in {fit_s:.1}s ({per_epoch:.2}s/epoch) on {threads} thread(s)",
            history.epochs.len()
        );
    }
    if let Some(path) = &args.metrics_out {
        let report = json!({
            "test_accuracy": test_accuracy,
            "test_loss": scores.loss,
            "history": history,
            "config": {
                "dataset": "mnist",
                "model": "reference",
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "validation_split": args.validation_split,
                "optimizer": args.optimizer,
                "learning_rate": learning_rate,
                "seed": args.seed,
                "threads": threads,
                "params": model.count_params()?,
            },
            "timings": {
                "load_s": load_s,
                "fit_s": fit_s,
                "evaluate_s": evaluate_s,
                "predict_s": predict_s,
                "total_s": start.elapsed().as_secs_f64(),
            },
        });
        let text = serde_json::to_string_pretty(&report).expect("JSON values always serialise");
        keel::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
