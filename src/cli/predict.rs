//! `keel predict MODEL IMAGE...`: classify image files with a saved model.

use super::with_threads;
use keel::datasets::image_folder::{ColorMode, decode};
use keel::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A .keel model file.
    model: PathBuf,
    /// PNG, JPEG or BMP files; each is converted to the model's input (grey or
    /// colour, resized to its size, scaled as in training).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to show per image, most likely first.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Invert the pixels first (dark digits on light paper, unlike MNIST).
    #[arg(long)]
    invert: bool,
    /// Print one JSON array: per file its probabilities (every class, in class order) and top classes.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &PredictArgs) -> keel::Result<()> {
    with_threads(args.threads, |_| {
        let mut model = Model::load(&args.model)?;
        let input = model.shapes()?[0].clone();
        let &[h, w, c] = input.as_slice() else {
            return Err(Error::InvalidArgument(format!(
                "the model takes inputs of shape {input:?}, not images (height, width, channels)"
            )));
        };
        let scale = model.data_info().map_or(1.0 / 255.0, |i| i.scale);
        let mut pixels = Vec::with_capacity(args.images.len() * h * w * c);
        for path in &args.images {
            pixels.extend(read_image(path, h, w, c, args.invert)?);
        }
        let x = Tensor::from_u8(&[args.images.len(), h, w, c], pixels)? * scale;
        let probabilities = model.predict(&x)?;
        let classes = probabilities.row_len();
        let names = super::class_names(&model, classes);
        let all = probabilities.to_f32_vec();
        let mut report = Vec::new();
        for (path, p) in args.images.iter().zip(all.chunks(classes)) {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            order.truncate(args.top_k.max(1));
            if args.json {
                let top: Vec<_> =
                    order.iter().map(|&i| json!({"index": i, "class": names[i], "probability": p[i]})).collect();
                report.push(json!({"file": path, "probabilities": p, "top": top}));
            } else {
                let top: Vec<String> = order.iter().map(|&i| format!("{} ({:.4})", names[i], p[i])).collect();
                println!("{}: {}", path.display(), top.join(", "));
            }
        }
        if args.json {
            println!("{}", serde_json::Value::Array(report));
        }
        Ok(())
    })
}

/// The image at `path` as `h` x `w` x `c` bytes (c = 1: grey, 3: RGB).
fn read_image(path: &Path, h: usize, w: usize, c: usize, invert: bool) -> keel::Result<Vec<u8>> {
    let mode = match c {
        1 => ColorMode::Grayscale,
        3 => ColorMode::Rgb,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "the model takes {c} channels; images have 1 (grey) or 3 (RGB)"
            )));
        }
    };
    let (mut bytes, _) = decode(path, Some((h, w)), mode)?;
    if invert {
        bytes.iter_mut().for_each(|b| *b = 255 - *b);
    }
    Ok(bytes)
}
