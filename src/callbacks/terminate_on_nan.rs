use super::{Callback, Control};
use crate::error::Result;
use crate::model::{Logs, Model};

/// Ends training, without an error, at the first batch whose loss is NaN or
/// infinite, as `keras.callbacks.TerminateOnNaN`: the bad step is not applied,
/// `fit` returns the History so far, and a message on stderr names the epoch
/// and batch. (Without it, `fit` returns an error at that batch.)
///
/// ```
/// use keel::callbacks::TerminateOnNaN;
/// let guard = TerminateOnNaN::default();
/// ```
#[derive(Clone, Debug, Default)]
pub struct TerminateOnNaN {
    epoch: usize,
    /// (epoch, batch) where training was stopped, if it was.
    pub terminated_at: Option<(usize, usize)>,
}

impl Callback for TerminateOnNaN {
    fn on_epoch_begin(&mut self, _model: &mut Model, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn on_batch_end(&mut self, _model: &mut Model, batch: usize, logs: &Logs) -> Result<Control> {
        match logs.get("loss") {
            Some(loss) if !loss.is_finite() => {
                eprintln!("Epoch {}, batch {batch}: invalid loss ({loss}), terminating training", self.epoch);
                self.terminated_at = Some((self.epoch, batch));
                Ok(Control::Stop)
            }
            _ => Ok(Control::Continue),
        }
    }
}
