//! The built form of a model: shapes, the flat parameter, gradient and state
//! buffers, and the activation buffers, allocated once per batch capacity;
//! and the executor that runs the graph's nodes forward and backward.
//!
//! Value v is the model's input (v = 0) or node v - 1's output. Nodes are in
//! topological order, so a node's inputs are always lower values than its
//! output. Not every value needs a buffer of its own: a reshaping node
//! (Flatten) whose input feeds nothing else only renames it, and a max-pooling
//! computed by the layer before it (its only consumer) makes that layer's own
//! output transient. These are the graph's fusion passes; both apply only
//! where a value has one consumer. At inference two more apply: a
//! convolution whose only consumer is a BatchNormalization applies that
//! layer's map (and activation) as it writes, into the normalisation's buffer,
//! and the normalisation is skipped (`infer_steps`), as is a two-input Add
//! after it whose other input is ready by then, which the convolution adds
//! as it writes too (a residual block); and a convolution whose
//! input is a ZeroPadding2D's output, read by nothing else, reads that layer's
//! input and pads it itself, and the padding is skipped; a layer that
//! passes its input on unchanged at inference (Dropout) is skipped there, its
//! output taking its input's buffer. In training a
//! BatchNormalization whose only consumer is a two-input Add runs at the
//! Add's turn and writes the Add's output, the sum and its activation
//! applied as it writes (`train_steps`); its own output is never written
//! (its backward pass reads only its input), and the Add runs backward only.
//!
//! At inference a value is dead once the last node reading it has run, and
//! its buffer serves a later value (`inference_buffers`): the few buffers in
//! use are written again and again while they are still in cache, where
//! training keeps every value for the backward pass (a batch-1 ResNet-50
//! would otherwise write each output into memory no pass had touched since
//! the previous image).
//!
//! Gradients: a layer writes dL/dx; where a value feeds several nodes, the
//! first of them (in backward order) writes straight into the value's
//! gradient buffer and the others write into a scratch buffer that is then
//! added to it, in a fixed order.
//!
//! Gradient buffers are shared: dL/dv is needed only from the backward pass
//! of v's last consumer (the first to write it) to that of v's producer (the
//! last to read it), so a chain of layers needs two gradient buffers however
//! deep it is, and a residual block one or two more. `gradient_slots` assigns
//! them once per graph by walking the backward pass.

use super::functional::Node;
use crate::activations::Activation;
use crate::device::Buffer;
use crate::layers::{Backward, Mode};
use smallvec::SmallVec;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a layer's backward pass gets: dL/dy, where dL/dx goes (none for the
/// model's input), and whether it is added to what that holds.
type GradientPass<'a> = dyn FnMut(&mut [f32], Option<&mut [f32]>, bool) + 'a;

/// A node's input values (most nodes have one, merges two).
pub(crate) type Inputs = SmallVec<[usize; 2]>;

pub(crate) struct Network {
    /// `shapes[v]`: the per-sample shape of value v.
    pub shapes: Vec<Vec<usize>>,
    /// Node k's trainable weights are `params[ranges[k]]`, its state `state[state_ranges[k]]`.
    pub ranges: Vec<Range<usize>>,
    pub state_ranges: Vec<Range<usize>>,
    /// Read through [`Network::params`]; written only through the accessors
    /// that renew `version`.
    params: Buffer,
    pub grads: Buffer,
    /// The weights' version: a number that no other weights in this process
    /// had, renewed on any access that may change them. Layers keep weights
    /// prepared for inference (packed, transformed) while it holds.
    version: u64,
    pub state: Vec<f32>,
    /// Largest batch the buffers hold, and the gradient buffers (0 before any training or evaluation).
    pub capacity: usize,
    gradient_capacity: usize,
    /// The value the model outputs.
    pub output: usize,
    /// Values, by buffer; see `storage`.
    acts: Vec<Buffer>,
    /// Gradients dL/d(values), by slot; see `slots`.
    deltas: Vec<Buffer>,
    /// `storage[v]`: the buffer holding value v; at inference `infer_storage[v]`
    /// (buffers of dead values serve later ones).
    storage: Vec<usize>,
    infer_storage: Vec<usize>,
    /// `slots[s]`: the gradient slot of value buffer s (none for the model's input).
    slots: Vec<Option<usize>>,
    /// Values per sample each gradient slot holds.
    slot_lens: Vec<usize>,
    /// What each node does in a pass (the backward pass; `train_steps` is the training forward pass).
    steps: Vec<Step>,
    /// What each node does in a training forward pass, where a layer applies
    /// the Add after it (`train_residuals`) at that one's turn and is skipped at its own.
    train_steps: Vec<Step>,
    /// `train_residuals[a]`: the node that runs at Add node a's turn in
    /// training, writing a's output, and a's other input value.
    train_residuals: Vec<Option<(usize, usize)>>,
    /// `moments[k]`: the node whose gathered output moments node k takes in training.
    moments: Vec<Option<usize>>,
    /// What each node does at inference, where convolutions apply the
    /// BatchNormalization after them (`folds`) and pad their own input
    /// (`infer_inputs`), and those layers are skipped.
    infer_steps: Vec<Step>,
    /// `folds[k]`: the node whose inference map node k applies.
    folds: Vec<Option<usize>>,
    /// `residuals[k]`: the Add after that map that node k applies too, and its other input value.
    residuals: Vec<Option<(usize, usize)>>,
    /// The scale and shift of a folded map.
    affine: Buffer,
    /// Node k's input values, and at inference (where a convolution reads
    /// the input of the ZeroPadding2D before it, which is skipped).
    inputs: Vec<Inputs>,
    infer_inputs: Vec<Inputs>,
    /// Gradients of a value's second and later consumers, before they are added.
    sum_scratch: Vec<f32>,
    /// Per buffer, during backward: whether its gradient has been written yet.
    written: Vec<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The layer runs and writes value `output` (its own, or that of the
    /// max-pooling it computes too).
    Run { output: usize },
    /// Nothing to do: a reshape, or a pooling computed by the layer before.
    Skip,
}

/// Buffer assignments for a graph: `pools[k]` = the node whose pooling node k
/// computes (its only consumer), `alias[k]` = node k only renames its input,
/// `folds[k]` = the node (its only consumer) whose inference map node k applies.
pub(crate) struct Fusion {
    pub pools: Vec<Option<usize>>,
    pub aliases: Vec<bool>,
    pub folds: Vec<Option<usize>>,
    /// `residuals[k]` = (a, r): the Add node a after node `folds[k]` that node k
    /// applies at inference too, adding value r (computed before node k).
    pub residuals: Vec<Option<(usize, usize)>>,
    /// `unpadded[k]`: the ZeroPadding2D node whose input convolution k reads at inference.
    pub unpadded: Vec<Option<usize>>,
    /// `train_residuals[a]` = (j, r): in training, node j (the Add node a's
    /// input, a's only) runs at a's turn and applies a as it writes, adding
    /// value r, a's other input ([`crate::layers::Layer::forward_residual`]).
    pub train_residuals: Vec<Option<(usize, usize)>>,
    /// `passed[k]`: node k passes its one input on unchanged at inference (skipped there).
    pub passed: Vec<bool>,
    /// `moments[k]` = j: in training node k takes its input's per-channel
    /// moments from node j, which gathers them as it writes that input
    /// ([`crate::layers::Layer::take_input_moments`]).
    pub moments: Vec<Option<usize>>,
}

/// A weights version never handed out before (see `Network::version`).
fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Network {
    /// The trainable weights, read-only.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The trainable weights, to change: layers' prepared weights no longer hold.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.version = next_version();
        &mut self.params
    }

    /// [`Network::params_mut`] and the weights' gradients, for an optimizer step.
    pub fn params_mut_with_grads(&mut self) -> (&mut [f32], &[f32]) {
        self.version = next_version();
        (&mut self.params, &self.grads)
    }

    /// The weights, read-only, and their gradients, to add to (a penalty's).
    pub fn params_with_grads_mut(&mut self) -> (&[f32], &mut [f32]) {
        (&self.params, &mut self.grads)
    }

    pub fn new(
        shapes: Vec<Vec<usize>>,
        (ranges, state_ranges): (Vec<Range<usize>>, Vec<Range<usize>>),
        (params, state): (Vec<f32>, Vec<f32>),
        nodes: &[Node],
        fusion: &Fusion,
    ) -> Self {
        let values = shapes.len();
        let mut storage: Vec<usize> = (0..values).collect();
        let mut steps = vec![Step::Skip; nodes.len()];
        let pooled: Vec<bool> = (0..nodes.len()).map(|k| fusion.pools.contains(&Some(k))).collect();
        for (k, node) in nodes.iter().enumerate() {
            if pooled[k] {
                continue; // computed by the layer before it
            }
            if fusion.aliases[k] {
                storage[k + 1] = storage[node.inputs[0]];
                continue;
            }
            // A layer that computes the pooling after it writes that node's output.
            let output = fusion.pools[k].map_or(k + 1, |pool| pool + 1);
            steps[k] = Step::Run { output };
        }
        // At inference a folding node writes what the node it folds in wrote.
        let mut infer_steps = steps.clone();
        for (k, fold) in fusion.folds.iter().enumerate() {
            if let (Some(j), Step::Run { .. }) = (*fold, steps[k]) {
                infer_steps[k] = steps[j];
                infer_steps[j] = Step::Skip;
                if let Some((a, _)) = fusion.residuals[k] {
                    infer_steps[k] = steps[a];
                    infer_steps[a] = Step::Skip;
                }
            }
        }
        // In training a layer that applies the Add after it runs at the Add's turn, not at its own.
        let mut train_steps = steps.clone();
        let mut train_residuals = fusion.train_residuals.clone();
        for (a, fused) in train_residuals.iter_mut().enumerate() {
            match (*fused, steps[a]) {
                (Some((j, _)), Step::Run { .. }) if steps[j] == (Step::Run { output: j + 1 }) => {
                    train_steps[j] = Step::Skip
                }
                _ => *fused = None,
            }
        }
        // At inference a convolution reads the input of the padding before it, which is skipped.
        let inputs: Vec<Inputs> = nodes.iter().map(|n| n.inputs.clone()).collect();
        let mut infer_inputs = inputs.clone();
        for (k, pad) in fusion.unpadded.iter().enumerate() {
            if let (Some(p), Step::Run { .. }) = (*pad, steps[k]) {
                infer_inputs[k] = inputs[p].clone();
                infer_steps[p] = Step::Skip;
            }
        }
        // At inference a layer that passes its input on unchanged is skipped, its
        // output (and whatever renames it) taking its input's buffer; not the model's output.
        let mut renamed: Vec<usize> = (0..values).collect();
        for (k, _) in fusion.passed.iter().enumerate().filter(|(_, passed)| **passed) {
            let b = storage[k + 1];
            if infer_steps[k] == (Step::Run { output: k + 1 }) && b != storage[values - 1] {
                renamed[b] = renamed[storage[infer_inputs[k][0]]];
                infer_steps[k] = Step::Skip;
            }
        }
        let infer_values: Vec<usize> = storage.iter().map(|&b| renamed[b]).collect();
        let (folds, residuals) = (fusion.folds.clone(), fusion.residuals.clone());
        // What each node reads at inference: its inputs, and a folded Add's other input.
        let infer_reads: Vec<Inputs> = (0..nodes.len())
            .map(|k| {
                let mut reads = infer_inputs[k].clone();
                if let (Some(_), Some((_, r)), Step::Run { .. }) = (folds[k], residuals[k], infer_steps[k]) {
                    reads.push(r);
                }
                reads
            })
            .collect();
        let affine_len = folds.iter().flatten().filter_map(|&j| nodes[j].layer.affine_channels()).max().unwrap_or(0);
        let (params, grads) = (Buffer::from(&params[..]), Buffer::zeros(params.len()));
        let sample_lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let (slots, slot_lens) = gradient_slots(&storage, &steps, &inputs, &sample_lens);
        let infer_storage = inference_buffers(&infer_values, &infer_steps, &infer_reads, &sample_lens, values - 1);
        let (acts, deltas) = (vec![Buffer::default(); values], vec![Buffer::default(); slot_lens.len()]);
        Network {
            shapes,
            ranges,
            state_ranges,
            params,
            version: next_version(),
            grads,
            state,
            capacity: 0,
            gradient_capacity: 0,
            output: values - 1,
            acts,
            deltas,
            storage,
            infer_storage,
            slots,
            slot_lens,
            steps,
            train_steps,
            train_residuals,
            moments: fusion.moments.clone(),
            infer_steps,
            folds,
            residuals,
            // Scale, then shift, each from a cache line.
            affine: Buffer::zeros(2 * affine_len.next_multiple_of(16)),
            inputs,
            infer_inputs,
            sum_scratch: Vec::new(),
            written: vec![false; values],
        }
    }

    /// train_residuals: for each Add node, the node that applies it in training, if any.
    #[cfg(test)]
    pub(crate) fn train_residuals(&self) -> &[Option<(usize, usize)>] {
        &self.train_residuals
    }

    /// Values per sample of value v.
    pub fn sample_len(&self, v: usize) -> usize {
        self.shapes[v].iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.sample_len(self.output)
    }

    /// Width of the output's last axis (classes).
    pub fn output_width(&self) -> usize {
        self.shapes[self.output].last().copied().unwrap_or(1)
    }

    /// The input batch buffer.
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.acts[0]
    }

    /// The model's output, and the buffer for dL/d(output).
    pub fn output_and_delta(&mut self) -> (&[f32], &mut [f32]) {
        let last = self.storage[self.output];
        let slot = self.slots[last].expect("the output has a gradient slot");
        (&self.acts[last], &mut self.deltas[slot])
    }

    /// Makes room for batches of up to `batch` samples (only ever grows),
    /// with gradient buffers when `gradients` (training and evaluating, whose
    /// loss writes one; `predict` needs none), after checking that it fits in memory.
    pub fn ensure_capacity(&mut self, nodes: &mut [Node], batch: usize, gradients: bool) -> crate::error::Result<()> {
        let grow_gradients = gradients && self.gradient_capacity < batch.max(self.capacity);
        if batch <= self.capacity && !grow_gradients {
            return Ok(());
        }
        let batch = batch.max(self.capacity);
        let with_gradients = gradients || self.gradient_capacity > 0;
        // A buffer is needed for the input and each running layer's output.
        let mut needed = vec![false; self.shapes.len()];
        needed[0] = true;
        for step in &self.steps {
            if let Step::Run { output } = *step {
                needed[output] = true;
            }
        }
        let values: usize = (0..self.shapes.len()).filter(|&v| needed[v]).map(|v| self.sample_len(v)).sum();
        let mut consumers = vec![0usize; self.shapes.len()];
        for inputs in &self.inputs {
            for &v in inputs {
                consumers[self.storage[v]] += 1;
            }
        }
        let shared =
            (1..self.shapes.len()).filter(|&s| needed[s] && consumers[s] > 1).map(|s| self.sample_len(s)).max();
        let gradients_len = self.slot_lens.iter().sum::<usize>() + shared.unwrap_or(0);
        // Values (and their gradients), f32.
        let per_sample = values + if with_gradients { gradients_len } else { 0 };
        let bytes = per_sample.saturating_mul(batch).saturating_mul(4);
        crate::utils::check_memory(
            bytes,
            || format!("the activations of a batch of {batch} ({per_sample} values per sample, with gradients)"),
            "use a smaller batch size (--batch-size) or smaller inputs or layers",
        )?;
        for (v, need) in needed.into_iter().enumerate() {
            let len = if need { batch * self.sample_len(v) } else { 0 };
            self.acts[v].resize(len, 0.0);
        }
        if with_gradients {
            for (delta, len) in self.deltas.iter_mut().zip(&self.slot_lens) {
                delta.resize(batch * len, 0.0);
            }
            self.sum_scratch.resize(batch * shared.unwrap_or(0), 0.0);
        }
        for node in nodes.iter_mut() {
            node.layer.allocate(batch);
        }
        self.capacity = batch;
        if with_gradients {
            self.gradient_capacity = batch;
        }
        Ok(())
    }

    /// `acts[input][..n]` -> `acts[output][..n]`
    pub fn forward(&mut self, nodes: &mut [Node], n: usize, mode: Mode) {
        let Network { shapes, acts, params, state, ranges, state_ranges, affine, folds, residuals, version, .. } = self;
        let version = Some(*version);
        let (steps, inputs, storage) = match mode {
            Mode::Infer => (&self.infer_steps, &self.infer_inputs, &self.infer_storage),
            Mode::Train => (&self.train_steps, &self.inputs, &self.storage),
        };
        for k in 0..nodes.len() {
            let Step::Run { output } = steps[k] else { continue };
            nodes[k].layer.set_weights_version(version);
            // The node that runs now takes its input's moments from the one that gathered them.
            let runs = self.train_residuals[k].map_or(k, |(j, _)| j);
            if let (Some(j), Mode::Train) = (self.moments[runs], mode) {
                let (before, rest) = nodes.split_at_mut(runs);
                if let Some(sums) = before[j].layer.output_moments() {
                    rest[0].layer.take_input_moments(sums);
                }
            }
            // The output's buffer, out of the list while the node reads the others.
            let mut y = std::mem::take(&mut acts[storage[output]]);
            if let (Some(j), Mode::Infer) = (folds[k], mode) {
                // Node j's map, applied by node k as it writes its output.
                let half = affine.len() / 2;
                let (scale, shift) = affine.split_at_mut(half);
                let c = nodes[j].layer.affine_channels().unwrap_or(0);
                let (scale, shift) = (&mut scale[..c], &mut shift[..c]);
                let state = &state[state_ranges[j].clone()];
                let mut act = nodes[j].layer.inference_affine(&params[ranges[j].clone()], state, scale, shift);
                // With the Add after the map: its other input, and its activation.
                let residual = residuals[k].map(|(a, r)| {
                    act = nodes[a].layer.residual_activation().unwrap_or(act);
                    acts[storage[r]].as_slice()
                });
                let x = &acts[storage[inputs[k][0]]];
                nodes[k].layer.forward_affine(&params[ranges[k].clone()], x, &mut y, n, (scale, shift, residual), act);
            } else if let (Some((j, r)), Mode::Train) = (self.train_residuals[k], mode) {
                // Node j, the Add's input, applies the Add (its other input r and its activation).
                let act = nodes[k].layer.residual_activation().unwrap_or(Activation::Linear);
                nodes[j].layer.set_weights_version(version);
                let len = n * shapes[r].iter().product::<usize>();
                let (x, residual) = (&acts[storage[inputs[j][0]]], &acts[storage[r]][..len]);
                let (params, state) = (&params[ranges[j].clone()], &mut state[state_ranges[j].clone()]);
                nodes[j].layer.forward_residual(params, state, x, (residual, act), &mut y, n, mode);
            } else if let [v] = inputs[k][..] {
                let (node, params) = (&mut nodes[k], &params[ranges[k].clone()]);
                node.layer.forward_stateful(
                    params,
                    &mut state[state_ranges[k].clone()],
                    &acts[storage[v]],
                    &mut y,
                    n,
                    mode,
                );
            } else {
                let (node, params) = (&mut nodes[k], &params[ranges[k].clone()]);
                let xs: SmallVec<[&[f32]; 4]> = inputs[k].iter().map(|&v| acts[storage[v]].as_slice()).collect();
                node.layer.forward_inputs(params, &xs, &mut y, n, mode);
            }
            acts[storage[output]] = y;
        }
    }

    /// The training passes of the `synced` nodes alone, on no samples: what a
    /// rank with an empty share of a batch runs so that layers summing batch
    /// statistics over the group's ranks still join every collective.
    pub fn empty_pass(&mut self, nodes: &mut [Node], synced: &[bool]) {
        let Network { params, grads, state, ranges, state_ranges, steps, train_steps, train_residuals, .. } = self;
        let runs = |k: usize| synced[k] && matches!(steps[k], Step::Run { .. });
        // In the forward pass's order: a layer applying the Add after it runs at the Add's turn.
        let forward_order = (0..nodes.len()).filter_map(|k| match (train_residuals[k], train_steps[k]) {
            (Some((j, _)), _) => Some(j),
            (None, Step::Run { .. }) => Some(k),
            (None, Step::Skip) => None,
        });
        for k in forward_order.filter(|&k| runs(k)) {
            let state = &mut state[state_ranges[k].clone()];
            nodes[k].layer.forward_stateful(&params[ranges[k].clone()], state, &[], &mut [], 0, Mode::Train);
        }
        for (k, node) in nodes.iter_mut().enumerate().rev().filter(|(k, _)| runs(*k)) {
            let range = ranges[k].clone();
            let (params, grads) = (&params[range.clone()], &mut grads[range]);
            node.layer.backward(Backward {
                params,
                x: &[],
                y: &[],
                dy: &mut [],
                dx: None,
                accumulate: false,
                grads,
                n: 0,
            });
        }
    }

    /// `deltas[output][..n]` -> grads (and the deltas of every hidden value on the way).
    pub fn backward(&mut self, nodes: &mut [Node], n: usize) {
        let Network {
            shapes,
            acts,
            deltas,
            grads,
            params,
            ranges,
            storage,
            slots,
            steps,
            inputs,
            sum_scratch,
            written,
            output,
            ..
        } = self;
        written.fill(false);
        written[storage[*output]] = true; // by the loss
        for (k, node) in nodes.iter_mut().enumerate().rev() {
            let Step::Run { output } = steps[k] else { continue };
            let o = storage[output];
            let out_slot = slots[o].expect("a layer's output has a gradient slot");
            if !written[o] {
                // Nothing reads this value: its gradient is zero.
                let len = n * shapes[output].iter().product::<usize>();
                deltas[out_slot][..len].fill(0.0);
            }
            if inputs[k].len() > 1 {
                node.layer.backward_activation(&acts[o], &mut deltas[out_slot], n);
            }
            let range = ranges[k].clone();
            // Where dL/d(input) goes: straight into its slot the first time;
            // after that added to it, by the layer where it can
            // (`accumulates`), else through the scratch buffer. `hand_over`:
            // the input's gradient is dy itself and dy is not read after it,
            // so the first time its buffer becomes the input's (no copy).
            let accumulates = node.layer.accumulates_input_gradient();
            let mut target = |v: usize, hand_over: bool, f: &mut GradientPass| {
                let s = storage[v];
                let Some(slot) = slots[s].filter(|_| s != 0) else {
                    return f(&mut deltas[out_slot], None, false); // the model's input needs no gradient
                };
                let first = !written[s];
                written[s] = true;
                if first && hand_over && deltas[slot].len() == deltas[out_slot].len() {
                    // dy is dead after this node: its slot takes the input slot's buffer instead.
                    return deltas.swap(out_slot, slot);
                }
                if first || accumulates {
                    let [dy, dx] =
                        deltas.get_disjoint_mut([out_slot, slot]).expect("live gradients have their own slots");
                    f(dy, Some(dx), !first);
                } else {
                    let len = n * shapes[v].iter().product::<usize>();
                    let scratch = &mut sum_scratch[..len];
                    f(&mut deltas[out_slot], Some(&mut *scratch), false);
                    crate::device::current().add_to(scratch, &mut deltas[slot], len);
                }
            };
            if let [v] = inputs[k][..] {
                let (params, grads) = (&params[range.clone()], &mut grads[range]);
                let (x, y) = (&acts[storage[v]], &acts[o]);
                target(v, false, &mut |dy, dx, accumulate| {
                    node.layer.backward(Backward { params, x, y, dy, dx, accumulate, grads: &mut *grads, n })
                });
            } else {
                let xs: SmallVec<[&[f32]; 4]> = inputs[k].iter().map(|&v| acts[storage[v]].as_slice()).collect();
                let (last, passes) = (inputs[k].len() - 1, node.layer.passes_gradient());
                for (j, &v) in inputs[k].iter().enumerate() {
                    target(v, passes && j == last, &mut |dy, dx, _| {
                        if let Some(dx) = dx {
                            node.layer.backward_input(j, &xs, dy, dx, n);
                        }
                    });
                }
            }
        }
    }
}

/// The buffers values take at inference: walking the nodes that run
/// (`steps`, reading `reads`), a node's output takes the buffer freed last
/// by a dead value that holds it (its last reader has run), else its own. A
/// buffer is handed on only once the value it was built for has died, so a
/// value's own buffer is always still free when it is written; the model's
/// input and output keep theirs (the caller writes and reads them). Returns
/// each value's buffer.
fn inference_buffers(
    storage: &[usize],
    steps: &[Step],
    reads: &[Inputs],
    sample_lens: &[usize],
    output: usize,
) -> Vec<usize> {
    let runs = |k: usize| matches!(steps[k], Step::Run { .. });
    // last[b]: the last node that reads the value in buffer b.
    let mut last = vec![None; storage.len()];
    for k in (0..steps.len()).filter(|&k| runs(k)) {
        for &v in &reads[k] {
            last[storage[v]] = Some(k);
        }
    }
    let kept = |b: usize| b == storage[0] || b == storage[output];
    // taken[b]: the buffer value-buffer b is written into; free: buffers of
    // dead values, the last freed last.
    let mut taken: Vec<usize> = (0..storage.len()).collect();
    let mut live = vec![false; storage.len()];
    let mut free: Vec<usize> = Vec::new();
    for k in 0..steps.len() {
        let Step::Run { output: o } = steps[k] else { continue };
        let b = storage[o];
        if !kept(b) {
            let fits = free.iter().rposition(|&f| sample_lens[f] >= sample_lens[b]);
            taken[b] = fits.map_or(b, |i| free.remove(i));
        }
        live[b] = true;
        let dead = reads[k].iter().map(|&v| storage[v]).chain(last[b].is_none().then_some(b));
        for d in dead {
            if live[d] && !kept(d) && last[d].is_none_or(|l| l == k) {
                live[d] = false;
                free.push(taken[d]);
            }
        }
    }
    storage.iter().map(|&b| taken[b]).collect()
}

/// Assigns gradient slots to value buffers by walking the backward pass:
/// the output's gradient (written by the loss) is live from the start, an
/// input's from the first layer (in backward order) that writes it, and a
/// value's slot is free again once the layer that produced it has run. A
/// value takes the smallest free slot that holds it, else grows the largest
/// free one, else opens a new one. Returns each buffer's slot and each
/// slot's values per sample.
fn gradient_slots(
    storage: &[usize],
    steps: &[Step],
    inputs: &[Inputs],
    sample_lens: &[usize],
) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut slots: Vec<Option<usize>> = vec![None; storage.len()];
    let mut lens: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut acquire = |s: usize, slots: &mut [Option<usize>], free: &mut Vec<usize>| {
        if slots[s].is_some() {
            return;
        }
        let need = sample_lens[s];
        let fits = free.iter().enumerate().filter(|&(_, &f)| lens[f] >= need).min_by_key(|&(_, &f)| lens[f]);
        let largest = free.iter().enumerate().max_by_key(|&(_, &f)| lens[f]);
        let slot = match fits.or(largest).map(|(i, _)| i) {
            Some(i) => free.swap_remove(i),
            None => {
                lens.push(0);
                lens.len() - 1
            }
        };
        lens[slot] = lens[slot].max(need);
        slots[s] = Some(slot);
    };
    acquire(storage[storage.len() - 1], &mut slots, &mut free);
    for (k, step) in steps.iter().enumerate().rev() {
        let Step::Run { output } = *step else { continue };
        let o = storage[output];
        acquire(o, &mut slots, &mut free); // a value nothing reads: zero
        for &v in &inputs[k] {
            if storage[v] != 0 {
                acquire(storage[v], &mut slots, &mut free);
            }
        }
        free.extend(slots[o]);
    }
    (slots, lens)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random graphs: value 0 is the input, node k reads one or two earlier
    /// values (the last node reads the one before it), some node outputs are
    /// fused away (Skip) or rename their input (share its buffer).
    fn random_graph(seed: u64, nodes: usize) -> (Vec<usize>, Vec<Step>, Vec<Inputs>, Vec<usize>) {
        let mut state = seed;
        let mut next = |m: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % m
        };
        let mut storage: Vec<usize> = vec![0];
        let (mut steps, mut inputs) = (Vec::new(), Vec::new());
        let lens: Vec<usize> = (0..=nodes).map(|_| 1 + next(5)).collect();
        for k in 0..nodes {
            let v = if k + 1 == nodes { k } else { next(k + 1) };
            let mut ins: Inputs = [v].into_iter().collect();
            if next(3) == 0 {
                ins.push(next(k + 1));
            }
            if ins.len() == 1 && next(6) == 0 && k + 1 < nodes {
                storage.push(storage[v]); // renames its input
                steps.push(Step::Skip);
            } else {
                storage.push(k + 1);
                steps.push(Step::Run { output: k + 1 });
            }
            inputs.push(ins);
        }
        (storage, steps, inputs, lens)
    }

    /// A chain of `n` nodes, each reading the value before it.
    fn chain(n: usize) -> (Vec<usize>, Vec<Step>, Vec<Inputs>) {
        let storage: Vec<usize> = (0..=n).collect();
        let steps: Vec<Step> = (0..n).map(|k| Step::Run { output: k + 1 }).collect();
        let inputs: Vec<Inputs> = (0..n).map(|k| [k].into_iter().collect()).collect();
        (storage, steps, inputs)
    }

    /// Asserts that no two buffers live at once (`live`: inclusive intervals)
    /// are given the same place (`place`: a buffer or a slot).
    fn assert_apart<T: PartialOrd + Copy, P: PartialEq + std::fmt::Debug>(
        live: &[Option<(T, T)>],
        place: impl Fn(usize) -> P,
        what: &str,
    ) {
        for a in 0..live.len() {
            for b in a + 1..live.len() {
                let (Some((a0, a1)), Some((b0, b1))) = (live[a], live[b]) else { continue };
                if a0 <= b1 && b0 <= a1 {
                    assert_ne!(place(a), place(b), "{what} of buffers {a} and {b}, live together");
                }
            }
        }
    }

    /// Whether two values live at once at inference never share a buffer, each
    /// buffer holds what it is given, and the input and output keep their
    /// own; returns the buffers in use.
    fn check_inference(storage: &[usize], steps: &[Step], reads: &[Inputs], lens: &[usize]) -> usize {
        let output = storage.len() - 1;
        let taken = inference_buffers(storage, steps, reads, lens, output);
        // Live intervals in nodes (the input from before the first), by value buffer.
        let mut live: Vec<Option<(isize, isize)>> = vec![None; storage.len()];
        live[storage[0]] = Some((-1, -1));
        for (k, step) in steps.iter().enumerate() {
            let Step::Run { output } = *step else { continue };
            live[storage[output]] = Some((k as isize, k as isize));
            for &v in &reads[k] {
                let (start, _) = live[storage[v]].expect("a value is written before it is read");
                live[storage[v]] = Some((start, k as isize));
            }
        }
        let end = steps.len() as isize;
        live[storage[output]] = live[storage[output]].map(|(s, _)| (s, end)); // read by the caller
        assert_apart(&live, |b| taken[b], "the inference buffers");
        for a in 0..storage.len() {
            if live[a].is_some() {
                assert!(lens[taken[a]] >= lens[a], "buffer {} too small for value buffer {a}", taken[a]);
            }
        }
        assert_eq!(taken[0], storage[0], "the input keeps its buffer");
        assert_eq!(taken[output], storage[output], "the output keeps its buffer");
        let mut used: Vec<usize> = (0..storage.len()).filter(|&b| live[b].is_some()).map(|b| taken[b]).collect();
        used.sort_unstable();
        used.dedup();
        used.len()
    }

    #[test]
    fn a_chain_runs_in_four_buffers_at_inference_however_deep() {
        // The input, the output, and two taking turns.
        let n = 30;
        let (storage, steps, reads) = chain(n);
        assert_eq!(check_inference(&storage, &steps, &reads, &vec![64; n + 1]), 4);
    }

    #[test]
    fn values_live_together_never_share_a_buffer_at_inference() {
        for seed in 0..200 {
            let (storage, steps, reads, lens) = random_graph(seed, 2 + (seed as usize % 25));
            check_inference(&storage, &steps, &reads, &lens);
        }
    }

    /// Whether two value buffers whose gradients are live at once never share a slot.
    fn check(storage: &[usize], steps: &[Step], inputs: &[Inputs], lens: &[usize]) -> usize {
        let (slots, slot_lens) = gradient_slots(storage, steps, inputs, lens);
        // Live intervals, in backward steps (step i = node len-1-i), by buffer.
        let count = steps.len();
        let mut live: Vec<Option<(usize, usize)>> = vec![None; storage.len()];
        live[storage[storage.len() - 1]] = Some((0, 0));
        for (i, k) in (0..count).rev().enumerate() {
            let Step::Run { output } = steps[k] else { continue };
            let o = storage[output];
            let start = live[o].map_or(i + 1, |(s, _)| s);
            live[o] = Some((start, i + 1));
            for &v in &inputs[k] {
                let s = storage[v];
                if s != 0 && live[s].is_none() {
                    live[s] = Some((i + 1, usize::MAX));
                }
            }
        }
        assert_apart(&live, |b| slots[b], "the gradient slots");
        for a in 0..storage.len() {
            if let Some(slot) = slots[a] {
                assert!(slot_lens[slot] >= lens[a], "slot {slot} too small for buffer {a}");
            }
        }
        slot_lens.len()
    }

    #[test]
    fn a_chain_needs_two_gradient_slots_however_deep() {
        let n = 30;
        let (storage, steps, inputs) = chain(n);
        let lens: Vec<usize> = (0..=n).map(|v| 100 - v).collect();
        assert_eq!(check(&storage, &steps, &inputs, &lens), 2);
    }

    #[test]
    fn residual_blocks_need_four_gradient_slots_however_many() {
        // x -> [conv, bn, relu, conv, bn, add(x), relu] repeated: 7 nodes per block.
        let blocks = 9;
        let (mut steps, mut inputs) = (Vec::new(), Vec::new());
        let mut x = 0;
        for _ in 0..blocks {
            let v = steps.len();
            for j in 0..7 {
                let ins: Inputs = match j {
                    0 => [x].into_iter().collect(),
                    5 => [v + 5, x].into_iter().collect(),
                    _ => [v + j].into_iter().collect(),
                };
                steps.push(Step::Run { output: v + j + 1 });
                inputs.push(ins);
            }
            x = v + 7;
        }
        let storage: Vec<usize> = (0..=steps.len()).collect();
        let lens = vec![64; storage.len()];
        assert!(check(&storage, &steps, &inputs, &lens) <= 4);
    }

    #[test]
    fn values_live_together_never_share_a_gradient_slot() {
        for seed in 0..200 {
            let (storage, steps, inputs, lens) = random_graph(seed, 2 + (seed as usize % 25));
            check(&storage, &steps, &inputs, &lens);
        }
    }
}
