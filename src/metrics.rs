//! Metrics, as Keras' `metrics=` argument.
//!
//! Each metric keeps a state of sums over the samples seen (a count of
//! correct samples, true and false positives, histograms of scores): the
//! model adds each batch's sums, sums them over ranks under MPI, and turns
//! them into values at the end (accuracies divide by the samples seen;
//! precision, recall, F1 and AUC are ratios of the counts, as Keras computes
//! them over the whole epoch rather than per batch).

use crate::error::Error;
use crate::losses::Loss;
use crate::utils::argmax_row;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// How F1Score averages over classes, as Keras' `average`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F1Average {
    /// One value per class (Keras' default, `average=None`): logged as `f1_score/<class>`.
    #[default]
    None,
    /// The mean of the classes' F1.
    Macro,
    /// The classes' F1 weighted by their support.
    Weighted,
    /// F1 of the counts summed over classes.
    Micro,
}

/// A quality measure reported during `fit` and by `evaluate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Keras' "accuracy": resolved from the shapes to one of the three below.
    Accuracy,
    /// argmax(prediction) == argmax(target).
    CategoricalAccuracy,
    /// argmax(prediction) == integer target.
    SparseCategoricalAccuracy,
    /// (prediction > 0.5) == target, averaged over the last axis.
    BinaryAccuracy,
    /// The target class among the k highest predictions (one-hot targets; Keras' default k = 5).
    TopKCategoricalAccuracy(usize),
    /// The same with integer targets.
    SparseTopKCategoricalAccuracy(usize),
    /// TP / (TP + FP) over every output value thresholded at 0.5, as Keras' `Precision()`.
    Precision,
    /// TP / (TP + FN), the same way, as Keras' `Recall()`.
    Recall,
    /// F1 of the predicted class (the highest output; > 0.5 for one output) per class, averaged as asked.
    F1Score(F1Average),
    /// Area under the ROC curve from 200 thresholds (trapezoids), as Keras' `AUC()`:
    /// over every output value pooled (`multi_label` false, Keras' default), or the
    /// mean of each class's one-vs-rest AUC (`multi_label` true).
    Auc { multi_label: bool },
}

/// Keras' `num_thresholds` for AUC.
const THRESHOLDS: usize = 200;

impl Metric {
    /// The name shown in logs and history, as the user asked for it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
            Metric::TopKCategoricalAccuracy(_) => "top_k_categorical_accuracy",
            Metric::SparseTopKCategoricalAccuracy(_) => "sparse_top_k_categorical_accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1Score(_) => "f1_score",
            Metric::Auc { .. } => "auc",
        }
    }

    /// Keras' class name.
    fn class_name(self) -> &'static str {
        match self {
            Metric::Accuracy => "Accuracy",
            Metric::CategoricalAccuracy => "CategoricalAccuracy",
            Metric::SparseCategoricalAccuracy => "SparseCategoricalAccuracy",
            Metric::BinaryAccuracy => "BinaryAccuracy",
            Metric::TopKCategoricalAccuracy(_) => "TopKCategoricalAccuracy",
            Metric::SparseTopKCategoricalAccuracy(_) => "SparseTopKCategoricalAccuracy",
            Metric::Precision => "Precision",
            Metric::Recall => "Recall",
            Metric::F1Score(_) => "F1Score",
            Metric::Auc { .. } => "AUC",
        }
    }

    /// What "accuracy" means for this output and target, as Keras decides it:
    /// binary for one output, sparse for integer targets, else categorical.
    pub fn resolve(self, loss: Loss, width: usize) -> Metric {
        if self != Metric::Accuracy {
            return self;
        }
        if width == 1 {
            Metric::BinaryAccuracy
        } else if loss.target_width(width) == 1 {
            Metric::SparseCategoricalAccuracy
        } else {
            Metric::CategoricalAccuracy
        }
    }

    /// Checks the arguments.
    pub fn check(self) -> Result<(), Error> {
        match self {
            Metric::TopKCategoricalAccuracy(0) | Metric::SparseTopKCategoricalAccuracy(0) => {
                Err(Error::InvalidArgument(format!("{}: k must be at least 1", self.class_name())))
            }
            _ => Ok(()),
        }
    }

    /// The values this metric logs: one, or one per class (F1Score without averaging).
    pub fn names(self, width: usize) -> Vec<String> {
        match self {
            Metric::F1Score(F1Average::None) => (0..classes(width)).map(|k| format!("f1_score/{k}")).collect(),
            _ => vec![self.name().to_string()],
        }
    }

    /// Sums this metric keeps for an output of `width` values.
    pub fn state_len(self, width: usize) -> usize {
        match self {
            Metric::Precision | Metric::Recall => 2,
            Metric::F1Score(_) => 3 * classes(width),
            Metric::Auc { .. } => 2 * (THRESHOLDS + 1) * width,
            _ => 1,
        }
    }

    /// Adds the sums of probabilities `out` (rows, width) against `target`
    /// (rows, width; or rows of one class index when `sparse`) to `state`.
    pub fn update(self, out: &[f32], target: &[f32], width: usize, sparse: bool, state: &mut [f64]) {
        let rows = out.chunks_exact(width);
        // Target row i, value k, whether given one-hot or as a class index.
        let truth = |i: usize, k: usize| -> f32 {
            if sparse { (target[i] as usize == k) as u8 as f32 } else { target[i * width + k] }
        };
        let true_class = |i: usize| if sparse { target[i] as usize } else { argmax_row(&target[i * width..][..width]) };
        match self {
            Metric::Accuracy | Metric::CategoricalAccuracy | Metric::SparseCategoricalAccuracy => {
                state[0] += rows.enumerate().filter(|(i, o)| argmax_row(o) == true_class(*i)).count() as f64;
            }
            Metric::BinaryAccuracy => {
                state[0] += rows
                    .enumerate()
                    .map(|(i, o)| {
                        o.iter().enumerate().filter(|(k, p)| (**p > 0.5) == (truth(i, *k) > 0.5)).count() as f64
                            / width as f64
                    })
                    .sum::<f64>();
            }
            Metric::TopKCategoricalAccuracy(k) | Metric::SparseTopKCategoricalAccuracy(k) => {
                state[0] += rows
                    .enumerate()
                    .filter(|(i, o)| {
                        let p = o[true_class(*i).min(width - 1)];
                        o.iter().filter(|&&q| q > p).count() < k
                    })
                    .count() as f64;
            }
            Metric::Precision | Metric::Recall => {
                for (i, o) in rows.enumerate() {
                    for (k, &p) in o.iter().enumerate() {
                        let (predicted, actual) = (p > 0.5, truth(i, k) > 0.5);
                        if predicted && actual {
                            state[0] += 1.0;
                        } else if self == Metric::Precision && predicted || self == Metric::Recall && actual {
                            state[1] += 1.0;
                        }
                    }
                }
            }
            Metric::F1Score(_) => {
                // Per class: [true positives, false positives, false negatives].
                for (i, o) in rows.enumerate() {
                    let (predicted, actual) = if width == 1 {
                        ((o[0] > 0.5) as usize, (truth(i, 0) > 0.5) as usize)
                    } else {
                        (argmax_row(o), true_class(i))
                    };
                    if predicted == actual {
                        state[3 * actual] += 1.0;
                    } else {
                        state[3 * predicted + 1] += 1.0;
                        state[3 * actual + 2] += 1.0;
                    }
                }
            }
            Metric::Auc { .. } => {
                // Per class: how many positives, then negatives, score in each of
                // the buckets between consecutive thresholds.
                let buckets = THRESHOLDS + 1;
                for (i, o) in rows.enumerate() {
                    for (k, &p) in o.iter().enumerate() {
                        let positive = truth(i, k) > 0.5;
                        let at = 2 * buckets * k + if positive { 0 } else { buckets };
                        state[at + bucket(p)] += 1.0;
                    }
                }
            }
        }
    }

    /// The logged values from the summed `state` over `samples` samples.
    pub fn results(self, state: &[f64], samples: f64, width: usize) -> Vec<f64> {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        match self {
            Metric::Precision | Metric::Recall => vec![ratio(state[0], state[0] + state[1])],
            Metric::F1Score(average) => {
                let f1 = |tp: f64, fp: f64, fn_: f64| ratio(2.0 * tp, 2.0 * tp + fp + fn_);
                let per_class: Vec<(f64, f64)> =
                    state.chunks_exact(3).map(|c| (f1(c[0], c[1], c[2]), c[0] + c[2])).collect();
                match average {
                    F1Average::None => per_class.iter().map(|(f, _)| *f).collect(),
                    F1Average::Macro => vec![per_class.iter().map(|(f, _)| f).sum::<f64>() / per_class.len() as f64],
                    F1Average::Weighted => {
                        let support: f64 = per_class.iter().map(|(_, s)| s).sum();
                        vec![ratio(per_class.iter().map(|(f, s)| f * s).sum(), support)]
                    }
                    F1Average::Micro => {
                        let sum = |j: usize| state.chunks_exact(3).map(|c| c[j]).sum::<f64>();
                        vec![f1(sum(0), sum(1), sum(2))]
                    }
                }
            }
            Metric::Auc { multi_label } => {
                let per_class: Vec<&[f64]> = state.chunks_exact(2 * (THRESHOLDS + 1)).collect();
                if multi_label {
                    vec![per_class.iter().map(|h| roc_auc(h)).sum::<f64>() / width.max(1) as f64]
                } else {
                    let mut pooled = vec![0.0; 2 * (THRESHOLDS + 1)];
                    for h in per_class {
                        pooled.iter_mut().zip(h).for_each(|(p, v)| *p += v);
                    }
                    vec![roc_auc(&pooled)]
                }
            }
            _ => vec![state[0] / samples.max(1.0)],
        }
    }
}

/// `matrix[true][predicted]` counts of `classes` classes.
pub fn confusion_counts(truth: &[usize], predicted: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut matrix = vec![vec![0; classes]; classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t < classes && p < classes {
            matrix[t][p] += 1;
        }
    }
    matrix
}

/// Classes of an output of `width` values: two for one binary output.
fn classes(width: usize) -> usize {
    if width == 1 { 2 } else { width }
}

/// How many of Keras' thresholds [-1e-7, 1/(T-1), 2/(T-1), ..., (T-2)/(T-1),
/// 1 + 1e-7] a score exceeds (a score counts as positive at threshold t when
/// p > t): its bucket, 0..=T.
fn bucket(p: f32) -> usize {
    let (p, t) = (p as f64, THRESHOLDS as f64 - 1.0);
    if p.is_nan() || p <= -1e-7 {
        0
    } else if p > 1.0 + 1e-7 {
        THRESHOLDS
    } else {
        1 + ((p * t).ceil().max(1.0) as usize - 1).min(THRESHOLDS - 2)
    }
}

/// The ROC AUC of one histogram (positives' buckets, then negatives'), as
/// Keras' interpolation: trapezoids between consecutive thresholds.
fn roc_auc(histogram: &[f64]) -> f64 {
    let buckets = THRESHOLDS + 1;
    let (pos, neg) = histogram.split_at(buckets);
    let (p_total, n_total): (f64, f64) = (pos.iter().sum(), neg.iter().sum());
    // At threshold j (0-based), the positives predicted positive score in buckets > j.
    let rate = |h: &[f64], total: f64, j: usize| if total > 0.0 { h[j + 1..].iter().sum::<f64>() / total } else { 0.0 };
    let points: Vec<(f64, f64)> = (0..THRESHOLDS).map(|j| (rate(neg, n_total, j), rate(pos, p_total, j))).collect();
    points.windows(2).map(|w| (w[0].0 - w[1].0) * (w[0].1 + w[1].1) / 2.0).sum()
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "accuracy" | "acc" | "Accuracy" => Metric::Accuracy,
            "categorical_accuracy" | "CategoricalAccuracy" => Metric::CategoricalAccuracy,
            "sparse_categorical_accuracy" | "SparseCategoricalAccuracy" => Metric::SparseCategoricalAccuracy,
            "binary_accuracy" | "BinaryAccuracy" => Metric::BinaryAccuracy,
            "top_k_categorical_accuracy" | "TopKCategoricalAccuracy" => Metric::TopKCategoricalAccuracy(5),
            "sparse_top_k_categorical_accuracy" | "SparseTopKCategoricalAccuracy" => {
                Metric::SparseTopKCategoricalAccuracy(5)
            }
            "precision" | "Precision" => Metric::Precision,
            "recall" | "Recall" => Metric::Recall,
            "f1_score" | "F1Score" => Metric::F1Score(F1Average::None),
            "auc" | "AUC" => Metric::Auc { multi_label: false },
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown metric '{s}'; expected one of accuracy, categorical_accuracy, sparse_categorical_accuracy, \
                     binary_accuracy, top_k_categorical_accuracy, sparse_top_k_categorical_accuracy, precision, recall, \
                     f1_score, auc"
                )));
            }
        })
    }
}

/// The table form in model files: `{ class_name = "F1Score", average = "macro" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricTable {
    class_name: String,
    k: Option<usize>,
    average: Option<F1Average>,
    multi_label: Option<bool>,
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let default: Metric = self.name().parse().expect("every name parses");
        if *self == default {
            return serializer.serialize_str(self.name());
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("class_name", self.class_name())?;
        match *self {
            Metric::TopKCategoricalAccuracy(k) | Metric::SparseTopKCategoricalAccuracy(k) => {
                map.serialize_entry("k", &k)?
            }
            Metric::F1Score(average) => map.serialize_entry("average", &average)?,
            Metric::Auc { multi_label } => map.serialize_entry("multi_label", &multi_label)?,
            _ => {}
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetricVisitor;
        impl<'de> Visitor<'de> for MetricVisitor {
            type Value = Metric;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a metric name or a table such as { class_name = \"F1Score\", average = \"macro\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Metric, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Metric, A::Error> {
                let t = MetricTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let metric = match t.class_name.parse().map_err(de::Error::custom)? {
                    Metric::TopKCategoricalAccuracy(k) => Metric::TopKCategoricalAccuracy(t.k.unwrap_or(k)),
                    Metric::SparseTopKCategoricalAccuracy(k) => Metric::SparseTopKCategoricalAccuracy(t.k.unwrap_or(k)),
                    Metric::F1Score(a) => Metric::F1Score(t.average.unwrap_or(a)),
                    Metric::Auc { multi_label } => Metric::Auc { multi_label: t.multi_label.unwrap_or(multi_label) },
                    other => other,
                };
                let takes = |arg: bool, name: &str| {
                    if arg
                        && !matches!(
                            (name, metric),
                            ("k", Metric::TopKCategoricalAccuracy(_) | Metric::SparseTopKCategoricalAccuracy(_))
                                | ("average", Metric::F1Score(_))
                                | ("multi_label", Metric::Auc { .. })
                        )
                    {
                        Err(de::Error::custom(format!("{} has no argument '{name}'", metric.class_name())))
                    } else {
                        Ok(())
                    }
                };
                takes(t.k.is_some(), "k")?;
                takes(t.average.is_some(), "average")?;
                takes(t.multi_label.is_some(), "multi_label")?;
                metric.check().map_err(de::Error::custom)?;
                Ok(metric)
            }
        }
        deserializer.deserialize_any(MetricVisitor)
    }
}
