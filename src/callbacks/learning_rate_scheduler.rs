use super::Callback;
use crate::error::{Error, Result};
use crate::model::Model;
use std::fmt;

/// A learning rate per epoch (counted from 0, as Keras passes it).
pub enum Schedule {
    /// `initial * drop^floor(epoch / every)`: e.g. halve every 10 epochs.
    Step { initial: f32, drop: f32, every: usize },
    /// `initial * rate^epoch`.
    Exponential { initial: f32, rate: f32 },
    /// Cosine from `initial` down to `initial * alpha` over `epochs`, then flat:
    /// `initial * ((1 - alpha) * (1 + cos(pi * min(epoch, epochs) / epochs)) / 2 + alpha)`.
    Cosine { initial: f32, epochs: usize, alpha: f32 },
    /// Any function of (epoch, current rate).
    Custom(Box<dyn Fn(usize, f32) -> f32 + Send>),
}

impl Schedule {
    /// The rate for `epoch` (0-based), given the current one.
    pub fn rate(&self, epoch: usize, current: f32) -> f32 {
        match *self {
            Schedule::Step { initial, drop, every } => initial * drop.powi((epoch / every.max(1)) as i32),
            Schedule::Exponential { initial, rate } => initial * rate.powi(epoch as i32),
            Schedule::Cosine { initial, epochs, alpha } => {
                let progress = epoch.min(epochs) as f32 / epochs.max(1) as f32;
                initial * ((1.0 - alpha) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()) + alpha)
            }
            Schedule::Custom(ref f) => f(epoch, current),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Step { initial, drop, every } => write!(f, "Step({initial}, drop {drop} every {every})"),
            Schedule::Exponential { initial, rate } => write!(f, "Exponential({initial}, rate {rate})"),
            Schedule::Cosine { initial, epochs, alpha } => {
                write!(f, "Cosine({initial}, {epochs} epochs, alpha {alpha})")
            }
            Schedule::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Sets the optimizer's learning rate at the start of every epoch from a
/// [`Schedule`], as `keras.callbacks.LearningRateScheduler`.
///
/// ```
/// use keel::callbacks::{LearningRateScheduler, Schedule};
/// let cosine = LearningRateScheduler::new(Schedule::Cosine { initial: 1e-3, epochs: 20, alpha: 0.01 });
/// let custom = LearningRateScheduler::new(Schedule::Custom(Box::new(|epoch, lr| if epoch < 5 { lr } else { lr * 0.9 })));
/// ```
#[derive(Debug)]
pub struct LearningRateScheduler {
    schedule: Schedule,
    /// The rate set at each epoch, in order.
    pub rates: Vec<f32>,
}

impl LearningRateScheduler {
    pub fn new(schedule: Schedule) -> Self {
        LearningRateScheduler { schedule, rates: Vec::new() }
    }
}

impl Callback for LearningRateScheduler {
    fn on_epoch_begin(&mut self, model: &mut Model, epoch: usize) -> Result<()> {
        let optimizer = model
            .optimizer_mut()
            .ok_or_else(|| Error::State("LearningRateScheduler needs a compiled model (an optimizer)".into()))?;
        let rate = self.schedule.rate(epoch - 1, optimizer.learning_rate());
        crate::optimizers::check_learning_rate(rate).map_err(|e| match e {
            Error::InvalidArgument(why) => {
                Error::InvalidArgument(format!("the schedule gave epoch {epoch} a bad rate: {why}"))
            }
            e => e,
        })?;
        optimizer.set_learning_rate(rate).map_err(|e| Error::InvalidArgument(format!("LearningRateScheduler: {e}")))?;
        self.rates.push(rate);
        Ok(())
    }
}
