//! `--plots DIR`: curves, confusion matrix and misclassified test images.

use keel::plots::{self, Misclassified, Picture};
use keel::prelude::*;
use keel::tensor::Samples;
use std::path::Path;

/// What to report about a classifier on the test set (keel evaluate, keel baseline).
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Write confusion_matrix.png and misclassified.png (and .svg) into this directory.
    #[arg(long)]
    pub plots: Option<std::path::PathBuf>,
    /// Write test accuracy, macro F1, the metrics, timings and the classification report as JSON to this file (keel compare reads it).
    #[arg(long)]
    pub metrics_out: Option<std::path::PathBuf>,
    /// Print a classification report: per class precision, recall, F1 and support,
    /// averages, top-1/top-5 accuracy, the most confused classes, the confusion matrix.
    #[arg(long)]
    pub report: bool,
    /// With --report: print it as JSON instead.
    #[arg(long, requires = "report")]
    pub json: bool,
}

/// How many misclassified images the grid shows.
const GRID: usize = 24;

/// Writes a model's test-set plots into `dir`.
pub fn write_plots(model: &mut Model, x: &dyn Samples, y: &Tensor, dir: &Path) -> keel::Result<()> {
    let probabilities = model.class_probabilities(x)?;
    let classes = y.row_len().max(2);
    let names = model.class_names(classes);
    let scale = model.data_info().map_or(1.0 / 255.0, |i| i.scale);
    write_test_plots(&probabilities, x, y, &names, scale, dir)
}

/// The confusion matrix and the misclassified images of a classifier's
/// class probabilities (or scores) on `x`, `y`, into `dir`.
pub fn write_test_plots(
    probabilities: &Tensor,
    x: &dyn Samples,
    y: &Tensor,
    names: &[String],
    scale: f32,
    dir: &Path,
) -> keel::Result<()> {
    for picture in test_pictures(probabilities, x, y, names, scale)? {
        picture.write(dir)?;
    }
    Ok(())
}

/// The pictures of [`write_test_plots`], in memory.
pub fn test_pictures(
    probabilities: &Tensor,
    x: &dyn Samples,
    y: &Tensor,
    names: &[String],
    scale: f32,
) -> keel::Result<[Picture; 2]> {
    let predicted = argmax(probabilities);
    let truth = keel::utils::class_indices(y);
    let confusion =
        plots::confusion_matrix_picture(&keel::metrics::confusion_counts(&truth, &predicted, names.len()), names)?;
    let shape = &x.shape()[1..];
    let (height, width, channels) = (shape[0], shape.get(1).copied().unwrap_or(1), shape.get(2).copied().unwrap_or(1));
    let wrong: Vec<Misclassified> = (0..truth.len())
        .filter(|&i| truth[i] != predicted[i])
        .take(GRID)
        .map(|i| {
            let mut row = vec![0.0; height * width * channels];
            x.gather(&[i], &mut row)?;
            Ok(Misclassified {
                pixels: row.iter().map(|v| (v / scale).round().clamp(0.0, 255.0) as u8).collect(),
                height,
                width,
                channels,
                truth: names[truth[i]].clone(),
                predicted: names[predicted[i]].clone(),
            })
        })
        .collect::<keel::Result<_>>()?;
    Ok([confusion, plots::misclassified_picture(&wrong)?])
}

/// Prints a classifier's test scores: accuracy and macro F1, with the whole
/// classification report when asked (as JSON with `json`).
pub fn print_scores(report: &keel::model::ClassificationReport, full: bool, json: bool) {
    if full && json {
        println!("{}", serde_json::to_string_pretty(&report.to_json()).expect("JSON values serialise"));
    } else {
        println!("Test accuracy: {:.4}", report.accuracy);
        println!("Test macro F1: {:.4}", report.macro_avg.f1);
        if full {
            println!("\n{report}");
        }
    }
}
