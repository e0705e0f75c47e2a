//! How a classifier does, class by class: scikit-learn's
//! `classification_report` (precision, recall, F1 and support per class,
//! accuracy, macro and weighted averages), top-1 and top-5 accuracy, the
//! confusion matrix and the classes most confused with each other.

use super::Model;
use crate::error::Result;
use crate::metrics::confusion_counts;
use crate::tensor::{Samples, Tensor};
use crate::utils::{argmax_row, class_indices};
use serde::Serialize;
use std::fmt;

/// One class's (or an average's) precision, recall, F1 and support.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Two classes the model mixes up: `count` samples of `truth` predicted as `predicted`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Confusion {
    pub truth: String,
    pub predicted: String,
    pub count: usize,
}

/// [`Model::classification_report`]'s answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub classes: Vec<ClassScores>,
    pub accuracy: f64,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
    /// Top-k accuracies, k = 1 and 5 (fewer with fewer classes).
    pub top_k: Vec<(usize, f64)>,
    /// `confusion[true][predicted]` counts, in class order.
    pub confusion: Vec<Vec<usize>>,
    /// The largest off-diagonal counts, most first (at most 10).
    pub most_confused: Vec<Confusion>,
}

impl ClassificationReport {
    /// The report of class probabilities `probs` (N, C) against the true classes.
    pub fn from_probabilities(probs: &Tensor, truth: &[usize], names: &[String]) -> ClassificationReport {
        let classes = names.len();
        let rows: Vec<f32> = probs.to_f32_vec();
        let rows: Vec<&[f32]> = rows.chunks_exact(classes.max(1)).collect();
        let predicted: Vec<usize> = rows.iter().map(|r| argmax_row(r)).collect();
        let confusion = confusion_counts(truth, &predicted, classes);
        let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        let per_class: Vec<ClassScores> = (0..classes)
            .map(|k| {
                let tp = confusion[k][k];
                let support: usize = confusion[k].iter().sum();
                let predicted_k: usize = confusion.iter().map(|row| row[k]).sum();
                let (precision, recall) = (ratio(tp, predicted_k), ratio(tp, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { name: names[k].clone(), precision, recall, f1, support }
            })
            .collect();
        let total: usize = per_class.iter().map(|c| c.support).sum();
        let average = |name: &str, weight: &dyn Fn(&ClassScores) -> f64| {
            let weights: f64 = per_class.iter().map(weight).sum();
            let mean = |value: &dyn Fn(&ClassScores) -> f64| {
                if weights > 0.0 { per_class.iter().map(|c| weight(c) * value(c)).sum::<f64>() / weights } else { 0.0 }
            };
            ClassScores {
                name: name.into(),
                precision: mean(&|c| c.precision),
                recall: mean(&|c| c.recall),
                f1: mean(&|c| c.f1),
                support: total,
            }
        };
        let macro_avg = average("macro avg", &|_| 1.0);
        let weighted_avg = average("weighted avg", &|c| c.support as f64);
        let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
        let top_k = [1, 5]
            .into_iter()
            .filter(|&k| k == 1 || k < classes)
            .map(|k| {
                let hits = rows
                    .iter()
                    .zip(truth)
                    .filter(|(r, t)| **t < classes && r.iter().filter(|&&q| q > r[**t]).count() < k)
                    .count();
                (k, ratio(hits, truth.len()))
            })
            .collect();
        let mut pairs: Vec<Confusion> = (0..classes)
            .flat_map(|t| (0..classes).map(move |p| (t, p)))
            .filter(|&(t, p)| t != p && confusion[t][p] > 0)
            .map(|(t, p)| Confusion { truth: names[t].clone(), predicted: names[p].clone(), count: confusion[t][p] })
            .collect();
        pairs.sort_by_key(|c| std::cmp::Reverse(c.count));
        pairs.truncate(10);
        ClassificationReport {
            classes: per_class,
            accuracy: ratio(correct, total),
            macro_avg,
            weighted_avg,
            top_k,
            confusion,
            most_confused: pairs,
        }
    }

    /// Everything as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("reports serialise")
    }
}

/// scikit-learn's layout (4 digits), then top-k accuracies, the most confused
/// pairs and (up to 20 classes) the confusion matrix.
impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.classes.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).max("weighted avg".len());
        writeln!(f, "{:>width$} {:>10} {:>10} {:>10} {:>10}\n", "", "precision", "recall", "f1-score", "support")?;
        let row = |f: &mut fmt::Formatter<'_>, c: &ClassScores| {
            writeln!(f, "{:>width$} {:>10.4} {:>10.4} {:>10.4} {:>10}", c.name, c.precision, c.recall, c.f1, c.support)
        };
        for c in &self.classes {
            row(f, c)?;
        }
        writeln!(f)?;
        let total = self.weighted_avg.support;
        writeln!(f, "{:>width$} {:>10} {:>10} {:>10.4} {:>10}", "accuracy", "", "", self.accuracy, total)?;
        row(f, &self.macro_avg)?;
        row(f, &self.weighted_avg)?;
        writeln!(f)?;
        for (k, accuracy) in &self.top_k {
            writeln!(f, "top-{k} accuracy: {accuracy:.4}")?;
        }
        if !self.most_confused.is_empty() {
            writeln!(f, "\nmost confused (true -> predicted: samples):")?;
            for c in &self.most_confused {
                writeln!(f, "  {} -> {}: {}", c.truth, c.predicted, c.count)?;
            }
        }
        if self.confusion.len() <= 20 {
            writeln!(f, "\nconfusion matrix (rows: true class, columns: predicted, in class order):")?;
            let cell = self.confusion.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(3);
            for (c, counts) in self.classes.iter().zip(&self.confusion) {
                let cells: Vec<String> = counts.iter().map(|n| format!("{n:>cell$}")).collect();
                writeln!(f, "{:>width$} {}", c.name, cells.join(" "))?;
            }
        }
        Ok(())
    }
}

impl Model {
    /// Per-class precision, recall, F1 and support on `x` against targets `y`
    /// (one-hot rows, class indices, or one binary column), as scikit-learn's
    /// `classification_report`, with top-k accuracy and the confusion matrix.
    /// Class names come from the dataset the model was trained on, if known.
    pub fn classification_report<X: Samples + ?Sized>(&mut self, x: &X, y: &Tensor) -> Result<ClassificationReport> {
        let probs = self.class_probabilities(x)?;
        let names = self.class_names(probs.row_len());
        Ok(ClassificationReport::from_probabilities(&probs, &class_indices(y), &names))
    }
}
