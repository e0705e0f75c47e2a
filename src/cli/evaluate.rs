//! `keel evaluate MODEL`: test loss and accuracy of a saved model.

use super::classifier::Classifier;
use super::{MpiArgs, data, is_root, with_threads, write_json};
use keel::model::ClassificationReport;
use keel::prelude::*;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A .keel model file (or a baseline saved by keel baseline --save).
    model: PathBuf,
    /// Dataset to evaluate on: a name or a folder (default: the one the model was trained on).
    #[arg(long)]
    dataset: Option<String>,
    #[command(flatten)]
    folder: data::FolderArgs,
    /// Directory holding the dataset's folder, e.g. mnist/ (default: $KEEL_DATA_DIR, then the download cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    output: super::report::ReportArgs,
    #[command(flatten)]
    mpi: MpiArgs,
}

pub fn run(args: &EvaluateArgs) -> keel::Result<()> {
    let communicator = args.mpi.communicator()?;
    let root = is_root(&communicator);
    with_threads(args.threads, |_| {
        if keel::classical::Baseline::is_baseline_file(&args.model)? {
            return evaluate_baseline(args, root);
        }
        let mut model = Model::load(&args.model)?;
        if let Some(communicator) = communicator {
            model.set_communicator(communicator);
        }
        if model.optimizer().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} was saved without loss and metrics (not compiled); keel cannot evaluate it",
                args.model.display()
            )));
        }
        let folder = args.folder.for_input(&model.shapes()?[0]);
        let (dataset, data) =
            data::load_for_model(model.data_info(), &args.model, args.dataset.clone(), args.data_dir.clone(), &folder)?;
        let data = data.targets_for(&model)?;
        let Some((x, y)) = &data.test else {
            return Err(Error::InvalidArgument(format!(
                "{dataset} has no test split; give a folder with train/ and test/ subfolders"
            )));
        };
        let scores = model.evaluate(x.as_ref(), y)?;
        let report = if args.output.report { Some(model.classification_report(x.as_ref(), y)?) } else { None };
        if !root {
            return Ok(());
        }
        match &report {
            Some(report) if args.output.json => {
                let mut json = report.to_json();
                json["test_loss"] = json!(scores.loss);
                json["metrics"] = json!(scores.metrics);
                println!("{}", serde_json::to_string_pretty(&json).expect("JSON values serialise"));
            }
            _ => {
                println!("Test loss: {:.4}", scores.loss);
                for (name, value) in &scores.metrics {
                    println!("Test {name}: {value:.4}");
                }
                if let Some(report) = &report {
                    println!("\n{report}");
                }
            }
        }
        if let Some(dir) = &args.output.plots {
            super::report::write_plots(&mut model, x.as_ref(), y, dir)?;
        }
        if let Some(path) = &args.output.metrics_out {
            let accuracy = scores.accuracy().unwrap_or(f64::NAN);
            let report = json!({
                "model": args.model,
                "dataset": dataset,
                "test_loss": scores.loss,
                "test_accuracy": accuracy,
                "metrics": scores.metrics,
                "report": report.as_ref().map(|r| r.to_json()),
            });
            write_json(path, &report)?;
        }
        Ok(())
    })
}

/// `keel evaluate` of a classical baseline: its test accuracy, macro F1 and
/// classification report (a baseline has no loss).
fn evaluate_baseline(args: &EvaluateArgs, root: bool) -> keel::Result<()> {
    let mut classifier = Classifier::load(&args.model)?;
    let folder = args.folder.for_input(&classifier.input_shape()?);
    let (dataset, data) = data::load_for_model(
        classifier.data_info(),
        &args.model,
        args.dataset.clone(),
        args.data_dir.clone(),
        &folder,
    )?;
    let Some((x, y)) = &data.test else {
        return Err(Error::InvalidArgument(format!(
            "{dataset} has no test split; give a folder with train/ and test/ subfolders"
        )));
    };
    let names = classifier.class_names()?;
    if y.row_len() != names.len() {
        return Err(Error::InvalidArgument(format!(
            "{dataset} has {} classes but {} was fitted on {}; give --dataset with the baseline's classes",
            y.row_len(),
            args.model.display(),
            names.len()
        )));
    }
    let start = std::time::Instant::now();
    let scores = classifier.class_probabilities(x.as_ref())?;
    let predict_s = start.elapsed().as_secs_f64();
    let report = ClassificationReport::from_probabilities(&scores, &keel::utils::class_indices(y), &names);
    if !root {
        return Ok(());
    }
    super::report::print_scores(&report, args.output.report, args.output.json);
    if let Some(dir) = &args.output.plots {
        super::report::write_test_plots(&scores, x.as_ref(), y, &names, classifier.scale(), dir)?;
    }
    if let Some(path) = &args.output.metrics_out {
        write_json(
            path,
            &json!({
                "model": args.model,
                "kind": "baseline",
                "dataset": dataset,
                "test_samples": y.rows(),
                "test_accuracy": report.accuracy,
                "macro_f1": report.macro_avg.f1,
                "timings": { "predict_s": predict_s },
                "predict_images_per_s": y.rows() as f64 / predict_s.max(1e-9),
                "report": report.to_json(),
            }),
        )?;
    }
    Ok(())
}
