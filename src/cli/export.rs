//! `keel export MODEL --onnx OUT`: convert a saved model.

use keel::prelude::*;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A .keel model file.
    model: PathBuf,
    /// Write an ONNX file (opset 13): input "input" (N, H, W, C) float32 scaled as in training, output "output".
    #[arg(long, required = true)]
    onnx: PathBuf,
}

pub fn run(args: &ExportArgs) -> keel::Result<()> {
    let model = Model::load(&args.model)?;
    model.export_onnx(&args.onnx)?;
    println!("Wrote {} (ONNX opset {})", args.onnx.display(), keel::io::ONNX_OPSET);
    Ok(())
}
