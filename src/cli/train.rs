//! `keel train`: the reference workflow, with its knobs as flags; saving,
//! checkpoints and resuming.

use super::{data, with_threads, write_json};
use keel::callbacks::{Callback, ModelCheckpoint};
use keel::model::Verbosity;
use keel::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Epochs to train to: with --resume, the total including those already trained (Keras' `epochs` with `initial_epoch`).
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
    /// Learning rate (default: the optimizer's Keras default, or the resumed model's).
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
    #[arg(long, conflicts_with_all = ["optimizer", "seed"])]
    resume: Option<PathBuf>,
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
    with_threads(args.threads, |threads| train(args, threads))
}

/// A new compiled reference model, or the resumed one, with the epoch it starts from.
fn model_to_train(args: &TrainArgs) -> keel::Result<(Sequential, usize)> {
    let Some(path) = &args.resume else {
        let mut model = reference_model(args.seed)?;
        let optimizer = keel::optimizers::from_name(&args.optimizer, args.learning_rate)?;
        model.compile(optimizer, Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
        return Ok((model, 0));
    };
    let mut model = Sequential::load(path)?;
    let done = model.epochs_trained();
    let Some(optimizer) = model.optimizer_mut() else {
        return Err(Error::InvalidArgument(format!(
            "{} holds weights but no training state (it was not compiled); it cannot be resumed",
            path.display()
        )));
    };
    if let Some(lr) = args.learning_rate {
        keel::optimizers::check_learning_rate(lr)?;
        optimizer.set_learning_rate(lr);
    }
    if args.epochs <= done {
        return Err(Error::InvalidArgument(format!(
            "{} has already trained {done} epochs; --epochs is the total to reach, so give more than {done}",
            path.display()
        )));
    }
    Ok((model, done))
}

fn train(args: &TrainArgs, threads: usize) -> keel::Result<()> {
    let start = Instant::now();
    let (mut model, initial_epoch) = model_to_train(args)?;
    let data =
        data::load(model.data_info().and_then(|d| d.dataset.as_deref()).unwrap_or("mnist"), args.data_dir.clone())?;
    model.set_data_info(data.info.clone());
    let load_s = start.elapsed().as_secs_f64();
    if !args.quiet {
        model.summary()?;
    }

    let fit_start = Instant::now();
    let options = FitOptions {
        epochs: args.epochs,
        initial_epoch,
        batch_size: args.batch_size,
        validation_split: args.validation_split,
        verbose: if args.quiet { Verbosity::Silent } else { Verbosity::ProgressBar },
        ..FitOptions::default()
    };
    let mut checkpoint = args.checkpoint_dir.as_ref().map(|dir| {
        let name = if args.save_best_only { "best.keel" } else { "epoch-{epoch:03}.keel" };
        ModelCheckpoint::new(dir.join(name).to_string_lossy().into_owned()).save_best_only(args.save_best_only)
    });
    let mut callbacks: Vec<&mut dyn Callback> = checkpoint.iter_mut().map(|c| c as &mut dyn Callback).collect();
    let (x, y) = &data.train;
    let history = model.fit_with_callbacks(x, y, &options, &mut callbacks)?;
    let fit_s = fit_start.elapsed().as_secs_f64();
    if let Some(path) = &args.save {
        model.save(path)?;
    }

    let (test_images, test_labels) = &data.test;
    let eval_start = Instant::now();
    let scores = model.evaluate(test_images, test_labels)?;
    let evaluate_s = eval_start.elapsed().as_secs_f64();
    let predict_start = Instant::now();
    model.predict(test_images)?;
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
        let optimizer = model.optimizer().expect("training models are compiled");
        let report = json!({
            "test_accuracy": test_accuracy,
            "test_loss": scores.loss,
            "history": history,
            "config": {
                "dataset": "mnist",
                "model": "reference",
                "epochs": args.epochs,
                "initial_epoch": initial_epoch,
                "batch_size": args.batch_size,
                "validation_split": args.validation_split,
                "optimizer": optimizer.name(),
                "learning_rate": optimizer.learning_rate(),
                "seed": model.architecture()?.seed,
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
        write_json(path, &report)?;
    }
    Ok(())
}
