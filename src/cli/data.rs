//! The datasets the CLI trains and evaluates on, prepared as the reference
//! workflow prepares them (pixels scaled to [0, 1], one-hot labels): a named
//! dataset, or a folder of class folders (with `train/` and `test/`
//! subfolders used as the splits when present).

use keel::datasets::image_folder::{ColorMode, FolderOptions, ImageFolder, image_folder, image_folder_stream};
use keel::datasets::{DataSource, catalog};
use keel::model::DataInfo;
use keel::prelude::*;
use keel::tensor::Samples;
use std::path::{Path, PathBuf};

/// How to read a folder dataset.
#[derive(clap::Args, Debug, Clone)]
pub struct FolderArgs {
    /// For a folder dataset: resize every image to HEIGHTxWIDTH (e.g. 64x64); needed when sizes differ.
    #[arg(long, value_parser = parse_size)]
    image_size: Option<(usize, usize)>,
    /// For a folder dataset: grayscale or rgb.
    #[arg(long, default_value = "rgb", value_parser = ["grayscale", "rgb"])]
    color_mode: String,
    /// For a folder dataset: decode images batch by batch instead of holding them in memory
    /// (automatic above 1 GiB of decoded images).
    #[arg(long)]
    stream: bool,
}

impl FolderArgs {
    /// These options, completed for a model taking (height, width, channels)
    /// inputs: its size unless one is given, and its channels' colour mode.
    pub fn for_input(&self, shape: &[usize]) -> FolderArgs {
        match *shape {
            [h, w, c] => FolderArgs {
                image_size: self.image_size.or(Some((h, w))),
                color_mode: if c == 1 { "grayscale".into() } else { "rgb".into() },
                stream: self.stream,
            },
            _ => self.clone(),
        }
    }
}

fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once(['x', 'X']).and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)));
    match parsed {
        Some((h, w)) if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(format!("'{text}' is not HEIGHTxWIDTH, e.g. 64x64")),
    }
}

/// Images (N, H, W, C), in memory or streamed, and one-hot labels.
pub type Split = (Box<dyn Samples>, Tensor);

/// Train and (when there is one) test splits, and what they mean.
pub struct Prepared {
    pub train: Split,
    pub test: Option<Split>,
    pub info: DataInfo,
}

impl Prepared {
    /// The one-hot targets in the form the model's loss takes: class indices
    /// for sparse_categorical_crossentropy; for one output with
    /// binary_crossentropy over two classes, the second class's column (as
    /// Keras' `label_mode="binary"`: 1 for the second folder in name order).
    pub fn targets_for(mut self, model: &Model) -> keel::Result<Prepared> {
        let (Some(loss), Some(&width)) = (model.loss(), model.output_shape()?.last()) else { return Ok(self) };
        let convert = |y: &Tensor| -> keel::Result<Option<Tensor>> {
            let (rows, classes) = (y.rows(), y.row_len());
            let indices = || argmax(y).into_iter().map(|c| c as f32).collect::<Vec<f32>>();
            Ok(match loss.loss {
                Loss::SparseCategoricalCrossentropy if classes > 1 => Some(Tensor::from_vec(&[rows], indices())?),
                Loss::BinaryCrossentropy if width == 1 && classes == 2 => {
                    Some(Tensor::from_vec(&[rows, 1], indices())?)
                }
                Loss::BinaryCrossentropy if width == 1 => {
                    return Err(Error::InvalidArgument(format!(
                        "the model has one output (binary) but the dataset has {classes} classes; give the last Dense {classes} units"
                    )));
                }
                _ => None,
            })
        };
        if let Some(y) = convert(&self.train.1)? {
            self.train.1 = y;
        }
        if let Some((_, test_y)) = &mut self.test
            && let Some(y) = convert(test_y)?
        {
            *test_y = y;
        }
        Ok(self)
    }
}

const SCALE: f32 = 1.0 / 255.0;

/// Decoded images beyond this many bytes are streamed rather than held in memory.
const MAX_IN_MEMORY: usize = 1 << 30;

/// Loads the dataset `name` (a catalog name or a folder) from `data_dir`,
/// else as `DataSource::from_env` says.
pub fn load(name: &str, data_dir: Option<PathBuf>, folder: &FolderArgs) -> keel::Result<Prepared> {
    let root = Path::new(name);
    if root.is_dir() {
        return load_folder(root, folder);
    }
    let entry = catalog::find(name).map_err(|e| match e {
        Error::InvalidArgument(message) => {
            Error::InvalidArgument(format!("{message}, or give a folder of class folders"))
        }
        e => e,
    })?;
    let source = DataSource::from_env().with_data_dir(data_dir);
    let ((train_images, train_labels), (test_images, test_labels)) = entry.load(&source)?;
    Ok(Prepared {
        train: (Box::new(train_images * SCALE), to_categorical(&train_labels, Some(entry.classes))?),
        test: Some((Box::new(test_images * SCALE), to_categorical(&test_labels, Some(entry.classes))?)),
        info: DataInfo { dataset: Some(entry.name.into()), class_names: entry.class_names(&source), scale: SCALE },
    })
}

fn load_folder(root: &Path, args: &FolderArgs) -> keel::Result<Prepared> {
    let color_mode = if args.color_mode == "grayscale" { ColorMode::Grayscale } else { ColorMode::Rgb };
    let options = FolderOptions { image_size: args.image_size, color_mode, shuffle_seed: Some(0) };
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let split = train_dir.is_dir() && test_dir.is_dir();
    let (train, class_names) = read_folder(if split { &train_dir } else { root }, &options, args.stream)?;
    if class_names.len() == 1 {
        eprintln!(
            "warning: {} has one class folder ({}): a classifier learns nothing from it (it reaches loss 0 by always answering that class); give a folder per class",
            root.display(),
            class_names[0]
        );
    }
    // The test split must look like the training one.
    let shape = train.0.shape().to_vec();
    let test_options = FolderOptions { image_size: Some((shape[1], shape[2])), ..options };
    let test = if split {
        let (test, test_classes) = read_folder(&test_dir, &test_options, args.stream)?;
        if test_classes != class_names {
            return Err(Error::InvalidArgument(format!(
                "{} has classes {test_classes:?} but {} has {class_names:?}; both splits need the same class folders",
                test_dir.display(),
                train_dir.display(),
            )));
        }
        Some(test)
    } else {
        None
    };
    let info = DataInfo {
        dataset: Some(root.canonicalize().unwrap_or_else(|_| root.into()).display().to_string()),
        class_names,
        scale: SCALE,
    };
    Ok(Prepared { train, test, info })
}

/// The data to evaluate or resume a model (read from `model_path`, with
/// `recorded` data info) on: the dataset given, else the one recorded in the
/// model file. A folder taken
/// from the file is named on standard error, and every folder must hold the
/// classes the model was trained on: that is checked on the folder names,
/// before any image is read.
pub fn load_for_model(
    recorded: Option<&DataInfo>,
    model_path: &Path,
    given: Option<String>,
    data_dir: Option<PathBuf>,
    folder: &FolderArgs,
) -> keel::Result<(String, Prepared)> {
    let info = recorded;
    let recorded = info.and_then(|d| d.dataset.clone());
    let from_file = given.is_none() && recorded.is_some();
    let dataset = given.or(recorded).unwrap_or_else(|| "mnist".into());
    let root = Path::new(&dataset);
    if root.is_dir() {
        if from_file {
            eprintln!(
                "note: reading {}, the folder {} was trained on (give --dataset to read another)",
                root.display(),
                model_path.display()
            );
        }
        let trained: &[String] = info.map_or(&[], |d| &d.class_names);
        let found = class_folders(root);
        if !trained.is_empty() && found != trained {
            let shown = |names: &[String]| {
                let mut text = names.iter().take(12).cloned().collect::<Vec<_>>().join(", ");
                if names.len() > 12 {
                    text += &format!(", ... ({} in all)", names.len());
                }
                format!("[{text}]")
            };
            return Err(Error::InvalidArgument(format!(
                "{} holds class folders {} but {} was trained on {}; give --dataset with a folder of the model's classes",
                root.display(),
                shown(&found),
                model_path.display(),
                shown(trained)
            )));
        }
    }
    let data = load(&dataset, data_dir, folder)?;
    Ok((dataset, data))
}

/// The class folder names of a folder dataset (of its train/ split when it has one), sorted.
fn class_folders(root: &Path) -> Vec<String> {
    let base = if root.join("train").is_dir() && root.join("test").is_dir() { root.join("train") } else { root.into() };
    keel::datasets::image_folder::class_folders(&base)
        .map(|c| c.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

/// One folder, in memory or streamed (on request, or when it would not fit), with its class names.
fn read_folder(dir: &Path, options: &FolderOptions, stream: bool) -> keel::Result<(Split, Vec<String>)> {
    let (streamed, labels, class_names) = image_folder_stream(dir, options, SCALE)?;
    let classes = class_names.len();
    if stream || streamed.shape().iter().product::<usize>() > MAX_IN_MEMORY {
        return Ok(((Box::new(streamed), to_categorical(&labels, Some(classes))?), class_names));
    }
    let ImageFolder { images, labels, .. } = image_folder(dir, options)?;
    Ok(((Box::new(images * SCALE), to_categorical(&labels, Some(classes))?), class_names))
}
