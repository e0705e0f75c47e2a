//! Dense: a matrix product over tasks of rows, or, for few units, the
//! `narrow` kernels (fixed-order products for heads of at most 16 units); a
//! hidden layer's gradients as products against its output gradient packed
//! (`backward_packed`).

use super::team::ForEachTask;
use super::{SAMPLES_PER_TASK, activate_keeping_input, gather_blocks, through_kept_input};
use crate::activations::Activation;
use crate::device::{DenseOp, Prepared, WeightGrads, Workspace};
use crate::kernels::matmul::{MatRef, matmul};
use crate::kernels::packed::{self, Packed, matmul_packed, pack, pack_transposed, packed_len};
use crate::kernels::{activation, narrow, sum_rows, transpose, transpose_ld};
use rayon::prelude::*;

/// Input features per task of the weight and input gradients (small enough
/// that a few thousand features make an even number of tasks or many).
const FEATURES_PER_TASK: usize = 128;

/// Rows per parallel task: whole samples, at most [`ROWS_PER_TASK`] rows (a
/// Dense over an image's positions, such as a pointwise convolution, splits
/// within a sample, so that a small batch still uses every thread). Each row
/// is computed on its own, so the split never changes a result.
fn task_rows(op: &DenseOp) -> usize {
    (SAMPLES_PER_TASK * op.rows_per_sample).clamp(1, ROWS_PER_TASK)
}

/// The most rows a task takes.
const ROWS_PER_TASK: usize = 256;

/// Units per task where a batch of one task of rows splits by units instead.
const UNITS_PER_TASK: usize = 128;

/// Whether the narrow kernels fit: at most one register of units.
fn narrow(op: &DenseOp) -> bool {
    op.u <= narrow::WIDTH
}

/// The narrow kernels' form of the kernel (its tag in [`Prepared`]): W^T.
const TRANSPOSED: u64 = 1;

/// W (D, U) -> W^T (U, D), kept in `prepared` while the weights' version
/// holds: a training step's forward and backward passes build it once,
/// inference once per version of the weights. On one thread: turned in
/// registers, the reference model's 54 K values take about 6 µs from cache;
/// splitting them over two threads measured no faster (the time is in
/// fetching the lines the other core last wrote or read).
fn transposed<'a>(op: &DenseOp, prepared: &'a mut Prepared) -> &'a [f32] {
    let (d, u, w) = (op.d, op.u, op.kernel);
    prepared.get(op.version, TRANSPOSED, u * d, |wt| transpose(w, d, u, wt))
}

/// a (R, cols) -> out (R, narrow::WIDTH), zeros past `cols`: by tasks of rows.
fn pad_columns(a: &[f32], cols: usize, out: &mut [f32]) {
    let rows = out.len() / narrow::WIDTH;
    out.par_chunks_mut(ROWS_PER_TASK * narrow::WIDTH)
        .zip(a[..rows * cols].par_chunks(ROWS_PER_TASK * cols))
        .for_each_task(|(out, a)| narrow::pad_columns(a, cols, out));
}

// x: (R, D) -> y: (R, U) with R = N * rows_per_sample;  y = act(x . W + b)
pub fn forward(op: &DenseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
    if op.act.needs_input() {
        forward(&DenseOp { act: Activation::Linear, ..*op }, x, y, n, ws);
        return activate_keeping_input(op.act, &mut y[..n * op.rows_per_sample * op.u], op.u, ws);
    }
    let (d, u) = (op.d, op.u);
    let rows = n * op.rows_per_sample;
    let task_rows = task_rows(op);
    let (w, act, bias) = (op.kernel, op.act, op.bias);
    let few_units = narrow(op);
    if (rows <= task_rows || rows <= u) && !few_units && u >= 2 * UNITS_PER_TASK {
        // The whole batch is one task of rows (batch-1 inference), or the
        // input is no larger than the kernel (rows <= units: a classifier's
        // hidden layer at batch 128): blocks of units instead, each task
        // reading all of x but only its columns of the kernel, where each
        // task of rows would pack the whole kernel.
        let [blocks] = ws.f32s([rows * u]);
        blocks.par_chunks_mut(rows * UNITS_PER_TASK).enumerate().for_each_task(|(b, yb)| {
            let w = MatRef::with_ld(&w[b * UNITS_PER_TASK..], d, yb.len() / rows, u);
            matmul(MatRef::new(&x[..rows * d], rows, d), w, yb, false);
        });
        let y = &mut y[..rows * u];
        gather_blocks(blocks, rows, UNITS_PER_TASK, u, |r| r, y);
        return activation::forward(act, y, bias, u);
    }
    let wt = if few_units { transposed(op, ws.with_prepared([], 0, 0).0) } else { &[] };
    y[..rows * u].par_chunks_mut(task_rows * u).zip(x[..rows * d].par_chunks(task_rows * d)).for_each_task(
        |(yt, xt)| {
            if few_units {
                narrow::x_times_wt(xt, wt, d, u, yt)
            } else {
                matmul(MatRef::new(xt, xt.len() / d, d), MatRef::new(w, d, u), yt, false)
            }
            activation::forward(act, yt, bias, u);
        },
    );
}

// Differentiates y = act(x . W + b):
//   dz = dy * act'(y);  dW = x^T . dz;  db = sum(dz);  dx = dz . W^T
// Workspace (narrow): [dz padded to WIDTH columns], and W^T prepared.
pub fn backward(op: &DenseOp, pass: WeightGrads, ws: &mut Workspace) {
    debug_assert!(!pass.accumulate, "a Dense writes its input gradient (it does not add to one)");
    if op.act.needs_input() {
        through_kept_input(op.act, &mut pass.dy[..pass.n * op.rows_per_sample * op.u], ws);
        return backward(&DenseOp { act: Activation::Linear, ..*op }, pass, ws);
    }
    let WeightGrads { x, y, dy, dx, kernel: gw, bias: gb, n, .. } = pass;
    let (d, u) = (op.d, op.u);
    let rows = n * op.rows_per_sample;
    let task_rows = task_rows(op);
    let (x, dz) = (&x[..rows * d], &mut dy[..rows * u]);
    let act = op.act;
    dz.par_chunks_mut(task_rows * u)
        .zip(y[..rows * u].par_chunks(task_rows * u))
        .for_each_task(|(dzt, yt)| activation::backward(act, yt, dzt, u));
    let dz = &*dz;
    let w = op.kernel;
    if let Some(gb) = gb {
        sum_rows(dz, u, gb);
    }
    if !narrow(op) && op.rows_per_sample == 1 && packed::available() {
        return backward_packed(op, x, dz, gw, dx, rows, ws);
    }
    if !narrow(op) {
        // dW = x^T . dz by tiles of features x units, block-major in
        // `tiles` (a block of features' blocks of units one after another),
        // then gathered into dW.
        let [tiles] = ws.f32s([d * u]);
        tiles.par_chunks_mut(FEATURES_PER_TASK * u).enumerate().for_each_task(|(t, block)| {
            let (first, width) = (t * FEATURES_PER_TASK, block.len() / u);
            let xt = MatRef::with_ld(&x[first..], rows, width, d).t();
            block.par_chunks_mut(width * UNITS_PER_TASK).enumerate().for_each_task(|(b, tile)| {
                let dzb = MatRef::with_ld(&dz[b * UNITS_PER_TASK..], rows, tile.len() / width, u);
                matmul(xt, dzb, tile, false);
            });
        });
        let tiles = &*tiles;
        gw.par_chunks_mut(FEATURES_PER_TASK * u)
            .zip(tiles.par_chunks(FEATURES_PER_TASK * u))
            .for_each_task(|(gwt, block)| gather_blocks(block, gwt.len() / u, UNITS_PER_TASK, u, |r| r, gwt));
        match dx {
            // dx = dz . W^T by tasks of rows, each reading W (one block of
            // features: small) transposed in place.
            Some(dx) if d <= FEATURES_PER_TASK => {
                let wt = MatRef::new(w, d, u).t();
                dx[..rows * d]
                    .par_chunks_mut(task_rows * d)
                    .zip(dz.par_chunks(task_rows * u))
                    .for_each_task(|(dxt, dzt)| matmul(MatRef::new(dzt, dzt.len() / u, u), wt, dxt, false));
            }
            // dx = dz . W^T a block of input features at a time: each task reads
            // (packs) only its rows of W, seen transposed, and writes its block
            // of columns, block-major; the blocks are then gathered into dx.
            Some(dx) => {
                let [blocks] = ws.f32s([rows * d]);
                blocks.par_chunks_mut(rows * FEATURES_PER_TASK).enumerate().for_each_task(|(t, dxb)| {
                    let (first, width) = (t * FEATURES_PER_TASK, dxb.len() / rows);
                    let wb = MatRef::new(&w[first * u..(first + width) * u], width, u);
                    matmul(MatRef::new(dz, rows, u), wb.t(), dxb, false);
                });
                let blocks = &*blocks;
                dx[..rows * d].par_chunks_mut(task_rows * d).enumerate().for_each_task(|(t, dxt)| {
                    gather_blocks(blocks, rows, FEATURES_PER_TASK, d, |r| t * task_rows + r, dxt)
                });
            }
            None => {}
        }
        return;
    }
    let (prepared, [dzp], _, _) = ws.with_prepared([rows * narrow::WIDTH], 0, 0);
    pad_columns(dz, u, dzp);
    let dzp = &*dzp;
    gw.par_chunks_mut(FEATURES_PER_TASK * u)
        .enumerate()
        .for_each_task(|(t, gwt)| narrow::xt_times_dz(x, d, t * FEATURES_PER_TASK, dzp, u, gwt));
    if let Some(dx) = dx {
        // W^T as the forward pass built it (the same weights).
        let wt = transposed(op, prepared);
        dx[..rows * d]
            .par_chunks_mut(task_rows * d)
            .zip(dz.par_chunks(task_rows * u))
            .for_each_task(|(dxt, dzt)| narrow::dz_times_wt(dzt, wt, u, d, dxt));
    }
}

// dW = x^T . dz and dx = dz . W^T over a row per sample (a classifier's
// hidden layer: a batch of rows against a kernel of megabytes) as products
// against dz packed, dz (R, U) and dz^T (U, R) being small, by tasks of
// input features: a task turns its columns of x (R, D) into rows of x^T,
// multiplies them into its rows of dW, then writes its rows of
// dx^T = W . dz^T (W's rows read in place) over them; dx is dx^T turned.
// Workspace: [dz packed, dz^T packed, x^T then dx^T (D, R)].
fn backward_packed(
    op: &DenseOp,
    x: &[f32],
    dz: &[f32],
    gw: &mut [f32],
    dx: Option<&mut [f32]>,
    rows: usize,
    ws: &mut Workspace,
) {
    let (d, u, w) = (op.d, op.u, op.kernel);
    let [dzp, dztp, turned] = ws.f32s([packed_len(rows, u), packed_len(u, rows), d * rows]);
    rayon::join(|| pack(dz, rows, u, dzp), || pack_transposed(dz, rows, u, dztp));
    let (dzp, dztp) = (Packed::new(dzp, rows, u), Packed::new(dztp, u, rows));
    let wants_dx = dx.is_some();
    gw[..d * u]
        .par_chunks_mut(FEATURES_PER_TASK * u)
        .zip(turned.par_chunks_mut(FEATURES_PER_TASK * rows))
        .enumerate()
        .for_each_task(|(t, (gwt, block))| {
            let (first, width) = (t * FEATURES_PER_TASK, gwt.len() / u);
            transpose_ld(&x[first..], (rows, width, d), block, rows);
            matmul_packed(MatRef::new(block, width, rows), dzp, 0..rows, 0..u, gwt, u, false);
            if wants_dx {
                matmul_packed(MatRef::new(&w[first * u..], width, u), dztp, 0..u, 0..rows, block, rows, false);
            }
        });
    if let Some(dx) = dx {
        let (turned, task_rows) = (&*turned, task_rows(op));
        dx[..rows * d].par_chunks_mut(task_rows * d).enumerate().for_each_task(|(t, dxt)| {
            transpose_ld(&turned[t * task_rows..], (d, dxt.len() / d, rows), dxt, d);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + seed * 11) % 29) as f32 / 29.0 - 0.5).collect()
    }

    /// dx and dW of `op` over n rows x, its output y, for dy (both written
    /// over NaNs, so that a value left unwritten shows).
    fn gradients(
        op: &DenseOp,
        x: &[f32],
        y: &[f32],
        mut dy: Vec<f32>,
        n: usize,
        ws: &mut Workspace,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut dx, mut dw) = (vec![f32::NAN; n * op.rows_per_sample * op.d], vec![f32::NAN; op.d * op.u]);
        let grads =
            WeightGrads { x, y, dy: &mut dy, dx: Some(&mut dx), accumulate: false, kernel: &mut dw, bias: None, n };
        backward(op, grads, ws);
        (dx, dw)
    }

    /// One pass of the narrow kernels with `w` under `version` in `ws`: y, and dx and dW for dy.
    fn pass(w: &[f32], version: Option<u64>, ws: &mut Workspace) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (n, d, u) = (5, 40, 10);
        let op = DenseOp { d, u, rows_per_sample: 1, kernel: w, bias: None, act: Activation::Linear, version };
        let x = values(n * d, 1);
        let mut y = vec![0.0; n * u];
        forward(&op, &x, &mut y, n, ws);
        let (dx, dw) = gradients(&op, &x, &y, values(n * u, 2), n, ws);
        (y, dx, dw)
    }

    /// The gradients of a hidden layer (beyond the narrow kernels) equal
    /// their definitions up to rounding, and dx is written in full: feature
    /// tasks, units and rows each ending inside a block or a panel, one row
    /// (a batch of one), one feature task, the fewest units past the narrow
    /// kernels' (17); and over several rows per sample (a pointwise
    /// convolution: dW by tiles of features and units, each ending inside a
    /// block); one workspace for all, as a model's layer keeps one.
    #[test]
    fn a_hidden_layers_gradients_match_their_definitions() {
        let mut ws = Workspace::default();
        for (samples, rows_per_sample, d, u) in
            [(37, 1, 300, 40), (1, 1, 20, 17), (3, 1, 129, 33), (64, 1, 128, 96), (2, 3, 200, 150), (1, 40, 64, 300)]
        {
            let w = values(d * u, 5);
            let act = Activation::Linear;
            let op = DenseOp { d, u, rows_per_sample, kernel: &w, bias: None, act, version: None };
            let n = samples * rows_per_sample;
            let (x, y) = (values(n * d, 6), vec![0.0; n * u]);
            let dz = values(n * u, 7);
            let (dx, dw) = gradients(&op, &x, &y, dz.clone(), samples, &mut ws);
            let close = |got: f32, want: f32| (got - want).abs() <= 1e-4 * (1.0 + want.abs());
            for i in 0..d {
                for j in 0..u {
                    let want: f32 = (0..n).map(|r| x[r * d + i] * dz[r * u + j]).sum();
                    assert!(close(dw[i * u + j], want), "{n}x{d}x{u}: dW[{i}, {j}] {} against {want}", dw[i * u + j]);
                }
            }
            for r in 0..n {
                for i in 0..d {
                    let want: f32 = (0..u).map(|j| dz[r * u + j] * w[i * u + j]).sum();
                    assert!(close(dx[r * d + i], want), "{n}x{d}x{u}: dx[{r}, {i}] {} against {want}", dx[r * d + i]);
                }
            }
        }
    }

    #[test]
    fn the_kept_transpose_follows_the_weights_version() {
        let (first, second) = (values(400, 3), values(400, 4));
        let mut ws = Workspace::default();
        let afresh = |w: &[f32]| pass(w, None, &mut Workspace::default());
        assert_eq!(pass(&first, Some(1), &mut ws), afresh(&first));
        // New weights under a new version: W^T built again for the forward
        // pass, and the backward pass reads that one.
        assert_eq!(pass(&second, Some(2), &mut ws), afresh(&second));
        // The same version again: what it kept, which is W^T of `second`
        // (the version is the caller's promise that the weights are unchanged).
        let kept = pass(&first, Some(2), &mut ws);
        assert_eq!((&kept.0, &kept.1), (&afresh(&second).0, &afresh(&second).1));
        assert_ne!(kept.0, afresh(&first).0);
    }
}
