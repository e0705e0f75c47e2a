//! The `keel` command line: train, evaluate, predict, summary, export, bench,
//! baseline, compare, serve, datasets. User mistakes end with a message on stderr and exit code 1 (2 for bad
//! arguments, from clap), never a panic.

mod baseline;
mod bench;
mod classifier;
mod compare;
mod data;
mod datasets;
mod evaluate;
mod export;
mod predict;
mod report;
mod serve;
mod train;

use clap::{Parser, Subcommand};
use keel::distributed::Communicator;
use keel::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keras-style deep learning for image classification, in pure Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the reference CNN on MNIST (or continue a saved model), then evaluate it on the test set.
    Train(train::TrainArgs),
    /// Evaluate a saved model on its dataset's test set.
    Evaluate(evaluate::EvaluateArgs),
    /// Classify image files (PNG, JPEG, BMP) with a saved model.
    Predict(predict::PredictArgs),
    /// Print the summary table of a saved model, a model file, or the reference model.
    Summary {
        /// A .keel model file (default: the reference model).
        saved: Option<PathBuf>,
        /// A model description (TOML or JSON), as `keel train --model`.
        #[arg(long, conflicts_with = "saved")]
        model: Option<PathBuf>,
    },
    /// Convert a saved model (or a model file, with random weights) to another format.
    Export(export::ExportArgs),
    /// Fit a classical classifier (logistic regression, SVMs, tree, forest, k-NN) on a dataset and score it.
    Baseline(baseline::BaselineArgs),
    /// Serve a model over HTTP: TF Serving's REST API, image uploads, metrics and a page to draw a digit on.
    Serve(serve::ServeArgs),
    /// One table (and a bar chart) of runs' --metrics-out files: networks and baselines side by side.
    Compare(compare::CompareArgs),
    /// Time a model on random data: inference latency and images/s per batch size, training steps.
    Bench(bench::BenchArgs),
    /// List, fetch and verify the named datasets.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Summary { saved, model } => summary(saved, model),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Baseline(args) => baseline::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Datasets(command) => datasets::run(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match keel::distributed::launched().filter(|l| l.size > 1) {
                Some(launch) => eprintln!("error: rank {}: {e}", launch.rank),
                None => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn summary(saved: Option<PathBuf>, description: Option<PathBuf>) -> keel::Result<()> {
    if let Some(path) = &saved
        && keel::classical::Baseline::is_baseline_file(path)?
    {
        let baseline = keel::classical::Baseline::load(path)?;
        println!("Baseline: {}", baseline.describe());
        println!(
            "Input shape: {:?}, {} classes: {}",
            baseline.input_shape(),
            baseline.classes(),
            baseline.class_names().join(", ")
        );
        return Ok(());
    }
    load_model(saved, description)?.summary()
}

/// A saved model, a model file's (random weights), or the reference model.
fn load_model(saved: Option<PathBuf>, description: Option<PathBuf>) -> keel::Result<Model> {
    match (saved, description) {
        (Some(path), _) => Model::load(path),
        (None, Some(path)) => Model::from_architecture(&keel::model::Architecture::read(path)?),
        (None, None) => train::reference_model(0, [28, 28, 1], 10),
    }
}

/// Most worker threads keel starts.
const MAX_THREADS: usize = 1024;

/// Runs `work` on a pool of `threads` workers (default: all cores, shared
/// evenly by the ranks an MPI launcher started on this host).
fn with_threads<T: Send>(
    threads: Option<usize>,
    work: impl FnOnce(usize) -> keel::Result<T> + Send,
) -> keel::Result<T> {
    let threads = threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ranks_here = keel::distributed::launched().map_or(1, |l| l.local_size);
        (cores / ranks_here).max(1)
    });
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::InvalidArgument(format!(
            "--threads {threads} is out of range: give 1 to {MAX_THREADS} (this machine has {} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| work(threads))
}

/// Arguments of commands that may run as one of several MPI ranks.
#[derive(clap::Args, Debug, Clone)]
struct MpiArgs {
    /// Under mpirun: seconds a rank waits for the others in one collective before it ends the job with an error.
    #[arg(long, env = "KEEL_MPI_TIMEOUT", default_value_t = 120.0, value_name = "SECONDS")]
    mpi_timeout: f64,
}

impl MpiArgs {
    /// The communicator of this process when an MPI launcher started it as
    /// one of several ranks; `None` when it runs alone.
    fn communicator(&self) -> keel::Result<Option<Arc<dyn Communicator>>> {
        let Some(launch) = keel::distributed::launched().filter(|l| l.size > 1) else {
            return Ok(None);
        };
        if !(self.mpi_timeout.is_finite() && self.mpi_timeout > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--mpi-timeout must be a positive number of seconds, got {}",
                self.mpi_timeout
            )));
        }
        #[cfg(feature = "mpi")]
        {
            let timeout = std::time::Duration::from_secs_f64(self.mpi_timeout);
            let mpi = keel::distributed::Mpi::init(timeout)?;
            debug_assert_eq!((mpi.rank(), mpi.size()), (launch.rank, launch.size));
            Ok(Some(Arc::new(mpi)))
        }
        #[cfg(not(feature = "mpi"))]
        Err(Error::State(format!(
            "started as rank {} of {} by an MPI launcher, but this keel was built without MPI support, so every rank would train alone and write the same files; build it with `cargo build --release --features mpi`",
            launch.rank, launch.size
        )))
    }
}

/// True on the process that prints and writes files: rank 0, or the only one.
fn is_root(communicator: &Option<Arc<dyn Communicator>>) -> bool {
    communicator.as_ref().is_none_or(|c| c.rank() == 0)
}

/// Writes `value` as pretty JSON, atomically.
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> keel::Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values always serialise");
    keel::io::write_atomic(path, text.as_bytes())
}
