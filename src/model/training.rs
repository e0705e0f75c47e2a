//! fit, evaluate and predict: batches gathered from the data (bytes become
//! floats here, a batch at a time) into buffers allocated once.

use super::history::{EpochLog, Evaluation, History, Logs};
use super::progress::{Progress, Verbosity};
use super::sequential::Sequential;
use super::summary::shape_str;
use crate::callbacks::{Callback, Control};
use crate::error::{Error, Result};
use crate::kernels::activation;
use crate::layers::Mode;
use crate::losses::Loss;
use crate::random::{self, streams};
use crate::tensor::{Samples, Tensor};
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::time::Instant;

/// Arguments of [`Sequential::fit`], with Keras' defaults.
///
/// ```
/// use keel::prelude::*;
/// let options = FitOptions { epochs: 5, batch_size: 128, validation_split: 0.1, ..FitOptions::default() };
/// ```
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the training data (default 1).
    pub epochs: usize,
    /// Samples per gradient step (default 32).
    pub batch_size: usize,
    /// Fraction of the samples held out for validation, taken from the END of
    /// the data before any shuffling, as Keras does (default 0).
    pub validation_split: f64,
    /// Reshuffle the training samples every epoch (default true).
    pub shuffle: bool,
    /// What to print (default: progress bar).
    pub verbose: Verbosity,
    /// Seed of the shuffle; defaults to the model's seed.
    pub seed: Option<u64>,
    /// Validation samples `(x, y)` evaluated after every epoch, instead of
    /// (and overriding) `validation_split`, as Keras' `validation_data`.
    pub validation_data: Option<(Tensor, Tensor)>,
    /// Weight of each class's samples in the loss (classes not listed weigh 1),
    /// as Keras' `class_weight`: the loss is sum(w_i * loss_i) / batch size.
    /// The class of a sample is its label, its one-hot argmax, or for one
    /// sigmoid output its 0/1 target.
    pub class_weight: Option<BTreeMap<usize, f32>>,
    /// Epoch to start at, as Keras' `initial_epoch`: runs epochs
    /// `initial_epoch + 1 ..= epochs` (default 0). Set it to
    /// `model.epochs_trained()` to continue a loaded model.
    pub initial_epoch: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation_split: 0.0,
            shuffle: true,
            verbose: Verbosity::ProgressBar,
            seed: None,
            validation_data: None,
            class_weight: None,
            initial_epoch: 0,
        }
    }
}

/// Number of training samples when `split` of `n` is held out for validation:
/// ceil(n * (1 - split)), as Keras computes it. The validation samples are the
/// rows from there to the end.
pub fn validation_split_at(n: usize, split: f64) -> usize {
    ((n as f64) * (1.0 - split)).ceil() as usize
}

/// Batch size used by evaluate and predict when the model has not trained yet.
const DEFAULT_INFERENCE_BATCH: usize = 128;

/// Per-call buffers beside the network's: targets and probabilities of a batch.
struct BatchScratch {
    targets: Vec<f32>,
    probs: Vec<f32>,
    metric_sums: Vec<f64>,
}

impl Sequential {
    /// Trains the model, as `model.fit(x, y, ...)`; returns the History of this call.
    ///
    /// `x`: (N, input shape), f32 or scaled bytes; `y`: (N, outputs) targets,
    /// or (N,) / (N, 1) class indices for the sparse loss.
    pub fn fit<X: Samples + ?Sized>(&mut self, x: &X, y: &Tensor, options: &FitOptions) -> Result<History> {
        self.fit_with_callbacks(x, y, options, &mut [])
    }

    /// [`Sequential::fit`] calling `callbacks` at the start and end of training,
    /// of every epoch and after every batch; one returning [`Control::Stop`]
    /// ends training after the current batch or epoch.
    pub fn fit_with_callbacks<X: Samples + ?Sized>(
        &mut self,
        x: &X,
        y: &Tensor,
        options: &FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        if options.batch_size == 0 {
            return Err(Error::InvalidArgument("batch_size must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&options.validation_split) {
            return Err(Error::InvalidArgument(format!(
                "validation_split must be in [0, 1), got {}",
                options.validation_split
            )));
        }
        let target_len = self.prepare(x, y)?;
        let n = x.rows();
        let split = if options.validation_data.is_some() { 0.0 } else { options.validation_split };
        if let Some((x_val, y_val)) = &options.validation_data {
            self.prepare(x_val, y_val).map_err(|e| match e {
                Error::Shape(m) => Error::Shape(format!("validation_data: {m}")),
                e => e,
            })?;
        }
        let bad_weight = options.class_weight.iter().flatten().find(|(_, w)| !(w.is_finite() && **w >= 0.0));
        if let Some((class, w)) = bad_weight {
            return Err(Error::InvalidArgument(format!(
                "class_weight for class {class} is {w}; weights must be finite and non-negative"
            )));
        }
        let n_train = validation_split_at(n, split);
        if n_train == 0 || (split > 0.0 && n_train == n) {
            return Err(Error::InvalidArgument(format!(
                "validation_split {} of {n} samples leaves {n_train} for training and {} for validation; both need at least one",
                options.validation_split,
                n - n_train
            )));
        }
        let capacity = options.batch_size.min(n_train);
        let mut scratch = self.scratch(capacity, target_len);
        let seed = options.seed.unwrap_or(self.seed);
        let mut order: Vec<usize> = Vec::with_capacity(n_train);
        let steps = n_train.div_ceil(options.batch_size);
        let mut history = History::default();
        for cb in callbacks.iter_mut() {
            cb.on_train_begin(self)?;
        }
        let mut stop = false;
        for epoch in options.initial_epoch + 1..=options.epochs {
            let started = Instant::now();
            // Epoch k of the model's life shuffles and drops out from streams of
            // (seed, k) alone, so 3 epochs + save + load + 2 epochs = 5 epochs.
            let global_epoch = self.epochs_trained as u64 + 1;
            order.clear();
            order.extend(0..n_train);
            if options.shuffle {
                order.shuffle(&mut random::epoch_stream(seed, streams::SHUFFLE, global_epoch));
            }
            for (i, layer) in self.layers.iter_mut().enumerate() {
                layer.set_rng(random::epoch_stream(self.seed, streams::DROPOUT + i as u64, global_epoch));
            }
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(self, epoch)?;
            }
            let mut progress = Progress::start(options.verbose, epoch, options.epochs, steps);
            let (mut loss_sum, mut seen) = (0.0f64, 0usize);
            let mut metric_sums = vec![0.0f64; scratch.metric_sums.len()];
            let batches: Vec<&[usize]> = order.chunks(options.batch_size).collect();
            for (step, batch) in batches.iter().enumerate() {
                if let Some(next) = batches.get(step + 1) {
                    x.prefetch(next);
                }
                let loss = self.run_batch(x, y, batch, Mode::Train, &mut scratch, options.class_weight.as_ref())?;
                if !loss.is_finite() {
                    let logs = Logs::from([("loss".to_string(), loss)]);
                    for cb in callbacks.iter_mut() {
                        stop |= cb.on_batch_end(self, step + 1, &logs)? == Control::Stop;
                    }
                    if !stop {
                        return Err(Error::NonFiniteLoss { value: loss as f32, epoch, batch: step + 1 });
                    }
                    break;
                }
                loss_sum += loss;
                seen += batch.len();
                for (total, part) in metric_sums.iter_mut().zip(&scratch.metric_sums) {
                    *total += part;
                }
                progress.step(step + 1, || self.logs(loss_sum, &metric_sums, seen));
                if !callbacks.is_empty() {
                    let logs = self.logs(loss_sum, &metric_sums, seen);
                    for cb in callbacks.iter_mut() {
                        stop |= cb.on_batch_end(self, step + 1, &logs)? == Control::Stop;
                    }
                    if stop {
                        break;
                    }
                }
            }
            if stop && seen < n_train {
                break;
            }
            let mut logs = self.logs(loss_sum, &metric_sums, seen);
            if let Some((x_val, y_val)) = &options.validation_data {
                let val: Vec<usize> = (0..x_val.rows()).collect();
                logs.extend(self.evaluate_indices(x_val, y_val, &val, capacity, &mut scratch)?.to_logs("val_"));
            } else if n_train < n {
                let val: Vec<usize> = (n_train..n).collect();
                logs.extend(self.evaluate_indices(x, y, &val, capacity, &mut scratch)?.to_logs("val_"));
            }
            progress.finish(&logs);
            self.epochs_trained += 1;
            let log = EpochLog { epoch: self.epochs_trained, logs, seconds: started.elapsed().as_secs_f64() };
            self.history.epochs.push(log.clone());
            history.epochs.push(log);
            let logs = &history.epochs.last().expect("pushed above").logs;
            for cb in callbacks.iter_mut() {
                stop |= cb.on_epoch_end(self, epoch, logs)? == Control::Stop;
            }
            if stop {
                break;
            }
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_end(self, &history)?;
        }
        Ok(history)
    }

    /// Loss and metrics on `x`, `y`, as `model.evaluate(x, y)`.
    pub fn evaluate<X: Samples + ?Sized>(&mut self, x: &X, y: &Tensor) -> Result<Evaluation> {
        let target_len = self.prepare(x, y)?;
        let batch = self.inference_batch();
        let mut scratch = self.scratch(batch, target_len);
        let all: Vec<usize> = (0..x.rows()).collect();
        self.evaluate_indices(x, y, &all, batch, &mut scratch)
    }

    /// Output probabilities for `x`: (N, output shape), as `model.predict(x)`.
    pub fn predict<X: Samples + ?Sized>(&mut self, x: &X) -> Result<Tensor> {
        if !self.is_built() {
            self.build_for(x.shape().get(1..).unwrap_or(&[]))?;
        }
        self.check_inputs(x)?;
        let batch = self.inference_batch();
        let net = self.net.as_mut().expect("built above");
        net.ensure_capacity(&mut self.layers, batch);
        let (in_len, out_len, width) = (net.sample_len(0), net.output_len(), net.output_width());
        let head = self.compiled.as_ref().and_then(|c| c.head);
        let mut out = vec![0.0f32; x.rows() * out_len];
        let indices: Vec<usize> = (0..x.rows()).collect();
        let chunks: Vec<&[usize]> = indices.chunks(batch).collect();
        for (k, (chunk, dst)) in chunks.iter().zip(out.chunks_mut(batch * out_len)).enumerate() {
            let n = chunk.len();
            if let Some(next) = chunks.get(k + 1) {
                x.prefetch(next);
            }
            x.gather(chunk, &mut net.input_mut()[..n * in_len])?;
            net.forward(&mut self.layers, n, Mode::Infer);
            dst.copy_from_slice(&net.output_and_delta().0[..n * out_len]);
            if let Some(head) = head {
                activation::forward(head, dst, None, width);
            }
        }
        let mut shape = vec![x.rows()];
        shape.extend_from_slice(&net.shapes[net.shapes.len() - 1]);
        Tensor::from_vec(&shape, out)
    }

    fn inference_batch(&self) -> usize {
        self.net.as_ref().map_or(0, |n| n.capacity).max(DEFAULT_INFERENCE_BATCH)
    }

    fn scratch(&mut self, batch: usize, target_len: usize) -> BatchScratch {
        let net = self.net.as_mut().expect("prepared models are built");
        net.ensure_capacity(&mut self.layers, batch);
        let metrics = self.compiled.as_ref().map_or(0, |c| c.metrics.len());
        BatchScratch {
            targets: vec![0.0; batch * target_len],
            probs: vec![0.0; batch * net.output_len()],
            metric_sums: vec![0.0; metrics],
        }
    }

    /// Mean loss and metrics over `indices`, in batches of `batch`.
    fn evaluate_indices<X: Samples + ?Sized>(
        &mut self,
        x: &X,
        y: &Tensor,
        indices: &[usize],
        batch: usize,
        scratch: &mut BatchScratch,
    ) -> Result<Evaluation> {
        let mut loss_sum = 0.0;
        let mut metric_sums = vec![0.0; scratch.metric_sums.len()];
        let chunks: Vec<&[usize]> = indices.chunks(batch).collect();
        for (k, chunk) in chunks.iter().enumerate() {
            if let Some(next) = chunks.get(k + 1) {
                x.prefetch(next);
            }
            loss_sum += self.run_batch(x, y, chunk, Mode::Infer, scratch, None)?;
            for (total, part) in metric_sums.iter_mut().zip(&scratch.metric_sums) {
                *total += part;
            }
        }
        let logs = self.logs(loss_sum, &metric_sums, indices.len());
        let loss = logs["loss"];
        Ok(Evaluation { loss, metrics: logs.into_iter().filter(|(k, _)| k != "loss").collect() })
    }

    fn logs(&self, loss_sum: f64, metric_sums: &[f64], seen: usize) -> Logs {
        let seen = seen.max(1) as f64;
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen);
        if let Some(c) = &self.compiled {
            for (m, sum) in c.metrics.iter().zip(metric_sums) {
                logs.insert(m.name().into(), sum / seen);
            }
        }
        logs
    }

    /// One batch: gather, forward, loss and metrics; in training also backward
    /// and an optimizer step (skipped when the loss is not finite). Returns the
    /// summed per-sample loss; metric sums go to `scratch.metric_sums`.
    fn run_batch<X: Samples + ?Sized>(
        &mut self,
        x: &X,
        y: &Tensor,
        indices: &[usize],
        mode: Mode,
        scratch: &mut BatchScratch,
        class_weight: Option<&BTreeMap<usize, f32>>,
    ) -> Result<f64> {
        let compiled = self.compiled.as_mut().expect("prepared models are compiled");
        let net = self.net.as_mut().expect("prepared models are built");
        let n = indices.len();
        let (in_len, out_len, width) = (net.sample_len(0), net.output_len(), net.output_width());
        let rows_per_sample = (out_len / width) as f64;
        let target_len = y.row_len();
        x.gather(indices, &mut net.input_mut()[..n * in_len])?;
        y.gather_rows(indices, &mut scratch.targets[..n * target_len]);
        net.forward(&mut self.layers, n, mode);
        let (out, delta) = net.output_and_delta();
        let out = &out[..n * out_len];
        let targets = &scratch.targets[..n * target_len];
        let from_logits = compiled.head.is_some();
        let delta = &mut delta[..n * out_len];
        let loss = match class_weight {
            None => compiled.loss.compute(out, targets, delta, width, from_logits),
            Some(weights) => weighted_loss(compiled.loss, weights, out, targets, delta, width, from_logits, n),
        };
        let probs = match compiled.head {
            Some(head) => {
                let probs = &mut scratch.probs[..n * out_len];
                probs.copy_from_slice(out);
                activation::forward(head, probs, None, width);
                &*probs
            }
            None => out,
        };
        for (sum, metric) in scratch.metric_sums.iter_mut().zip(&compiled.metrics) {
            *sum = metric.resolve(compiled.loss, width).sum(probs, targets, width) / rows_per_sample;
        }
        let loss = loss / rows_per_sample;
        if mode == Mode::Train && loss.is_finite() {
            net.backward(&mut self.layers, n);
            compiled.optimizer.step(&mut net.params, &net.grads);
        }
        Ok(loss)
    }

    /// Builds if needed and checks `x` and `y` against the model; returns the
    /// number of target values per sample.
    fn prepare<X: Samples + ?Sized>(&mut self, x: &X, y: &Tensor) -> Result<usize> {
        let Some(compiled) = &self.compiled else {
            return Err(Error::State(
                "the model must be compiled before training or evaluating: call model.compile(optimizer, loss, metrics)".into(),
            ));
        };
        let loss = compiled.loss;
        if !self.is_built() {
            self.build_for(x.shape().get(1..).unwrap_or(&[]))?;
        }
        self.check_inputs(x)?;
        if y.rows() != x.rows() {
            return Err(Error::Shape(format!("x has {} samples but y has {}; they must match", x.rows(), y.rows())));
        }
        let net = self.network()?;
        let width = net.output_width();
        let want = net.output_len() / width * loss.target_width(width);
        if y.row_len() != want || y.shape().is_empty() {
            let hint = match loss {
                Loss::CategoricalCrossentropy if y.row_len() == 1 => {
                    ": the targets look like class indices; one-hot encode them with to_categorical or use sparse_categorical_crossentropy"
                }
                Loss::SparseCategoricalCrossentropy => {
                    ": sparse_categorical_crossentropy takes one integer class per sample"
                }
                _ => "",
            };
            return Err(Error::Shape(format!(
                "targets have shape {:?} but the model's output {} with {loss} needs {want} value(s) per sample{hint}",
                y.shape(),
                shape_str(&net.shapes[net.shapes.len() - 1])
            )));
        }
        if loss == Loss::SparseCategoricalCrossentropy {
            for i in 0..y.len() {
                let v = y.get(i).unwrap_or(0.0);
                if !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < width) {
                    return Err(Error::InvalidArgument(format!(
                        "target {i} is {v}, but sparse_categorical_crossentropy needs integer classes in 0..{width}"
                    )));
                }
            }
        }
        if let Some(v) = y.as_f32().and_then(|v| v.iter().position(|t| !t.is_finite())) {
            return Err(Error::InvalidArgument(format!(
                "target value {v} is not finite (NaN or inf); clean the targets"
            )));
        }
        Ok(y.row_len())
    }

    fn check_inputs<X: Samples + ?Sized>(&self, x: &X) -> Result<()> {
        let expected = &self.network()?.shapes[0];
        if x.shape().get(1..) != Some(expected.as_slice()) {
            let mut want: Vec<String> = vec!["-1".into()];
            want.extend(expected.iter().map(usize::to_string));
            return Err(Error::Shape(format!(
                "input has shape {:?} but the model expects {}; reshape it, e.g. x.reshape(&[{}])",
                x.shape(),
                shape_str(expected),
                want.join(", ")
            )));
        }
        if let Some(i) = x.values().and_then(|v| v.iter().position(|t| !t.is_finite())) {
            return Err(Error::InvalidArgument(format!(
                "input value {i} is not finite (NaN or inf); clean the inputs"
            )));
        }
        Ok(())
    }
}

/// [`Loss::compute`] with each sample's loss and gradient scaled by its
/// class's weight: returns sum_i w_i * loss_i (summed over the sample's rows),
/// and the gradient of that divided by the batch size, as Keras weighs samples.
#[allow(clippy::too_many_arguments)] // the arguments of Loss::compute, plus weights and n
fn weighted_loss(
    loss: Loss,
    weights: &BTreeMap<usize, f32>,
    out: &[f32],
    targets: &[f32],
    delta: &mut [f32],
    width: usize,
    from_logits: bool,
    n: usize,
) -> f64 {
    let (out_len, target_len) = (out.len() / n, targets.len() / n);
    let mut total = 0.0;
    for ((o, t), d) in out.chunks(out_len).zip(targets.chunks(target_len)).zip(delta.chunks_mut(out_len)) {
        let class = match t {
            [label] if width == 1 => (*label >= 0.5) as usize,
            [label] => *label as usize,
            one_hot => crate::utils::argmax_row(one_hot),
        };
        let w = weights.get(&class).copied().unwrap_or(1.0);
        // compute() scales d by 1/rows of this sample; the batch mean needs 1/n more.
        total += w as f64 * loss.compute(o, t, d, width, from_logits);
        let scale = w / n as f32;
        d.iter_mut().for_each(|g| *g *= scale);
    }
    total
}
