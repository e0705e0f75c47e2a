use super::{Callback, Control, Mode, monitored};
use crate::error::{Error, Result};
use crate::model::{Logs, Model};
use std::path::PathBuf;

/// Saves the model (a whole `.keel` file, resumable) at the end of epochs, as
/// `keras.callbacks.ModelCheckpoint`.
///
/// Arguments: `filepath`, in which `{epoch}` becomes the epoch number (and
/// `{epoch:03}` pads it to 3 digits); builder methods `monitor` (default
/// "val_loss") and `save_best_only` (default false: save every epoch; true:
/// only when `monitor` improves: lower for losses, higher for accuracies).
/// Each save is atomic.
///
/// ```
/// use keel::callbacks::ModelCheckpoint;
/// let checkpoint = ModelCheckpoint::new("checkpoints/epoch-{epoch:03}.keel");
/// let best = ModelCheckpoint::new("best.keel").save_best_only(true);
/// ```
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    filepath: String,
    monitor: String,
    save_best_only: bool,
    best: Option<f64>,
    /// Files written, in order.
    pub saved: Vec<PathBuf>,
}

impl ModelCheckpoint {
    /// Saves to `filepath` (see the type's documentation for `{epoch}`).
    pub fn new(filepath: impl Into<String>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            best: None,
            saved: Vec::new(),
        }
    }

    /// The logged value that decides "best" ("val_loss", "val_accuracy", "loss", ...).
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }

    /// Save only when the monitored value improves on the best so far.
    pub fn save_best_only(mut self, on: bool) -> Self {
        self.save_best_only = on;
        self
    }

    /// The path for `epoch`.
    pub fn path_for(&self, epoch: usize) -> PathBuf {
        let mut path = self.filepath.replace("{epoch}", &epoch.to_string());
        while let Some(start) = path.find("{epoch:0") {
            let Some(len) = path[start..].find('}') else { break };
            let spec = &path[start + 8..start + len];
            let width: usize = spec.trim_end_matches('d').parse().unwrap_or(0);
            path.replace_range(start..start + len + 1, &format!("{epoch:0width$}"));
        }
        PathBuf::from(path)
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, model: &mut Model, epoch: usize, logs: &Logs) -> Result<Control> {
        if self.save_best_only {
            let value = monitored("ModelCheckpoint", &self.monitor, logs)?;
            if !Mode::Auto.improves(&self.monitor, value, self.best, 0.0) {
                return Ok(Control::Continue);
            }
            self.best = Some(value);
        }
        let path = self.path_for(epoch);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        model.save(&path)?;
        self.saved.push(path);
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_placeholders_are_filled() {
        assert_eq!(ModelCheckpoint::new("m-{epoch}.keel").path_for(7), PathBuf::from("m-7.keel"));
        assert_eq!(ModelCheckpoint::new("d/e{epoch:03}.keel").path_for(7), PathBuf::from("d/e007.keel"));
        assert_eq!(ModelCheckpoint::new("e{epoch:02d}.keel").path_for(12), PathBuf::from("e12.keel"));
    }
}
