//! MNIST: 60,000 training and 10,000 test images of handwritten digits,
//! 28x28 grey bytes, labels 0-9. As `keras.datasets.mnist`.

use super::idx::{self, Split};
use super::{DataSource, DatasetSpec, RemoteFile};
use crate::error::Result;
use std::path::Path;

/// The four IDX files on the mirror TensorFlow uses, with their SHA-256.
pub const SPEC: DatasetSpec = DatasetSpec {
    name: "mnist",
    mirror: "https://storage.googleapis.com/cvdf-datasets/mnist",
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            size: 9_912_422,
            content_sha256: Some("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            size: 28_881,
            content_sha256: Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            size: 1_648_877,
            content_sha256: Some("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            size: 4_542,
            content_sha256: Some("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
    ],
};

/// Class names, by label.
pub const CLASS_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// `((train_images, train_labels), (test_images, test_labels))`: images
/// (N, 28, 28) and labels (N,) as bytes, found as [`DataSource::from_env`]
/// says (data dir, cache, download).
///
/// ```no_run
/// use keel::prelude::*;
/// let ((x_train, y_train), (x_test, y_test)) = mnist::load_data()?;
/// assert_eq!(x_train.shape(), &[60000, 28, 28]);
/// # Ok::<(), keel::Error>(())
/// ```
pub fn load_data() -> Result<(Split, Split)> {
    load_data_from(&DataSource::from_env())
}

/// As [`load_data`], from an explicit source.
pub fn load_data_from(source: &DataSource) -> Result<(Split, Split)> {
    idx::load_dataset(&SPEC, CLASS_NAMES.len(), source)
}

/// One split from an images file and a labels file (raw or gzipped IDX).
pub fn read_split(images_path: &Path, labels_path: &Path) -> Result<Split> {
    idx::read_split(images_path, labels_path, CLASS_NAMES.len())
}
