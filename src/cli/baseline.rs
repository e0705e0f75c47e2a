//! `keel baseline --method M`: a classical classifier on the same images,
//! splits and scaling as the networks, scored as `keel evaluate` scores them.

use super::{data, with_threads, write_json};
use keel::classical::{Baseline, BaselineOptions, Features, Method};
use keel::model::ClassificationReport;
use keel::prelude::*;
use keel::tensor::FirstRows;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BaselineArgs {
    /// logistic, linear-svm, svm (RBF kernel), tree, forest or knn, with scikit-learn's defaults.
    #[arg(long)]
    method: String,
    /// mnist, fashion-mnist, kmnist, cifar10, cifar100, or a folder of class folders.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    #[command(flatten)]
    folder: data::FolderArgs,
    /// Directory holding the dataset's folder, e.g. mnist/ (default: $KEEL_DATA_DIR, then the download cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// pixels (the scaled pixels, flattened) or hog (histograms of oriented gradients).
    #[arg(long, default_value = "pixels")]
    features: String,
    /// Train on the first N training samples [default: all; svm: 30000, as its time grows with N squared].
    #[arg(long)]
    limit: Option<usize>,
    /// Inverse regularisation strength (logistic, linear-svm, svm).
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Neighbours (knn).
    #[arg(long, default_value_t = 5)]
    neighbors: usize,
    /// Trees (forest).
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Deepest level of a tree (tree, forest) [default: grown until pure].
    #[arg(long)]
    max_depth: Option<usize>,
    /// Most solver iterations [default: logistic 100, linear-svm 1000, svm until converged].
    #[arg(long)]
    max_iter: Option<usize>,
    /// Seed of the forest's bootstrap samples and feature draws; the same seed gives the same baseline.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Save the fitted baseline to this file (keel evaluate and keel predict read it).
    #[arg(long)]
    save: Option<PathBuf>,
    #[command(flatten)]
    output: super::report::ReportArgs,
}

pub fn run(args: &BaselineArgs) -> keel::Result<()> {
    let method = Method::parse(&args.method)?;
    let options = BaselineOptions {
        method,
        features: Features::parse(&args.features)?,
        c: args.c,
        neighbors: args.neighbors,
        trees: args.trees,
        max_depth: args.max_depth,
        max_iter: args.max_iter,
        seed: args.seed,
    };
    if args.limit == Some(0) {
        return Err(Error::InvalidArgument(
            "--limit 0 leaves nothing to train on; give a positive number of samples".into(),
        ));
    }
    if let Some(path) = &args.save {
        keel::io::check_output_file(path, "--save")?;
    }
    if let Some(path) = &args.output.metrics_out {
        keel::io::check_output_file(path, "--metrics-out")?;
    }
    if let Some(dir) = &args.output.plots {
        keel::io::check_output_dir(dir, "--plots")?;
    }
    with_threads(args.threads, |threads| {
        let data = data::load(&args.dataset, args.data_dir.clone(), &args.folder)?;
        let (x, y) = &data.train;
        let available = x.rows();
        let limit = match (args.limit, method.default_limit()) {
            (Some(n), _) if n > available => {
                return Err(Error::InvalidArgument(format!(
                    "--limit {n} is more than the {available} training samples of {}; give at most {available}",
                    args.dataset
                )));
            }
            (Some(n), _) => n,
            (None, Some(n)) if n < available => {
                eprintln!(
                    "note: {} does not scale to {available} samples (its time grows with their square): training on the first {n} (give --limit to change it)",
                    method.name()
                );
                n
            }
            _ => available,
        };
        let train = FirstRows::new(x.as_ref(), limit);
        let labels = keel::utils::class_indices(y);
        let classes = y.row_len();
        let start = Instant::now();
        let baseline = Baseline::fit(&train, &labels[..limit], classes, &options, data.info.clone())?;
        let fit_s = start.elapsed().as_secs_f64();
        println!("Fitted {} in {fit_s:.1}s on {threads} thread(s)", baseline.describe());
        if let Some(path) = &args.save {
            baseline.save(path)?;
        }
        let Some((test_x, test_y)) = &data.test else {
            println!("No test split (the folder has no train/ and test/ subfolders): nothing to evaluate");
            return Ok(());
        };
        let start = Instant::now();
        let scores = baseline.scores(test_x.as_ref())?;
        let predict_s = start.elapsed().as_secs_f64();
        let truth = keel::utils::class_indices(test_y);
        let report = ClassificationReport::from_probabilities(&scores, &truth, &baseline.class_names());
        super::report::print_scores(&report, args.output.report, args.output.json);
        if let Some(dir) = &args.output.plots {
            super::report::write_test_plots(
                &scores,
                test_x.as_ref(),
                test_y,
                &baseline.class_names(),
                data.info.scale,
                dir,
            )?;
        }
        if let Some(path) = &args.output.metrics_out {
            let test_samples = truth.len();
            write_json(
                path,
                &json!({
                    "name": format!("{} ({})", method.name(), args.features),
                    "kind": "baseline",
                    "method": method.name(),
                    "features": args.features,
                    "dataset": args.dataset,
                    "options": baseline.options(),
                    "train_samples": limit,
                    "test_samples": test_samples,
                    "test_accuracy": report.accuracy,
                    "macro_f1": report.macro_avg.f1,
                    "threads": threads,
                    "timings": { "fit_s": fit_s, "predict_s": predict_s },
                    "predict_images_per_s": test_samples as f64 / predict_s.max(1e-9),
                    "report": report.to_json(),
                }),
            )?;
        }
        Ok(())
    })
}
