//! `keel predict MODEL IMAGE...`: classify image files with a saved model.

use super::classifier::Classifier;
use super::with_threads;
use keel::datasets::image_folder::{ColorMode, decode, decode_bytes};
use keel::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A .keel model file (or a baseline saved by keel baseline --save).
    model: PathBuf,
    /// PNG, JPEG or BMP files (`-`: one image on standard input); each is
    /// converted to the model's input (grey or colour, resized to its size,
    /// scaled as in training).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to show per image, most likely first.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
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
        let mut model = Classifier::load(&args.model)?;
        let input = model.input_shape()?;
        let &[h, w, c] = input.as_slice() else {
            return Err(Error::InvalidArgument(format!(
                "the model takes inputs of shape {input:?}, not images (height, width, channels)"
            )));
        };
        let scale = model.scale();
        // Every image is tried; one that cannot be read is reported in its place.
        let decoded: Vec<keel::Result<Vec<u8>>> =
            args.images.iter().map(|path| read_image(path, h, w, c, args.invert)).collect();
        let good: Vec<u8> = decoded.iter().filter_map(|r| r.as_ref().ok()).flatten().copied().collect();
        let n_good = good.len() / (h * w * c);
        let x = Tensor::from_u8(&[n_good, h, w, c], good)? * scale;
        let probabilities = if n_good > 0 { model.class_probabilities(&x)?.to_f32_vec() } else { Vec::new() };
        let names = model.class_names()?;
        let classes = names.len();
        let mut rows = probabilities.chunks(classes);
        let mut report = Vec::new();
        let mut failed = 0;
        for (path, image) in args.images.iter().zip(&decoded) {
            let p = match image {
                Ok(_) => rows.next().expect("one row per decoded image"),
                Err(e) => {
                    failed += 1;
                    if args.json {
                        report.push(json!({"file": path, "error": e.to_string()}));
                    } else {
                        eprintln!("{}: error: {e}", path.display());
                    }
                    continue;
                }
            };
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            order.truncate(args.top_k);
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
        if failed > 0 {
            return Err(Error::InvalidArgument(format!(
                "{failed} of {} images could not be read (see above)",
                args.images.len()
            )));
        }
        Ok(())
    })
}

/// Most bytes read from standard input for one image.
const MAX_STDIN_IMAGE: u64 = 64 << 20;

/// The image at `path` as `h` x `w` x `c` bytes (c = 1: grey, 3: RGB).
fn read_image(path: &Path, h: usize, w: usize, c: usize, invert: bool) -> keel::Result<Vec<u8>> {
    let mode = ColorMode::for_channels(c)?;
    let (mut bytes, _) = if path.as_os_str() == "-" {
        use std::io::Read;
        let mut raw = Vec::new();
        std::io::stdin().take(MAX_STDIN_IMAGE + 1).read_to_end(&mut raw).map_err(|e| Error::io(path, e))?;
        if raw.len() as u64 > MAX_STDIN_IMAGE {
            return Err(Error::InvalidArgument(format!(
                "the image on standard input is larger than {} MiB",
                MAX_STDIN_IMAGE >> 20
            )));
        }
        decode_bytes(&raw, Path::new("<standard input>"), Some((h, w)), mode)?
    } else {
        decode(path, Some((h, w)), mode)?
    };
    if invert {
        bytes.iter_mut().for_each(|b| *b = 255 - *b);
    }
    Ok(bytes)
}
