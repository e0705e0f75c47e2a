//! The built form of a model: shapes, the flat parameter and gradient buffers,
//! and the activation buffers, allocated once per batch capacity.

use crate::layers::{Backward, Layer, Mode};
use std::ops::Range;

pub(crate) struct Network {
    /// shapes[0] is the per-sample input shape, shapes[i + 1] layer i's output.
    pub shapes: Vec<Vec<usize>>,
    /// Layer i's parameters are params[ranges[i]].
    pub ranges: Vec<Range<usize>>,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    /// Largest batch the buffers hold.
    pub capacity: usize,
    /// acts[0] is the input batch, acts[i + 1] layer i's output.
    pub acts: Vec<Vec<f32>>,
    /// dL/d(acts[i]); deltas[0] stays empty (the input needs no gradient).
    pub deltas: Vec<Vec<f32>>,
    /// fused[i]: layer i also computes layer i + 1 (a max-pooling), writing
    /// acts[i + 2] directly; acts[i + 1] then stays empty and layer i + 1 is skipped.
    pub fused: Vec<bool>,
}

impl Network {
    pub fn new(shapes: Vec<Vec<usize>>, ranges: Vec<Range<usize>>, params: Vec<f32>) -> Self {
        let depth = shapes.len();
        let grads = vec![0.0; params.len()];
        Network {
            shapes,
            ranges,
            params,
            grads,
            capacity: 0,
            acts: vec![Vec::new(); depth],
            deltas: vec![Vec::new(); depth],
            fused: vec![false; depth - 1],
        }
    }

    /// Values per sample at depth i.
    pub fn sample_len(&self, i: usize) -> usize {
        self.shapes[i].iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.sample_len(self.shapes.len() - 1)
    }

    /// Width of the output's last axis (classes).
    pub fn output_width(&self) -> usize {
        self.shapes.last().and_then(|s| s.last()).copied().unwrap_or(1)
    }

    /// Makes room for batches of up to `batch` samples (only ever grows).
    pub fn ensure_capacity(&mut self, layers: &mut [Box<dyn Layer>], batch: usize) {
        if batch <= self.capacity {
            return;
        }
        for i in 0..self.shapes.len() {
            let skipped = i > 0 && self.fused[i - 1];
            let len = if skipped { 0 } else { batch * self.sample_len(i) };
            self.acts[i].resize(len, 0.0);
            if i > 0 {
                self.deltas[i].resize(len, 0.0);
            }
        }
        for layer in layers.iter_mut() {
            layer.allocate(batch);
        }
        self.capacity = batch;
    }

    /// Whether layer i runs itself (it is not computed by the layer before).
    fn runs(&self, i: usize) -> bool {
        i == 0 || !self.fused[i - 1]
    }

    /// Index in acts/deltas of layer i's output as the model sees it.
    fn output_of(&self, i: usize) -> usize {
        if self.fused.get(i).copied().unwrap_or(false) { i + 2 } else { i + 1 }
    }

    /// acts[0][..n] -> acts[last][..n]
    pub fn forward(&mut self, layers: &mut [Box<dyn Layer>], n: usize, mode: Mode) {
        for (i, layer) in layers.iter_mut().enumerate() {
            if !self.runs(i) {
                continue;
            }
            let out = self.output_of(i);
            let (before, after) = self.acts.split_at_mut(i + 1);
            layer.forward(&self.params[self.ranges[i].clone()], &before[i], &mut after[out - i - 1], n, mode);
        }
    }

    /// deltas[last][..n] -> grads (and deltas of every hidden layer on the way).
    pub fn backward(&mut self, layers: &mut [Box<dyn Layer>], n: usize) {
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            if !self.runs(i) {
                continue;
            }
            let out = self.output_of(i);
            let (before, after) = self.deltas.split_at_mut(i + 1);
            let range = self.ranges[i].clone();
            layer.backward(Backward {
                params: &self.params[range.clone()],
                x: &self.acts[i],
                y: &self.acts[out],
                dy: &mut after[out - i - 1],
                dx: if i == 0 { None } else { Some(&mut before[i]) },
                grads: &mut self.grads[range],
                n,
            });
        }
    }
}
