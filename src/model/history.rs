//! What `fit` returns and `evaluate` reports.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Named values: "loss", "accuracy", "val_loss", "val_accuracy", ... Sorted by
/// name, which is also the order Keras prints them in.
pub type Logs = BTreeMap<String, f64>;

/// One epoch of training.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Training loss and metrics (averaged over the epoch), validation ones prefixed "val_".
    #[serde(flatten)]
    pub logs: Logs,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
}

impl EpochLog {
    /// A logged value by name ("loss", "val_accuracy", ...).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.logs.get(name).copied()
    }
}

/// Per-epoch logs of a `fit` call, as Keras' `History`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct History {
    pub epochs: Vec<EpochLog>,
}

impl History {
    /// One value over all epochs, e.g. `history.series("val_loss")`.
    pub fn series(&self, name: &str) -> Vec<f64> {
        self.epochs.iter().filter_map(|e| e.get(name)).collect()
    }

    /// The last epoch's log.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// The epochs as a JSON array: `[{"epoch": 1, "loss": ..., "seconds": ...}, ...]`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("histories always serialise")
    }

    /// The epochs as CSV: a header `epoch,<logged names...>,seconds` and a row
    /// per epoch (epochs counted from 1, as printed; missing values empty).
    pub fn to_csv(&self) -> String {
        let mut names: Vec<&str> = self.epochs.iter().flat_map(|e| e.logs.keys().map(String::as_str)).collect();
        names.sort_unstable();
        names.dedup();
        let mut csv = format!("epoch,{},seconds\n", names.join(","));
        for e in &self.epochs {
            let values: Vec<String> =
                names.iter().map(|n| e.get(n).map(|v| v.to_string()).unwrap_or_default()).collect();
            csv += &format!("{},{},{}\n", e.epoch, values.join(","), e.seconds);
        }
        csv
    }

    /// Writes the History atomically, as CSV when `path` ends in `.csv`, else as JSON.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> crate::Result<()> {
        let path = path.as_ref();
        let text = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            self.to_csv()
        } else {
            self.to_json()
        };
        crate::io::write_atomic(path, text.as_bytes())
    }
}

/// Loss and metrics over a dataset, as returned by `evaluate`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// Metric values by name.
    pub metrics: Logs,
}

impl Evaluation {
    /// The accuracy metric, whichever form ("accuracy", "categorical_accuracy", ...) was compiled.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k.ends_with("accuracy") && !k.contains("top_k")).map(|(_, &v)| v)
    }

    /// Loss and metrics as one log ("loss", "accuracy", ...), with a prefix such as "val_".
    pub fn to_logs(&self, prefix: &str) -> Logs {
        let mut logs: Logs = self.metrics.iter().map(|(k, v)| (format!("{prefix}{k}"), *v)).collect();
        logs.insert(format!("{prefix}loss"), self.loss);
        logs
    }
}
