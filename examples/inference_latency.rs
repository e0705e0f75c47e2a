//! Inference latency of a model file's network with random weights: batch 1
//! milliseconds and batch 32 images/s, median of several runs.
//!
//! Run: cargo run --release --example inference_latency -- examples/models/resnet50.toml [RUNS] [--onnx OUT.onnx]
//! (`--onnx` also writes the same network, with the same weights, as ONNX: what
//! `bench/inference.py` runs in onnxruntime).
use keel::model::Architecture;
use keel::prelude::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let onnx = args.iter().position(|a| a == "--onnx").map(|i| args.get(i + 1).cloned().ok_or("--onnx needs a path"));
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--onnx"))
        .map(|(_, a)| a)
        .collect();
    let path = positional.first().ok_or("give a model file, e.g. examples/models/resnet50.toml")?;
    let runs: usize = positional.get(1).map_or(Ok(5), |r| r.parse())?;
    let mut model = Model::from_architecture(&Architecture::read(path)?)?;
    if let Some(out) = onnx {
        model.export_onnx(out?)?;
    }
    let shape = model.shapes()?[0].clone();
    let sample: usize = shape.iter().product();
    for batch in [1, 32] {
        let values: Vec<f32> = (0..batch * sample).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
        let x = Tensor::from_vec(&[[batch].as_slice(), &shape].concat(), values)?;
        model.predict(&x)?; // warm-up: buffers sized, caches filled
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                model.predict(&x).map(|_| start.elapsed().as_secs_f64())
            })
            .collect::<keel::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[runs / 2];
        println!("batch {batch:>2}: {:8.1} ms, {:7.1} images/s", median * 1e3, batch as f64 / median);
    }
    Ok(())
}
