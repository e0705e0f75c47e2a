//! `keel export MODEL --onnx OUT`: convert a saved model.

use keel::prelude::*;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A .keel model file, or give --model.
    saved: Option<PathBuf>,
    /// A model description (TOML or JSON), exported with random weights (its seed's).
    #[arg(long, conflicts_with = "saved")]
    model: Option<PathBuf>,
    /// Write an ONNX file (opset 13): input "input" (N, H, W, C) float32 scaled as in training, output "output".
    #[arg(long, required = true)]
    onnx: PathBuf,
}

pub fn run(args: &ExportArgs) -> keel::Result<()> {
    if args.saved.is_none() && args.model.is_none() {
        return Err(Error::InvalidArgument("give a .keel file or --model FILE to export".into()));
    }
    let model = super::load_model(args.saved.clone(), args.model.clone())?;
    model.export_onnx(&args.onnx)?;
    println!("Wrote {} (ONNX opset {})", args.onnx.display(), keel::io::ONNX_OPSET);
    Ok(())
}
