//! The CPU device: rayon over fixed tasks, the kernels of `kernels/`.
//!
//! Work is split over the batch in fixed tasks of [`SAMPLES_PER_TASK`] samples
//! (elementwise passes: fixed chunks of [`CHUNK`] values), never by thread
//! count, and partial sums (weight gradients, batch statistics) are added in
//! task order, so results are bit-identical whatever the number of threads.

mod conv;
mod dense;
mod elementwise;
mod norm;
mod pool;

use super::{
    Buffer, ChannelSums, ConvOp, DenseOp, DepthwiseOp, Device, Pad2D, ProductOp, ResampleOp, WeightGrads, Workspace,
};
use crate::activations::Activation;
use crate::kernels::Window;
use crate::kernels::activation::Rectifier;
use crate::kernels::batch_norm::InputGrad;

/// Samples per parallel task.
pub const SAMPLES_PER_TASK: usize = 16;

/// Values per parallel task of an elementwise pass.
pub const CHUNK: usize = 1 << 14;

/// Number of tasks a batch of `n` samples is split into.
pub fn task_count(n: usize) -> usize {
    n.div_ceil(SAMPLES_PER_TASK)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Buffer> = const { std::cell::RefCell::new(Buffer::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` values. It grows to the
/// largest size asked for and is then reused: no allocation in steady state,
/// and memory bounded by the number of threads, not by the batch size.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// The workspace slot where an operation keeps its pre-activation z when its
/// activation needs its input (silu, gelu, hard_silu): the operation runs
/// linear, keeps z, and applies the activation to y; backward turns dy into
/// dz from z first, then runs linear.
const PREACTIVATION: usize = 4;

/// y = act(z) after a linear run that wrote z to `y`, keeping z in the workspace.
fn activate_keeping_input(act: Activation, y: &mut [f32], width: usize, ws: &mut Workspace) {
    let z = kept_input(ws, y.len());
    z.copy_from_slice(y);
    elementwise::activation_forward(act, y, width);
}

/// The workspace's pre-activation buffer, `len` values.
fn kept_input(ws: &mut Workspace, len: usize) -> &mut [f32] {
    let mut lens = [0; PREACTIVATION + 1];
    lens[PREACTIVATION] = len;
    let [.., z] = ws.f32s(lens);
    z
}

/// dy -> dz = dy * act'(z) from the z `activate_keeping_input` kept.
fn through_kept_input(act: Activation, dy: &mut [f32], ws: &mut Workspace) {
    let z = kept_input(ws, dy.len());
    elementwise::activation_backward_from_input(act, z, dy);
}

/// Block-major rows (blocks of `block` columns, `m` rows each, the last block
/// possibly narrower) -> y: (rows, cols) row-major, row r from block row `row_of(r)`.
fn gather_blocks(blocks: &[f32], m: usize, block: usize, cols: usize, row_of: impl Fn(usize) -> usize, y: &mut [f32]) {
    for (r, row) in y.chunks_exact_mut(cols).enumerate() {
        let at = row_of(r);
        for (b, dst) in row.chunks_mut(block).enumerate() {
            dst.copy_from_slice(&blocks[b * m * block + at * dst.len()..][..dst.len()]);
        }
    }
}

/// The CPU, with rayon's global thread pool (`keel::set_threads`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Device for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn copy(&self, x: &[f32], y: &mut [f32], len: usize) {
        elementwise::copy(x, y, len)
    }

    fn activation_forward(&self, act: Activation, z: &mut [f32], width: usize) {
        elementwise::activation_forward(act, z, width)
    }

    fn activation_backward(&self, act: Activation, y: &[f32], dy: &mut [f32], width: usize) {
        elementwise::activation_backward(act, y, dy, width)
    }

    fn activation_backward_from_input(&self, act: Activation, z: &[f32], dy: &mut [f32]) {
        elementwise::activation_backward_from_input(act, z, dy)
    }

    fn rectifier_forward(&self, f: Rectifier, x: &[f32], y: &mut [f32], len: usize) {
        elementwise::rectifier_forward(f, x, y, len)
    }

    fn rectifier_backward(&self, f: Rectifier, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
        elementwise::rectifier_backward(f, x, dy, dx, len)
    }

    fn scale_shift(&self, x: &[f32], ab: (&[f32], &[f32]), act: Activation, y: &mut [f32], len: usize) {
        elementwise::scale_shift(x, ab, act, y, len)
    }

    fn add(&self, xs: &[&[f32]], y: &mut [f32], len: usize, act: Activation) {
        elementwise::add(xs, y, len, act)
    }

    fn multiply_forward(&self, op: &ProductOp, xs: &[&[f32]], y: &mut [f32], n: usize) {
        elementwise::multiply_forward(op, xs, y, n)
    }

    fn multiply_backward(&self, op: &ProductOp, k: usize, xs: &[&[f32]], dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::multiply_backward(op, k, xs, dy, dx, n)
    }

    fn prelu_forward(&self, x: &[f32], alpha: &[f32], map: &[u32], y: &mut [f32], n: usize) {
        elementwise::prelu_forward(x, alpha, map, y, n)
    }

    fn prelu_backward(
        &self,
        x: &[f32],
        alpha: &[f32],
        map: &[u32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dalpha: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        elementwise::prelu_backward(x, alpha, map, dy, dx, dalpha, n, ws)
    }

    fn concat_forward(&self, xs: &[&[f32]], widths: &[usize], y: &mut [f32], rows: usize) {
        elementwise::concat_forward(xs, widths, y, rows)
    }

    fn concat_backward(&self, k: usize, widths: &[usize], dy: &[f32], dx: &mut [f32], rows: usize) {
        elementwise::concat_backward(k, widths, dy, dx, rows)
    }

    fn pad2d_forward(&self, p: &Pad2D, x: &[f32], y: &mut [f32], n: usize) {
        elementwise::pad2d_forward(p, x, y, n)
    }

    fn pad2d_backward(&self, p: &Pad2D, dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::pad2d_backward(p, dy, dx, n)
    }

    fn resample_forward(&self, op: &ResampleOp, x: &[f32], y: &mut [f32], n: usize) {
        elementwise::resample_forward(op, x, y, n)
    }

    fn resample_backward(&self, op: &ResampleOp, dy: &[f32], dx: &mut [f32], n: usize) {
        elementwise::resample_backward(op, dy, dx, n)
    }

    fn dense_forward(&self, op: &DenseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        dense::forward(op, x, y, n, ws)
    }

    fn dense_backward(&self, op: &DenseOp, pass: WeightGrads, ws: &mut Workspace) {
        dense::backward(op, pass, ws)
    }

    fn conv2d_forward(&self, op: &ConvOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        conv::forward(op, x, y, n, ws)
    }

    fn conv2d_backward(&self, op: &ConvOp, pass: WeightGrads, ws: &mut Workspace) {
        conv::backward(op, pass, ws)
    }

    fn depthwise_forward(&self, op: &DepthwiseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        conv::depthwise_forward(op, x, y, n, ws)
    }

    fn depthwise_backward(&self, op: &DepthwiseOp, pass: WeightGrads, ws: &mut Workspace) {
        conv::depthwise_backward(op, pass, ws)
    }

    fn max_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
        pool::max_forward(g, x, y, n, ws)
    }

    fn max_pool_values(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize) {
        pool::max_values(g, x, y, n)
    }

    fn max_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize, ws: &mut Workspace) {
        pool::max_backward(g, dy, dx, n, ws)
    }

    fn avg_pool_forward(&self, g: &Window, x: &[f32], y: &mut [f32], n: usize) {
        pool::avg_forward(g, x, y, n)
    }

    fn avg_pool_backward(&self, g: &Window, dy: &[f32], dx: &mut [f32], n: usize) {
        pool::avg_backward(g, dy, dx, n)
    }

    fn global_pool_forward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        pool::global_forward(max, positions, c, x, y, n, ws)
    }

    fn global_pool_backward(
        &self,
        max: bool,
        positions: usize,
        c: usize,
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
        ws: &mut Workspace,
    ) {
        pool::global_backward(max, positions, c, dy, dx, n, ws)
    }

    fn channel_sums(
        &self,
        what: ChannelSums,
        x: &[f32],
        c: usize,
        sample_len: usize,
        len: usize,
        sums: &mut [f64],
        ws: &mut Workspace,
    ) {
        norm::channel_sums(what, x, c, sample_len, len, sums, ws)
    }

    fn batch_norm_input_grad(&self, grad: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32], len: usize) {
        norm::input_grad(grad, x, dy, dx, len)
    }
}
