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
            let len = batch * self.sample_len(i);
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

    /// acts[0][..n] -> acts[last][..n]
    pub fn forward(&mut self, layers: &mut [Box<dyn Layer>], n: usize, mode: Mode) {
        for (i, layer) in layers.iter_mut().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            layer.forward(&self.params[self.ranges[i].clone()], &before[i], &mut after[0], n, mode);
        }
    }

    /// deltas[last][..n] -> grads (and deltas of every hidden layer on the way).
    pub fn backward(&mut self, layers: &mut [Box<dyn Layer>], n: usize) {
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            let (before, after) = self.deltas.split_at_mut(i + 1);
            let range = self.ranges[i].clone();
            layer.backward(Backward {
                params: &self.params[range.clone()],
                x: &self.acts[i],
                y: &self.acts[i + 1],
                dy: &mut after[0],
                dx: if i == 0 { None } else { Some(&mut before[i]) },
                grads: &mut self.grads[range],
                n,
            });
        }
    }
}
