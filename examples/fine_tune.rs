//! Fine-tuning a small MobileNetV2-style network on a folder of images.
//!
//! The network is built with the functional API from MobileNetV2's inverted
//! residual block (1x1 expansion, 3x3 depthwise, 1x1 linear projection, the
//! input added back when the shape allows), behind augmentation layers. It is
//! first trained whole (standing in for pretrained weights), then its
//! backbone is frozen (`set_trainable(false)`: no optimizer updates, its
//! BatchNormalization layers in inference mode, as Keras 3) and the head is
//! fine-tuned with AdamW, a linear warm-up into cosine decay, and gradient
//! clipping.
//!
//! Run: `cargo run --release --example fine_tune -- [FOLDER]`, FOLDER holding
//! one subfolder of images per class (without it, a small synthetic folder is
//! written to a temporary directory).
use keel::datasets::image_folder::{ColorMode, FolderOptions, image_folder};
use keel::prelude::*;
use std::path::{Path, PathBuf};

/// BatchNormalization's momentum: MobileNetV2's is 0.999, for ImageNet's
/// thousands of steps; the moving statistics must follow the batches' within
/// the few dozen steps of this demo.
const MOMENTUM: f32 = 0.5;

/// Conv2D (no bias) -> BatchNormalization -> ReLU(6) when `relu6`, as MobileNetV2.
fn conv_bn(
    x: &SymbolicTensor,
    filters: usize,
    kernel: usize,
    strides: usize,
    relu6: bool,
) -> keel::Result<SymbolicTensor> {
    let conv =
        Conv2D::new(filters, (kernel, kernel)).strides((strides, strides)).padding(Padding::Same).use_bias(false);
    let x = BatchNormalization::new().momentum(MOMENTUM).apply(&conv.apply(x)?)?;
    if relu6 { ReLU::new().max_value(6.0).apply(&x) } else { Ok(x) }
}

/// MobileNetV2's inverted residual block: expand by `expansion`, depthwise
/// 3x3 at `strides`, project linearly to `filters`; the input is added back
/// when the stride is 1 and the channels match.
fn inverted_residual(
    x: &SymbolicTensor,
    expansion: usize,
    filters: usize,
    strides: usize,
) -> keel::Result<SymbolicTensor> {
    let channels = *x.shape().last().expect("images have channels");
    let expanded = conv_bn(x, channels * expansion, 1, 1, true)?;
    let depthwise = DepthwiseConv2D::new((3, 3)).strides((strides, strides)).padding(Padding::Same).use_bias(false);
    let y = BatchNormalization::new().momentum(MOMENTUM).apply(&depthwise.apply(&expanded)?)?;
    let y = ReLU::new().max_value(6.0).apply(&y)?;
    let y = conv_bn(&y, filters, 1, 1, false)?;
    if strides == 1 && channels == filters { Add::new().apply(&[x, &y]) } else { Ok(y) }
}

/// The backbone's layer names (everything up to the pooled features), and the model.
fn mobilenet_like(input: [usize; 3], classes: usize) -> keel::Result<(Vec<String>, Model)> {
    let inputs = Input::new(input);
    let x = RandomFlip::new(FlipMode::Horizontal).apply(&inputs)?;
    let x = RandomRotation::new(0.05).apply(&x)?;
    let x = Rescaling::new(1.0 / 127.5).offset(-1.0).apply(&x)?;
    let mut x = conv_bn(&x, 16, 3, 2, true)?;
    for (expansion, filters, strides) in [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1)] {
        x = inverted_residual(&x, expansion, filters, strides)?;
    }
    let features = GlobalAveragePooling2D::new().named("features").apply(&x)?;
    let x = Dropout::new(0.2).apply(&features)?;
    let outputs = Dense::new(classes).activation(Activation::Softmax).named("classifier").apply(&x)?;
    let model = Model::new(&inputs, &outputs)?.seed(7);
    let head = ["dropout", "classifier"];
    let backbone = model.layer_names().into_iter().filter(|n| !head.contains(n)).map(String::from).collect();
    Ok((backbone, model))
}

/// Three classes of 32x32 pictures (bright bars at different heights, noisy), `n` each.
fn synthetic_folder(root: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    for (k, class) in ["low", "middle", "high"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir)?;
        for i in 0..n {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let noise = ((x * 31 + y * 17 + i as u32 * 13) % 40) as u8;
                let bar = (y as usize / 8) == k + 1;
                image::Rgb(if bar { [220, 180 + noise, 60] } else { [noise, noise, 30 + noise] })
            });
            img.save(dir.join(format!("{i}.png")))?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temporary = std::env::temp_dir().join(format!("keel-fine-tune-{}", std::process::id()));
    let folder = match std::env::args().nth(1) {
        Some(path) => PathBuf::from(path),
        None => {
            synthetic_folder(&temporary, 60)?;
            temporary.clone()
        }
    };
    let options = FolderOptions { image_size: Some((32, 32)), color_mode: ColorMode::Rgb, shuffle_seed: Some(1) };
    let data = image_folder(&folder, &options)?;
    let classes = data.class_names.len();
    let (x, y) = (data.images, to_categorical(&data.labels, Some(classes))?);
    println!("{} images of {classes} classes ({})", x.rows(), data.class_names.join(", "));

    let (backbone, mut model) = mobilenet_like([32, 32, 3], classes)?;
    model.compile(Adam::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
    model.summary()?;
    let options = FitOptions { epochs: 8, batch_size: 32, validation_split: 0.2, ..FitOptions::default() };
    println!("Training the whole network:");
    model.fit(&x, &y, &options)?;

    // Freeze the backbone; fine-tune the head with the usual recipe.
    for name in &backbone {
        model.get_layer(name)?.set_trainable(false);
    }
    let steps_per_epoch = (x.rows() as f64 * 0.8 / 32.0).ceil() as u64;
    let schedule = LearningRateSchedule::cosine_decay(0.0, 4 * steps_per_epoch).warmup(3e-3, steps_per_epoch);
    let recipe = AdamW::default().weight_decay(0.05).clipnorm(1.0).schedule(schedule);
    model.compile(recipe, Loss::CategoricalCrossentropy.label_smoothing(0.1), &[Metric::Accuracy])?;
    model.summary()?;
    println!("Fine-tuning the head with the backbone frozen:");
    let history = model.fit(&x, &y, &FitOptions { epochs: 5, ..options })?;
    let last = history.epochs.last().and_then(|e| e.get("val_accuracy")).unwrap_or(f64::NAN);
    println!("Validation accuracy after fine-tuning: {last:.4}");
    if folder == temporary {
        std::fs::remove_dir_all(&temporary)?;
    }
    Ok(())
}
