//! Learning rates that change with the step, as Keras'
//! `keras.optimizers.schedules`: a function of the optimizer's step count, so
//! saving the optimizer's iterations with the schedule is all a resume needs.
//!
//! In model files the learning rate is a number or a table:
//! `learning_rate = { class_name = "CosineDecay", initial_learning_rate = 0.0,
//! decay_steps = 1000, warmup_target = 0.003, warmup_steps = 100 }`.

use crate::error::{Error, Result};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A learning-rate schedule with Keras' class and argument names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name", deny_unknown_fields)]
pub enum LearningRateSchedule {
    /// Cosine decay from `initial_learning_rate` (or, after a linear warm-up
    /// of `warmup_steps` to `warmup_target`, from `warmup_target`) to
    /// `alpha` times that over `decay_steps`, then constant.
    CosineDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        #[serde(default)]
        alpha: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_target: Option<f32>,
        #[serde(default)]
        warmup_steps: u64,
    },
    /// `initial_learning_rate * decay_rate ^ (step / decay_steps)`, the
    /// exponent floored with `staircase`.
    ExponentialDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        decay_rate: f32,
        #[serde(default)]
        staircase: bool,
    },
    /// `values[0]` while `step <= boundaries[0]`, `values[i]` while
    /// `boundaries[i-1] < step <= boundaries[i]`, `values[last]` after.
    PiecewiseConstantDecay { boundaries: Vec<u64>, values: Vec<f32> },
}

impl LearningRateSchedule {
    /// Keras' `CosineDecay(initial_learning_rate, decay_steps)` (alpha 0, no warm-up).
    pub fn cosine_decay(initial_learning_rate: f32, decay_steps: u64) -> Self {
        LearningRateSchedule::CosineDecay {
            initial_learning_rate,
            decay_steps,
            alpha: 0.0,
            warmup_target: None,
            warmup_steps: 0,
        }
    }

    /// A linear warm-up from the initial rate to `target` over `steps` before the cosine decay.
    pub fn warmup(self, target: f32, steps: u64) -> Self {
        match self {
            LearningRateSchedule::CosineDecay { initial_learning_rate, decay_steps, alpha, .. } => {
                LearningRateSchedule::CosineDecay {
                    initial_learning_rate,
                    decay_steps,
                    alpha,
                    warmup_target: Some(target),
                    warmup_steps: steps,
                }
            }
            other => other,
        }
    }

    /// The rate for the update after `step` completed ones (0 for the first), as Keras computes it.
    pub fn at(&self, step: u64) -> f32 {
        let step = step as f64;
        match self {
            &LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let (initial, decay_steps, alpha) = (initial_learning_rate as f64, decay_steps as f64, alpha as f64);
                let cosine = |step: f64, from: f64| {
                    let decayed = 0.5 * (1.0 + (std::f64::consts::PI * step / decay_steps).cos());
                    from * ((1.0 - alpha) * decayed + alpha)
                };
                let rate = match warmup_target {
                    None => cosine(step.min(decay_steps), initial),
                    Some(target) => {
                        let (target, warmup) = (target as f64, warmup_steps as f64);
                        let step = step.min(decay_steps + warmup);
                        if step < warmup {
                            (target - initial) * (step / warmup) + initial
                        } else {
                            cosine(step - warmup, target)
                        }
                    }
                };
                rate as f32
            }
            &LearningRateSchedule::ExponentialDecay { initial_learning_rate, decay_steps, decay_rate, staircase } => {
                let p = step / decay_steps as f64;
                let p = if staircase { p.floor() } else { p };
                (initial_learning_rate as f64 * (decay_rate as f64).powf(p)) as f32
            }
            LearningRateSchedule::PiecewiseConstantDecay { boundaries, values } => {
                let i = boundaries.iter().take_while(|&&b| step > b as f64).count();
                values[i]
            }
        }
    }

    /// Keras' class name.
    pub fn class_name(&self) -> &'static str {
        match self {
            LearningRateSchedule::CosineDecay { .. } => "CosineDecay",
            LearningRateSchedule::ExponentialDecay { .. } => "ExponentialDecay",
            LearningRateSchedule::PiecewiseConstantDecay { .. } => "PiecewiseConstantDecay",
        }
    }

    /// Checks the arguments as Keras does (and that every rate is a usable number).
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("{}: {why}", self.class_name())));
        let finite = |name: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                bad(format!("{name} must be a non-negative number, got {v}"))
            }
        };
        match self {
            &LearningRateSchedule::CosineDecay { initial_learning_rate, decay_steps, alpha, warmup_target, .. } => {
                finite("initial_learning_rate", initial_learning_rate)?;
                finite("alpha", alpha)?;
                if let Some(t) = warmup_target {
                    finite("warmup_target", t)?;
                }
                if decay_steps == 0 {
                    return bad("decay_steps must be > 0".into());
                }
            }
            &LearningRateSchedule::ExponentialDecay { initial_learning_rate, decay_steps, decay_rate, .. } => {
                finite("initial_learning_rate", initial_learning_rate)?;
                finite("decay_rate", decay_rate)?;
                if decay_steps == 0 {
                    return bad("decay_steps must be > 0".into());
                }
            }
            LearningRateSchedule::PiecewiseConstantDecay { boundaries, values } => {
                if boundaries.len() + 1 != values.len() {
                    return bad(format!(
                        "needs one more value than boundaries, got {} boundaries and {} values",
                        boundaries.len(),
                        values.len()
                    ));
                }
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!("boundaries must be strictly increasing, got {boundaries:?}"));
                }
                for &v in values {
                    finite("every value", v)?;
                }
            }
        }
        Ok(())
    }
}

/// An optimizer's learning rate: a number, or a schedule of the step.
#[derive(Clone, Debug, PartialEq)]
pub enum LearningRate {
    Constant(f32),
    Schedule(LearningRateSchedule),
}

impl LearningRate {
    /// The rate for the update after `step` completed ones.
    pub fn at(&self, step: u64) -> f32 {
        match self {
            LearningRate::Constant(lr) => *lr,
            LearningRate::Schedule(s) => s.at(step),
        }
    }
}

impl From<f32> for LearningRate {
    fn from(lr: f32) -> Self {
        LearningRate::Constant(lr)
    }
}

impl From<LearningRateSchedule> for LearningRate {
    fn from(schedule: LearningRateSchedule) -> Self {
        LearningRate::Schedule(schedule)
    }
}

impl Serialize for LearningRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LearningRate::Constant(lr) => serializer.serialize_f32(*lr),
            LearningRate::Schedule(s) => s.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct RateVisitor;
        impl<'de> Visitor<'de> for RateVisitor {
            type Value = LearningRate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a schedule such as { class_name = \"CosineDecay\", ... }")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<LearningRate, E> {
                Ok(LearningRate::Constant(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<LearningRate, E> {
                Ok(LearningRate::Constant(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<LearningRate, E> {
                Ok(LearningRate::Constant(v as f32))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<LearningRate, A::Error> {
                LearningRateSchedule::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(LearningRate::Schedule)
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}
