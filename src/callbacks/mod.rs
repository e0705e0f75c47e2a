//! Callbacks: code that `fit` calls at the start and end of training, of each
//! epoch, and after each batch, as Keras' `callbacks=[...]`.

mod model_checkpoint;

pub use model_checkpoint::ModelCheckpoint;

use crate::error::Result;
use crate::model::{History, Logs, Sequential};

/// Whether training goes on after a callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// End training (after this batch, or this epoch), as Keras' `model.stop_training = True`.
    Stop,
}

/// Hooks into [`Sequential::fit_with_callbacks`]. Epochs are numbered from 1,
/// as printed; batches from 1 within their epoch. Every method has a default
/// that does nothing. An error ends `fit` with that error.
pub trait Callback {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }

    fn on_epoch_begin(&mut self, _model: &mut Sequential, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// `logs`: the epoch's running mean loss and metrics so far.
    fn on_batch_end(&mut self, _model: &mut Sequential, _batch: usize, _logs: &Logs) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// `logs`: the epoch's loss and metrics, with "val_" ones when validating.
    fn on_epoch_end(&mut self, _model: &mut Sequential, _epoch: usize, _logs: &Logs) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// `history`: the epochs of this `fit` call.
    fn on_train_end(&mut self, _model: &mut Sequential, _history: &History) -> Result<()> {
        Ok(())
    }
}

/// Whether a monitored quantity improves upward: accuracies do, losses do not
/// (Keras' `mode="auto"`).
pub(crate) fn higher_is_better(monitor: &str) -> bool {
    monitor.ends_with("accuracy") || monitor.ends_with("acc")
}
