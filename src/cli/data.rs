//! The datasets the CLI trains and evaluates on, prepared as the reference
//! workflow prepares them (pixels scaled to [0, 1], one-hot labels).

use keel::datasets::{DataSource, mnist};
use keel::model::DataInfo;
use keel::prelude::*;
use std::path::PathBuf;

/// Train and test images (N, H, W, C) and one-hot labels, and what they mean.
pub struct Prepared {
    pub train: (Tensor, Tensor),
    pub test: (Tensor, Tensor),
    pub info: DataInfo,
}

/// Loads `dataset` ("mnist") from `data_dir`, else as `DataSource::from_env` says.
pub fn load(dataset: &str, data_dir: Option<PathBuf>) -> keel::Result<Prepared> {
    if dataset != "mnist" {
        return Err(Error::InvalidArgument(format!("unknown dataset '{dataset}'; keel's CLI knows: mnist")));
    }
    let source = DataSource::from_env().with_data_dir(data_dir);
    let ((train_images, train_labels), (test_images, test_labels)) = mnist::load_data_from(&source)?;
    let scale = 1.0 / 255.0;
    Ok(Prepared {
        train: ((train_images * scale).reshape(&[-1, 28, 28, 1])?, to_categorical(&train_labels, Some(10))?),
        test: ((test_images * scale).reshape(&[-1, 28, 28, 1])?, to_categorical(&test_labels, Some(10))?),
        info: DataInfo {
            dataset: Some("mnist".into()),
            class_names: mnist::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            scale,
        },
    })
}
