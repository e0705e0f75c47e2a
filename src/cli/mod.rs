//! `keel train` and `keel summary`. User mistakes end with a message on
//! stderr and exit code 1 (2 for bad arguments, from clap), never a panic.

mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keras-style deep learning for image classification, in pure Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the reference CNN on MNIST, then evaluate it on the test set.
    Train(train::TrainArgs),
    /// Print the reference model's summary table.
    Summary,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Summary => train::reference_model(0).and_then(|mut m| m.summary()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
