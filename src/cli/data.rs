//! The datasets the CLI trains and evaluates on, prepared as the reference
//! workflow prepares them (pixels scaled to [0, 1], one-hot labels).

use keel::datasets::{DataSource, catalog};
use keel::model::DataInfo;
use keel::prelude::*;
use std::path::PathBuf;

/// Train and test images (N, H, W, C) and one-hot labels, and what they mean.
pub struct Prepared {
    pub train: (Tensor, Tensor),
    pub test: (Tensor, Tensor),
    pub info: DataInfo,
}

/// Loads the dataset called `name` from `data_dir`, else as `DataSource::from_env` says.
pub fn load(name: &str, data_dir: Option<PathBuf>) -> keel::Result<Prepared> {
    let entry = catalog::find(name)?;
    let source = DataSource::from_env().with_data_dir(data_dir);
    let ((train_images, train_labels), (test_images, test_labels)) = entry.load(&source)?;
    let scale = 1.0 / 255.0;
    Ok(Prepared {
        train: (train_images * scale, to_categorical(&train_labels, Some(entry.classes))?),
        test: (test_images * scale, to_categorical(&test_labels, Some(entry.classes))?),
        info: DataInfo { dataset: Some(entry.name.into()), class_names: entry.class_names(&source), scale },
    })
}
