//! The built form of a model: shapes, the flat parameter and gradient buffers,
//! and the activation buffers, allocated once per batch capacity.
//!
//! Depth d holds the values between layers: depth 0 the input batch, depth
//! i + 1 layer i's output. Not every depth needs a buffer of its own: a
//! reshaping layer (Flatten) only renames its input, and a max-pooling
//! computed by the layer before it makes that layer's own output transient.

use crate::layers::{Backward, Layer, Mode};
use std::ops::Range;

pub(crate) struct Network {
    /// shapes[d]: the per-sample shape at depth d.
    pub shapes: Vec<Vec<usize>>,
    /// Layer i's parameters are params[ranges[i]].
    pub ranges: Vec<Range<usize>>,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    /// Largest batch the buffers hold.
    pub capacity: usize,
    /// Values and gradients dL/d(values), by buffer; see `storage`.
    acts: Vec<Vec<f32>>,
    deltas: Vec<Vec<f32>>,
    /// storage[d]: the buffer holding depth d.
    storage: Vec<usize>,
    /// What each layer does in a pass.
    steps: Vec<Step>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The layer runs and writes depth `output` (i + 1, or i + 2 when it
    /// also computes the max-pooling after it).
    Run { output: usize },
    /// Nothing to do: a reshape, or a pooling computed by the layer before.
    Skip,
}

impl Network {
    /// `fused[i]`: layer i computes layer i + 1 (a max-pooling) too.
    pub fn new(
        shapes: Vec<Vec<usize>>,
        ranges: Vec<Range<usize>>,
        params: Vec<f32>,
        layers: &[Box<dyn Layer>],
        fused: &[bool],
    ) -> Self {
        let depth = shapes.len();
        let mut storage = vec![0; depth];
        let mut steps = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let pooled_by_previous = i > 0 && fused[i - 1];
            if !pooled_by_previous && layer.is_reshape() {
                steps.push(Step::Skip);
                storage[i + 1] = storage[i];
                continue;
            }
            steps.push(if pooled_by_previous { Step::Skip } else { Step::Run { output: i + 1 + fused[i] as usize } });
            storage[i + 1] = i + 1;
        }
        let grads = vec![0.0; params.len()];
        let (acts, deltas) = (vec![Vec::new(); depth], vec![Vec::new(); depth]);
        Network { shapes, ranges, params, grads, capacity: 0, acts, deltas, storage, steps }
    }

    /// Values per sample at depth d.
    pub fn sample_len(&self, d: usize) -> usize {
        self.shapes[d].iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.sample_len(self.shapes.len() - 1)
    }

    /// Width of the output's last axis (classes).
    pub fn output_width(&self) -> usize {
        self.shapes.last().and_then(|s| s.last()).copied().unwrap_or(1)
    }

    /// The input batch buffer.
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.acts[0]
    }

    /// The model's output, and the buffer for dL/d(output).
    pub fn output_and_delta(&mut self) -> (&[f32], &mut [f32]) {
        let last = self.storage[self.shapes.len() - 1];
        (&self.acts[last], &mut self.deltas[last])
    }

    /// Makes room for batches of up to `batch` samples (only ever grows).
    pub fn ensure_capacity(&mut self, layers: &mut [Box<dyn Layer>], batch: usize) {
        if batch <= self.capacity {
            return;
        }
        // A buffer is needed where a depth is stored under its own number and
        // something reads it: the input, and each running layer's output.
        let mut needed = vec![false; self.shapes.len()];
        needed[0] = true;
        for step in &self.steps {
            if let Step::Run { output } = *step {
                needed[output] = true;
            }
        }
        let output = self.storage[self.shapes.len() - 1];
        for (d, need) in needed.into_iter().enumerate() {
            let len = if need { batch * self.sample_len(d) } else { 0 };
            self.acts[d].resize(len, 0.0);
            // The input needs no gradient, unless no layer runs and it is the output.
            let delta_len = if d > 0 || d == output { len } else { 0 };
            self.deltas[d].resize(delta_len, 0.0);
        }
        for layer in layers.iter_mut() {
            layer.allocate(batch);
        }
        self.capacity = batch;
    }

    /// acts[input][..n] -> acts[output][..n]
    pub fn forward(&mut self, layers: &mut [Box<dyn Layer>], n: usize, mode: Mode) {
        for (i, layer) in layers.iter_mut().enumerate() {
            let Step::Run { output } = self.steps[i] else { continue };
            // Inputs are stored at a lower buffer index than outputs.
            let (x, y) = (self.storage[i], self.storage[output]);
            let (before, after) = self.acts.split_at_mut(y);
            layer.forward(&self.params[self.ranges[i].clone()], &before[x], &mut after[0], n, mode);
        }
    }

    /// deltas[output][..n] -> grads (and the deltas of every hidden depth on the way).
    pub fn backward(&mut self, layers: &mut [Box<dyn Layer>], n: usize) {
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            let Step::Run { output } = self.steps[i] else { continue };
            let (x, y) = (self.storage[i], self.storage[output]);
            let (before, after) = self.deltas.split_at_mut(y);
            let range = self.ranges[i].clone();
            layer.backward(Backward {
                params: &self.params[range.clone()],
                x: &self.acts[x],
                y: &self.acts[y],
                dy: &mut after[0],
                // The model's input needs no gradient.
                dx: if x == 0 { None } else { Some(&mut before[x]) },
                grads: &mut self.grads[range],
                n,
            });
        }
    }
}
