//! The datasets the CLI trains and evaluates on, prepared as the reference
//! workflow prepares them (pixels scaled to [0, 1], one-hot labels): a named
//! dataset, or a folder of class folders (with `train/` and `test/`
//! subfolders used as the splits when present).

use keel::datasets::image_folder::{ColorMode, FolderOptions, ImageFolder, image_folder};
use keel::datasets::{DataSource, catalog};
use keel::model::DataInfo;
use keel::prelude::*;
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
}

impl FolderArgs {
    /// These options, completed for a model taking (height, width, channels)
    /// inputs: its size unless one is given, and its channels' colour mode.
    pub fn for_input(&self, shape: &[usize]) -> FolderArgs {
        match *shape {
            [h, w, c] => FolderArgs {
                image_size: self.image_size.or(Some((h, w))),
                color_mode: if c == 1 { "grayscale".into() } else { "rgb".into() },
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

/// Train and (when there is one) test images (N, H, W, C) with one-hot labels, and what they mean.
pub struct Prepared {
    pub train: (Tensor, Tensor),
    pub test: Option<(Tensor, Tensor)>,
    pub info: DataInfo,
}

const SCALE: f32 = 1.0 / 255.0;

/// Loads the dataset `name` (a catalog name or a folder) from `data_dir`,
/// else as `DataSource::from_env` says.
pub fn load(name: &str, data_dir: Option<PathBuf>, folder: &FolderArgs) -> keel::Result<Prepared> {
    let root = Path::new(name);
    if root.is_dir() {
        return load_folder(root, folder);
    }
    let entry =
        catalog::find(name).map_err(|e| Error::InvalidArgument(format!("{e}, or give a folder of class folders")))?;
    let source = DataSource::from_env().with_data_dir(data_dir);
    let ((train_images, train_labels), (test_images, test_labels)) = entry.load(&source)?;
    Ok(Prepared {
        train: (train_images * SCALE, to_categorical(&train_labels, Some(entry.classes))?),
        test: Some((test_images * SCALE, to_categorical(&test_labels, Some(entry.classes))?)),
        info: DataInfo { dataset: Some(entry.name.into()), class_names: entry.class_names(&source), scale: SCALE },
    })
}

fn load_folder(root: &Path, args: &FolderArgs) -> keel::Result<Prepared> {
    let color_mode = if args.color_mode == "grayscale" { ColorMode::Grayscale } else { ColorMode::Rgb };
    let options = FolderOptions { image_size: args.image_size, color_mode, shuffle_seed: Some(0) };
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let split = train_dir.is_dir() && test_dir.is_dir();
    let train = image_folder(if split { &train_dir } else { root }, &options)?;
    // The test split must look like the training one.
    let test_options = FolderOptions { image_size: args.image_size.or(Some(size_of(&train))), ..options };
    let test = if split { Some(image_folder(&test_dir, &test_options)?) } else { None };
    if let Some(t) = test.as_ref().filter(|t| t.class_names != train.class_names) {
        return Err(Error::InvalidArgument(format!(
            "{} has classes {:?} but {} has {:?}; both splits need the same class folders",
            test_dir.display(),
            t.class_names,
            train_dir.display(),
            train.class_names
        )));
    }
    let classes = train.class_names.len();
    let prepare = |f: ImageFolder| -> keel::Result<(Tensor, Tensor)> {
        Ok((f.images * SCALE, to_categorical(&f.labels, Some(classes))?))
    };
    let info = DataInfo {
        dataset: Some(root.canonicalize().unwrap_or_else(|_| root.into()).display().to_string()),
        class_names: train.class_names.clone(),
        scale: SCALE,
    };
    Ok(Prepared { train: prepare(train)?, test: test.map(prepare).transpose()?, info })
}

fn size_of(folder: &ImageFolder) -> (usize, usize) {
    (folder.images.shape()[1], folder.images.shape()[2])
}
