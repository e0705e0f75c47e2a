//! `keel bench MODEL.keel | --model FILE`: how fast a model runs on this
//! machine, on random data: inference latency percentiles and images/s per
//! batch size, and with `--train`, seconds per training step.

use super::{load_model, with_threads};
use keel::model::Verbosity;
use keel::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A .keel model file (its weights), or give --model.
    saved: Option<PathBuf>,
    /// A model description (TOML or JSON), built with random weights.
    #[arg(long, conflicts_with = "saved")]
    model: Option<PathBuf>,
    /// Batch sizes to time, e.g. 1,32.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Also time training steps (forward, backward and the optimizer's update) at each batch size.
    #[arg(long)]
    train: bool,
    /// Timed runs per batch size (after one warm-up run).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The value at fraction `q` of sorted `times`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: &BenchArgs) -> keel::Result<()> {
    if args.runs == 0 || args.batch.is_empty() || args.batch.contains(&0) {
        return Err(Error::InvalidArgument("--runs and every --batch size must be at least 1".into()));
    }
    with_threads(args.threads, |threads| {
        let mut model = load_model(args.saved.clone(), args.model.clone())?;
        let shape = model.shapes()?[0].clone();
        let sample: usize = shape.iter().product();
        let mut rows = Vec::new();
        for &batch in &args.batch {
            // Random inputs in [0, 1), fixed for every run.
            let values: Vec<f32> =
                (0..batch * sample).map(|i| ((i as u64 * 2654435761) % 1000) as f32 / 1000.0).collect();
            let x = Tensor::from_vec(&[[batch].as_slice(), &shape].concat(), values)?;
            model.predict(&x)?;
            let mut times = Vec::with_capacity(args.runs);
            for _ in 0..args.runs {
                let start = Instant::now();
                model.predict(&x)?;
                times.push(start.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let (p50, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
            let mut row = json!({
                "batch": batch,
                "latency_ms_p50": p50 * 1e3,
                "latency_ms_p90": p90 * 1e3,
                "images_per_s": batch as f64 / p50,
            });
            if args.train {
                let step = train_step(&mut model, &x, args.runs)?;
                row["train_s_per_step"] = json!(step);
                row["train_images_per_s"] = json!(batch as f64 / step);
            }
            rows.push(row);
        }
        let report = json!({"model": args.saved.as_ref().or(args.model.as_ref()), "threads": threads, "runs": args.runs, "rows": rows});
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).expect("JSON values serialise"));
            return Ok(());
        }
        println!("{threads} thread(s), median of {} runs after a warm-up", args.runs);
        println!(
            "{:>6} {:>14} {:>14} {:>12}{}",
            "batch",
            "p50 ms",
            "p90 ms",
            "images/s",
            if args.train { "   train s/step  train images/s" } else { "" }
        );
        for row in &rows {
            let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
            let batch = row["batch"].as_u64().unwrap_or(0);
            print!(
                "{batch:>6} {:>14.2} {:>14.2} {:>12.1}",
                f("latency_ms_p50"),
                f("latency_ms_p90"),
                f("images_per_s")
            );
            if args.train {
                print!(" {:>14.4} {:>15.1}", f("train_s_per_step"), f("train_images_per_s"));
            }
            println!();
        }
        Ok(())
    })
}

/// Median seconds of a training step on `x` with random targets (the model's
/// optimizer and loss, or Adam and categorical cross-entropy when it has none).
fn train_step(model: &mut Model, x: &Tensor, runs: usize) -> keel::Result<f64> {
    if model.optimizer().is_none() {
        model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[])?;
    }
    let width = model.output_shape()?.iter().product::<usize>().max(1);
    let loss = model.loss().expect("compiled above").loss;
    let n = x.rows();
    let classes: Vec<f32> = (0..n).map(|i| (i % width.max(2)) as f32).collect();
    let y = match loss {
        Loss::SparseCategoricalCrossentropy => Tensor::from_vec(&[n], classes)?,
        _ if width == 1 => Tensor::from_vec(&[n, 1], classes.iter().map(|c| c.min(1.0)).collect())?,
        _ => to_categorical(&Tensor::from_vec(&[n], classes)?, Some(width))?,
    };
    let options = FitOptions { epochs: 1, batch_size: n, verbose: Verbosity::Silent, ..FitOptions::default() };
    model.fit(x, &y, &options)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        model.fit(x, &y, &options)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(percentile(&times, 0.5))
}
