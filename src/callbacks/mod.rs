//! Callbacks: code that `fit` calls at the start and end of training, of each
//! epoch, and after each batch, as Keras' `callbacks=[...]`.

mod csv_logger;
mod early_stopping;
mod learning_rate_scheduler;
mod model_checkpoint;
mod reduce_lr_on_plateau;
mod terminate_on_nan;

pub use csv_logger::CSVLogger;
pub use early_stopping::EarlyStopping;
pub use learning_rate_scheduler::{LearningRateScheduler, Schedule};
pub use model_checkpoint::ModelCheckpoint;
pub use reduce_lr_on_plateau::ReduceLROnPlateau;
pub use terminate_on_nan::TerminateOnNaN;

use crate::error::{Error, Result};
use crate::model::{History, Logs, Model};

/// Whether training goes on after a callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// End training (after this batch, or this epoch), as Keras' `model.stop_training = True`.
    Stop,
}

/// What `fit` is about to do, as Keras' `callback.params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitParams {
    /// The last epoch (epochs run: `initial_epoch + 1 ..= epochs`).
    pub epochs: usize,
    pub initial_epoch: usize,
    /// Batches per epoch.
    pub steps: usize,
    pub batch_size: usize,
    /// Training samples per epoch (validation samples excluded).
    pub samples: usize,
}

/// Hooks into [`Model::fit_with_callbacks`]. Epochs are numbered from 1,
/// as printed; batches from 1 within their epoch. Every method has a default
/// that does nothing. An error ends `fit` with that error.
pub trait Callback {
    /// Called once before `on_train_begin`, as Keras' `set_params`.
    fn set_params(&mut self, _params: &FitParams) {}

    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        Ok(())
    }

    fn on_epoch_begin(&mut self, _model: &mut Model, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// `logs`: the epoch's running mean loss and metrics so far.
    fn on_batch_end(&mut self, _model: &mut Model, _batch: usize, _logs: &Logs) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// `logs`: the epoch's loss and metrics, with "val_" ones when validating.
    fn on_epoch_end(&mut self, _model: &mut Model, _epoch: usize, _logs: &Logs) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// `history`: the epochs of this `fit` call.
    fn on_train_end(&mut self, _model: &mut Model, _history: &History) -> Result<()> {
        Ok(())
    }
}

/// Which way a monitored value improves, as Keras' `mode=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Up for accuracies, down for everything else (losses).
    #[default]
    Auto,
    Min,
    Max,
}

impl Mode {
    /// Whether `current` improves on `best` (none yet: any finite value does)
    /// by more than `min_delta`.
    pub fn improves(self, monitor: &str, current: f64, best: Option<f64>, min_delta: f64) -> bool {
        let higher = match self {
            Mode::Auto => monitor.ends_with("accuracy") || monitor.ends_with("acc"),
            Mode::Min => false,
            Mode::Max => true,
        };
        match best {
            None => current.is_finite(),
            Some(best) if higher => current - min_delta > best,
            Some(best) => current + min_delta < best,
        }
    }
}

/// The monitored value from an epoch's logs, or an error naming what is logged.
fn monitored(callback: &str, monitor: &str, logs: &Logs) -> Result<f64> {
    logs.get(monitor).copied().ok_or_else(|| {
        let known: Vec<&str> = logs.keys().map(String::as_str).collect();
        Error::InvalidArgument(format!(
            "{callback} monitors '{monitor}', which training does not log (it logs {}); give validation data or monitor another value",
            known.join(", ")
        ))
    })
}
