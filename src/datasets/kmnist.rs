//! Kuzushiji-MNIST: 60,000 training and 10,000 test images of cursive
//! Japanese characters, 28x28 grey bytes, 10 classes (one hiragana each).

use super::idx::{self, Split};
use super::{DataSource, DatasetSpec, RemoteFile};
use crate::error::Result;

/// The four IDX files as ROIS-DS CODH publishes them, with their SHA-256.
pub const SPEC: DatasetSpec = DatasetSpec {
    name: "kmnist",
    mirror: "https://codh.rois.ac.jp/kmnist/dataset/kmnist",
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            size: 18_165_135,
            content_sha256: None,
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            size: 29_497,
            content_sha256: None,
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            size: 3_041_136,
            content_sha256: None,
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            size: 5_120,
            content_sha256: None,
        },
    ],
};

/// Class names, by label: the hiragana o, ki, su, tsu, na, ha, ma, ya, re, wo.
pub const CLASS_NAMES: [&str; 10] = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"];

/// `((train_images, train_labels), (test_images, test_labels))`: images (N, 28, 28)
/// and labels (N,) as bytes, found as [`DataSource::from_env`] says.
pub fn load_data() -> Result<(Split, Split)> {
    load_data_from(&DataSource::from_env())
}

/// As [`load_data`], from an explicit source.
pub fn load_data_from(source: &DataSource) -> Result<(Split, Split)> {
    idx::load_dataset(&SPEC, CLASS_NAMES.len(), source)
}
