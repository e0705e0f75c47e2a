//! Decision trees and random forests (scikit-learn's `DecisionTreeClassifier`
//! and `RandomForestClassifier`: Gini impurity, grown until pure, best split
//! per node; the forest: 100 trees, each on a bootstrap sample, sqrt(features)
//! candidate features per node, probabilities averaged).
//!
//! Splits are searched over binned features: each feature's distinct values
//! become bins when there are at most 256 of them (pixels always), which
//! finds exactly the splits a sorted search finds, at the midpoints between
//! consecutive values; a feature with more distinct values is cut at 255
//! quantiles. A node's search is one pass over its samples per feature into
//! a class histogram, then a scan of the bins.

use super::Matrix;
use crate::random::{self, Rng};
use rand::Rng as _;
use rayon::prelude::*;

/// Most bins per feature.
const BINS: usize = 256;
/// Node size (samples x candidate features) above which one tree's split
/// search runs its features in parallel.
const PARALLEL_WORK: usize = 1 << 18;

/// A fitted tree, nodes in creation order (children after their parent).
/// An internal node sends x to `left` when `x[feature] <= threshold`, else to
/// `right`; a leaf (feature -1) holds in `left` the row of `leaves`, its
/// class fractions.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    pub feature: Vec<i32>,
    pub threshold: Vec<f32>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// (leaves, classes) row-major.
    pub leaves: Vec<f32>,
    pub classes: usize,
}

impl Tree {
    /// The class fractions of the leaf `x` falls in.
    pub fn leaf(&self, x: &[f32]) -> &[f32] {
        let mut node = 0;
        while self.feature[node] >= 0 {
            let f = self.feature[node] as usize;
            node = if x[f] <= self.threshold[node] { self.left[node] } else { self.right[node] } as usize;
        }
        let leaf = self.left[node] as usize;
        &self.leaves[leaf * self.classes..(leaf + 1) * self.classes]
    }

    pub fn nodes(&self) -> usize {
        self.feature.len()
    }
}

/// Class fractions averaged over `trees`: (n, classes).
pub fn scores(trees: &[Tree], x: &Matrix) -> Vec<f32> {
    let classes = trees.first().map_or(1, |t| t.classes);
    let mut out = vec![0.0f32; x.rows * classes];
    let share = 1.0 / trees.len().max(1) as f32;
    out.par_chunks_mut(classes).zip(x.data.par_chunks(x.cols)).for_each(|(out, row)| {
        for tree in trees {
            out.iter_mut().zip(tree.leaf(row)).for_each(|(o, p)| *o += p * share);
        }
    });
    out
}

/// How trees grow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeParams {
    /// Deepest level (root 0); None grows until the leaves are pure.
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    /// Candidate features per node, drawn at random (None: all, in order).
    pub max_features: Option<usize>,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams { max_depth: None, min_samples_split: 2, min_samples_leaf: 1, max_features: None }
    }
}

/// Features as bins: (features, samples) bytes, and per feature the
/// threshold between bin b and b + 1.
pub struct Binned {
    bins: Vec<u8>,
    thresholds: Vec<Vec<f32>>,
    samples: usize,
}

impl Binned {
    pub fn new(x: &Matrix) -> Binned {
        let (n, d) = (x.rows, x.cols);
        let columns: Vec<(Vec<u8>, Vec<f32>)> = (0..d)
            .into_par_iter()
            .map(|f| {
                let column: Vec<f32> = (0..n).map(|i| x.data[i * d + f]).collect();
                let mut values = column.clone();
                values.sort_unstable_by(f32::total_cmp);
                values.dedup();
                let cuts: Vec<f32> = if values.len() <= BINS {
                    values.windows(2).map(|w| midpoint(w[0], w[1])).collect()
                } else {
                    let step = values.len() as f64 / BINS as f64;
                    let mut cuts: Vec<f32> = (1..BINS)
                        .map(|b| {
                            let at = (b as f64 * step) as usize;
                            midpoint(values[at - 1], values[at])
                        })
                        .collect();
                    cuts.dedup();
                    cuts
                };
                let bins = column.iter().map(|&v| cuts.partition_point(|&t| t < v) as u8).collect();
                (bins, cuts)
            })
            .collect();
        let mut bins = Vec::with_capacity(n * d);
        let mut thresholds = Vec::with_capacity(d);
        for (b, t) in columns {
            bins.extend_from_slice(&b);
            thresholds.push(t);
        }
        Binned { bins, thresholds, samples: n }
    }

    fn features(&self) -> usize {
        self.thresholds.len()
    }

    fn column(&self, f: usize) -> &[u8] {
        &self.bins[f * self.samples..(f + 1) * self.samples]
    }
}

/// A value between `a` < `b` that `a` is at most and `b` is above (the
/// midpoint, unless rounding makes it `b`).
fn midpoint(a: f32, b: f32) -> f32 {
    let m = ((a as f64 + b as f64) / 2.0) as f32;
    if m >= b { a } else { m }
}

/// One tree on `data`, samples weighted by `weights` (bootstrap counts; 1
/// each for a plain tree). `rng` draws the candidate features when
/// `params.max_features` is set.
pub fn grow(
    data: &Binned,
    y: &[usize],
    classes: usize,
    weights: &[u32],
    params: &TreeParams,
    rng: &mut Rng,
    parallel: bool,
) -> Tree {
    let mut indices: Vec<u32> = (0..data.samples as u32).filter(|&i| weights[i as usize] > 0).collect();
    let mut tree =
        Tree { feature: vec![-1], threshold: vec![0.0], left: vec![0], right: vec![0], leaves: vec![], classes };
    // (node, its members' range in `indices`, depth, features known to be constant in it).
    let mut stack = vec![(0usize, 0usize, indices.len(), 0usize, Vec::<u32>::new())];
    let mut candidates: Vec<usize> = Vec::with_capacity(data.features());
    let mut known = vec![false; data.features()];
    let mut scratch = Scratch::new(classes);
    // The node's members' (class, weight), in member order: read once per feature.
    let mut labels: Vec<(u32, u32)> = Vec::new();
    let mut right: Vec<u32> = Vec::new();
    while let Some((node, lo, hi, depth, mut constants)) = stack.pop() {
        let members = &mut indices[lo..hi];
        let mut counts = vec![0.0f64; classes];
        labels.clear();
        for &i in members.iter() {
            let (class, weight) = (y[i as usize], weights[i as usize]);
            counts[class] += weight as f64;
            labels.push((class as u32, weight));
        }
        let pure = counts.iter().filter(|&&c| c > 0.0).count() <= 1;
        let n = members.len();
        let split = if pure
            || params.max_depth.is_some_and(|m| depth >= m)
            || n < params.min_samples_split
            || n < 2 * params.min_samples_leaf
        {
            None
        } else {
            // A feature constant in a node is constant in its children: never searched again.
            constants.iter().for_each(|&f| known[f as usize] = true);
            candidates.clear();
            candidates.extend((0..data.features()).filter(|&f| !known[f]));
            constants.iter().for_each(|&f| known[f as usize] = false);
            let node = Node { members, labels: &labels, counts: &counts };
            best_split(data, &node, classes, params, rng, &mut candidates, &mut constants, &mut scratch, parallel)
        };
        match split {
            None => {
                let total: f64 = counts.iter().sum();
                tree.left[node] = (tree.leaves.len() / classes) as u32;
                tree.leaves.extend(counts.iter().map(|&c| (c / total) as f32));
            }
            Some((feature, bin)) => {
                // A stable partition: members stay in sample order, so every
                // search reads the columns front to back.
                let column = data.column(feature);
                let mut mid = 0;
                right.clear();
                for k in 0..members.len() {
                    let i = members[k];
                    if column[i as usize] as usize <= bin {
                        members[mid] = i;
                        mid += 1;
                    } else {
                        right.push(i);
                    }
                }
                members[mid..].copy_from_slice(&right);
                let left = tree.feature.len();
                for _ in 0..2 {
                    tree.feature.push(-1);
                    tree.threshold.push(0.0);
                    tree.left.push(0);
                    tree.right.push(0);
                }
                tree.feature[node] = feature as i32;
                tree.threshold[node] = data.thresholds[feature][bin];
                tree.left[node] = left as u32;
                tree.right[node] = left as u32 + 1;
                stack.push((left + 1, lo + mid, hi, depth + 1, constants.clone()));
                stack.push((left, lo, lo + mid, depth + 1, constants));
            }
        }
    }
    tree
}

/// A node's samples: their indices, (class, weight) and weight per class.
struct Node<'a> {
    members: &'a [u32],
    labels: &'a [(u32, u32)],
    counts: &'a [f64],
}

/// What the search over one feature found.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Found {
    /// The feature has one value in the node.
    Constant,
    /// No split leaves enough samples on each side.
    Nothing,
    /// The best split: its score and the last bin on the left.
    Split(f64, usize),
}

/// The split of the node that maximises sum L_c^2 / |L| + sum R_c^2 / |R|
/// (the least weighted Gini impurity of the children), as (feature, last
/// bin on the left), among `candidates` (all of them in order, or drawn at
/// random until `max_features` vary, as scikit-learn draws them); ties go to
/// the feature examined first, then the lower bin. Features found constant
/// are added to `constants`.
#[allow(clippy::too_many_arguments)]
fn best_split(
    data: &Binned,
    node: &Node,
    classes: usize,
    params: &TreeParams,
    rng: &mut Rng,
    candidates: &mut [usize],
    constants: &mut Vec<u32>,
    scratch: &mut Scratch,
    parallel: bool,
) -> Option<(usize, usize)> {
    let search = |scratch: &mut Scratch, &f: &usize| {
        (f, search_feature(scratch, data.column(f), node, classes, params.min_samples_leaf))
    };
    let found: Vec<(usize, Found)> = match params.max_features {
        None if parallel && node.members.len() * candidates.len() > PARALLEL_WORK => {
            candidates.par_iter().map_init(|| Scratch::new(classes), search).collect()
        }
        None => candidates.iter().map(|f| search(scratch, f)).collect(),
        Some(wanted) => {
            let d = candidates.len();
            let mut found = Vec::with_capacity(wanted);
            let mut varying = 0;
            for k in 0..d {
                let pick = rng.random_range(k..d);
                candidates.swap(k, pick);
                let result = search(scratch, &candidates[k]);
                varying += usize::from(result.1 != Found::Constant);
                found.push(result);
                if varying >= wanted {
                    break;
                }
            }
            found
        }
    };
    let mut best: Option<(f64, usize, usize)> = None;
    for (f, result) in found {
        match result {
            Found::Constant => constants.push(f as u32),
            Found::Nothing => {}
            Found::Split(score, bin) => {
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, f, bin));
                }
            }
        }
    }
    best.map(|(_, f, b)| (f, b))
}

/// A class histogram per bin, and the samples per bin, all zero between uses.
struct Scratch {
    hist: Vec<u32>,
    samples: Vec<u32>,
    /// Class weights left of the bin being scanned.
    left: Vec<f64>,
}

impl Scratch {
    fn new(classes: usize) -> Scratch {
        Scratch { hist: vec![0; BINS * classes], samples: vec![0; BINS], left: vec![0.0; classes] }
    }
}

/// The best split of one feature (see [`Found`]), leaving `scratch` zero.
fn search_feature(scratch: &mut Scratch, column: &[u8], node: &Node, classes: usize, min_leaf: usize) -> Found {
    let (members, labels, counts) = (node.members, node.labels, node.counts);
    let Scratch { hist, samples, left } = scratch;
    let (mut lo, mut hi) = (BINS - 1, 0);
    for (&i, &(class, weight)) in members.iter().zip(labels) {
        let b = column[i as usize] as usize;
        hist[b * classes + class as usize] += weight;
        samples[b] += 1;
        lo = lo.min(b);
        hi = hi.max(b);
    }
    // The scan leaves every bin it read zero again, so clearing costs the
    // bins the node fills, not the span between its extremes.
    let clear = |hist: &mut [u32], samples: &mut [u32], b: usize| {
        hist[b * classes..(b + 1) * classes].fill(0);
        samples[b] = 0;
    };
    if lo >= hi {
        clear(hist, samples, lo);
        return Found::Constant;
    }
    let total: f64 = counts.iter().sum();
    left.fill(0.0);
    let (mut left_sq, mut right_sq) = (0.0f64, counts.iter().map(|c| c * c).sum::<f64>());
    let (mut left_w, mut left_n) = (0.0f64, 0usize);
    let mut best: Option<(f64, usize)> = None;
    for b in lo..hi {
        if samples[b] == 0 {
            continue;
        }
        for c in 0..classes {
            let h = hist[b * classes + c] as f64;
            if h > 0.0 {
                let (l, r) = (left[c], counts[c] - left[c]);
                left_sq += (l + h) * (l + h) - l * l;
                right_sq += (r - h) * (r - h) - r * r;
                left[c] += h;
                left_w += h;
            }
        }
        left_n += samples[b] as usize;
        clear(hist, samples, b);
        if left_n < min_leaf || members.len() - left_n < min_leaf {
            continue;
        }
        let score = left_sq / left_w + right_sq / (total - left_w);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, b));
        }
    }
    clear(hist, samples, hi);
    best.map_or(Found::Nothing, |(score, bin)| Found::Split(score, bin))
}

/// A random forest of `trees` trees, tree t drawing its bootstrap sample and
/// features from stream t of `seed`.
pub fn forest(x: &Matrix, y: &[usize], classes: usize, trees: usize, params: &TreeParams, seed: u64) -> Vec<Tree> {
    let data = Binned::new(x);
    let n = x.rows;
    (0..trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = random::stream(seed, t as u64);
            let mut weights = vec![0u32; n];
            for _ in 0..n {
                weights[rng.random_range(0..n)] += 1;
            }
            grow(&data, y, classes, &weights, params, &mut rng, false)
        })
        .collect()
}

/// One decision tree on every sample.
pub fn tree(x: &Matrix, y: &[usize], classes: usize, params: &TreeParams, seed: u64) -> Tree {
    let data = Binned::new(x);
    grow(&data, y, classes, &vec![1; x.rows], params, &mut random::stream(seed, 0), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binned search finds the split a plain search over sorted values
    /// finds: the least weighted Gini impurity, at the midpoint.
    #[test]
    fn root_split_matches_an_exhaustive_search() {
        let (n, d, classes) = (120, 4, 3);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 13) as f32 / 13.0).collect();
        let y: Vec<usize> = (0..n).map(|i| ((i * 31) % 11 + (i % 4)) % classes).collect();
        let x = Matrix { data, rows: n, cols: d };
        let params = TreeParams { max_depth: Some(1), ..Default::default() };
        let fitted = tree(&x, &y, classes, &params, 0);
        let gini = |rows: &[usize]| {
            let mut c = vec![0.0; classes];
            rows.iter().for_each(|&i| c[y[i]] += 1.0);
            let t = rows.len() as f64;
            t * (1.0 - c.iter().map(|v: &f64| (v / t).powi(2)).sum::<f64>())
        };
        let mut best = (f64::INFINITY, 0, 0.0f32);
        for f in 0..d {
            let mut values: Vec<f32> = (0..n).map(|i| x.data[i * d + f]).collect();
            values.sort_by(f32::total_cmp);
            values.dedup();
            for w in values.windows(2) {
                let t = (w[0] + w[1]) / 2.0;
                let (l, r): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| x.data[i * d + f] <= t);
                let impurity = gini(&l) + gini(&r);
                if impurity < best.0 - 1e-9 {
                    best = (impurity, f, t);
                }
            }
        }
        assert_eq!(fitted.feature[0], best.1 as i32);
        assert!((fitted.threshold[0] - best.2).abs() < 1e-6, "{} vs {}", fitted.threshold[0], best.2);
        assert_eq!(fitted.nodes(), 3);
    }

    #[test]
    fn a_grown_tree_fits_its_training_set() {
        let (n, d, classes) = (200, 3, 4);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 104729) % 1000) as f32 / 1000.0).collect();
        let y: Vec<usize> = (0..n).map(|i| (i * 17) % classes).collect();
        let x = Matrix { data, rows: n, cols: d };
        let fitted = tree(&x, &y, classes, &TreeParams::default(), 0);
        let s = scores(std::slice::from_ref(&fitted), &x);
        for (i, row) in s.chunks(classes).enumerate() {
            assert_eq!(row[y[i]], 1.0, "sample {i}");
        }
        // Children come after their parents: prediction always terminates.
        for node in 0..fitted.nodes() {
            if fitted.feature[node] >= 0 {
                assert!(fitted.left[node] as usize > node && fitted.right[node] as usize > node);
            }
        }
    }

    #[test]
    fn forests_are_deterministic_and_learn() {
        let (n, d, classes) = (300, 5, 3);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 211) as f32 / 211.0).collect();
        let x = Matrix { data, rows: n, cols: d };
        // The class is which third of [0, 1) the first two features' mean lies in.
        let y: Vec<usize> =
            (0..n).map(|i| (((x.data[i * d] + x.data[i * d + 1]) / 2.0 * 3.0) as usize).min(2)).collect();
        let params = TreeParams { max_features: Some(2), ..Default::default() };
        let a = forest(&x, &y, classes, 10, &params, 7);
        let b = forest(&x, &y, classes, 10, &params, 7);
        assert_eq!(a, b);
        let c = forest(&x, &y, classes, 10, &params, 8);
        assert_ne!(a, c);
        let s = scores(&a, &x);
        let right = s.chunks(classes).zip(&y).filter(|(r, y)| (0..classes).all(|k| r[k] <= r[**y])).count();
        assert!(right as f64 > 0.95 * n as f64, "{right} of {n}");
    }
}
