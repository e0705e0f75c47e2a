use super::{Callback, Control, Mode, monitored};
use crate::error::{Error, Result};
use crate::model::{Logs, Model};

/// Lowers the learning rate when a monitored value has stopped improving, as
/// `keras.callbacks.ReduceLROnPlateau`.
///
/// Arguments (builder methods, Keras' defaults): `monitor` ("val_loss"),
/// `factor` (0.1: new rate = rate * factor), `patience` (10 epochs without
/// improvement), `mode` (auto), `min_delta` (1e-4), `cooldown` (0 epochs of
/// rest after a reduction), `min_lr` (0: the rate never goes below it).
///
/// ```
/// use keel::callbacks::ReduceLROnPlateau;
/// let plateau = ReduceLROnPlateau::new().factor(0.5).patience(2).min_lr(1e-5);
/// ```
#[derive(Clone, Debug)]
pub struct ReduceLROnPlateau {
    monitor: String,
    factor: f32,
    patience: usize,
    mode: Mode,
    min_delta: f64,
    cooldown: usize,
    min_lr: f32,
    wait: usize,
    cooldown_counter: usize,
    best: Option<f64>,
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        Self::new()
    }
}

impl ReduceLROnPlateau {
    pub fn new() -> Self {
        ReduceLROnPlateau {
            monitor: "val_loss".into(),
            factor: 0.1,
            patience: 10,
            mode: Mode::Auto,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
            best: None,
        }
    }

    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }

    /// Must be in (0, 1).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
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

    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta.abs();
        self
    }

    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = min_lr;
        self
    }
}

impl Callback for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "ReduceLROnPlateau factor must be in (0, 1), got {}",
                self.factor
            )));
        }
        (self.wait, self.cooldown_counter, self.best) = (0, 0, None);
        Ok(())
    }

    fn on_epoch_end(&mut self, model: &mut Model, _epoch: usize, logs: &Logs) -> Result<Control> {
        let current = monitored("ReduceLROnPlateau", &self.monitor, logs)?;
        // As Keras: the cooldown is counted down before it is checked.
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.mode.improves(&self.monitor, current, self.best, self.min_delta) {
            self.best = Some(current);
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                let optimizer = model
                    .optimizer_mut()
                    .ok_or_else(|| Error::State("ReduceLROnPlateau needs a compiled model (an optimizer)".into()))?;
                let lr = optimizer.learning_rate();
                if lr > self.min_lr {
                    optimizer
                        .set_learning_rate((lr * self.factor).max(self.min_lr))
                        .map_err(|e| Error::InvalidArgument(format!("ReduceLROnPlateau: {e}")))?;
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(Control::Continue)
    }
}
