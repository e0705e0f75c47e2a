//! Optimizers with Keras' defaults and update rules. Each updates the model's
//! flat parameter buffer from the flat gradient buffer, elementwise (so in
//! parallel and still deterministic).

mod adagrad;
mod adam;
mod nadam;
mod rmsprop;
mod schedules;
mod sgd;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use nadam::Nadam;
pub use rmsprop::RMSprop;
pub use schedules::{LearningRate, LearningRateSchedule};
pub use sgd::SGD;

use crate::device::ForEachTask;
use crate::error::{Error, Result};
use multiversion::multiversion;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task of an update: small enough to share a kernel
/// of tens of thousands of values evenly (the reference model's Dense, 54 K:
/// 14 tasks, not 4 of 16 K that left one thread a third more; its update
/// at 2 threads 40 -> 27 µs a step).
const CHUNK: usize = 1 << 12;

/// Updates parameters from gradients, as Keras' optimizers: each step clips
/// the gradients (`clipnorm`, `global_clipnorm` or `clipvalue`), decays the
/// weights (`weight_decay`: p -= p * weight_decay * lr), then applies the
/// optimizer's own rule at the learning rate of this step (a number or a
/// [`LearningRateSchedule`] of the step count).
pub trait Optimizer: Send {
    /// Keras' name for it: "adam".
    fn name(&self) -> &'static str;

    /// Keras' class name: "Adam".
    fn config_class(&self) -> &'static str;

    /// Its class and hyper-parameters, as saved in model files.
    fn config(&self) -> OptimizerConfig;

    /// The learning rate as given: a number or a schedule.
    fn rate(&self) -> &LearningRate;

    /// The same, to change it.
    fn rate_mut(&mut self) -> &mut LearningRate;

    /// Weight decay and clipping, as given.
    fn base(&self) -> &OptimizerBase;

    /// The step count and state buffers.
    fn state(&self) -> &State;

    /// The same, to change them.
    fn state_mut(&mut self) -> &mut State;

    /// Names of the state buffers ("m", "v"), in the order of `State::slots`.
    fn slot_names(&self) -> &'static [&'static str];

    /// The optimizer's own rule: one update of `variables` (ranges of the flat
    /// buffers) from `grads` (already clipped) at learning rate `lr`; `step`
    /// is 1 for the first update. Sizes its state buffers itself.
    fn update(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>], lr: f32, step: u64);

    /// The weight decay factor, if any (AdamW's is its own argument).
    fn weight_decay(&self) -> Option<f32> {
        self.base().weight_decay
    }

    /// The learning rate of the next update.
    fn learning_rate(&self) -> f32 {
        self.rate().at(self.iterations())
    }

    /// Changes a constant learning rate (callbacks, `--learning-rate`); a
    /// schedule's rate is not settable, as in Keras.
    fn set_learning_rate(&mut self, learning_rate: f32) -> Result<()> {
        check_learning_rate(learning_rate)?;
        match self.rate_mut() {
            LearningRate::Constant(lr) => {
                *lr = learning_rate;
                Ok(())
            }
            LearningRate::Schedule(s) => Err(Error::InvalidArgument(format!(
                "the learning rate follows a {} schedule and cannot be set to {learning_rate}; \
                 give the optimizer a constant learning rate to change it during training",
                s.class_name()
            ))),
        }
    }

    /// Updates done so far.
    fn iterations(&self) -> u64 {
        self.state().iterations
    }

    /// Restores the update count (bias corrections and schedules depend on it).
    fn set_iterations(&mut self, iterations: u64) {
        self.state_mut().iterations = iterations;
    }

    /// State buffers by name, each as long as the parameters, or empty
    /// before the first step. With `iterations`, all a resume needs.
    fn slots(&self) -> Vec<(&'static str, &[f32])> {
        self.slot_names().iter().copied().zip(self.state().slots.iter().map(Vec::as_slice)).collect()
    }

    /// The state buffers, to restore them.
    fn slots_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        let names = self.slot_names();
        let state = self.state_mut();
        state.slots.resize_with(names.len(), Vec::new);
        names.iter().copied().zip(state.slots.iter_mut()).collect()
    }

    /// One update of every parameter, as one variable.
    fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        let all = 0..params.len();
        self.step_ranges(params, grads, std::slice::from_ref(&all));
    }

    /// One update of the `variables` (ranges of the flat buffers: each
    /// trainable weight, which `clipnorm` clips on its own); the rest
    /// (frozen layers) and its state stay as they are.
    fn step_ranges(&mut self, params: &mut [f32], grads: &[f32], variables: &[Range<usize>]) {
        let step = self.iterations() + 1;
        let lr = self.learning_rate();
        let mut clipped = std::mem::take(&mut self.state_mut().clipped);
        let grads = self.base().clip(grads, variables, &mut clipped);
        if let Some(wd) = self.weight_decay() {
            let factor = wd * lr;
            for_each_value(params, variables, |p| *p -= *p * factor);
        }
        self.update(params, grads, variables, lr, step);
        let state = self.state_mut();
        state.clipped = clipped;
        state.iterations = step;
    }
}

/// What every optimizer takes besides its learning rate, as Keras' base
/// `Optimizer`: `weight_decay`, and at most one of `clipnorm` (each weight's
/// gradient scaled to at most this L2 norm), `global_clipnorm` (all gradients
/// together) and `clipvalue` (each value clipped to [-v, v]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct OptimizerBase {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipnorm: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipvalue: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_clipnorm: Option<f32>,
    /// Arguments no optimizer knows, refused by [`OptimizerConfig::to_optimizer`].
    #[serde(flatten, skip_serializing)]
    unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl OptimizerBase {
    /// `grads`, clipped into `out` when a clipping is set.
    fn clip<'a>(&self, grads: &'a [f32], variables: &[Range<usize>], out: &'a mut Vec<f32>) -> &'a [f32] {
        let rule = match (self.clipnorm, self.global_clipnorm, self.clipvalue) {
            (Some(c), _, _) if c > 0.0 => Clip::Norm(c),
            (_, Some(c), _) if c > 0.0 => Clip::GlobalNorm(c),
            (_, _, Some(v)) if v > 0.0 => Clip::Value(v),
            _ => return grads,
        };
        out.resize(grads.len(), 0.0);
        for r in variables {
            out[r.clone()].copy_from_slice(&grads[r.clone()]);
        }
        let squares = |g: &[f32]| g.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        match rule {
            // g * c / max(||g||, c), per weight
            Clip::Norm(c) => {
                for r in variables {
                    let g = &mut out[r.clone()];
                    let norm = squares(g).sqrt() as f32;
                    let denominator = norm.max(c);
                    g.iter_mut().for_each(|v| *v = *v * c / denominator);
                }
            }
            // g * c * min(1 / ||all g||, 1 / c); NaN when the norm is not finite
            Clip::GlobalNorm(c) => {
                let norm = variables.iter().map(|r| squares(&out[r.clone()])).sum::<f64>().sqrt() as f32;
                let scale = if norm.is_finite() { c * (1.0 / norm).min(1.0 / c) } else { f32::NAN };
                for_each_value(out, variables, |v| *v *= scale);
            }
            Clip::Value(v) => for_each_value(out, variables, |g| *g = g.clamp(-v, v)),
        }
        out
    }

    /// Checks the arguments as Keras does.
    fn check(&self, class: &str) -> Result<()> {
        if let Some(name) = self.unknown.keys().next() {
            return Err(Error::InvalidArgument(format!(
                "{class} has no argument '{name}' (every optimizer takes learning_rate, weight_decay, clipnorm, \
                 clipvalue and global_clipnorm besides its own)"
            )));
        }
        let set = [self.clipnorm, self.clipvalue, self.global_clipnorm].iter().filter(|c| c.is_some()).count();
        if set > 1 {
            return Err(Error::InvalidArgument(format!(
                "{class}: only one of clipnorm, clipvalue and global_clipnorm can be set, got clipnorm={:?}, \
                 clipvalue={:?}, global_clipnorm={:?}",
                self.clipnorm, self.clipvalue, self.global_clipnorm
            )));
        }
        if let Some(v) = self.weight_decay
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::InvalidArgument(format!(
                "{class}: weight_decay must be a non-negative number, got {v}"
            )));
        }
        for (name, v) in
            [("clipnorm", self.clipnorm), ("clipvalue", self.clipvalue), ("global_clipnorm", self.global_clipnorm)]
        {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(Error::InvalidArgument(format!(
                    "{class}: {name} must be a positive number, got {v} (leave it out for no clipping)"
                )));
            }
        }
        Ok(())
    }
}

enum Clip {
    Norm(f32),
    GlobalNorm(f32),
    Value(f32),
}

/// An optimizer's step count, state buffers (each as long as the parameters
/// once used) and the scratch buffer clipped gradients go to.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub iterations: u64,
    pub slots: Vec<Vec<f32>>,
    clipped: Vec<f32>,
}

impl State {
    /// A fresh state with `slots` empty buffers.
    pub fn with_slots(slots: usize) -> Self {
        State { slots: vec![Vec::new(); slots], ..State::default() }
    }
}

/// The accessors every optimizer implements the same way (fields
/// `learning_rate`, `base` and `state`).
macro_rules! optimizer_fields {
    () => {
        fn rate(&self) -> &$crate::optimizers::LearningRate {
            &self.learning_rate
        }

        fn rate_mut(&mut self) -> &mut $crate::optimizers::LearningRate {
            &mut self.learning_rate
        }

        fn base(&self) -> &$crate::optimizers::OptimizerBase {
            &self.base
        }

        fn state(&self) -> &$crate::optimizers::State {
            &self.state
        }

        fn state_mut(&mut self) -> &mut $crate::optimizers::State {
            &mut self.state
        }
    };
}
pub(crate) use optimizer_fields;

/// Builder methods every optimizer has: the clippings, a learning-rate
/// schedule and (`base_builders!(Name, weight_decay)`) `weight_decay`.
macro_rules! base_builders {
    ($name:ident, weight_decay) => {
        impl $name {
            /// Decays the weights by `weight_decay * lr` each step (decoupled, as Keras).
            pub fn weight_decay(mut self, weight_decay: f32) -> Self {
                self.base.weight_decay = Some(weight_decay);
                self
            }
        }
        base_builders!($name);
    };
    ($name:ident) => {
        impl $name {
            /// Scales each weight's gradient to an L2 norm of at most `clipnorm`.
            pub fn clipnorm(mut self, clipnorm: f32) -> Self {
                self.base.clipnorm = Some(clipnorm);
                self
            }

            /// Scales all gradients together to an L2 norm of at most `global_clipnorm`.
            pub fn global_clipnorm(mut self, global_clipnorm: f32) -> Self {
                self.base.global_clipnorm = Some(global_clipnorm);
                self
            }

            /// Clips each gradient value to [-clipvalue, clipvalue].
            pub fn clipvalue(mut self, clipvalue: f32) -> Self {
                self.base.clipvalue = Some(clipvalue);
                self
            }

            /// A learning rate that follows `schedule` (per step).
            pub fn schedule(mut self, schedule: $crate::optimizers::LearningRateSchedule) -> Self {
                self.learning_rate = schedule.into();
                self
            }
        }
    };
}
pub(crate) use base_builders;

/// `beta_1`, `beta_2` and `epsilon` builders, for the optimizers with Adam's moments.
macro_rules! moment_builders {
    ($name:ident) => {
        impl $name {
            /// Decay of the first-moment average.
            pub fn beta_1(mut self, beta_1: f32) -> Self {
                self.beta_1 = beta_1;
                self
            }

            /// Decay of the second-moment average.
            pub fn beta_2(mut self, beta_2: f32) -> Self {
                self.beta_2 = beta_2;
                self
            }

            /// Added to the denominator for stability.
            pub fn epsilon(mut self, epsilon: f32) -> Self {
                self.epsilon = epsilon;
                self
            }
        }
    };
}
pub(crate) use moment_builders;

/// The `variables` with each run of adjacent ones joined into one range: every
/// optimizer's elementwise passes go over a run in one parallel loop (one wake
/// of the threads, not one per variable; a layer's kernel and bias are adjacent).
pub(super) fn runs(mut variables: &[Range<usize>]) -> impl Iterator<Item = Range<usize>> + '_ {
    std::iter::from_fn(move || {
        let (first, rest) = variables.split_first()?;
        let joined = rest.iter().zip(variables).take_while(|(r, before)| r.start == before.end).count();
        variables = &rest[joined..];
        Some(first.start..rest[..joined].last().map_or(first.end, |r| r.end))
    })
}

/// Runs `f` on every value of `variables`, in parallel chunks.
fn for_each_value(values: &mut [f32], variables: &[Range<usize>], f: impl Fn(&mut f32) + Sync) {
    for r in runs(variables) {
        values[r.clone()].par_chunks_mut(CHUNK).for_each_task(|chunk| chunk.iter_mut().for_each(&f));
    }
}

/// An optimizer's class and hyper-parameters (no state), as saved in model
/// files: `{"class_name": "Adam", "learning_rate": 0.001, ...}`; omitted
/// arguments take Keras' defaults.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "class_name")]
pub enum OptimizerConfig {
    Adam(Adam),
    AdamW(AdamW),
    SGD(SGD),
    RMSprop(RMSprop),
    Adagrad(Adagrad),
    Nadam(Nadam),
}

impl OptimizerConfig {
    /// A fresh optimizer (no state), after checking the hyper-parameters.
    pub fn to_optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let unit = |name: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!("{name} must be in [0, 1), got {v}")))
            }
        };
        let optimizer: Box<dyn Optimizer> = match self {
            OptimizerConfig::Adam(a) => {
                unit("beta_1", a.beta_1)?;
                unit("beta_2", a.beta_2)?;
                positive("epsilon", a.epsilon)?;
                Box::new(a.clone())
            }
            OptimizerConfig::AdamW(a) => {
                unit("beta_1", a.beta_1)?;
                unit("beta_2", a.beta_2)?;
                positive("epsilon", a.epsilon)?;
                if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
                    return Err(Error::InvalidArgument(format!(
                        "AdamW: weight_decay must be a non-negative number, got {}",
                        a.weight_decay
                    )));
                }
                Box::new(a.clone())
            }
            OptimizerConfig::SGD(s) => {
                unit("momentum", s.momentum)?;
                Box::new(s.clone())
            }
            OptimizerConfig::RMSprop(r) => {
                unit("rho", r.rho)?;
                unit("momentum", r.momentum)?;
                positive("epsilon", r.epsilon)?;
                Box::new(r.clone())
            }
            OptimizerConfig::Adagrad(a) => {
                positive("epsilon", a.epsilon)?;
                if !(a.initial_accumulator_value.is_finite() && a.initial_accumulator_value >= 0.0) {
                    return Err(Error::InvalidArgument(format!(
                        "initial_accumulator_value must be a non-negative number, got {}",
                        a.initial_accumulator_value
                    )));
                }
                Box::new(a.clone())
            }
            OptimizerConfig::Nadam(a) => {
                unit("beta_1", a.beta_1)?;
                unit("beta_2", a.beta_2)?;
                positive("epsilon", a.epsilon)?;
                Box::new(a.clone())
            }
        };
        optimizer.base().check(optimizer.config_class())?;
        match optimizer.rate() {
            LearningRate::Constant(lr) => check_learning_rate(*lr)?,
            LearningRate::Schedule(s) => s.check()?,
        }
        Ok(optimizer)
    }
}

fn positive(name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{name} must be a positive number, got {v}")))
    }
}

/// Learning rates must be positive and finite.
pub fn check_learning_rate(lr: f32) -> Result<()> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("learning rate must be a positive number, got {lr}")))
    }
}

impl<O: Optimizer + 'static> From<O> for Box<dyn Optimizer> {
    fn from(optimizer: O) -> Self {
        Box::new(optimizer)
    }
}

/// An optimizer by Keras name with its defaults, optionally with another learning rate.
pub fn from_name(name: &str, learning_rate: Option<f32>) -> Result<Box<dyn Optimizer>> {
    let mut opt: Box<dyn Optimizer> = match name.to_ascii_lowercase().as_str() {
        "adam" => Box::new(Adam::default()),
        "adamw" => Box::new(AdamW::default()),
        "sgd" => Box::new(SGD::default()),
        "rmsprop" => Box::new(RMSprop::default()),
        "adagrad" => Box::new(Adagrad::default()),
        "nadam" => Box::new(Nadam::default()),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "unknown optimizer '{name}'; expected adam, adamw, sgd, rmsprop, adagrad or nadam"
            )));
        }
    };
    if let Some(lr) = learning_rate {
        opt.set_learning_rate(lr)?;
    }
    Ok(opt)
}

/// Runs `update(param, grad, slot_a, slot_b)` over every element of the
/// `variables` in parallel chunks (slots as long as the parameters).
fn update_each(
    params: &mut [f32],
    grads: &[f32],
    (a, b): (&mut [f32], &mut [f32]),
    variables: &[Range<usize>],
    update: impl Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
) {
    for r in runs(variables) {
        params[r.clone()]
            .par_chunks_mut(CHUNK)
            .zip(grads[r.clone()].par_chunks(CHUNK))
            .zip(a[r.clone()].par_chunks_mut(CHUNK).zip(b[r.clone()].par_chunks_mut(CHUNK)))
            .for_each_task(|((p, g), (a, b))| update_chunk(p, g, a, b, &update));
    }
}

/// [`update_each`]'s loop over one chunk, in the CPU's widest vectors (the
/// rules' square roots and divisions are exact in every width: the same bits).
#[multiversion(targets = "simd")]
fn update_chunk<F: Fn(&mut f32, f32, &mut f32, &mut f32)>(
    p: &mut [f32],
    g: &[f32],
    a: &mut [f32],
    b: &mut [f32],
    update: &F,
) {
    for (((p, &g), a), b) in p.iter_mut().zip(g).zip(a.iter_mut()).zip(b.iter_mut()) {
        update(p, g, a, b);
    }
}

/// Sizes an optimizer's state buffer to the parameters (zeros), once.
fn ensure_len(slot: &mut Vec<f32>, len: usize) {
    if slot.len() != len {
        *slot = vec![0.0; len];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adjacent_variables_join_into_runs() {
        let runs = |v: &[std::ops::Range<usize>]| super::runs(v).collect::<Vec<_>>();
        assert_eq!(runs(&[0..3, 3..5, 7..9, 9..10, 12..13]), [0..5, 7..10, 12..13]);
        assert_eq!(runs(std::slice::from_ref(&(4..6))), vec![4..6]);
        assert_eq!(runs(&[0..2, 5..6, 6..8]), [0..2, 5..8]);
        assert!(runs(&[]).is_empty());
    }
}
