use super::{Callback, Control, Mode, monitored};
use crate::error::Result;
use crate::model::{History, Logs, Model};

/// Stops training when a monitored value has stopped improving, as
/// `keras.callbacks.EarlyStopping` (Keras 3 semantics).
///
/// Arguments (builder methods, Keras' defaults): `monitor` ("val_loss"),
/// `min_delta` (0: an improvement must beat the best by more than this),
/// `patience` (0: epochs without improvement before stopping), `mode` (auto:
/// higher is better for accuracies, lower otherwise), `restore_best_weights`
/// (false: when true, training ends with the weights of the best epoch).
///
/// ```
/// use keel::callbacks::EarlyStopping;
/// let stop = EarlyStopping::new().monitor("val_accuracy").patience(3).restore_best_weights(true);
/// ```
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    monitor: String,
    min_delta: f64,
    patience: usize,
    mode: Mode,
    restore_best_weights: bool,
    wait: usize,
    best: Option<f64>,
    best_weights: Option<Vec<f32>>,
    /// The epoch with the best value so far, and the epoch training stopped at (if it did).
    pub best_epoch: Option<usize>,
    pub stopped_epoch: Option<usize>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self::new()
    }
}

impl EarlyStopping {
    /// Monitors "val_loss" with patience 0, as Keras' defaults.
    pub fn new() -> Self {
        EarlyStopping {
            monitor: "val_loss".into(),
            min_delta: 0.0,
            patience: 0,
            mode: Mode::Auto,
            restore_best_weights: false,
            wait: 0,
            best: None,
            best_weights: None,
            best_epoch: None,
            stopped_epoch: None,
        }
    }

    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }

    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta.abs();
        self
    }

    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn restore_best_weights(mut self, on: bool) -> Self {
        self.restore_best_weights = on;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        (self.wait, self.best, self.best_weights, self.best_epoch, self.stopped_epoch) = (0, None, None, None, None);
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Model, epoch: usize, logs: &Logs) -> Result<Control> {
        let current = monitored("EarlyStopping", &self.monitor, logs)?;
        self.wait += 1;
        if self.mode.improves(&self.monitor, current, self.best, self.min_delta) {
            self.best = Some(current);
            self.best_epoch = Some(epoch);
            if self.restore_best_weights {
                self.best_weights = Some(model.params()?.to_vec());
            }
            self.wait = 0;
            return Ok(Control::Continue);
        }
        if self.wait >= self.patience {
            self.stopped_epoch = Some(epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, model: &mut Model, _history: &History) -> Result<()> {
        if let Some(best) = self.best_weights.take() {
            model.params_mut()?.copy_from_slice(&best);
        }
        Ok(())
    }
}
