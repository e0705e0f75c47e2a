//! fit, evaluate and predict: batches gathered from the data (bytes become
//! floats here, a batch at a time) into buffers allocated once.

use super::functional::Model;
use super::history::{EpochLog, Evaluation, History, Logs};
use super::progress::{Progress, Verbosity};
use super::summary::shape_str;
use crate::activations::Activation;
use crate::callbacks::{Callback, Control, FitParams};
use crate::device::ForEachTask;
use crate::distributed::{self, Communicator};
use crate::error::{Error, Result};
use crate::kernels::activation;
use crate::layers::Mode;
use crate::losses::{Loss, LossConfig};
use crate::random::{self, BatchDraws, streams};
use crate::tensor::{Samples, Tensor};
use rand::seq::SliceRandom;
use rayon::iter::Either;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of [`Model::fit`], with Keras' defaults.
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
    /// Each output row's loss, added in order after ([`LossRows`]).
    row_losses: Vec<f64>,
    metric_sums: Vec<f64>,
    /// [loss, metric sums...] of a batch, to sum over ranks.
    batch_sums: Vec<f64>,
}

impl Model {
    /// Trains the model, as `model.fit(x, y, ...)`; returns the History of this call.
    ///
    /// `x`: (N, input shape), f32 or scaled bytes; `y`: (N, outputs) targets,
    /// or (N,) / (N, 1) class indices for the sparse loss.
    pub fn fit<X: Samples + ?Sized>(&mut self, x: &X, y: &Tensor, options: &FitOptions) -> Result<History> {
        self.fit_with_callbacks(x, y, options, &mut [])
    }

    /// [`Model::fit`] calling `callbacks` at the start and end of training,
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
        let comm = self.group();
        let (rank, ranks) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.size()));
        let mut seed = options.seed.unwrap_or(self.seed);
        if let Some(comm) = &comm {
            seed = self.synchronise(comm.as_ref(), n, options, seed)?;
        }
        let synced: Vec<bool> = self.nodes.iter_mut().map(|node| node.layer.set_group(comm.clone())).collect();
        let verbose = if rank == 0 { options.verbose } else { Verbosity::Silent };
        let capacity = options.batch_size.min(n_train).div_ceil(ranks);
        let mut scratch = self.scratch(capacity, target_len)?;
        let mut order: Vec<usize> = Vec::with_capacity(n_train);
        let steps = n_train.div_ceil(options.batch_size);
        let mut history = History::default();
        let params = FitParams {
            epochs: options.epochs,
            initial_epoch: options.initial_epoch,
            steps,
            batch_size: options.batch_size,
            samples: n_train,
        };
        for cb in callbacks.iter_mut() {
            cb.set_params(&params);
            cb.on_train_begin(self)?;
        }
        // What the optimizer updates and which weights carry a penalty (fixed during fit).
        let trainable = self.trainable_ranges();
        let regularized = self.regularized()?;
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
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(self, epoch)?;
            }
            let mut progress = Progress::start(verbose, epoch, options.epochs, steps);
            let (mut loss_sum, mut seen) = (0.0f64, 0usize);
            let mut metric_sums = vec![0.0f64; scratch.metric_sums.len()];
            let batches: Vec<&[usize]> = order.chunks(options.batch_size).collect();
            // The pool stays warm from batch to batch (through the callbacks
            // between them, which a held thread waits out, idle, for at most
            // a fraction of a millisecond); each batch holds it again.
            let epoch_warm = crate::device::current().stay_warm();
            for (step, batch) in batches.iter().enumerate() {
                // This rank's part of the global batch, and where it starts in the epoch.
                let part = distributed::shard(batch.len(), rank, ranks);
                if let Some(next) = batches.get(step + 1) {
                    x.prefetch(&next[distributed::shard(next.len(), rank, ranks)]);
                }
                let first = (step * options.batch_size + part.start) as u64;
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    let stream = streams::DROPOUT + i as u64;
                    node.layer.set_draws(BatchDraws::for_epoch(self.seed, stream, global_epoch, first));
                }
                let weights = options.class_weight.as_ref();
                let local = &batch[part];
                if local.is_empty() && synced.contains(&true) {
                    // This rank's share is empty, but layers with batch statistics join their collectives.
                    self.net.as_mut().expect("prepared models are built").empty_pass(&mut self.nodes, &synced);
                    collective_errors(&mut self.nodes)?;
                }
                let warm = crate::device::current().stay_warm();
                let mut loss = self.run_batch(x, y, local, batch.len(), Mode::Train, &mut scratch, weights)?;
                if let Some(comm) = &comm {
                    loss = self.all_reduce_step(comm.as_ref(), loss, &mut scratch)?;
                }
                // Weight penalties count once per batch, after the ranks' gradients are summed.
                loss += self.regularize(&regularized, true) * batch.len() as f64;
                self.apply_gradients(loss, &trainable);
                drop(warm);
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
                for (total, sum) in metric_sums.iter_mut().zip(&scratch.metric_sums) {
                    *total += sum;
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
            drop(epoch_warm);
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
        let batch = self.inference_batch(x.rows());
        let mut scratch = self.scratch(batch, target_len)?;
        let all: Vec<usize> = (0..x.rows()).collect();
        self.evaluate_indices(x, y, &all, batch, &mut scratch)
    }

    /// Output probabilities for `x`: (N, output shape), as `model.predict(x)`.
    pub fn predict<X: Samples + ?Sized>(&mut self, x: &X) -> Result<Tensor> {
        if !self.is_built() {
            self.build_for(x.shape().get(1..).unwrap_or(&[]))?;
        }
        self.check_inputs(x)?;
        let batch = self.inference_batch(x.rows());
        let net = self.net.as_mut().expect("built above");
        net.ensure_capacity(&mut self.nodes, batch, false)?;
        let (in_len, out_len, width) = (net.sample_len(0), net.output_len(), net.output_width());
        let head = self.compiled.as_ref().and_then(|c| c.head);
        let mut out = vec![0.0f32; x.rows() * out_len];
        let indices: Vec<usize> = (0..x.rows()).collect();
        let chunks: Vec<&[usize]> = indices.chunks(batch).collect();
        // Warm from batch to batch, and again within each (see `fit`).
        let _all_warm = crate::device::current().stay_warm();
        for (k, (chunk, dst)) in chunks.iter().zip(out.chunks_mut(batch * out_len)).enumerate() {
            let n = chunk.len();
            if let Some(next) = chunks.get(k + 1) {
                x.prefetch(next);
            }
            let _warm = crate::device::current().stay_warm();
            x.gather(chunk, &mut net.input_mut()[..n * in_len])?;
            net.forward(&mut self.nodes, n, Mode::Infer);
            dst.copy_from_slice(&net.output_and_delta().0[..n * out_len]);
            if let Some(head) = head {
                activation::forward(head, dst, None, width);
            }
        }
        let mut shape = vec![x.rows()];
        shape.extend_from_slice(&net.shapes[net.shapes.len() - 1]);
        Tensor::from_vec(&shape, out)
    }

    /// Probabilities of each class for `x` (N, classes), for a classifier:
    /// [`Model::predict`], with the loss's activation applied to logits
    /// (`from_logits`), and a single sigmoid output p turned into the two
    /// classes' [1 - p, p].
    pub fn class_probabilities<X: Samples + ?Sized>(&mut self, x: &X) -> Result<Tensor> {
        let out = self.predict(x)?;
        let width = out.row_len().max(1);
        let mut values = out.to_f32_vec();
        if let Some(act) = self.compiled.as_ref().and_then(|c| c.loss.logits_activation()) {
            activation::forward(act, &mut values, None, width);
        }
        if width != 1 {
            return Tensor::from_vec(&[x.rows(), width], values);
        }
        let pairs = values.iter().flat_map(|&p| [1.0 - p, p]).collect();
        Tensor::from_vec(&[x.rows(), 2], pairs)
    }

    /// The batch evaluate and predict run `rows` samples in: the buffers'
    /// capacity when they have one, else up to 128 (no more than there are samples).
    fn inference_batch(&self, rows: usize) -> usize {
        self.net.as_ref().map_or(0, |n| n.capacity).max(DEFAULT_INFERENCE_BATCH.min(rows.max(1)))
    }

    fn scratch(&mut self, batch: usize, target_len: usize) -> Result<BatchScratch> {
        let net = self.net.as_mut().expect("prepared models are built");
        net.ensure_capacity(&mut self.nodes, batch, true)?;
        let width = net.output_width();
        let metrics = self.compiled.as_ref().map_or(0, |c| c.metrics.iter().map(|m| m.state_len(width)).sum());
        Ok(BatchScratch {
            targets: vec![0.0; batch * target_len],
            probs: vec![0.0; batch * net.output_len()],
            row_losses: vec![0.0; batch * net.output_len() / width.max(1)],
            metric_sums: vec![0.0; metrics],
            batch_sums: vec![0.0; 1 + metrics],
        })
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
        // [loss, metrics...] summed over this rank's share of the samples, then over ranks.
        let mut sums = vec![0.0; 1 + scratch.metric_sums.len()];
        let comm = self.group();
        let mine = comm.as_ref().map_or(0..indices.len(), |c| distributed::shard(indices.len(), c.rank(), c.size()));
        let chunks: Vec<&[usize]> = indices[mine].chunks(batch).collect();
        // Warm from batch to batch, and again within each (see `fit`).
        let _all_warm = crate::device::current().stay_warm();
        for (k, chunk) in chunks.iter().enumerate() {
            if let Some(next) = chunks.get(k + 1) {
                x.prefetch(next);
            }
            let _warm = crate::device::current().stay_warm();
            sums[0] += self.run_batch(x, y, chunk, chunk.len(), Mode::Infer, scratch, None)?;
            for (total, part) in sums[1..].iter_mut().zip(&scratch.metric_sums) {
                *total += part;
            }
        }
        if let Some(comm) = &comm {
            comm.all_reduce_sum_f64(&mut sums)?;
        }
        let regularized = self.regularized()?;
        sums[0] += self.regularize(&regularized, false) * indices.len() as f64;
        let logs = self.logs(sums[0], &sums[1..], indices.len());
        let loss = logs["loss"];
        Ok(Evaluation { loss, metrics: logs.into_iter().filter(|(k, _)| k != "loss").collect() })
    }

    fn logs(&self, loss_sum: f64, metric_sums: &[f64], seen: usize) -> Logs {
        let seen = seen.max(1) as f64;
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen);
        if let (Some(c), Some(net)) = (&self.compiled, &self.net) {
            let width = net.output_width();
            let mut state = metric_sums;
            for m in &c.metrics {
                let (mine, rest) = state.split_at(m.state_len(width));
                for (name, value) in m.names(width).into_iter().zip(m.results(mine, seen, width)) {
                    logs.insert(name, value);
                }
                state = rest;
            }
        }
        logs
    }

    /// One batch (or this rank's part of a global batch of `batch_total`
    /// samples): gather, forward, loss and metrics; in training also backward,
    /// gradients as d(loss sum / batch_total). Returns the summed per-sample
    /// loss; metric sums go to `scratch.metric_sums`.
    #[allow(clippy::too_many_arguments)] // the batch, its context, and the class weights
    fn run_batch<X: Samples + ?Sized>(
        &mut self,
        x: &X,
        y: &Tensor,
        indices: &[usize],
        batch_total: usize,
        mode: Mode,
        scratch: &mut BatchScratch,
        class_weight: Option<&BTreeMap<usize, f32>>,
    ) -> Result<f64> {
        let compiled = self.compiled.as_mut().expect("prepared models are compiled");
        let net = self.net.as_mut().expect("prepared models are built");
        let n = indices.len();
        // Layers with batch statistics may sum them over a group's ranks: in
        // training every rank then runs the whole pass.
        let grouped = self.communicator.as_ref().is_some_and(|c| c.size() > 1) && mode == Mode::Train;
        if n == 0 {
            // A rank whose share of a small last batch is empty adds nothing.
            net.grads.fill(0.0);
            scratch.metric_sums.fill(0.0);
            return Ok(0.0);
        }
        let (in_len, out_len, width) = (net.sample_len(0), net.output_len(), net.output_width());
        let rows_per_sample = (out_len / width) as f64;
        let target_len = y.row_len();
        x.gather(indices, &mut net.input_mut()[..n * in_len])?;
        y.gather_rows(indices, &mut scratch.targets[..n * target_len]);
        net.forward(&mut self.nodes, n, mode);
        let (out, delta) = net.output_and_delta();
        let out = &out[..n * out_len];
        let targets = &scratch.targets[..n * target_len];
        let from_logits = compiled.head.is_some();
        let delta = &mut delta[..n * out_len];
        let mean_rows = batch_total * (out_len / width);
        let head = compiled.head.or(compiled.loss.logits_activation());
        let probs = &mut scratch.probs[..n * out_len];
        // By tasks of rows, the probabilities with the loss, where the loss sums by rows.
        let by_rows = class_weight.is_none() && compiled.loss.sums_by_rows();
        let loss = match class_weight {
            _ if by_rows => {
                let row_losses = &mut scratch.row_losses[..n * out_len / width];
                let rows = LossRows { out, targets, width, fused: from_logits, mean_rows };
                rows.compute(compiled.loss, delta, head.map(|act| (act, &mut *probs)), row_losses)
            }
            None => compiled.loss.compute_over(out, targets, delta, width, from_logits, mean_rows),
            Some(weights) => {
                let batch = (n, batch_total);
                weighted_loss(compiled.loss, weights, out, targets, delta, width, from_logits, batch)
            }
        };
        let probs = match head {
            Some(_) if by_rows => &*probs,
            Some(head) => {
                probs.copy_from_slice(out);
                activation::forward(head, probs, None, width);
                &*probs
            }
            None => out,
        };
        // Each metric's sums over this batch (per sample: averaged over its rows).
        let sparse = width > 1 && compiled.loss.target_width(width) == 1;
        scratch.metric_sums.fill(0.0);
        let mut state = &mut scratch.metric_sums[..];
        for metric in &compiled.metrics {
            let (mine, rest) = state.split_at_mut(metric.state_len(width));
            metric.resolve(compiled.loss.loss, width).update(probs, targets, width, sparse, mine);
            mine.iter_mut().for_each(|v| *v /= rows_per_sample);
            state = rest;
        }
        let loss = loss / rows_per_sample;
        if mode == Mode::Train && (loss.is_finite() || grouped) {
            net.backward(&mut self.nodes, n);
        }
        if grouped {
            collective_errors(&mut self.nodes)?;
        }
        Ok(loss)
    }

    /// The optimizer step after a training batch over the `trainable` ranges,
    /// skipped when its loss is not finite.
    fn apply_gradients(&mut self, loss: f64, trainable: &[std::ops::Range<usize>]) {
        if loss.is_finite() {
            let compiled = self.compiled.as_mut().expect("training models are compiled");
            let net = self.net.as_mut().expect("training models are built");
            let (params, grads) = net.params_mut_with_grads();
            compiled.optimizer.step_ranges(params, grads, trainable);
        }
    }

    /// The parameter ranges with an L2 penalty, and their factors.
    fn regularized(&self) -> Result<Vec<(std::ops::Range<usize>, f32)>> {
        Ok(self.weights()?.into_iter().filter(|w| w.l2 > 0.0 && !w.state).map(|w| (w.range, w.l2)).collect())
    }

    /// The weight penalties sum(l2 * w^2) of `regularized` (ranges of the
    /// parameters and their factors), as Keras adds them to the loss; with
    /// `gradients`, also adds their gradient 2 * l2 * w.
    fn regularize(&mut self, regularized: &[(std::ops::Range<usize>, f32)], gradients: bool) -> f64 {
        let Some(net) = self.net.as_mut() else { return 0.0 };
        let mut penalty = 0.0f64;
        let (params, grads) = net.params_with_grads_mut();
        for (range, l2) in regularized {
            let (w, g) = (&params[range.clone()], &mut grads[range.clone()]);
            penalty += *l2 as f64 * w.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
            if gradients {
                for (g, &w) in g.iter_mut().zip(w) {
                    *g += 2.0 * l2 * w;
                }
            }
        }
        penalty
    }

    /// The model's communicator when it has more than one rank.
    fn group(&self) -> Option<Arc<dyn Communicator>> {
        self.communicator.clone().filter(|c| c.size() > 1)
    }

    /// Before training on several ranks: the same data sizes and model
    /// everywhere, and rank 0's weights, optimizer state and seeds on every
    /// rank; returns rank 0's `shuffle_seed`.
    fn synchronise(
        &mut self,
        comm: &dyn Communicator,
        n: usize,
        options: &FitOptions,
        shuffle_seed: u64,
    ) -> Result<u64> {
        let net = self.net.as_mut().expect("prepared models are built");
        let validation = options.validation_data.as_ref().map_or(0, |(x, _)| x.rows());
        let sizes =
            [n as f64, validation as f64, net.params().len() as f64, net.state.len() as f64, options.batch_size as f64];
        distributed::check_same(comm, "(samples, validation samples, parameters, state, batch size)", &sizes)?;
        comm.broadcast(net.params_mut())?;
        comm.broadcast(&mut net.state)?;
        if let Some(compiled) = self.compiled.as_mut() {
            for (_, slot) in compiled.optimizer.slots_mut() {
                comm.broadcast(slot)?;
            }
        }
        self.seed = distributed::broadcast_u64(comm, self.seed)?;
        distributed::broadcast_u64(comm, shuffle_seed)
    }

    /// Sums the ranks' gradients (one all-reduce over the flat buffer), and
    /// their losses and metric sums; returns the batch's total loss.
    fn all_reduce_step(&mut self, comm: &dyn Communicator, loss: f64, scratch: &mut BatchScratch) -> Result<f64> {
        let net = self.net.as_mut().expect("training models are built");
        comm.all_reduce_sum(&mut net.grads)?;
        let sums = &mut scratch.batch_sums;
        sums[0] = loss;
        sums[1..].copy_from_slice(&scratch.metric_sums);
        comm.all_reduce_sum_f64(sums)?;
        scratch.metric_sums.copy_from_slice(&sums[1..]);
        Ok(sums[0])
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
            let hint = match loss.loss {
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
        if loss.loss == Loss::SparseCategoricalCrossentropy {
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

/// The first failure of a collective a layer made in the last pass.
fn collective_errors(nodes: &mut [super::functional::Node]) -> Result<()> {
    match nodes.iter_mut().find_map(|n| n.layer.take_error()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Output rows per task of [`LossRows::compute`] (a fixed split: the same
/// tasks on any number of threads, though here none changes a result).
const LOSS_ROWS_PER_TASK: usize = 32;

/// A batch's outputs and targets, for a loss that sums by rows
/// ([`LossConfig::sums_by_rows`]).
struct LossRows<'a> {
    out: &'a [f32],
    targets: &'a [f32],
    width: usize,
    fused: bool,
    mean_rows: usize,
}

impl LossRows<'_> {
    /// The loss of every row of `out` (rows of `width`) against `targets`,
    /// its gradient into `delta` and, for a head activation, the
    /// probabilities into its buffer: by tasks of rows over the threads,
    /// each row's loss kept in `row_losses` and the rows' losses added in
    /// order after (the sum, bit for bit, that one pass over the rows makes).
    fn compute(
        &self,
        loss: LossConfig,
        delta: &mut [f32],
        probs: Option<(Activation, &mut [f32])>,
        row_losses: &mut [f64],
    ) -> f64 {
        let LossRows { out, targets, width, fused, mean_rows } = *self;
        let target_width = targets.len() / row_losses.len().max(1);
        let per_task = LOSS_ROWS_PER_TASK * width;
        let (head, probs) = match probs {
            Some((head, probs)) => (Some(head), Either::Left(probs.par_chunks_mut(per_task).map(Some))),
            None => (None, Either::Right((0..out.len().div_ceil(per_task)).into_par_iter().map(|_| None))),
        };
        out.par_chunks(per_task)
            .zip(targets.par_chunks(LOSS_ROWS_PER_TASK * target_width))
            .zip(delta.par_chunks_mut(per_task))
            .zip(row_losses.par_chunks_mut(LOSS_ROWS_PER_TASK))
            .zip(probs)
            .for_each_task(|((((o, t), d), l), p)| {
                let rows = o.chunks_exact(width).zip(t.chunks_exact(target_width)).zip(d.chunks_exact_mut(width));
                for (((o, t), d), l) in rows.zip(l) {
                    *l = loss.compute_over(o, t, d, width, fused, mean_rows);
                }
                if let (Some(head), Some(p)) = (head, p) {
                    p.copy_from_slice(o);
                    activation::forward(head, p, None, width);
                }
            });
        row_losses.iter().fold(0.0, |sum, l| sum + l)
    }
}

/// [`Loss::compute`] with each sample's loss and gradient scaled by its
/// class's weight: returns sum_i w_i * loss_i (summed over the sample's rows),
/// and the gradient of that divided by the batch size, as Keras weighs samples.
/// `batch`: (samples in `out`, samples in the whole batch).
#[allow(clippy::too_many_arguments)] // the arguments of Loss::compute, plus weights and batch
fn weighted_loss(
    loss: LossConfig,
    weights: &BTreeMap<usize, f32>,
    out: &[f32],
    targets: &[f32],
    delta: &mut [f32],
    width: usize,
    from_logits: bool,
    (n, batch_total): (usize, usize),
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
        let scale = w / batch_total as f32;
        d.iter_mut().for_each(|g| *g *= scale);
    }
    total
}
