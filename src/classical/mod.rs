//! Classical baselines on the same images as the networks: logistic
//! regression, linear and kernel SVMs, a decision tree, a random forest and
//! k nearest neighbours, with scikit-learn's defaults, on raw pixels or HOG
//! features. A fitted [`Baseline`] predicts class scores as a model does, and
//! saves to (and loads from) a keel file with the same safety checks.
//!
//! Each method is written here over keel's matrix products rather than taken
//! from linfa or smartcore: measured on MNIST on this project's 2-core
//! machines, their decision trees fitted 10,000 images in 14-27 s, their
//! logistic regressions 5,000 in 30-270 s and smartcore's kernel SVM 2,000 in
//! 109 s, 10 to 100 times scikit-learn's times, because they compute with
//! per-element loops over generic matrices (no blocked matrix products, no
//! histogram split search, no threads).
//!
//! ```no_run
//! # use keel::prelude::*;
//! use keel::classical::{Baseline, BaselineOptions, Method};
//! # fn f(x: &Tensor, y: &[usize], x_test: &Tensor) -> keel::Result<()> {
//! let options = BaselineOptions { method: Method::Forest, ..Default::default() };
//! let data = keel::model::DataInfo { dataset: Some("mnist".into()), class_names: vec![], scale: 1.0 / 255.0 };
//! let forest = Baseline::fit(x, y, 10, &options, data)?;
//! let scores = forest.scores(x_test)?; // (n, 10), each row summing to 1
//! forest.save("forest.keel")?;
//! # Ok(()) }
//! ```

pub mod hog;
pub mod knn;
pub mod lbfgs;
pub mod linear;
pub mod svm;
pub mod tree;

use crate::datasets::download::sha256_hex;
use crate::error::{Error, Result};
use crate::io::{BASELINE_KEY, KeelFile, read_keel_file, write_keel_file};
use crate::model::DataInfo;
use crate::tensor::{Samples, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// A row-major (rows, cols) matrix of f32: samples by features.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

/// The classical methods, by their command-line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Multinomial logistic regression (L2, C, L-BFGS, 100 iterations).
    #[default]
    Logistic,
    /// Linear SVM (squared hinge, one-vs-rest, L2, C).
    LinearSvm,
    /// RBF-kernel SVM (C, gamma = "scale", one-vs-one).
    Svm,
    /// One decision tree (Gini, grown until pure).
    Tree,
    /// Random forest (100 trees, bootstrap, sqrt(features) per split).
    Forest,
    /// k nearest neighbours (k = 5, Euclidean, uniform votes).
    Knn,
}

impl Method {
    pub const ALL: [Method; 6] =
        [Method::Logistic, Method::LinearSvm, Method::Svm, Method::Tree, Method::Forest, Method::Knn];

    pub fn name(self) -> &'static str {
        match self {
            Method::Logistic => "logistic",
            Method::LinearSvm => "linear-svm",
            Method::Svm => "svm",
            Method::Tree => "tree",
            Method::Forest => "forest",
            Method::Knn => "knn",
        }
    }

    /// The method called `name`, or an error listing them.
    pub fn parse(name: &str) -> Result<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            Error::InvalidArgument(format!("unknown baseline method '{name}'; choose one of {}", names.join(", ")))
        })
    }

    /// Training samples this method uses by default: all, except the kernel
    /// SVM, whose time grows with the square of the samples (30,000 MNIST
    /// images fit in about 25 s on 2 cores, 40,000 in 85 s).
    pub fn default_limit(self) -> Option<usize> {
        match self {
            Method::Svm => Some(30_000),
            _ => None,
        }
    }
}

/// What the classifier sees of each image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Features {
    /// The scaled pixels, flattened.
    #[default]
    Pixels,
    /// Histograms of oriented gradients ([`hog`]).
    Hog,
}

impl Features {
    pub fn parse(name: &str) -> Result<Features> {
        match name {
            "pixels" => Ok(Features::Pixels),
            "hog" => Ok(Features::Hog),
            _ => Err(Error::InvalidArgument(format!("unknown features '{name}'; choose pixels or hog"))),
        }
    }

    /// Features of one image of `shape` (h, w, c).
    fn len(self, shape: &[usize]) -> Result<usize> {
        match self {
            Features::Pixels => Ok(shape.iter().product()),
            Features::Hog => match *shape {
                [h, w, _] if hog::fits(h, w) => Ok(hog::len()),
                _ => Err(Error::InvalidArgument(format!(
                    "HOG features need images of at least {0}x{0} pixels (height, width, channels); these have shape {shape:?}; use --features pixels",
                    2 * hog::CELLS
                ))),
            },
        }
    }
}

/// A baseline's method and hyper-parameters (scikit-learn's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineOptions {
    pub method: Method,
    pub features: Features,
    /// Inverse regularisation strength of the linear models and SVMs.
    pub c: f64,
    /// Neighbours of k-NN.
    pub neighbors: usize,
    /// Trees of the forest.
    pub trees: usize,
    /// Deepest level of the tree and forest (None: until pure).
    pub max_depth: Option<usize>,
    /// Most iterations of the solvers (None: logistic 100, linear SVM 1000,
    /// kernel SVM unbounded, as scikit-learn's defaults).
    pub max_iter: Option<usize>,
    pub seed: u64,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        BaselineOptions {
            method: Method::Logistic,
            features: Features::Pixels,
            c: 1.0,
            neighbors: 5,
            trees: 100,
            max_depth: None,
            max_iter: None,
            seed: 42,
        }
    }
}

impl BaselineOptions {
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(self.c.is_finite() && self.c > 0.0) {
            return bad(format!("C must be a positive number, got {}", self.c));
        }
        if self.neighbors == 0 {
            return bad("k-NN needs at least 1 neighbour".into());
        }
        if self.trees == 0 || self.trees > MAX_TREES {
            return bad(format!("a forest takes 1 to {MAX_TREES} trees, got {}", self.trees));
        }
        if self.max_depth == Some(0) {
            return bad("max depth must be at least 1".into());
        }
        if self.max_iter == Some(0) {
            return bad("max iterations must be at least 1".into());
        }
        Ok(())
    }
}

/// The metadata key of the description's SHA-256.
const CHECKSUM_KEY: &str = "baseline_sha256";
/// Most trees in a forest.
const MAX_TREES: usize = 10_000;
/// Most classes a baseline file may claim.
const MAX_CLASSES: usize = 100_000;
/// Most bytes of features a baseline fits on (and holds, for k-NN).
const MAX_FEATURES: usize = 4 << 30;
/// Samples scored at once (their features are gathered per block).
const PREDICT_BLOCK: usize = 8192;
/// Samples per block when images are gathered and turned into features.
const GATHER: usize = 1024;
/// Tree node indices are stored as f32 and must be exact.
const MAX_TREE_SAMPLES: usize = 1 << 23;

/// What a fitted baseline holds.
#[derive(Clone, Debug, PartialEq)]
enum Fitted {
    Linear(linear::Linear),
    Svm(svm::Svm),
    Trees(Vec<tree::Tree>),
    Knn(knn::Knn),
}

/// What a baseline file records besides its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Description {
    options: BaselineOptions,
    input_shape: Vec<usize>,
    classes: usize,
    samples: usize,
    data: DataInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gamma: Option<f32>,
}

/// A fitted classical classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    description: Description,
    fitted: Fitted,
}

impl Baseline {
    /// Fits `options.method` on images `x` (N, ...) with class indices `y`
    /// (below `classes`); `data` records where they came from and their
    /// class names, as a model's does.
    pub fn fit(
        x: &dyn Samples,
        y: &[usize],
        classes: usize,
        options: &BaselineOptions,
        data: DataInfo,
    ) -> Result<Baseline> {
        options.check()?;
        if classes < 2 {
            return Err(one_class(classes));
        }
        let n = x.shape()[0];
        if y.len() != n {
            return Err(Error::InvalidArgument(format!("{n} images but {} labels", y.len())));
        }
        if let Some(&bad) = y.iter().find(|&&c| c >= classes) {
            return Err(Error::InvalidArgument(format!("label {bad} is not below the {classes} classes")));
        }
        let mut present = vec![false; classes];
        y.iter().for_each(|&c| present[c] = true);
        if present.iter().filter(|&&p| p).count() < 2 {
            return Err(one_class(present.iter().filter(|&&p| p).count()));
        }
        if matches!(options.method, Method::Tree | Method::Forest) && n > MAX_TREE_SAMPLES {
            return Err(Error::InvalidArgument(format!(
                "trees are fitted on at most {MAX_TREE_SAMPLES} samples, got {n}; give --limit"
            )));
        }
        let input_shape = x.shape()[1..].to_vec();
        let features = featurize(x, 0..n, options.features)?;
        let iterations = |default: usize| options.max_iter.unwrap_or(default);
        let mut gamma = None;
        let fitted = match options.method {
            Method::Logistic => {
                let loss = linear::LinearLoss::Logistic;
                Fitted::Linear(linear::fit(&features, y, classes, loss, options.c, iterations(100), 1e-4).0)
            }
            Method::LinearSvm => {
                let loss = linear::LinearLoss::SquaredHinge;
                Fitted::Linear(linear::fit(&features, y, classes, loss, options.c, iterations(1000), 1e-4).0)
            }
            Method::Svm => {
                let g = svm::scale_gamma(&features);
                gamma = Some(g);
                Fitted::Svm(svm::fit(&features, y, classes, options.c, g, iterations(usize::MAX)))
            }
            Method::Tree | Method::Forest => {
                let mut params = tree::TreeParams { max_depth: options.max_depth, ..Default::default() };
                Fitted::Trees(if options.method == Method::Tree {
                    vec![tree::tree(&features, y, classes, &params, options.seed)]
                } else {
                    params.max_features = Some(((features.cols as f64).sqrt() as usize).max(1));
                    tree::forest(&features, y, classes, options.trees, &params, options.seed)
                })
            }
            Method::Knn => {
                Fitted::Knn(knn::Knn { samples: features, labels: y.to_vec(), classes, k: options.neighbors })
            }
        };
        let description = Description { options: options.clone(), input_shape, classes, samples: n, data, gamma };
        Ok(Baseline { description, fitted })
    }

    /// Class scores of images `x`: (N, classes), each row summing to 1.
    /// Probabilities for logistic regression, the neighbours' and the
    /// leaves' class fractions for k-NN and trees; for the SVMs, which give
    /// no probabilities, a softmax of the decision values (linear) and the
    /// share of one-vs-one votes (kernel): they rank classes, they are not
    /// calibrated.
    pub fn scores(&self, x: &dyn Samples) -> Result<Tensor> {
        let shape = &x.shape()[1..];
        if shape != self.description.input_shape.as_slice() {
            return Err(Error::InvalidArgument(format!(
                "the baseline was fitted on inputs of shape {:?}, these have shape {shape:?}; give images of the same size and colour",
                self.description.input_shape
            )));
        }
        let (n, k) = (x.shape()[0], self.description.classes);
        let mut scores = Vec::with_capacity(n * k);
        for start in (0..n).step_by(PREDICT_BLOCK) {
            let features = featurize(x, start..(start + PREDICT_BLOCK).min(n), self.description.options.features)?;
            scores.extend(match &self.fitted {
                Fitted::Linear(model) => {
                    let mut z = model.decision(&features);
                    z.chunks_exact_mut(k).for_each(crate::kernels::activation::softmax_row);
                    z
                }
                Fitted::Svm(model) => model.scores(&features),
                Fitted::Trees(trees) => tree::scores(trees, &features),
                Fitted::Knn(model) => model.scores(&features),
            });
        }
        Tensor::from_vec(&[n, k], scores)
    }

    pub fn method(&self) -> Method {
        self.description.options.method
    }

    pub fn options(&self) -> &BaselineOptions {
        &self.description.options
    }

    pub fn classes(&self) -> usize {
        self.description.classes
    }

    /// Training samples it was fitted on.
    pub fn samples(&self) -> usize {
        self.description.samples
    }

    /// The shape of one input (height, width, channels).
    pub fn input_shape(&self) -> &[usize] {
        &self.description.input_shape
    }

    pub fn data_info(&self) -> &DataInfo {
        &self.description.data
    }

    /// The class names recorded at fit time, else "0", "1", ...
    pub fn class_names(&self) -> Vec<String> {
        let names = &self.description.data.class_names;
        if names.len() == self.classes() { names.clone() } else { (0..self.classes()).map(|i| i.to_string()).collect() }
    }

    /// One line: the method, its features and what it holds.
    pub fn describe(&self) -> String {
        let o = &self.description.options;
        let what = match &self.fitted {
            Fitted::Linear(m) => format!("{} weights, C = {}", m.weights.len() + m.bias.len(), o.c),
            Fitted::Svm(m) => format!("{} support vectors, C = {}, gamma = {:.5}", m.support.rows, o.c, m.gamma),
            Fitted::Trees(trees) => {
                let nodes: usize = trees.iter().map(|t| t.nodes()).sum();
                format!("{} tree{}, {nodes} nodes", trees.len(), if trees.len() == 1 { "" } else { "s" })
            }
            Fitted::Knn(m) => format!("k = {}, {} stored samples", m.k, m.samples.rows),
        };
        let features = match o.features {
            Features::Pixels => "pixels",
            Features::Hog => "HOG features",
        };
        format!("{} on {features}, {} training samples: {what}", o.method.name(), self.samples())
    }

    /// Saves the baseline to a keel file, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let owned: Vec<(String, Vec<usize>, Vec<f32>)> = match &self.fitted {
            Fitted::Linear(m) => vec![
                ("weights".into(), vec![m.features, m.classes], m.weights.clone()),
                ("bias".into(), vec![m.classes], m.bias.clone()),
            ],
            Fitted::Svm(m) => vec![
                ("support".into(), vec![m.support.rows, m.support.cols], m.support.data.clone()),
                ("support_class".into(), vec![m.support.rows], m.support_class.iter().map(|&c| c as f32).collect()),
                ("coef".into(), vec![m.rho.len(), m.support.rows], m.coef.clone()),
                ("rho".into(), vec![m.rho.len()], m.rho.clone()),
            ],
            Fitted::Trees(trees) => trees
                .iter()
                .enumerate()
                .flat_map(|(t, tree)| {
                    let nodes: Vec<f32> = (0..tree.nodes())
                        .flat_map(|i| {
                            [tree.feature[i] as f32, tree.threshold[i], tree.left[i] as f32, tree.right[i] as f32]
                        })
                        .collect();
                    let leaves = tree.leaves.len() / tree.classes;
                    [
                        (format!("trees/{t:05}/nodes"), vec![tree.nodes(), 4], nodes),
                        (format!("trees/{t:05}/leaves"), vec![leaves, tree.classes], tree.leaves.clone()),
                    ]
                })
                .collect(),
            Fitted::Knn(m) => vec![
                ("samples".into(), vec![m.samples.rows, m.samples.cols], m.samples.data.clone()),
                ("labels".into(), vec![m.labels.len()], m.labels.iter().map(|&c| c as f32).collect()),
            ],
        };
        let tensors = owned.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect();
        let mut metadata = HashMap::new();
        let description = serde_json::to_string(&self.description).expect("descriptions serialise");
        metadata.insert(CHECKSUM_KEY.into(), sha256_hex(description.as_bytes()));
        metadata.insert(BASELINE_KEY.into(), description);
        write_keel_file(path.as_ref(), tensors, metadata)
    }

    /// Loads a baseline written by [`Baseline::save`], checking that every
    /// tensor has the shape the description implies and every index and
    /// value is in range before anything is used.
    pub fn load(path: impl AsRef<Path>) -> Result<Baseline> {
        let path = path.as_ref();
        let file = read_keel_file(path)?;
        let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
        let Some(text) = file.metadata.get(BASELINE_KEY) else {
            return Err(corrupt(
                "it holds a network, not a classical baseline; use it with keel evaluate / predict as a model".into(),
            ));
        };
        if file.metadata.get(CHECKSUM_KEY).map(String::as_str) != Some(sha256_hex(text.as_bytes()).as_str()) {
            return Err(corrupt(
                "its description does not match its checksum: the file was edited (or damaged) after it was saved; use an intact copy".into(),
            ));
        }
        let description: Description =
            serde_json::from_str(text).map_err(|e| corrupt(format!("its baseline description is not valid: {e}")))?;
        description.options.check().map_err(|e| corrupt(format!("its options are not valid: {e}")))?;
        let fitted = read_fitted(&description, file).map_err(corrupt)?;
        Ok(Baseline { description, fitted })
    }

    /// Whether the keel file at `path` holds a baseline (false for a model;
    /// an error when it is no keel file).
    pub fn is_baseline_file(path: impl AsRef<Path>) -> Result<bool> {
        Ok(crate::io::read_keel_header(path.as_ref())?.contains_key(BASELINE_KEY))
    }
}

fn one_class(found: usize) -> Error {
    Error::InvalidArgument(format!(
        "the training samples hold {found} class{}; a classifier needs at least two (give a dataset with two or more class folders)",
        if found == 1 { "" } else { "es" }
    ))
}

/// The features of samples `range`, gathered block by block.
fn featurize(x: &dyn Samples, range: std::ops::Range<usize>, features: Features) -> Result<Matrix> {
    let (n, shape) = (range.len(), &x.shape()[1..]);
    let (raw, cols) = (shape.iter().product::<usize>(), features.len(shape)?);
    let bytes = (n * cols).saturating_mul(4);
    if bytes > MAX_FEATURES {
        return Err(Error::InvalidArgument(format!(
            "the features of {n} samples of shape {shape:?} take {:.1} GiB, more than the {} GiB a baseline holds; give --limit, a smaller --image-size or --features hog",
            bytes as f64 / (1u64 << 30) as f64,
            MAX_FEATURES >> 30
        )));
    }
    let mut data = vec![0.0f32; n * cols];
    let mut block = vec![0.0f32; GATHER.min(n) * raw];
    for start in (0..n).step_by(GATHER) {
        let rows: Vec<usize> = (range.start + start..range.start + (start + GATHER).min(n)).collect();
        let block = &mut block[..rows.len() * raw];
        x.gather(&rows, block)?;
        if let Some(bad) = block.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("the images hold {bad}; every pixel must be a finite number")));
        }
        let out = &mut data[start * cols..(start + rows.len()) * cols];
        match features {
            Features::Pixels => out.copy_from_slice(block),
            Features::Hog => {
                use rayon::prelude::*;
                let (h, w, c) = (shape[0], shape[1], shape[2]);
                out.par_chunks_mut(cols).zip(block.par_chunks(raw)).for_each(|(o, image)| hog::hog(image, h, w, c, o));
            }
        }
    }
    Ok(Matrix { data, rows: n, cols })
}

/// The fitted state from a file's tensors, every shape and index checked.
fn read_fitted(d: &Description, file: KeelFile) -> std::result::Result<Fitted, String> {
    let k = d.classes;
    if !(2..=MAX_CLASSES).contains(&k) {
        return Err(format!("it claims {k} classes; a baseline has 2 to {MAX_CLASSES}"));
    }
    if d.input_shape.is_empty() || d.input_shape.contains(&0) {
        return Err(format!("its input shape {:?} is not an image shape", d.input_shape));
    }
    let features = d.options.features.len(&d.input_shape).map_err(|e| e.to_string())?;
    let mut tensors: Tensors = file.tensors.into_iter().map(|(name, shape, values)| (name, (shape, values))).collect();
    for (name, (_, values)) in &tensors {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(format!("tensor '{name}' holds {v} at index {i}"));
        }
    }
    let index = |name: &str, v: f32, below: usize| -> std::result::Result<usize, String> {
        if v >= 0.0 && v.fract() == 0.0 && (v as usize) < below {
            Ok(v as usize)
        } else {
            Err(format!("tensor '{name}' holds {v} where an index below {below} belongs"))
        }
    };
    let fitted = match d.options.method {
        Method::Logistic | Method::LinearSvm => Fitted::Linear(linear::Linear {
            weights: take(&mut tensors, "weights", &[features, k])?,
            bias: take(&mut tensors, "bias", &[k])?,
            features,
            classes: k,
        }),
        Method::Knn => {
            let n = d.samples;
            let samples = take(&mut tensors, "samples", &[n, features])?;
            let labels = take(&mut tensors, "labels", &[n])?
                .iter()
                .map(|&v| index("labels", v, k))
                .collect::<std::result::Result<_, _>>()?;
            if n == 0 {
                return Err("it stores no samples".into());
            }
            Fitted::Knn(knn::Knn {
                samples: Matrix { data: samples, rows: n, cols: features },
                labels,
                classes: k,
                k: d.options.neighbors,
            })
        }
        Method::Svm => {
            let sv = rows_of(&tensors, "support");
            let pairs = k * (k - 1) / 2;
            let support = take(&mut tensors, "support", &[sv, features])?;
            let support_class = take(&mut tensors, "support_class", &[sv])?
                .iter()
                .map(|&v| index("support_class", v, k))
                .collect::<std::result::Result<_, _>>()?;
            let gamma = d.gamma.filter(|g| g.is_finite() && *g > 0.0).ok_or("its gamma is missing or not positive")?;
            Fitted::Svm(svm::Svm {
                support: Matrix { data: support, rows: sv, cols: features },
                support_class,
                coef: take(&mut tensors, "coef", &[pairs, sv])?,
                rho: take(&mut tensors, "rho", &[pairs])?,
                gamma,
                classes: k,
            })
        }
        Method::Tree | Method::Forest => {
            let count = if d.options.method == Method::Tree { 1 } else { d.options.trees };
            let mut trees = Vec::with_capacity(count);
            for t in 0..count {
                let name = format!("trees/{t:05}/nodes");
                let nodes = rows_of(&tensors, &name);
                let leaves_name = format!("trees/{t:05}/leaves");
                let leaves = rows_of(&tensors, &leaves_name);
                let raw = take(&mut tensors, &name, &[nodes, 4])?;
                let values = take(&mut tensors, &leaves_name, &[leaves, k])?;
                if nodes == 0 || values.iter().any(|v| !(0.0..=1.0).contains(v)) {
                    return Err(format!("tree {t} is empty or its leaves hold values outside [0, 1]"));
                }
                let mut tree = tree::Tree {
                    feature: vec![],
                    threshold: vec![],
                    left: vec![],
                    right: vec![],
                    leaves: values,
                    classes: k,
                };
                for (i, node) in raw.chunks_exact(4).enumerate() {
                    let (feature, left, right) = if node[0] == -1.0 {
                        (-1, index(&name, node[2], leaves)?, 0)
                    } else {
                        let f = index(&name, node[0], features)?;
                        let (l, r) = (index(&name, node[2], nodes)?, index(&name, node[3], nodes)?);
                        // Children after their parent: every path ends at a leaf.
                        if l <= i || r <= i {
                            return Err(format!("tree {t}'s node {i} points back to node {}", l.min(r)));
                        }
                        (f as i32, l, r)
                    };
                    tree.feature.push(feature);
                    tree.threshold.push(node[1]);
                    tree.left.push(left as u32);
                    tree.right.push(right as u32);
                }
                trees.push(tree);
            }
            Fitted::Trees(trees)
        }
    };
    if let Some(name) = tensors.keys().min() {
        return Err(format!("tensor '{name}' belongs to no part of a {} baseline", d.options.method.name()));
    }
    Ok(fitted)
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Removes tensor `name`, which must have `shape`.
fn take(tensors: &mut Tensors, name: &str, shape: &[usize]) -> std::result::Result<Vec<f32>, String> {
    let (found, values) = tensors.remove(name).ok_or_else(|| format!("it has no tensor '{name}'"))?;
    if found != shape {
        return Err(format!("tensor '{name}' has shape {found:?}, the description implies {shape:?}"));
    }
    Ok(values)
}

/// The first dimension of tensor `name` (0 when absent).
fn rows_of(tensors: &Tensors, name: &str) -> usize {
    tensors.get(name).and_then(|(s, _)| s.first().copied()).unwrap_or(0)
}
