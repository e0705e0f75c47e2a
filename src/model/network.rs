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
//! where a value has one consumer.
//!
//! Gradients: a layer writes dL/dx; where a value feeds several nodes, the
//! first of them (in backward order) writes straight into the value's
//! gradient buffer and the others write into a scratch buffer that is then
//! added to it, in a fixed order.

use super::functional::Node;
use crate::layers::{Backward, Mode};
use smallvec::SmallVec;
use std::ops::Range;

/// A node's input values (most nodes have one, merges two).
pub(crate) type Inputs = SmallVec<[usize; 2]>;

pub(crate) struct Network {
    /// shapes[v]: the per-sample shape of value v.
    pub shapes: Vec<Vec<usize>>,
    /// Node k's trainable weights are params[ranges[k]], its state state[state_ranges[k]].
    pub ranges: Vec<Range<usize>>,
    pub state_ranges: Vec<Range<usize>>,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub state: Vec<f32>,
    /// Largest batch the buffers hold, and the gradient buffers (0 before any training or evaluation).
    pub capacity: usize,
    gradient_capacity: usize,
    /// The value the model outputs.
    pub output: usize,
    /// Values and gradients dL/d(values), by buffer; see `storage`.
    acts: Vec<Vec<f32>>,
    deltas: Vec<Vec<f32>>,
    /// storage[v]: the buffer holding value v.
    storage: Vec<usize>,
    /// What each node does in a pass.
    steps: Vec<Step>,
    /// Node k's input values.
    inputs: Vec<Inputs>,
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

/// Buffer assignments for a graph: `pooled_by[k]` = the node whose pooling node k
/// computes (its only consumer), `alias[k]` = node k only renames its input.
pub(crate) struct Fusion {
    pub pools: Vec<Option<usize>>,
    pub aliases: Vec<bool>,
}

impl Network {
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
        let grads = vec![0.0; params.len()];
        let (acts, deltas) = (vec![Vec::new(); values], vec![Vec::new(); values]);
        let inputs = nodes.iter().map(|n| n.inputs.clone()).collect();
        Network {
            shapes,
            ranges,
            state_ranges,
            params,
            grads,
            state,
            capacity: 0,
            gradient_capacity: 0,
            output: values - 1,
            acts,
            deltas,
            storage,
            steps,
            inputs,
            sum_scratch: Vec::new(),
            written: vec![false; values],
        }
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
        (&self.acts[last], &mut self.deltas[last])
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
        let per_sample: usize = self
            .steps
            .iter()
            .filter_map(|s| match *s {
                Step::Run { output } => Some(self.sample_len(output)),
                Step::Skip => None,
            })
            .sum::<usize>()
            + self.sample_len(0);
        // Values (and their gradients), f32.
        let copies = if gradients || self.gradient_capacity > 0 { 8 } else { 4 };
        let bytes = per_sample.saturating_mul(batch).saturating_mul(copies);
        crate::utils::check_memory(
            bytes,
            || format!("the activations of a batch of {batch} ({per_sample} values per sample, and their gradients)"),
            "use a smaller batch size (--batch-size) or smaller inputs or layers",
        )?;
        // A buffer is needed for the input and each running layer's output.
        let mut needed = vec![false; self.shapes.len()];
        needed[0] = true;
        for step in &self.steps {
            if let Step::Run { output } = *step {
                needed[output] = true;
            }
        }
        let with_gradients = gradients || self.gradient_capacity > 0;
        let output = self.storage[self.output];
        let mut shared = 0;
        let mut consumers = vec![0usize; self.shapes.len()];
        for inputs in &self.inputs {
            for &v in inputs {
                consumers[self.storage[v]] += 1;
            }
        }
        for (v, need) in needed.into_iter().enumerate() {
            let len = if need { batch * self.sample_len(v) } else { 0 };
            self.acts[v].resize(len, 0.0);
            if with_gradients {
                // The input needs no gradient, unless no layer runs and it is the output.
                let delta_len = if v > 0 || v == output { len } else { 0 };
                self.deltas[v].resize(delta_len, 0.0);
                if consumers[v] > 1 && v > 0 {
                    shared = shared.max(len);
                }
            }
        }
        self.sum_scratch.resize(shared, 0.0);
        for node in nodes.iter_mut() {
            node.layer.allocate(batch);
        }
        self.capacity = batch;
        if with_gradients {
            self.gradient_capacity = batch;
        }
        Ok(())
    }

    /// acts[input][..n] -> acts[output][..n]
    pub fn forward(&mut self, nodes: &mut [Node], n: usize, mode: Mode) {
        let Network { acts, params, state, ranges, state_ranges, storage, steps, inputs, .. } = self;
        for (k, node) in nodes.iter_mut().enumerate() {
            let Step::Run { output } = steps[k] else { continue };
            // Inputs are stored at lower buffer indices than outputs.
            let (before, after) = acts.split_at_mut(storage[output]);
            let (params, y) = (&params[ranges[k].clone()], &mut after[0]);
            if let [v] = inputs[k][..] {
                let x = &before[storage[v]];
                node.layer.forward_stateful(params, &mut state[state_ranges[k].clone()], x, y, n, mode);
            } else {
                let xs: SmallVec<[&[f32]; 4]> = inputs[k].iter().map(|&v| before[storage[v]].as_slice()).collect();
                node.layer.forward_inputs(params, &xs, y, n, mode);
            }
        }
    }

    /// The training passes of the `synced` nodes alone, on no samples: what a
    /// rank with an empty share of a batch runs so that layers summing batch
    /// statistics over the group's ranks still join every collective.
    pub fn empty_pass(&mut self, nodes: &mut [Node], synced: &[bool]) {
        let Network { params, grads, state, ranges, state_ranges, steps, .. } = self;
        let runs = |k: usize| synced[k] && matches!(steps[k], Step::Run { .. });
        for (k, node) in nodes.iter_mut().enumerate().filter(|(k, _)| runs(*k)) {
            let state = &mut state[state_ranges[k].clone()];
            node.layer.forward_stateful(&params[ranges[k].clone()], state, &[], &mut [], 0, Mode::Train);
        }
        for (k, node) in nodes.iter_mut().enumerate().rev().filter(|(k, _)| runs(*k)) {
            let range = ranges[k].clone();
            let (params, grads) = (&params[range.clone()], &mut grads[range]);
            node.layer.backward(Backward { params, x: &[], y: &[], dy: &mut [], dx: None, grads, n: 0 });
        }
    }

    /// deltas[output][..n] -> grads (and the deltas of every hidden value on the way).
    pub fn backward(&mut self, nodes: &mut [Node], n: usize) {
        let Network {
            shapes, acts, deltas, grads, params, ranges, storage, steps, inputs, sum_scratch, written, ..
        } = self;
        written.fill(false);
        for (k, node) in nodes.iter_mut().enumerate().rev() {
            let Step::Run { output } = steps[k] else { continue };
            let o = storage[output];
            let (before, after) = deltas.split_at_mut(o);
            let dy = &mut after[0];
            let range = ranges[k].clone();
            // Where dL/d(input) goes: straight into its buffer the first time,
            // else into the scratch buffer, added afterwards.
            let mut target = |v: usize, f: &mut dyn FnMut(Option<&mut [f32]>)| {
                let s = storage[v];
                if s == 0 {
                    f(None); // the model's input needs no gradient
                } else if !written[s] {
                    written[s] = true;
                    f(Some(&mut before[s]));
                } else {
                    let len = n * shapes[v].iter().product::<usize>();
                    let scratch = &mut sum_scratch[..len];
                    f(Some(&mut *scratch));
                    crate::kernels::add_assign(&mut before[s][..len], scratch);
                }
            };
            if let [v] = inputs[k][..] {
                let (params, grads) = (&params[range.clone()], &mut grads[range]);
                let (x, y) = (&acts[storage[v]], &acts[o]);
                target(v, &mut |dx| {
                    node.layer.backward(Backward { params, x, y, dy: &mut *dy, dx, grads: &mut *grads, n })
                });
            } else {
                let xs: SmallVec<[&[f32]; 4]> = inputs[k].iter().map(|&v| acts[storage[v]].as_slice()).collect();
                for (j, &v) in inputs[k].iter().enumerate() {
                    target(v, &mut |dx| {
                        if let Some(dx) = dx {
                            node.layer.backward_input(j, &xs, dy, dx, n);
                        }
                    });
                }
            }
        }
    }
}
