//! MNIST: 60,000 training and 10,000 test images of handwritten digits,
//! 28x28 grey bytes, labels 0-9. As `keras.datasets.mnist`.

use super::{DataSource, DatasetSpec, RemoteFile, idx, read_maybe_gz};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
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
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            size: 28_881,
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            size: 1_648_877,
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            size: 4_542,
        },
    ],
};

/// Class names, by label.
pub const CLASS_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Images (N, 28, 28) as bytes and labels (N,) as bytes.
pub type Split = (Tensor, Tensor);

/// `((train_images, train_labels), (test_images, test_labels))`, found as
/// [`DataSource::from_env`] says (data dir, cache, download).
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
    let paths = source.locate(&SPEC)?;
    let train = read_split(&paths[0], &paths[1])?;
    let test = read_split(&paths[2], &paths[3])?;
    Ok((train, test))
}

/// One split from an images file and a labels file (raw or gzipped IDX).
pub fn read_split(images_path: &Path, labels_path: &Path) -> Result<Split> {
    let (dims, pixels) = idx::parse(&read_maybe_gz(images_path)?, 3, images_path)?;
    let (ldims, labels) = idx::parse(&read_maybe_gz(labels_path)?, 1, labels_path)?;
    if dims[0] != ldims[0] {
        return Err(Error::CorruptFile {
            path: labels_path.to_path_buf(),
            message: format!(
                "holds {} labels but {} holds {} images; the two files must come from the same split",
                ldims[0],
                images_path.display(),
                dims[0]
            ),
        });
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= CLASS_NAMES.len()) {
        return Err(Error::CorruptFile {
            path: labels_path.to_path_buf(),
            message: format!("label {i} is {}, outside the classes 0-9", labels[i]),
        });
    }
    Ok((Tensor::from_u8(&dims, pixels)?, Tensor::from_u8(&ldims, labels)?))
}
