//! Convolutions over tasks of samples: Conv2D (direct kernels for few input
//! channels; else, at stride 1, Winograd's tiles for 3x3 windows or matrix
//! products over a padded copy of the input, and im2col + one matrix product
//! otherwise, or at batch 1 the packed product reading the patches in place;
//! optionally with the max pooling after it fused in) and DepthwiseConv2D.

use super::team::ForEachTask;
use super::{
    SAMPLES_PER_TASK, activate_keeping_input, gather_blocks, norm, task_count, through_kept_input, with_scratch,
};
use crate::activations::Activation;
use crate::device::{Affine, ConvOp, DepthwiseOp, WeightGrads, Workspace};
use crate::kernels::add_assign;
use crate::kernels::conv_pool_grad::conv_pool_weight_grad;
use crate::kernels::conv_wide::Wide;
use crate::kernels::depthwise::{self, Depthwise};
use crate::kernels::im2col::{
    col2im_add, col2im_pixels, im2col, im2col_positions, pad_rows, padded_width, reads_pixels,
};
use crate::kernels::matmul::{MatRef, matmul, matmul_ld};
use crate::kernels::packed::{self, PANEL, Packed, Runs, matmul_packed, pack, packed_len};
use crate::kernels::pool::{max_pool_backward_through, max_pool_forward};
use crate::kernels::winograd::{Transformed, Winograd};
use crate::kernels::{self, Window, activation, add_rows, batch_norm, sum_rows};
use crate::kernels::{conv_direct, conv_pool_winograd};
use rayon::iter::Either;
use rayon::prelude::*;
use std::ops::Range;

/// Output positions per task when a batch smaller than one task of samples is
/// split within its samples (so that batch-1 inference uses every thread):
/// at most this many per band ([`bands`]).
const POSITIONS_PER_TASK: usize = 256;

/// Bands a sample of `positions` outputs splits into at batch 1: one up to
/// [`ONE_BAND_POSITIONS`] (which a split by output channels serves better),
/// otherwise a multiple of 4, so that the threads (2 or 4) get even shares.
/// Depends on the shape only, never on the thread count.
fn bands(positions: usize) -> usize {
    if positions <= ONE_BAND_POSITIONS {
        return 1;
    }
    positions.div_ceil(POSITIONS_PER_TASK).next_multiple_of(4)
}

/// Most output positions a sample keeps in one band at batch 1: a 7x7 image's
/// 49 are split by output channels, a 14x14 image's 196 into bands of rows
/// (by channels, the blocks are gathered into the output afterwards:
/// ResNet-50's 14x14 pointwise convolutions 7% faster by rows, MobileNetV2
/// at batch 1 9%).
const ONE_BAND_POSITIONS: usize = 128;

/// Output rows per band of [`bands`] for a sample of `oh` rows of `ow` positions.
fn band_rows(oh: usize, ow: usize) -> usize {
    oh.div_ceil(bands(oh * ow)).max(1)
}

/// Fewest output positions per group the forward pass finishes (activation,
/// folded normalisation) while they are in cache.
const FINISH_POSITIONS: usize = 1024;

/// Convolution outputs a fused max pooling's forward pass computes at a time
/// (512 KiB): a group of samples, pooled while they are in cache.
const POOL_GROUP_VALUES: usize = 1 << 17;

/// Samples per group of a fused pool's forward pass, `conv_len` outputs each.
fn pool_group(conv_len: usize) -> usize {
    (POOL_GROUP_VALUES / conv_len.max(1)).clamp(1, SAMPLES_PER_TASK)
}

/// Output channels per task when batch-1 inference splits a convolution by channels.
const FILTER_BLOCK: usize = 16;

/// Output channels per thread where batch-1 inference splits `f` of them
/// over the threads: whole blocks, starting at a panel for the `packed`
/// product. (Each channel's sums are the same whatever the split.)
fn thread_filters(f: usize, packed: bool) -> usize {
    let unit = if packed { PANEL } else { FILTER_BLOCK };
    f.div_ceil(rayon::current_num_threads()).next_multiple_of(unit)
}

/// Fewest tiles per band when batch-1 inference splits Winograd's tiles by
/// rows of them.
const WINOGRAD_BAND_TILES: usize = 28;

/// Unfolded values per band of the forward pass's positions, and per group
/// of samples unfolded or padded together (512 KiB: they stay in L2 between
/// the copy and the product that reads it; a task's 16 samples at once, 2.4
/// MB of patches for ResNet-20's strided 3x3 convolution, did not, and its
/// training step took 1.2 ms longer; its stage-1 Winograd layers' forward
/// passes, padding 1.2 MB at once, took 5% longer).
const UNFOLD_VALUES: usize = 1 << 17;

/// Samples of `s` copied together where each takes `values` (its padded
/// layout or unfolded patches): as many as fit [`UNFOLD_VALUES`], one at least.
fn copy_group(values: usize, s: usize) -> usize {
    (UNFOLD_VALUES / values.max(1)).clamp(1, s.max(1))
}

/// Output channels per task when batch-1 inference splits an unfolded convolution by channels.
const UNFOLDED_FILTER_BLOCK: usize = 64;

/// What a convolution applies to its output channels before writing them:
/// its bias, or the BatchNormalization folded into it (and the residual Add
/// after that), then its activation.
#[derive(Clone, Copy)]
struct Finish<'a> {
    bias: Option<&'a [f32]>,
    affine: Option<Affine<'a>>,
    act: Activation,
}

impl<'a> Finish<'a> {
    fn of(op: &ConvOp<'a>) -> Self {
        Finish { bias: op.bias, affine: op.affine, act: op.act }
    }

    /// z: (rows, f) -> act(z + bias), or act(z * scale + shift [+ residual]),
    /// in place; z starts at value `at` of the output (where the residual is read).
    fn apply(&self, z: &mut [f32], at: usize, f: usize) {
        match self.affine {
            Some(a) => {
                let residual = a.residual.map(|r| &r[at..]);
                activation::forward_affine(self.act, z, a.scale, a.shift, residual, f)
            }
            None => activation::forward(self.act, z, self.bias, f),
        }
    }

    /// The bias, for kernels that add it as they write (none with a folded
    /// normalisation, whose shift includes it).
    fn bias_inside(&self) -> Option<&'a [f32]> {
        if self.affine.is_some() { None } else { self.bias }
    }

    /// Whether [`Finish::apply_after_bias`] changes anything.
    fn applies_after_bias(&self) -> bool {
        self.affine.is_some() || self.act != Activation::Linear
    }

    /// [`Finish::apply`] after a kernel added [`Finish::bias_inside`].
    fn apply_after_bias(&self, z: &mut [f32], at: usize, f: usize) {
        Finish { bias: None, ..*self }.apply(z, at, f)
    }
}

/// Bands of rows [`gather_finishing`] splits a sample's output into (a
/// fixed split: what each band does does not depend on the others).
const GATHER_BANDS: usize = 4;

/// ys: (rows, f) <- the blocks of output channels a sample was computed in
/// (`(m, block, f)`: see [`gather_blocks`]), finished (`fin`, `at`: ys's
/// first value in the op's output): by bands of rows, on every thread.
fn gather_finishing(
    blocks: &[f32],
    (m, block, f): (usize, usize, usize),
    row_of: impl Fn(usize) -> usize + Sync,
    ys: &mut [f32],
    fin: Finish,
    at: usize,
) {
    let rows = (ys.len() / f).div_ceil(GATHER_BANDS).max(1);
    ys.par_chunks_mut(rows * f).enumerate().for_each_task(|(b, yb)| {
        gather_blocks(blocks, m, block, f, |r| row_of(b * rows + r), yb);
        fin.apply(yb, at + b * rows * f, f);
    });
}

/// Fewest input channels and filters for Winograd's tiles.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Fewest tiles per call for Winograd's tiles: with the transformed kernel
/// prepared on every call, and kept across calls (inference).
const WINOGRAD_MIN_TILES: usize = 128;
const WINOGRAD_MIN_TILES_KEPT: usize = 32;

/// Most outputs computed per real one for the padded layout to be used.
const MAX_WIDE_OVERHEAD: f64 = 1.16;

/// Input channels up to which the direct kernels beat im2col + matrix product.
const DIRECT_MAX_CHANNELS: usize = 4;

/// Values of the direct path's padded kernel (none for im2col): the direct
/// kernels take few input channels, no dilation, one group.
fn padded_len(op: &ConvOp) -> usize {
    let g = &op.g;
    if g.c <= DIRECT_MAX_CHANNELS && conv_direct::fast_taps(g.patch_len()) && (g.dh, g.dw, op.groups) == (1, 1, 1) {
        conv_direct::padded_len(g.patch_len(), op.filters)
    } else {
        0
    }
}

// x: (N,H,W,C) -> y: (N,OH,OW,F);  y = act(conv(x, W) + b)
// With a fused pool, y is the pooled output: y = maxpool(act(conv(x, W) + b)).
// Workspace: [dW parts, db parts, padded kernel, padded sample]; argmax of the fused pool.
// With `moments` (2F values), whole tasks of samples also sum their outputs'
// per-channel moments while those are in cache, as BatchNormalization's own
// pass (`norm::channel_sums`) would over y: returns whether they did.
pub fn forward(
    op: &ConvOp,
    x: &[f32],
    y: &mut [f32],
    n: usize,
    ws: &mut Workspace,
    moments: Option<&mut [f64]>,
) -> bool {
    if op.groups > 1 {
        grouped_forward(op, x, y, n, ws);
        return false;
    }
    if op.act.needs_input() && op.pool.is_none() {
        forward(&ConvOp { act: Activation::Linear, ..*op }, x, y, n, ws, None);
        activate_keeping_input(op.act, &mut y[..n * op.g.positions() * op.filters], op.filters, ws);
        return false;
    }
    let direct = padded_len(op) > 0;
    if let Some((a, residual)) = op.affine.and_then(|a| Some((a, a.residual?))).filter(|_| direct) {
        // The direct kernels apply the map themselves: the residual Add after them.
        let affine = Some(Affine { residual: None, ..a });
        forward(&ConvOp { act: Activation::Linear, affine, ..*op }, x, y, n, ws, None);
        let len = n * op.g.positions() * op.filters;
        kernels::add_assign(&mut y[..len], &residual[..len]);
        activation::forward(op.act, &mut y[..len], None, op.filters);
        return false;
    }
    let (g, f, fin) = (op.g, op.filters, Finish::of(op));
    let pooled_len = op.pool.map_or(0, |p| p.positions() * p.c);
    let wide = ConvKernel::choose_wide(op, direct);
    // Samples per call of the tiles: a task's, or a group's behind a fused pool.
    let per_call = if op.pool.is_some() { pool_group(g.positions() * f).min(n) } else { n.min(SAMPLES_PER_TASK) };
    let winograd = ConvKernel::choose_winograd(&g, f, n, per_call, false, op.version.is_some());
    // Batches below one task through Winograd's tiles: a sample at a time,
    // split into bands of rows of tiles where there are two bands or more,
    // otherwise its output channels into blocks.
    let winograd_blocks = n < SAMPLES_PER_TASK && op.pool.is_none() && winograd.is_some();
    let winograd_band = winograd.filter(|_| winograd_blocks).and_then(|w| {
        let band = WINOGRAD_BAND_TILES.div_ceil(g.ow.div_ceil(w.tile_side()));
        (g.oh.div_ceil(w.tile_side()) >= 2 * band).then_some(band)
    });
    // A padded sample for batches below one task (stride 1; Winograd's tiles read the input itself).
    let padded_sample = match wide {
        Some(wide) if n < SAMPLES_PER_TASK && !direct && !wide.pointwise() && winograd.is_none() => wide.padded_len(1),
        _ => 0,
    };
    // Unfolded by channel blocks: batch-1 inference with too few positions to split.
    let unfolded_blocks = n < SAMPLES_PER_TASK && !direct && wide.is_none() && op.pool.is_none() && {
        g.positions() <= POSITIONS_PER_TASK && f >= 2 * UNFOLDED_FILTER_BLOCK
    };
    // Output channel blocks of one sample, when batch-1 inference splits by channels.
    let blocks_len = match wide {
        _ if winograd_band.is_some() => 0,
        _ if winograd_blocks || unfolded_blocks => g.positions() * f,
        Some(wide) if n < SAMPLES_PER_TASK && !direct => wide.band(0, g.oh).len() * f,
        _ => 0,
    };
    let cols_len = if unfolded_blocks { g.positions() * g.patch_len() } else { 0 };
    // Batch-1 inference's products read the kernel packed once per version
    // of the weights, where the general product would run (not the
    // register-blocked kernel of 16-64 filters).
    let k = g.patch_len();
    let packs = n < SAMPLES_PER_TASK && !direct && winograd.is_none() && op.pool.is_none() && packed::available();
    let packs = packs && !(wide.is_some() && Wide::blocked(f));
    // The tasks' partial moments, where they are gathered (whole tasks, no pool).
    let gathers = moments.is_some() && n >= SAMPLES_PER_TASK && op.pool.is_none();
    let parts_len = if gathers { task_count(n) * 2 * f } else { 0 };
    let (prepared, [_, _, wp, padded, cols, blocks], argmax, parts) =
        ws.with_prepared([0, 0, padded_len(op), padded_sample, cols_len, blocks_len], n * pooled_len, parts_len);
    // The transformed kernel (form: the tiles' side; where it is kept across
    // calls, packed for the packed product, form 16 + the side: ResNet-50 at
    // batch 32 6% faster) or the packed one (form 0). (Packed on every
    // training call, ResNet-20's steps are no faster.)
    let tiles_packed = op.version.is_some() && packed::available();
    let prepared = match &winograd {
        Some(w) if tiles_packed => prepared.get(op.version, 16 + w.tile_side() as u64, w.packed_kernel_len(), |u| {
            w.transform_kernel_packed(op.kernel, u)
        }),
        Some(w) => prepared.get(op.version, w.tile_side() as u64, w.kernel_len(), |u| w.transform_kernel(op.kernel, u)),
        None if packs => prepared.get(op.version, 0, packed_len(k, f), |p| pack(op.kernel, k, f, p)),
        None => &[],
    };
    let packed = packs.then(|| Packed::new(prepared, k, f));
    if direct {
        conv_direct::pad_filters(op.kernel, op.affine.map_or(op.bias, |a| Some(a.shift)), f, wp);
        if let Some(a) = op.affine {
            // The folded normalisation's scale, in the kernel: conv(x, W * scale) + shift.
            let fp = conv_direct::padded_filters(f);
            for row in wp[..g.patch_len() * fp].chunks_exact_mut(fp) {
                row[..f].iter_mut().zip(a.scale).for_each(|(w, s)| *w *= s);
            }
        }
    }
    let wp = &*wp;
    let u = if tiles_packed { Transformed::Packed(prepared) } else { Transformed::Rows(prepared) };
    let conv = ConvKernel::new(op, direct, wide, winograd.map(|w| (w, u)), wp);
    let (in_len, conv_len) = (g.h * g.w * g.c, g.positions() * f);
    let xs = x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len);
    let Some(pg) = op.pool else {
        if let (true, Some(w)) = (winograd_blocks, &winograd) {
            let samples = y[..n * conv_len].chunks_exact_mut(conv_len).zip(x[..n * in_len].chunks_exact(in_len));
            if let Some(band) = winograd_band {
                // Each task transforms its band of rows of tiles, and computes every output channel.
                let rows = band * w.tile_side();
                for (i, (ys, xs)) in samples.enumerate() {
                    ys.par_chunks_mut(rows * g.ow * f).enumerate().for_each_task(|(b, yb)| {
                        with_scratch(w.scratch_len(), |scratch| {
                            w.forward_rows(xs, u, b * band..(b + 1) * band, fin.bias_inside(), scratch, yb);
                        });
                        fin.apply_after_bias(yb, i * conv_len + b * rows * g.ow * f, f);
                    });
                }
                return false;
            }
            // Each task transforms the whole sample, and computes its block of output channels.
            let p = g.positions();
            let block = thread_filters(f, tiles_packed);
            for (i, (ys, xs)) in samples.enumerate() {
                blocks[..p * f].par_chunks_mut(p * block).enumerate().for_each_task(|(b, yb)| {
                    let filters = b * block..b * block + yb.len() / p;
                    with_scratch(w.scratch_len(), |scratch| {
                        w.forward_filters(xs, u, 1, filters, fin.bias_inside(), scratch, yb);
                    });
                });
                let fin = Finish { bias: None, ..fin };
                gather_finishing(blocks, (p, block, f), |r| r, ys, fin, i * conv_len);
            }
            return false;
        }
        if let (true, false, Some(wide)) = (n < SAMPLES_PER_TASK, direct, wide) {
            // One task's worth of samples, at stride 1: split each sample's output
            // rows into bands, or, when there are too few rows for every thread,
            // its output channels into blocks (each reads only its block of the kernel).
            let rows = band_rows(g.oh, g.ow);
            let threads = rayon::current_num_threads();
            let block = thread_filters(f, packed.is_some());
            let by_filters = g.oh.div_ceil(rows) < threads && block < f;
            let samples = y[..n * conv_len].chunks_exact_mut(conv_len).zip(x[..n * in_len].chunks_exact(in_len));
            for (i, (ys, xs)) in samples.enumerate() {
                let xp: &[f32] = if wide.pointwise() {
                    xs
                } else {
                    pad_sample(&wide, xs, &mut padded[..wide.padded_len(1)]);
                    &padded[..wide.padded_len(1)]
                };
                if by_filters {
                    let all = wide.band(0, g.oh);
                    let m = all.len();
                    blocks[..m * f].par_chunks_mut(m * block).enumerate().for_each_task(|(b, yb)| {
                        let filters = b * block..(b * block + yb.len() / m);
                        match packed {
                            Some(p) => wide.forward_packed(xp, p, filters, all.clone(), yb),
                            None => wide.forward_filters(xp, op.kernel, f, filters, all.clone(), yb),
                        }
                    });
                    gather_finishing(blocks, (m, block, f), |r| wide.row_of(r), ys, fin, i * conv_len);
                    continue;
                }
                ys.par_chunks_mut(rows * g.ow * f).enumerate().for_each_task(|(b, yb)| {
                    let band = wide.band(b * rows, yb.len() / (g.ow * f));
                    if let (Some(p), true) = (packed, wide.pointwise()) {
                        // 1x1 windows: the wide rows are the output's, written in place.
                        wide.forward_packed(xp, p, 0..f, band, yb);
                        return fin.apply(yb, i * conv_len + b * rows * g.ow * f, f);
                    }
                    with_scratch(band.len() * f, |y_wide| {
                        match packed {
                            Some(p) => wide.forward_packed(xp, p, 0..f, band, y_wide),
                            None => wide.forward(xp, op.kernel, f, band, y_wide),
                        }
                        wide.compact_band(y_wide, f, yb);
                    });
                    fin.apply(yb, i * conv_len + b * rows * g.ow * f, f);
                });
            }
            return false;
        }
        if n < SAMPLES_PER_TASK && direct {
            // One task's worth of samples: split each sample's output rows into bands.
            let rows = band_rows(g.oh, g.ow);
            for (ys, xs) in y[..n * conv_len].chunks_exact_mut(conv_len).zip(x[..n * in_len].chunks_exact(in_len)) {
                ys.par_chunks_mut(rows * g.ow * f).enumerate().for_each_task(|(b, yb)| {
                    let band = b * rows..b * rows + yb.len() / (g.ow * f);
                    conv.forward_direct(xs, band, yb, fin.act);
                });
            }
            return false;
        }
        if unfolded_blocks {
            // Too few positions to split (a 7x7 or 14x14 stage): unfold the sample
            // once, then products by blocks of output channels (a fixed split,
            // whatever the number of threads).
            let (p, block) = (g.positions(), UNFOLDED_FILTER_BLOCK);
            let samples = y[..n * conv_len].chunks_exact_mut(conv_len).zip(x[..n * in_len].chunks_exact(in_len));
            // (A sample's patches, up to megabytes, are unfolded on every thread.)
            let per_task = p.div_ceil(rayon::current_num_threads());
            for (i, (ys, xs)) in samples.enumerate() {
                cols[..p * k].par_chunks_mut(per_task * k).enumerate().for_each_task(|(t, ct)| {
                    let first = t * per_task;
                    im2col_positions(&g, xs, first..first + ct.len() / k, ct);
                });
                let cols = &*cols;
                blocks[..p * f].par_chunks_mut(p * block).enumerate().for_each_task(|(b, yb)| {
                    let (filters, a) = (b * block..b * block + yb.len() / p, MatRef::new(cols, p, k));
                    match packed {
                        Some(w) => matmul_packed(a, w, 0..k, filters.clone(), yb, filters.len(), false),
                        None => matmul(a, MatRef::with_ld(&op.kernel[filters.start..], k, filters.len(), f), yb, false),
                    }
                });
                gather_finishing(blocks, (p, block, f), |r| r, ys, fin, i * conv_len);
            }
            return false;
        }
        if let Some(p) = packed.filter(|_| wide.is_none() && !unfolded_blocks && (g.dh, g.dw) == (1, 1)) {
            // Strided windows at batch 1: bands of output rows, each output row's
            // patches read in place as runs of KW*C values, one per kernel row,
            // from the input or, where the window hangs over padding, from the
            // band's input rows padded (no unfolding).
            let rows = band_rows(g.oh, g.ow);
            let inside = (g.pt, g.pl) == (0, 0) && (g.oh - 1) * g.sh + g.kh <= g.h && padded_width(&g) <= g.w;
            let row_len = if inside { g.w * g.c } else { padded_width(&g) * g.c };
            let samples = y[..n * conv_len].chunks_exact_mut(conv_len).zip(x[..n * in_len].chunks_exact(in_len));
            for (i, (ys, xs)) in samples.enumerate() {
                ys.par_chunks_mut(rows * g.ow * f).enumerate().for_each_task(|(b, yb)| {
                    let (first, count) = (b * rows * g.sh, yb.len() / (g.ow * f));
                    let reads = (count - 1) * g.sh + g.kh;
                    let products = |xb: &[f32], yb: &mut [f32]| {
                        for (r, yr) in yb.chunks_exact_mut(g.ow * f).enumerate() {
                            let a = Runs::new(&xb[r * g.sh * row_len..], g.ow, g.sw * g.c, (g.kh, g.kw * g.c, row_len));
                            matmul_packed(a, p, 0..k, 0..f, yr, f, false);
                        }
                    };
                    if inside {
                        products(&xs[first * row_len..], yb);
                    } else {
                        with_scratch(reads * row_len, |xb| {
                            pad_rows(&g, xs, first..first + reads, xb);
                            products(xb, yb);
                        });
                    }
                    fin.apply(yb, i * conv_len + b * rows * g.ow * f, f);
                });
            }
            return false;
        }
        if n < SAMPLES_PER_TASK && !direct {
            // One task's worth of samples: split each sample's output positions instead.
            let samples = y[..n * conv_len].par_chunks_mut(conv_len).zip(x[..n * in_len].par_chunks(in_len));
            samples.enumerate().for_each_task(|(i, (ys, xs))| {
                let per_task = g.positions().div_ceil(bands(g.positions()));
                ys.par_chunks_mut(per_task * f).enumerate().for_each_task(|(t, yt)| {
                    let (first, count) = (t * per_task, yt.len() / f);
                    with_scratch(count * k, |cols| {
                        im2col_positions(&g, xs, first..first + count, cols);
                        let a = MatRef::new(cols, count, k);
                        match packed {
                            Some(w) => matmul_packed(a, w, 0..k, 0..f, yt, f, false),
                            None => matmul(a, MatRef::new(op.kernel, k, f), yt, false),
                        }
                    });
                    fin.apply(yt, i * conv_len + first * f, f);
                });
            });
            return false;
        }
        let tasks = y[..n * conv_len].par_chunks_mut(SAMPLES_PER_TASK * conv_len).zip(xs).enumerate();
        let width = 2 * f;
        let task_parts = if gathers {
            Either::Left(parts.par_chunks_mut(width).map(Some))
        } else {
            Either::Right((0..task_count(n)).into_par_iter().map(|_| None))
        };
        tasks.zip(task_parts).for_each_task(|((t, (yt, xt)), part)| {
            let at = t * SAMPLES_PER_TASK * conv_len;
            with_scratch(conv.forward_cols_len(xt.len() / in_len), |cols| conv.forward(xt, yt, cols, fin, at));
            if let Some(part) = part {
                part.fill(0.0);
                batch_norm::add_moments(yt, f, part);
            }
        });
        if let (true, Some(sums)) = (gathers, moments) {
            norm::add_parts(parts, width, sums);
        }
        return gathers;
    };
    y[..n * pooled_len]
        .par_chunks_mut(SAMPLES_PER_TASK * pooled_len)
        .zip(argmax.par_chunks_mut(SAMPLES_PER_TASK * pooled_len))
        .zip(xs)
        .for_each_task(|((yt, at), xt)| {
            // A group of samples at a time (`pool_group`), its outputs pooled while in cache.
            let group = pool_group(conv_len).min(xt.len() / in_len);
            with_scratch(group * conv_len + conv.forward_cols_len(group), |buf| {
                let (z, cols) = buf.split_at_mut(group * conv_len);
                let groups = xt.chunks(group * in_len).zip(yt.chunks_mut(group * pooled_len));
                for ((xg, yg), ag) in groups.zip(at.chunks_mut(group * pooled_len)) {
                    let samples = xg.chunks_exact(in_len).zip(yg.chunks_exact_mut(pooled_len));
                    if conv.direct {
                        for ((xs, ys), a) in samples.zip(ag.chunks_exact_mut(pooled_len)) {
                            if !conv.forward_relu_pool2x2(&pg, xs, ys, (a, op.winners), fin.act, z) {
                                conv.forward(xs, &mut z[..conv_len], cols, fin, 0);
                                max_pool_forward(&pg, &z[..conv_len], ys, a);
                            }
                        }
                        continue;
                    }
                    let z = &mut z[..xg.len() / in_len * conv_len];
                    conv.forward(xg, z, cols, fin, 0); // (no folded map, so no residual, with a pool)
                    for ((zs, ys), a) in z
                        .chunks_exact(conv_len)
                        .zip(yg.chunks_exact_mut(pooled_len))
                        .zip(ag.chunks_exact_mut(pooled_len))
                    {
                        max_pool_forward(&pg, zs, ys, a);
                    }
                }
            });
        });
    false
}

// Differentiates y = act(z), z = conv(x, W) + b:
//   dz = dy * act'(y);  dW = conv_weight_grad(x, dz);  db = sum(dz);  dx = conv_input_grad(dz, W)
// With a fused pool, y = maxpool(act(z)) and dz is first scattered to the
// argmax positions: dz[argmax[i]] += dy[i] * act'(y[i]).
pub fn backward(op: &ConvOp, pass: WeightGrads, ws: &mut Workspace) {
    if op.groups > 1 {
        return grouped_backward(op, pass, ws);
    }
    if op.act.needs_input() && op.pool.is_none() {
        through_kept_input(op.act, &mut pass.dy[..pass.n * op.g.positions() * op.filters], ws);
        return backward(&ConvOp { act: Activation::Linear, ..*op }, pass, ws);
    }
    let WeightGrads { x, y, dy, dx, accumulate, kernel: gw, bias: gb, n } = pass;
    let (g, f, act) = (op.g, op.filters, op.act);
    let k = g.patch_len();
    // Tasks of SAMPLES_PER_TASK samples, or below that (a large image at a
    // small batch) up to 4 tasks, so that every thread has work: not one per
    // sample, as each task's partial weight gradient is another kernel's
    // worth of memory to write and add (ResNet-50 at batch 8 3-6% faster).
    let per_task = if n < SAMPLES_PER_TASK { n.div_ceil(4) } else { SAMPLES_PER_TASK };
    let tasks = n.div_ceil(per_task);
    let pooled_len = op.pool.map_or(0, |p| p.positions() * p.c);
    let direct = padded_len(op) > 0;
    let wide = ConvKernel::choose_wide(op, direct);
    // The input gradient through Winograd's tiles: the transposed convolution's,
    // with the kernel turned, then transformed.
    let winograd = ConvKernel::choose_winograd(&g, f, n, n.min(per_task), true, false).filter(|_| dx.is_some());
    let turned_len = winograd.map_or(0, |w| k * f + w.kernel_len());
    let ([dw_parts, db_parts, wp, turned], argmax) =
        ws.with_indices([tasks * k * f, tasks * f, padded_len(op), turned_len], n * pooled_len);
    if let (Some(w), Some(layout)) = (&winograd, Wide::of(&g)) {
        let (turned, u) = turned.split_at_mut(k * f);
        layout.turn_kernel(op.kernel, f, turned);
        w.transform_kernel(turned, u);
    }
    let (wp, argmax) = (&*wp, &*argmax);
    let u = &turned[turned_len.min(k * f)..];
    let mut conv = ConvKernel::new(op, direct, wide, winograd.map(|w| (w, Transformed::Rows(u))), wp);
    // The weight gradient through the forward pass's tiles (their products
    // through the register-blocked kernel: up to 64 filters).
    conv.weight_tiles =
        ConvKernel::choose_winograd(&g, f, n, n.min(per_task), false, false).filter(|_| Wide::blocked(f));
    let (in_len, conv_len) = (g.h * g.w * g.c, g.positions() * f);
    let parts = dw_parts.par_chunks_mut(k * f).zip(db_parts.par_chunks_mut(f));
    let xs = x[..n * in_len].par_chunks(per_task * in_len);
    let dx = dx.map(|dx| &mut dx[..n * in_len]);
    match &op.pool {
        None => {
            dy[..n * conv_len]
                .par_chunks_mut(per_task * conv_len)
                .zip(y[..n * conv_len].par_chunks(per_task * conv_len))
                .zip(xs)
                .zip(parts)
                .for_each_task(|(((dz, yt), xt), (dw, db))| {
                    activation::backward(act, yt, dz, f);
                    dw.fill(0.0);
                    db.fill(0.0);
                    with_scratch(conv.cols_len(xt.len() / in_len, false), |cols| {
                        conv.weight_grad(xt, dz, dw, db, cols)
                    });
                });
            if let Some(dx) = dx {
                dx.par_chunks_mut(per_task * in_len)
                    .zip(dy[..n * conv_len].par_chunks(per_task * conv_len))
                    .for_each_task(|(dxt, dz)| {
                        let s = dxt.len() / in_len;
                        with_scratch(conv.cols_len(s, true), |dcols| conv.input_grad(dz, dxt, accumulate, dcols));
                    });
            }
        }
        Some(pool) => {
            let chunk = per_task * pooled_len;
            let dx_tasks = match dx {
                Some(dx) => Either::Left(dx.par_chunks_mut(per_task * in_len).map(Some)),
                None => Either::Right((0..tasks).into_par_iter().map(|_| None)),
            };
            dy[..n * pooled_len]
                .par_chunks(chunk)
                .zip(y[..n * pooled_len].par_chunks(chunk))
                .zip(argmax.par_chunks(chunk))
                .zip(xs)
                .zip(parts)
                .zip(dx_tasks)
                .for_each_task(|(((((dyt, yt), at), xt), (dw, db)), dxt)| {
                    dw.fill(0.0);
                    db.fill(0.0);
                    if dxt.is_none() && conv.direct {
                        // First layer: no input gradient, so no need for dz at all.
                        let samples = xt.chunks_exact(in_len).zip(dyt.chunks_exact(pooled_len));
                        let pooled = yt.chunks_exact(pooled_len).zip(at.chunks_exact(pooled_len));
                        for ((xs, dys), (ys, argmax)) in samples.zip(pooled) {
                            conv_pool_weight_grad(&g, pool, act, xs, dys, ys, argmax, f, dw, db);
                        }
                        return;
                    }
                    // The task's dz scattered from the pooled gradients, then its
                    // gradients as without a pool, over the whole task.
                    let s = xt.len() / in_len;
                    with_scratch(s * conv_len + conv.cols_len(s, dxt.is_some()), |buf| {
                        let (dz, cols) = buf.split_at_mut(s * conv_len);
                        for (i, dzs) in dz.chunks_exact_mut(conv_len).enumerate() {
                            let sample = i * pooled_len..(i + 1) * pooled_len;
                            max_pool_backward_through(act, &dyt[sample.clone()], &yt[sample.clone()], &at[sample], dzs);
                        }
                        conv.weight_grad(xt, dz, dw, db, cols);
                        if let Some(dxt) = dxt {
                            conv.input_grad(dz, dxt, accumulate, cols);
                        }
                    });
                });
        }
    }
    // The tasks' partial sums, added in task order.
    sum_rows(dw_parts, k * f, gw);
    if let Some(gb) = gb {
        sum_rows(db_parts, f, gb);
    }
}

/// One sample xs (H,W,C) -> xp: its padded layout, in bands of rows over
/// the threads (`Wide::pad`'s values). Anything in xp past the last row
/// (Winograd's tiles read further) is zeroed too.
fn pad_sample(wide: &Wide, xs: &[f32], xp: &mut [f32]) {
    let (lead, rows) = xp.split_at_mut(wide.lead_len());
    lead.fill(0.0);
    let band_rows = (rows.len().div_ceil(wide.row_len())).div_ceil(rayon::current_num_threads()).max(1);
    rows.par_chunks_mut(band_rows * wide.row_len()).enumerate().for_each_task(|(b, band)| {
        wide.pad_rows(xs, b * band_rows, band);
    });
}

/// One group's channels of a grouped convolution: C/G inputs, F/G outputs.
struct Group {
    /// The window over one group's channels (`c` = C/G), and the full counts.
    g: Window,
    c: usize,
    f: usize,
    fg: usize,
}

impl Group {
    fn of(op: &ConvOp) -> Group {
        let cg = op.g.c / op.groups;
        Group { g: Window { c: cg, ..op.g }, c: op.g.c, f: op.filters, fg: op.filters / op.groups }
    }

    /// The kernel's columns of group `k`: (KH*KW*C/G, F/G), rows F apart.
    fn kernel<'a>(&self, kernel: &'a [f32], k: usize) -> MatRef<'a> {
        MatRef::with_ld(&kernel[k * self.fg..], self.g.patch_len(), self.fg, self.f)
    }

    /// Copies channels of group `k` of samples x (s, H, W, C) into xg (s, H, W, C/G).
    fn gather(&self, x: &[f32], k: usize, xg: &mut [f32]) {
        let cg = self.g.c;
        for (src, dst) in x.chunks_exact(self.c).zip(xg.chunks_exact_mut(cg)) {
            dst.copy_from_slice(&src[k * cg..][..cg]);
        }
    }

    /// The unfolded patches of group `k` of samples x: (s*OH*OW, KH*KW*C/G).
    fn unfold(&self, x: &[f32], k: usize, xg: &mut [f32], cols: &mut [f32]) {
        let (cg, p, kl) = (self.g.c, self.g.positions(), self.g.patch_len());
        let s = x.len() / (self.g.h * self.g.w * self.c);
        self.gather(x, k, &mut xg[..s * self.g.h * self.g.w * cg]);
        for (xs, cs) in xg.chunks_exact(self.g.h * self.g.w * cg).zip(cols.chunks_exact_mut(p * kl)).take(s) {
            im2col(&self.g, xs, cs);
        }
    }

    /// Scratch values for `s` samples: a group's inputs and unfolded patches.
    fn scratch(&self, s: usize) -> (usize, usize) {
        (s * self.g.h * self.g.w * self.g.c, s * self.g.positions() * self.g.patch_len())
    }
}

// x: (N,H,W,C) -> y: (N,OH,OW,F);  y[.., group k's F/G] = conv(x[.., group k's C/G], W_k), then act(y + b)
fn grouped_forward(op: &ConvOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
    let gr = Group::of(op);
    let (in_len, out_len, p) = (op.g.h * op.g.w * op.g.c, op.g.positions() * op.filters, op.g.positions());
    let act = if op.act.needs_input() { Activation::Linear } else { op.act };
    y[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .enumerate()
        .for_each_task(|(t, (yt, xt))| {
            let s = xt.len() / in_len;
            let (xg_len, cols_len) = gr.scratch(s);
            with_scratch(xg_len + cols_len, |buf| {
                let (xg, cols) = buf.split_at_mut(xg_len);
                for k in 0..op.groups {
                    gr.unfold(xt, k, xg, cols);
                    let patches = MatRef::new(cols, s * p, gr.g.patch_len());
                    matmul_ld(patches, gr.kernel(op.kernel, k), &mut yt[k * gr.fg..], gr.f, false);
                }
            });
            Finish { act, ..Finish::of(op) }.apply(yt, t * SAMPLES_PER_TASK * out_len, op.filters);
        });
    if op.act.needs_input() {
        activate_keeping_input(op.act, &mut y[..n * out_len], op.filters, ws);
    }
}

// dz = dy * act'(y);  per group k: dW_k = unfold(x_k)^T . dz_k;  dx_k = fold(dz_k . W_k^T);  db = sum dz
fn grouped_backward(op: &ConvOp, pass: WeightGrads, ws: &mut Workspace) {
    let WeightGrads { x, y, dy, dx, accumulate, kernel: gw, bias: gb, n } = pass;
    let gr = Group::of(op);
    let (in_len, out_len, p, f) =
        (op.g.h * op.g.w * op.g.c, op.g.positions() * op.filters, op.g.positions(), op.filters);
    let kl = gr.g.patch_len();
    if op.act.needs_input() {
        through_kept_input(op.act, &mut dy[..n * out_len], ws);
    }
    let act = if op.act.needs_input() { Activation::Linear } else { op.act };
    let tasks = task_count(n);
    let [dw_parts, db_parts] = ws.f32s([tasks * kl * f, tasks * f]);
    let dx_tasks = match dx {
        Some(dx) => Either::Left(dx[..n * in_len].par_chunks_mut(SAMPLES_PER_TASK * in_len).map(Some)),
        None => Either::Right((0..tasks).into_par_iter().map(|_| None)),
    };
    dy[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(y[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .zip(dw_parts.par_chunks_mut(kl * f).zip(db_parts.par_chunks_mut(f)))
        .zip(dx_tasks)
        .for_each_task(|((((dz, yt), xt), (dw, db)), dxt)| {
            activation::backward(act, yt, dz, f);
            sum_rows(dz, f, db);
            let s = xt.len() / in_len;
            let (xg_len, cols_len) = gr.scratch(s);
            let dz = &*dz;
            with_scratch(xg_len + cols_len, |buf| {
                let (xg, cols) = buf.split_at_mut(xg_len);
                for k in 0..op.groups {
                    let dz_k = MatRef::with_ld(&dz[k * gr.fg..], s * p, gr.fg, f);
                    gr.unfold(xt, k, xg, cols);
                    matmul_ld(MatRef::new(cols, s * p, kl).t(), dz_k, &mut dw[k * gr.fg..], f, false);
                }
            });
            if let Some(dxt) = dxt {
                // dcols = dz_k . W_k^T, folded into group k's input channels (each
                // input channel belongs to one group: the gradients are scattered back).
                with_scratch(xg_len + cols_len, |buf| {
                    let (dxg, cols) = buf.split_at_mut(xg_len);
                    for k in 0..op.groups {
                        let dz_k = MatRef::with_ld(&dz[k * gr.fg..], s * p, gr.fg, f);
                        matmul(dz_k, gr.kernel(op.kernel, k).t(), cols, false);
                        dxg.fill(0.0);
                        let sample = gr.g.h * gr.g.w * gr.g.c;
                        for (dxs, dc) in dxg.chunks_exact_mut(sample).zip(cols.chunks_exact(p * kl)) {
                            col2im_add(&gr.g, dc, dxs);
                        }
                        let cg = gr.g.c;
                        for (dst, src) in dxt.chunks_exact_mut(gr.c).zip(dxg.chunks_exact(cg)) {
                            if accumulate {
                                add_assign(&mut dst[k * cg..][..cg], src)
                            } else {
                                dst[k * cg..][..cg].copy_from_slice(src)
                            }
                        }
                    }
                });
            }
        });
    // The tasks' partial sums, added in task order.
    sum_rows(dw_parts, kl * f, gw);
    if let Some(gb) = gb {
        sum_rows(db_parts, f, gb);
    }
}

/// The convolution of one layer over whole samples, by the direct kernels
/// (few input channels), by Winograd's tiles (3x3, stride 1: [`Winograd`]),
/// by matrix products over a padded copy of the input (stride 1: [`Wide`]),
/// or by unfolding patches and a matrix product.
struct ConvKernel<'a> {
    g: Window,
    f: usize,
    direct: bool,
    wide: Option<Wide>,
    /// Kernel (K, F) and, for the direct path, the same padded to register blocks.
    w: &'a [f32],
    wp: &'a [f32],
    /// Winograd's tiles for this call's stride-1 convolution (the forward
    /// pass's, or in a backward pass the input gradient's transposed one), and
    /// the kernel transformed for them.
    winograd: Option<(Winograd, Transformed<'a>)>,
    /// Winograd's tiles for the weight gradient (a backward pass's).
    weight_tiles: Option<Winograd>,
}

impl<'a> ConvKernel<'a> {
    /// `wide`: what [`ConvKernel::choose_wide`] chose for `op`; `winograd`: what
    /// [`ConvKernel::choose_winograd`] chose for the pass, and its transformed kernel.
    fn new(
        op: &ConvOp<'a>,
        direct: bool,
        wide: Option<Wide>,
        winograd: Option<(Winograd, Transformed<'a>)>,
        wp: &'a [f32],
    ) -> Self {
        ConvKernel { g: op.g, f: op.filters, direct, wide, w: op.kernel, wp, winograd, weight_tiles: None }
    }

    /// Winograd's tiles for the convolution `g` with `f` filters (or, for
    /// the input gradient, its transpose) over `n` samples, where they beat
    /// the padded layout's products and unfolding (`cargo bench -- "stride
    /// 1"`, and on ResNet-50): 16 or more input channels and filters, with
    /// the register-blocked kernel for the tiles' products (blocks of up to
    /// 64 filters: it runs wherever it runs 16), and 128 tiles of 2x2 or more
    /// per call: with fewer (ResNet-50's 14x14 and 7x7 stages at batch 1),
    /// writing and reading the transformed kernel (16 or 36 values per
    /// weight, once per call) costs more than the fewer multiply-adds save.
    /// Where the transformed kernel is `kept` across calls (inference), 32
    /// tiles are enough: ResNet-50's 14x14 stage at batch 1 takes them (the
    /// network 21.0 -> 19.1 ms in one comparison, the same in another), its
    /// 7x7 stage (16 tiles) does not (no faster; with the products through the
    /// packed kernel, 1.5x slower: 16.8 MB of transformed kernel per layer
    /// against 9.4 MB of weights, read from memory at batch 1).
    /// Tiles cover only real outputs, so small images, where the padded
    /// layout computes too many dropped outputs, take them too.
    /// Tiles of 4x4 (36 products per 16 outputs against 2x2's 16 per 4) where
    /// they need at most 3/4 of 2x2's products (sides they cover with little
    /// waste) and a call of `per_call` samples has 64 of them or more: with
    /// fewer, the products gather too few tiles per pass over the kernel's;
    /// and a batch of a task or more: below that, each thread transforms the
    /// whole sample for its block of filters, and 4x4's dearer input
    /// transform, done by every thread, outweighs (ResNet-50 at batch 1).
    /// (ResNet-20 trains 1.13x faster; ResNet-50 at batch 32 infers 1.05x.)
    /// The register-blocked kernel runs with AVX-512 or AVX2: on a CPU with
    /// AVX2 alone (a 2-core AMD EPYC, Zen 3), Winograd's tiles made the
    /// CIFAR-10 CNN's training step 1.6x faster at batch 32 and ResNet-20's
    /// 1.4x, against unfolding and the padded layout's products.
    fn choose_winograd(
        g: &Window,
        f: usize,
        n: usize,
        per_call: usize,
        input_grad: bool,
        kept: bool,
    ) -> Option<Winograd> {
        let wide = Wide::of(g)?;
        let (wide, out) = if input_grad { (wide.transposed(f), g.c) } else { (wide, f) };
        let channels = wide.g.c >= WINOGRAD_MIN_CHANNELS && out >= WINOGRAD_MIN_CHANNELS;
        let small = Winograd::of(&wide, out)?;
        let min_tiles = if kept { WINOGRAD_MIN_TILES_KEPT } else { WINOGRAD_MIN_TILES };
        if !(channels && small.tiles(n) >= min_tiles && Wide::blocked(16)) {
            return None;
        }
        let large = Winograd::with_tiles(&wide, out, 4)?;
        let fewer_products = 4 * 36 * large.tiles(n) <= 3 * 16 * small.tiles(n);
        let enough = large.tiles(per_call) >= 64 && n >= SAMPLES_PER_TASK;
        Some(if fewer_products && enough { large } else { small })
    }

    /// The padded layout, where it beats unfolding (`cargo bench -- "stride 1"`).
    fn choose_wide(op: &ConvOp, direct: bool) -> Option<Wide> {
        // A fused pool's forward pass runs a few samples at a time, where the
        // padded layout's KH products (and turned kernel) per call cost more
        // than unfolding (measured, a sample per call, on Keras' MNIST and
        // CIFAR-10 CNNs); and the
        // dropped outputs cost more than unfolding saves on small images (8x8:
        // 27% dropped, 15% slower than unfolding; 16x16: 13% dropped, 8-17% faster).
        // The direct kernels' weight gradient is scalar for filters not in
        // blocks of 32: the padded layout's products take it (and the input
        // gradient) then, the direct kernels keep the forward pass.
        // With the register-blocked kernels (16 to 64 filters and input
        // channels) a fused pool takes the padded layout too.
        let blocked = Wide::blocked(op.filters) && Wide::blocked(op.g.c);
        let direct_grads = direct && conv_direct::fast_weight_grad(op.filters);
        let wide = if direct_grads || (op.pool.is_some() && !blocked) { None } else { Wide::of(&op.g) };
        wide.filter(|w| w.pointwise() || w.overhead() <= MAX_WIDE_OVERHEAD)
    }

    /// Scratch values needed for `s` samples: the padded input and the wide
    /// output (or output gradient), and for the input gradient the padded
    /// output gradient, the wide input gradient and the turned kernel; or
    /// unfolded patches, which the direct path only needs for the input gradient
    /// (and, with filters not in blocks of 32, for its gradients through the padded layout).
    fn cols_len(&self, s: usize, input_grad: bool) -> usize {
        let (g, f) = (&self.g, self.f);
        // Winograd's scratch (its own convolution's: the forward pass's, or
        // in a backward pass the transposed one's).
        let tiles = self.winograd.map_or(0, |(w, _)| w.scratch_len());
        let weight_tiles = self.weight_tiles.map_or(0, |w| w.kernel_len() + w.scratch_len());
        let tiles = tiles.max(weight_tiles);
        if let Some(wide) = &self.wide {
            if wide.pointwise() {
                return 0;
            }
            let through = wide.padded_len(s) + wide.rows(s) * f;
            let t = wide.transposed(f);
            let back = if input_grad { t.padded_len(s) + t.rows(s) * g.c + g.patch_len() * f } else { 0 };
            return through.max(back).max(tiles);
        }
        let unfolded =
            if self.direct && !input_grad { 0 } else { self.unfold_group(s) * g.positions() * g.patch_len() };
        unfolded.max(tiles)
    }

    /// Samples of `s` whose patches are unfolded together (each pass's
    /// products take a group at a time): [`copy_group`]'s.
    fn unfold_group(&self, s: usize) -> usize {
        copy_group(self.g.positions() * self.g.patch_len(), s)
    }

    /// Scratch values the forward pass needs for `s` samples: unfolded, a band
    /// of [`ConvKernel::unfold_positions`] positions at a time.
    fn forward_cols_len(&self, s: usize) -> usize {
        match self.unfold_positions() {
            Some(band) => band * self.g.patch_len(),
            None => self.cols_len(s, false),
        }
    }

    /// Output positions the forward pass unfolds at a time where a sample's
    /// patches exceed [`UNFOLD_VALUES`] (an ImageNet-size image's are
    /// megabytes): a band's patches stay in cache while its product reads them.
    /// None where the patches of the task's samples are unfolded together.
    fn unfold_positions(&self) -> Option<usize> {
        let (p, k) = (self.g.positions(), self.g.patch_len());
        let unfolded = self.wide.is_none() && !self.direct && self.winograd.is_none();
        (unfolded && p * k > UNFOLD_VALUES).then(|| (UNFOLD_VALUES / k).max(POSITIONS_PER_TASK))
    }

    // x: (H,W,C) -> y: (rows.len(),OW,F), output rows `rows` of act(conv(x, W) + b), by
    // the direct kernels (which take the bias from `wp` and apply a ReLU in registers)
    fn forward_direct(&self, x: &[f32], rows: Range<usize>, y: &mut [f32], act: Activation) {
        conv_direct::conv_forward_rows(&self.g, x, self.wp, self.f, act == Activation::Relu, rows, y);
        if !matches!(act, Activation::Relu | Activation::Linear) {
            activation::forward(act, y, None, self.f);
        }
    }

    // x: (s,H,W,C) -> y: (s,OH,OW,F) = act(conv(x, W) + b)
    /// `at`: the index of y's first value in the op's output (where `fin` reads a residual).
    fn forward(&self, x: &[f32], y: &mut [f32], cols: &mut [f32], fin: Finish, at: usize) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        if self.direct {
            for (xs, ys) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(p * f)) {
                self.forward_direct(xs, 0..g.oh, ys, fin.act);
            }
            return;
        }
        let s = x.len() / in_len;
        // The activation (and a folded normalisation) is applied to a group of
        // samples right after their outputs are written, while they are in
        // cache; a group has enough positions that the kernel is read once for
        // many. With nothing to apply, the task is one group (fewer, fuller calls).
        // Where a group's samples are first unfolded, no more than [`copy_group`]'s.
        let finish = if fin.applies_after_bias() { FINISH_POSITIONS.div_ceil(p).clamp(1, s.max(1)) } else { s.max(1) };
        let group = match &self.winograd {
            None if self.wide.is_none() => finish.min(self.unfold_group(s)),
            _ => finish,
        };
        let groups = y[..s * p * f].chunks_mut(group * p * f).enumerate().map(|(i, ys)| (i * group, ys));
        if let Some((winograd, u)) = &self.winograd {
            for (first, ys) in groups {
                let count = ys.len() / (p * f);
                winograd.forward(&x[first * in_len..], *u, count, fin.bias_inside(), cols, ys);
                fin.apply_after_bias(ys, at + first * p * f, f);
            }
        } else if let Some(wide) = self.wide.filter(Wide::pointwise) {
            for (first, ys) in groups {
                wide.forward(x, self.w, f, first * p..first * p + ys.len() / f, ys);
                fin.apply(ys, at + first * p * f, f);
            }
        } else if let Some(wide) = &self.wide {
            let (xp, y_wide) = cols.split_at_mut(wide.padded_len(s));
            wide.pad(x, xp);
            wide.forward(xp, self.w, f, 0..wide.rows(s), y_wide);
            wide.compact(y_wide, f, fin.bias_inside(), false, y);
            fin.apply_after_bias(y, at, f);
        } else if let Some(band) = self.unfold_positions() {
            for (i, (xs, ys)) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(p * f)).enumerate() {
                for (b, yb) in ys.chunks_mut(band * f).enumerate() {
                    let (first, count) = (b * band, yb.len() / f);
                    im2col_positions(g, xs, first..first + count, &mut cols[..count * k]);
                    self.unfolded_forward(cols, count, yb);
                    fin.apply(yb, at + (i * p + first) * f, f);
                }
            }
        } else {
            for (first, ys) in groups {
                let rows = ys.len() / f;
                let xs = &x[first * in_len..][..rows / p * in_len];
                for (xs, cs) in xs.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
                    im2col(g, xs, cs);
                }
                self.unfolded_forward(cols, rows, ys);
                fin.apply(ys, at + first * p * f, f);
            }
        }
    }

    /// The whole of conv, bias, ReLU (or no activation) and 2x2 pooling of one
    /// sample in registers, where the direct kernels cover the shapes (by
    /// Winograd's F(2, 3) along rows where they can, `scratch` holding the
    /// transformed input, and the winners in `argmax` only where `winners`
    /// asks for them); false otherwise.
    fn forward_relu_pool2x2(
        &self,
        pool: &Window,
        x: &[f32],
        y: &mut [f32],
        (argmax, winners): (&mut [u32], bool),
        act: Activation,
        scratch: &mut [f32],
    ) -> bool {
        let relu = match act {
            Activation::Relu => true,
            Activation::Linear => false,
            _ => return false,
        };
        let (g, wp, f) = (&self.g, self.wp, self.f);
        let kept = winners.then_some(&mut *argmax);
        self.direct
            && (conv_pool_winograd::conv_relu_pool2x2(g, pool, x, wp, f, relu, scratch, y, kept)
                || conv_direct::conv_relu_pool2x2(g, pool, x, wp, f, relu, y, argmax))
    }

    // dw (K,F) += conv_weight_grad(x (s,H,W,C), dz (s,OH,OW,F)) = im2col(x)^T . dz
    // (unfolded a group of samples at a time); db (F) += the sum of dz's rows
    // (through Winograd's tiles: from the transformed dz, see `Winograd::weight_grad`).
    fn weight_grad(&self, x: &[f32], dz: &[f32], dw: &mut [f32], db: &mut [f32], cols: &mut [f32]) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        if let Some(w) = &self.weight_tiles {
            // dw += G^T du G, du: the transformed kernel's gradient.
            let (du, cols) = cols.split_at_mut(w.kernel_len());
            du.fill(0.0);
            w.weight_grad(x, dz, x.len() / in_len, cols, du, Some(db));
            return w.kernel_grad(du, dw);
        }
        add_rows(dz, f, db);
        if self.direct && self.wide.is_none() {
            for (xs, dzs) in x.chunks_exact(in_len).zip(dz.chunks_exact(p * f)) {
                conv_direct::conv_weight_grad(g, xs, dzs, f, dw);
            }
            return;
        }
        let s = x.len() / in_len;
        if let Some(wide) = self.wide.filter(Wide::pointwise) {
            return wide.weight_grad(x, dz, f, s, dw);
        }
        if let Some(wide) = &self.wide {
            let (xp, dz_wide) = cols.split_at_mut(wide.padded_len(s));
            wide.pad(x, xp);
            return wide.weight_grad_real(xp, dz, f, s, dz_wide, dw);
        }
        let group = self.unfold_group(s);
        for (xg, dzg) in x[..s * in_len].chunks(group * in_len).zip(dz.chunks(group * p * f)) {
            let sg = xg.len() / in_len;
            for (xs, cs) in xg.chunks_exact(in_len).zip(cols.chunks_exact_mut(p * k)) {
                im2col(g, xs, cs);
            }
            let m = sg * p;
            match self.unfolded_rows(m) {
                Some(rows) => rows.weight_grad(cols, dzg, f, 1, dw),
                None => matmul(MatRef::new(&cols[..m * k], m, k).t(), MatRef::new(dzg, m, f), dw, true),
            }
        }
    }

    // dx (s,H,W,C) = col2im(dz (s,OH,OW,F) . W^T) (a group of samples at a time),
    // or with `accumulate` dx += it.
    fn input_grad(&self, dz: &[f32], dx: &mut [f32], accumulate: bool, dcols: &mut [f32]) {
        let (g, f) = (&self.g, self.f);
        let (in_len, p, k) = (g.h * g.w * g.c, g.positions(), g.patch_len());
        let s = dx.len() / in_len;
        if let Some((winograd, u)) = &self.winograd {
            // The forward pass of the transposed convolution, with the kernel turned.
            return if accumulate {
                winograd.forward_adding(dz, *u, s, dcols, dx)
            } else {
                winograd.forward(dz, *u, s, None, dcols, dx)
            };
        }
        if self.wide.is_some_and(|w| w.pointwise()) {
            return matmul(MatRef::new(dz, s * p, f), MatRef::new(self.w, k, f).t(), dx, accumulate);
        }
        if let Some(wide) = &self.wide {
            // The forward pass of the transposed convolution, with the kernel turned.
            let t = wide.transposed(f);
            let (dzp, rest) = dcols.split_at_mut(t.padded_len(s));
            let (dx_wide, turned) = rest.split_at_mut(t.rows(s) * g.c);
            wide.turn_kernel(self.w, f, &mut turned[..k * f]);
            t.pad(dz, dzp);
            t.forward(dzp, &turned[..k * f], g.c, 0..t.rows(s), dx_wide);
            return t.compact(dx_wide, g.c, None, accumulate, dx);
        }
        let group = self.unfold_group(s);
        for (dxg, dzg) in dx.chunks_mut(group * in_len).zip(dz.chunks(group * p * f)) {
            let sg = dxg.len() / in_len;
            let dcols = &mut dcols[..sg * p * k];
            matmul(MatRef::new(&dzg[..sg * p * f], sg * p, f), MatRef::new(self.w, k, f).t(), dcols, false);
            if reads_pixels(g) {
                // Written once, zeros and all, where the patches do not overlap.
                for (dxs, dc) in dxg.chunks_exact_mut(in_len).zip(dcols.chunks_exact(p * k)) {
                    col2im_pixels(g, dc, dxs, accumulate);
                }
                continue;
            }
            if !accumulate {
                dxg.fill(0.0);
            }
            for (dxs, dc) in dxg.chunks_exact_mut(in_len).zip(dcols.chunks_exact(p * k)) {
                col2im_add(g, dc, dxs);
            }
        }
    }

    /// `m` unfolded patches as the input rows of a 1x1 convolution with KH*KW*C
    /// channels, whose products (forward, weight gradient) run through the
    /// register-blocked kernel for 16 to 64 filters (ResNet-20's strided
    /// layers: its training step 3% faster than through the general product,
    /// with the faster unfolding of 1x1 windows). None for other filter counts.
    fn unfolded_rows(&self, m: usize) -> Option<Wide> {
        Wide::of(&Window::rows(m, self.g.patch_len())).filter(|_| Wide::blocked(self.f))
    }

    // y (m, F) = cols (m, K) . W: the unfolded patches' product.
    fn unfolded_forward(&self, cols: &[f32], m: usize, y: &mut [f32]) {
        let (k, f) = (self.g.patch_len(), self.f);
        match self.unfolded_rows(m) {
            Some(rows) => rows.forward(cols, self.w, f, 0..m, &mut y[..m * f]),
            None => matmul(MatRef::new(&cols[..m * k], m, k), MatRef::new(self.w, k, f), y, false),
        }
    }
}

// x: (N,H,W,C) -> y: (N,OH,OW,C*M);  y = act(depthwise(x, W) + b)
pub fn depthwise_forward(op: &DepthwiseOp, x: &[f32], y: &mut [f32], n: usize, ws: &mut Workspace) {
    if op.act.needs_input() {
        depthwise_forward(&DepthwiseOp { act: Activation::Linear, ..*op }, x, y, n, ws);
        let (co, g) = (op.g.out_channels(), op.g);
        return activate_keeping_input(op.act, &mut y[..n * g.oh * g.ow * co], co, ws);
    }
    let (g, fin) = (op.g, Finish { bias: op.bias, affine: op.affine, act: op.act });
    let (in_len, co) = (g.h * g.w * g.c, g.out_channels());
    let out_len = g.oh * g.ow * co;
    if n < SAMPLES_PER_TASK {
        // One task's worth of samples: split each sample into bands of output
        // rows, at least 4 (there is no split by channels to fall back on).
        let rows = g.oh.div_ceil(bands(g.oh * g.ow).max(4)).max(1);
        let samples = y[..n * out_len].par_chunks_mut(out_len).zip(x[..n * in_len].par_chunks(in_len));
        return samples.enumerate().for_each_task(|(i, (ys, xs))| {
            ys.par_chunks_mut(rows * g.ow * co).enumerate().for_each_task(|(b, yb)| {
                let (band, xb) = depthwise_band(&g, xs, b * rows, yb.len() / (g.ow * co));
                depthwise::forward(&band, xb, op.kernel, fin.bias_inside(), yb);
                fin.apply_after_bias(yb, i * out_len + b * rows * g.ow * co, co);
            });
        });
    }
    y[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .enumerate()
        .for_each_task(|(t, (yt, xt))| {
            for (ys, xs) in yt.chunks_exact_mut(out_len).zip(xt.chunks_exact(in_len)) {
                depthwise::forward(&g, xs, op.kernel, fin.bias_inside(), ys);
            }
            fin.apply_after_bias(yt, t * SAMPLES_PER_TASK * out_len, co);
        });
}

/// The geometry of output rows `first..first + rows` of a depthwise
/// convolution as a convolution of its own, and the input rows it reads from:
/// the input starts at the band's first row (or keeps its top padding).
fn depthwise_band<'a>(g: &Depthwise, x: &'a [f32], first: usize, rows: usize) -> (Depthwise, &'a [f32]) {
    let top = first * g.sh;
    let (skip, pt) = if top >= g.pt { (top - g.pt, 0) } else { (0, g.pt - top) };
    let band = Depthwise { h: g.h - skip, oh: rows, pt, ..*g };
    (band, &x[skip * g.w * g.c..])
}

// dz = dy * act'(y);  dW = sum over taps of x * dz;  db = sum dz;  dx = sum over taps of W * dz
// Workspace: [dW parts, db parts].
pub fn depthwise_backward(op: &DepthwiseOp, pass: WeightGrads, ws: &mut Workspace) {
    debug_assert!(!pass.accumulate, "a depthwise convolution writes its input gradient (it does not add to one)");
    if op.act.needs_input() {
        let (co, g) = (op.g.out_channels(), op.g);
        through_kept_input(op.act, &mut pass.dy[..pass.n * g.oh * g.ow * co], ws);
        return depthwise_backward(&DepthwiseOp { act: Activation::Linear, ..*op }, pass, ws);
    }
    if pass.n < SAMPLES_PER_TASK && depthwise::by_taps(&op.g) {
        return depthwise_backward_by_bands(op, pass, ws);
    }
    let WeightGrads { x, y, dy, dx, kernel: gw, bias: gb, n, .. } = pass;
    let g = op.g;
    let co = g.out_channels();
    let k = g.kh * g.kw * co;
    let (in_len, out_len) = (g.h * g.w * g.c, g.oh * g.ow * co);
    let tasks = task_count(n);
    let [dw_parts, db_parts] = ws.f32s([tasks * k, tasks * co]);
    dy[..n * out_len]
        .par_chunks_mut(SAMPLES_PER_TASK * out_len)
        .zip(y[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
        .zip(x[..n * in_len].par_chunks(SAMPLES_PER_TASK * in_len))
        .zip(dw_parts.par_chunks_mut(k).zip(db_parts.par_chunks_mut(co)))
        .for_each_task(|(((dz, yt), xt), (dw, db))| {
            activation::backward(op.act, yt, dz, co);
            dw.fill(0.0);
            db.fill(0.0);
            for (xs, dzs) in xt.chunks_exact(in_len).zip(dz.chunks_exact(out_len)) {
                depthwise::weight_grad(&g, xs, dzs, dw, db);
            }
        });
    if let Some(dx) = dx {
        dx[..n * in_len]
            .par_chunks_mut(SAMPLES_PER_TASK * in_len)
            .zip(dy[..n * out_len].par_chunks(SAMPLES_PER_TASK * out_len))
            .for_each_task(|(dxt, dzt)| {
                for (dxs, dzs) in dxt.chunks_exact_mut(in_len).zip(dzt.chunks_exact(out_len)) {
                    depthwise::input_grad(&g, dzs, op.kernel, dxs);
                }
            });
    }
    // The tasks' partial sums, added in task order.
    sum_rows(dw_parts, k, gw);
    if let Some(gb) = gb {
        sum_rows(db_parts, co, gb);
    }
}

// [`depthwise_backward`] for fewer samples than a task (a large image at a
// small batch), one filter per channel, 3x3 or 5x5: each sample splits into
// bands (enough for a task's worth of bands in all; the count depends on
// the batch and the shape, never on the threads). dW and db are partial
// sums per band of output rows, added in band order; dx is by bands of
// input rows, each pixel's sum the same as over the whole sample.
// Workspace: [dW parts, db parts].
fn depthwise_backward_by_bands(op: &DepthwiseOp, pass: WeightGrads, ws: &mut Workspace) {
    let WeightGrads { x, y, dy, dx, kernel: gw, bias: gb, n, .. } = pass;
    let g = op.g;
    let co = g.out_channels();
    let k = g.kh * g.kw * co;
    let (in_len, out_len) = (g.h * g.w * g.c, g.oh * g.ow * co);
    let bands = SAMPLES_PER_TASK.div_ceil(n);
    let (out_rows, in_rows) = (g.oh.div_ceil(bands), g.h.div_ceil(bands));
    let parts = g.oh.div_ceil(out_rows);
    let [dw_parts, db_parts] = ws.f32s([n * parts * k, n * parts * co]);
    let band_len = out_rows * g.ow * co;
    dy[..n * out_len]
        .par_chunks_mut(out_len)
        .zip(y[..n * out_len].par_chunks(out_len))
        .zip(x[..n * in_len].par_chunks(in_len))
        .zip(dw_parts.par_chunks_mut(parts * k).zip(db_parts.par_chunks_mut(parts * co)))
        .for_each_task(|(((dzs, ys), xs), (dws, dbs))| {
            dzs.par_chunks_mut(band_len)
                .zip(ys.par_chunks(band_len))
                .zip(dws.par_chunks_mut(k).zip(dbs.par_chunks_mut(co)))
                .enumerate()
                .for_each_task(|(b, ((dz, yb), (dw, db)))| {
                    activation::backward(op.act, yb, dz, co);
                    let (band, xb) = depthwise_band(&g, xs, b * out_rows, dz.len() / (g.ow * co));
                    dw.fill(0.0);
                    db.fill(0.0);
                    depthwise::weight_grad(&band, xb, dz, dw, db);
                });
        });
    if let Some(dx) = dx {
        let dy = &*dy;
        dx[..n * in_len].par_chunks_mut(in_len).zip(dy[..n * out_len].par_chunks(out_len)).for_each_task(
            |(dxs, dzs)| {
                dxs.par_chunks_mut(in_rows * g.w * g.c).enumerate().for_each_task(|(b, dxb)| {
                    let first = b * in_rows;
                    depthwise::input_grad_rows(&g, dzs, op.kernel, dxb, first..first + dxb.len() / (g.w * g.c));
                });
            },
        );
    }
    sum_rows(dw_parts, k, gw);
    if let Some(gb) = gb {
        sum_rows(db_parts, co, gb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::depthwise::tests::{square, values};

    // Below a task of samples, the depthwise gradients by bands of rows
    // against the tap-by-tap references sample by sample: dx bit for bit
    // (each pixel's sum is the same), dW and db up to the order of the bands'
    // partial sums; strides 1 and 2, bands ending inside the image.
    #[test]
    fn depthwise_gradients_by_bands_match_the_references() {
        for (n, size, c, s) in [(3, 9, 24, 1), (1, 7, 17, 2), (5, 12, 16, 1)] {
            let g = square(size, size, c, 3, s, 1, 1);
            let out = g.oh;
            let (in_len, out_len, k) = (size * size * c, out * out * c, 9 * c);
            let (x, kernel, dz) = (values(n * in_len, 1), values(k, 2), values(n * out_len, 3));
            let op = DepthwiseOp { g, kernel: &kernel, bias: None, act: Activation::Linear, affine: None };
            let (mut dx, mut gw, mut gb) = (vec![f32::NAN; n * in_len], vec![f32::NAN; k], vec![f32::NAN; c]);
            let mut dy = dz.clone();
            let pass = WeightGrads {
                x: &x,
                y: &dz,
                dy: &mut dy,
                dx: Some(&mut dx),
                accumulate: false,
                kernel: &mut gw,
                bias: Some(&mut gb),
                n,
            };
            depthwise_backward(&op, pass, &mut Workspace::default());
            let (mut want_dw, mut want_db, mut want_dx) = (vec![0.0; k], vec![0.0; c], vec![0.0; n * in_len]);
            for i in 0..n {
                let (xs, dzs) = (&x[i * in_len..][..in_len], &dz[i * out_len..][..out_len]);
                depthwise::weight_grad_reference(&g, xs, dzs, &mut want_dw, &mut want_db);
                depthwise::input_grad_reference(&g, dzs, &kernel, &mut want_dx[i * in_len..][..in_len]);
            }
            let shape = format!("{n} x {size}x{size}x{c} stride {s}");
            assert!(dx.iter().zip(&want_dx).all(|(a, b)| a.to_bits() == b.to_bits()), "dx, {shape}");
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
            assert!(close(&gw, &want_dw) && close(&gb, &want_db), "dW and db, {shape}");
        }
    }
}
