//! The named datasets keel knows, for the CLI and `keel datasets`: their
//! shapes, classes, files, and one loader returning channels-last images.

use super::cifar::{self, LabelMode};
use super::idx::Split;
use super::{DataSource, DatasetSpec, fashion_mnist, kmnist, mnist};
use crate::error::{Error, Result};

/// A dataset by name.
pub struct Entry {
    /// The name used on the command line and as its folder name.
    pub name: &'static str,
    pub spec: &'static DatasetSpec,
    /// Per-image shape (height, width, channels).
    pub shape: [usize; 3],
    pub classes: usize,
    pub train: usize,
    pub test: usize,
    load: fn(&DataSource) -> Result<(Split, Split)>,
    names: fn(&DataSource) -> Vec<String>,
}

fn fixed(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every named dataset.
pub const CATALOG: [Entry; 5] = [
    Entry {
        name: "mnist",
        spec: &mnist::SPEC,
        shape: [28, 28, 1],
        classes: 10,
        train: 60_000,
        test: 10_000,
        load: mnist::load_data_from,
        names: |_| fixed(&mnist::CLASS_NAMES),
    },
    Entry {
        name: "fashion-mnist",
        spec: &fashion_mnist::SPEC,
        shape: [28, 28, 1],
        classes: 10,
        train: 60_000,
        test: 10_000,
        load: fashion_mnist::load_data_from,
        names: |_| fixed(&fashion_mnist::CLASS_NAMES),
    },
    Entry {
        name: "kmnist",
        spec: &kmnist::SPEC,
        shape: [28, 28, 1],
        classes: 10,
        train: 60_000,
        test: 10_000,
        load: kmnist::load_data_from,
        names: |_| fixed(&kmnist::CLASS_NAMES),
    },
    Entry {
        name: "cifar10",
        spec: &cifar::CIFAR10,
        shape: [32, 32, 3],
        classes: 10,
        train: 50_000,
        test: 10_000,
        load: cifar::load_cifar10_from,
        names: |_| fixed(&cifar::CIFAR10_CLASSES),
    },
    Entry {
        name: "cifar100",
        spec: &cifar::CIFAR100,
        shape: [32, 32, 3],
        classes: 100,
        train: 50_000,
        test: 10_000,
        load: |source| cifar::load_cifar100_from(LabelMode::Fine, source),
        names: |source| {
            cifar::cifar100_class_names(LabelMode::Fine, source)
                .unwrap_or_else(|| (0..100).map(|i| i.to_string()).collect())
        },
    },
];

/// The dataset called `name` ("fashion_mnist" works for "fashion-mnist").
pub fn find(name: &str) -> Result<&'static Entry> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    CATALOG.iter().find(|e| e.name == wanted).ok_or_else(|| {
        let names: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
        Error::InvalidArgument(format!("unknown dataset '{name}'; keel knows: {}", names.join(", ")))
    })
}

impl Entry {
    /// `((x_train, y_train), (x_test, y_test))` with images (N, H, W, C) and labels (N,), as bytes.
    pub fn load(&self, source: &DataSource) -> Result<(Split, Split)> {
        let ((x, y), (xt, yt)) = (self.load)(source)?;
        let shape = |n: usize| -> Vec<isize> {
            let mut s = vec![n as isize];
            s.extend(self.shape.iter().map(|&d| d as isize));
            s
        };
        let (n, nt) = (x.rows(), xt.rows());
        Ok(((x.reshape(&shape(n))?, y), (xt.reshape(&shape(nt))?, yt)))
    }

    /// Class names by label.
    pub fn class_names(&self, source: &DataSource) -> Vec<String> {
        (self.names)(source)
    }
}
