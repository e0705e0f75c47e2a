//! Fashion-MNIST: 60,000 training and 10,000 test images of clothing, 28x28
//! grey bytes, 10 classes; a drop-in for MNIST. As `keras.datasets.fashion_mnist`.

use super::idx::{self, Split};
use super::{DataSource, DatasetSpec, RemoteFile};
use crate::error::Result;

/// The four IDX files as Zalando publishes them, with their SHA-256.
pub const SPEC: DatasetSpec = DatasetSpec {
    name: "fashion-mnist",
    mirror: "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            size: 26_421_880,
            content_sha256: None,
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            size: 29_515,
            content_sha256: None,
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            size: 4_422_102,
            content_sha256: None,
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
            size: 5_148,
            content_sha256: None,
        },
    ],
};

/// Class names, by label.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// `((train_images, train_labels), (test_images, test_labels))`: images (N, 28, 28)
/// and labels (N,) as bytes, found as [`DataSource::from_env`] says.
pub fn load_data() -> Result<(Split, Split)> {
    load_data_from(&DataSource::from_env())
}

/// As [`load_data`], from an explicit source.
pub fn load_data_from(source: &DataSource) -> Result<(Split, Split)> {
    idx::load_dataset(&SPEC, CLASS_NAMES.len(), source)
}
