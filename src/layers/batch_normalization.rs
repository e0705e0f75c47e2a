use super::{Backward, Layer, LayerConfig, Mode, Weight};
use crate::activations::Activation;
use crate::device::{self, ChannelSums, Workspace};
use crate::distributed::Communicator;
use crate::error::Error;
use crate::initializers::Initializer;
use crate::kernels::batch_norm::{Gate, InputGrad};
use std::sync::Arc;

/// Batch normalisation over the last axis, as `keras.layers.BatchNormalization`
/// (defaults: axis -1, momentum 0.99, epsilon 1e-3, center and scale).
///
/// In training it normalises with the batch's mean and (biased) variance and
/// updates the moving statistics, `moving = moving * momentum + batch * (1 -
/// momentum)`; at inference, and whenever the layer is frozen
/// (`trainable(false)`, as in Keras 3), it uses the moving statistics.
/// Weights: gamma (ones) and beta (zeros), trainable; moving_mean (zeros) and
/// moving_variance (ones), state that no optimizer touches.
///
/// ```
/// use keel::prelude::*;
/// let bn = BatchNormalization::new().momentum(0.9);
/// ```
pub struct BatchNormalization {
    momentum: f32,
    epsilon: f32,
    center: bool,
    scale: bool,
    input_shape: Option<Vec<usize>>,
    trainable: bool,
    /// Channels and values per sample.
    c: usize,
    sample_len: usize,
    /// Per channel, as used by the last forward: mean, 1/sqrt(var + eps), and
    /// y = x * a + b's a and b.
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    /// Whether the last forward used the batch's statistics.
    batch_statistics: bool,
    /// The activation of the layer after it, applied here when the model fuses the two.
    act: Activation,
    /// Per-channel f64 sums over the batch (2 * c), and what the device keeps for them.
    sums: Vec<f64>,
    ws: Workspace,
    /// Whether `sums` holds the next training pass's input moments, gathered
    /// by the layer before ([`Layer::take_input_moments`]).
    given: bool,
    /// The input gradient's per-channel terms (see `InputGrad`).
    k1: Vec<f32>,
    k2: Vec<f32>,
    /// Moving statistics of a layer run on its own (outside a model, which owns them).
    own_state: Vec<f32>,
    /// The ranks batch statistics are summed over, the rows they hold
    /// together in the last batch, and a collective's failure.
    group: Option<Arc<dyn Communicator>>,
    rows: f64,
    error: Option<Error>,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchNormalization {
    /// A layer with Keras' defaults.
    pub fn new() -> Self {
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            input_shape: None,
            trainable: true,
            c: 0,
            sample_len: 0,
            mean: Vec::new(),
            inv_std: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            batch_statistics: false,
            act: Activation::Linear,
            sums: Vec::new(),
            ws: Workspace::default(),
            given: false,
            k1: Vec::new(),
            k2: Vec::new(),
            own_state: Vec::new(),
            group: None,
            rows: 0.0,
            error: None,
        }
    }

    /// Weight of the old moving statistics in each update (default 0.99).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added to the variance before the square root (default 1e-3).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to add the offset beta (default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to multiply by gamma (default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// Per-sample input shape when this is the first layer.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Self {
        self.input_shape = Some(shape.into());
        self
    }

    /// (gamma, beta) from the parameter slice, or their defaults (ones, zeros) when absent.
    fn gamma_beta<'a>(&self, params: &'a [f32]) -> (Option<&'a [f32]>, Option<&'a [f32]>) {
        let c = self.c;
        let gamma = self.scale.then(|| &params[..c]);
        let beta = self.center.then(|| &params[if self.scale { c } else { 0 }..][..c]);
        (gamma, beta)
    }

    /// The moving statistics as the mean and 1/sqrt(var + eps) to normalise with.
    fn use_moving_statistics(&mut self, moving_mean: &[f32], moving_var: &[f32]) {
        self.mean.copy_from_slice(moving_mean);
        for (inv, &v) in self.inv_std.iter_mut().zip(moving_var) {
            *inv = 1.0 / (v + self.epsilon).sqrt();
        }
    }

    /// y = x * a + b's a and b from the mean and inverse deviation in use.
    fn set_map(&mut self, params: &[f32]) {
        let (gamma, beta) = self.gamma_beta(params);
        for ch in 0..self.c {
            self.a[ch] = self.inv_std[ch] * gamma.map_or(1.0, |g| g[ch]);
            self.b[ch] = beta.map_or(0.0, |b| b[ch]) - self.mean[ch] * self.a[ch];
        }
    }
}

impl BatchNormalization {
    /// Sums `sums[..len]` over the group's ranks (with batch statistics only:
    /// that is when every rank makes the same calls). A failure is kept for
    /// the model to report.
    fn sum_over_group(&mut self, len: usize) {
        if let (Some(group), true) = (&self.group, self.batch_statistics)
            && let Err(e) = group.all_reduce_sum_f64(&mut self.sums[..len])
        {
            self.error.get_or_insert(e);
        }
    }

    /// The forward pass: the statistics (the batch's in training, updating
    /// the moving ones), then y = act(x * a + b), or with `residual` = (r,
    /// act) the sum of an Add after the layer: y = act((x * a + b) + r).
    #[allow(clippy::too_many_arguments)]
    fn normalize(
        &mut self,
        params: &[f32],
        state: &mut [f32],
        x: &[f32],
        y: &mut [f32],
        n: usize,
        mode: Mode,
        residual: Option<(&[f32], Activation)>,
    ) {
        let c = self.c;
        let (moving_mean, moving_var) = state.split_at_mut(c);
        self.batch_statistics = mode == Mode::Train && self.trainable;
        let given = std::mem::take(&mut self.given);
        if self.batch_statistics {
            let (device, len, sample_len) = (device::current(), n * self.sample_len, self.sample_len);
            if !given {
                device.channel_sums(ChannelSums::Moments, x, c, sample_len, len, &mut self.sums, &mut self.ws);
            }
            // sums = [per-channel sums, sums of squares, rows], over every rank of a group.
            self.sums[2 * c] = (len / c) as f64;
            self.sum_over_group(2 * c + 1);
            self.rows = self.sums[2 * c].max(1.0);
            let (rows, momentum) = (self.rows, self.momentum);
            for ch in 0..c {
                let mean = self.sums[ch] / rows;
                self.mean[ch] = mean as f32;
                let var = (self.sums[c + ch] / rows - mean * mean).max(0.0) as f32;
                self.inv_std[ch] = 1.0 / (var + self.epsilon).sqrt();
                moving_mean[ch] = moving_mean[ch] * momentum + self.mean[ch] * (1.0 - momentum);
                moving_var[ch] = moving_var[ch] * momentum + var * (1.0 - momentum);
            }
        } else {
            self.use_moving_statistics(moving_mean, moving_var);
        }
        self.set_map(params);
        // With a residual: the Add's sum and activation (this layer's own is linear).
        let (residual, act) = residual.map_or((None, self.act), |(r, act)| (Some(r), act));
        device::current().scale_shift(x, (&self.a, &self.b), residual, act, y, n * self.sample_len);
    }
}

impl std::fmt::Debug for BatchNormalization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchNormalization")
            .field("momentum", &self.momentum)
            .field("epsilon", &self.epsilon)
            .field("center", &self.center)
            .field("scale", &self.scale)
            .field("channels", &self.c)
            .finish()
    }
}

impl Layer for BatchNormalization {
    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn base_name(&self) -> &'static str {
        "batch_normalization"
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::BatchNormalization {
            axis: -1,
            momentum: self.momentum,
            epsilon: self.epsilon,
            center: self.center,
            scale: self.scale,
        }
    }

    fn weights(&self) -> Vec<Weight> {
        let c = vec![self.c];
        let mut weights = Vec::new();
        if self.scale {
            weights.push(Weight::new("gamma", c.clone(), Initializer::Ones));
        }
        if self.center {
            weights.push(Weight::new("beta", c.clone(), Initializer::Zeros));
        }
        weights.push(Weight::state("moving_mean", c.clone(), Initializer::Zeros));
        weights.push(Weight::state("moving_variance", c, Initializer::Ones));
        weights
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    // (..., C) -> (..., C)
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let Some(&c) = input.last() else {
            return Err("needs an input with at least one axis".into());
        };
        self.c = c;
        self.sample_len = input.iter().product();
        for v in [&mut self.mean, &mut self.inv_std, &mut self.a, &mut self.b, &mut self.k1, &mut self.k2] {
            v.resize(c, 0.0);
        }
        self.sums.resize(2 * c + 1, 0.0);
        self.own_state = [vec![0.0; c], vec![1.0; c]].concat();
        Ok(input.to_vec())
    }

    fn set_trainable(&mut self, trainable: bool) {
        self.trainable = trainable;
    }

    fn affine_channels(&self) -> Option<usize> {
        Some(self.c)
    }

    // scale = gamma / sqrt(moving_var + eps);  shift = beta - moving_mean * scale
    fn inference_affine(&mut self, params: &[f32], state: &[f32], scale: &mut [f32], shift: &mut [f32]) -> Activation {
        let (moving_mean, moving_var) = state.split_at(self.c);
        self.batch_statistics = false;
        self.use_moving_statistics(moving_mean, moving_var);
        self.set_map(params);
        scale.copy_from_slice(&self.a);
        shift.copy_from_slice(&self.b);
        self.act
    }

    fn fuse_activation(&mut self, act: Option<Activation>) -> bool {
        self.act = act.unwrap_or(Activation::Linear);
        act.is_some()
    }

    fn set_group(&mut self, group: Option<Arc<dyn Communicator>>) -> bool {
        self.group = group.filter(|g| g.size() > 1);
        self.group.is_some()
    }

    fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        let mut state = std::mem::take(&mut self.own_state);
        self.forward_stateful(params, &mut state, x, y, n, mode);
        self.own_state = state;
    }

    // x: (N, ..., C) -> y: (N, ..., C);  y = gamma * (x - mean) / sqrt(var + eps) + beta
    // mean, var: the batch's in training (moving statistics updated), else the moving ones.
    fn forward_stateful(&mut self, params: &[f32], state: &mut [f32], x: &[f32], y: &mut [f32], n: usize, mode: Mode) {
        self.normalize(params, state, x, y, n, mode, None);
    }

    fn uses_input_moments(&self) -> bool {
        true
    }

    fn take_input_moments(&mut self, sums: &[f64]) {
        self.given = sums.len() == 2 * self.c;
        if self.given {
            self.sums[..2 * self.c].copy_from_slice(sums);
        }
    }

    fn adds_residual(&self) -> bool {
        self.act == Activation::Linear
    }

    // x, residual: (N, ..., C) -> y: (N, ..., C);  y = act(normalized(x) + residual)
    fn forward_residual(
        &mut self,
        params: &[f32],
        state: &mut [f32],
        x: &[f32],
        residual: (&[f32], Activation),
        y: &mut [f32],
        n: usize,
        mode: Mode,
    ) {
        self.normalize(params, state, x, y, n, mode, Some(residual));
    }

    // dz = dy * act'(z) (dy itself without a fused activation);
    // dbeta = sum dz;  dgamma = sum dz * xhat;
    // dx = gamma * inv_std * (dz - dbeta / M - xhat * dgamma / M) with batch statistics (M rows),
    // dx = gamma * inv_std * dz with fixed ones.
    fn backward(&mut self, pass: Backward) {
        let Backward { x, y, dy, dx, grads, n, .. } = pass;
        let (c, device, len) = (self.c, device::current(), n * self.sample_len);
        // y = act(z), z = x * a + b: a ReLU's gradient is taken from z on the
        // way (its gate); another activation's first, from the output, in place.
        let gate = Gate::of(self.act, &self.a, &self.b);
        if gate.is_none() && self.act != Activation::Linear {
            device.activation_backward(self.act, &y[..len], &mut dy[..len], c);
        }
        let what = ChannelSums::Gradients { dy, mean: &self.mean, inv_std: &self.inv_std, gate };
        device.channel_sums(what, x, c, self.sample_len, len, &mut self.sums, &mut self.ws);
        let (dbeta, dgamma) = self.sums.split_at(c);
        let mut offset = 0;
        if self.scale {
            grads[..c].iter_mut().zip(dgamma).for_each(|(g, s)| *g = *s as f32);
            offset = c;
        }
        if self.center {
            grads[offset..offset + c].iter_mut().zip(dbeta).for_each(|(g, s)| *g = *s as f32);
        }
        // The statistics were the whole group's: so are the sums their gradient needs
        // (the parameter gradients above stay this rank's, the model sums those).
        self.sum_over_group(2 * c);
        let (dbeta, dgamma) = self.sums.split_at(c);
        let Some(dx) = dx else { return };
        let batch = if self.batch_statistics { 1.0 / self.rows } else { 0.0 };
        for ch in 0..c {
            self.k1[ch] = (dbeta[ch] * batch) as f32;
            self.k2[ch] = (dgamma[ch] * batch) as f32;
        }
        let (mean, inv_std, a, k1, k2) = (&self.mean, &self.inv_std, &self.a, &self.k1, &self.k2);
        let grad = InputGrad { mean, inv_std, a, k1, k2, gate: Gate::of(self.act, &self.a, &self.b) };
        device.batch_norm_input_grad(&grad, x, dy, dx, len);
    }
}
