//! Batch normalisation over the last axis (channels) of row-major rows of `c`
//! values. Sums are f64 and taken row by row in order (the gradients' by
//! groups of rows summed in f32 first, in a fixed order), so callers that
//! split rows into fixed tasks and add the task sums in order are deterministic.
//!
//! Where the channels come in blocks of 16, the kernels go a block of
//! channels at a time, its sums and terms held in registers rather than
//! reloaded for every row; each channel's sums are taken in the same order,
//! so the results are those of the plain per-row loops (their references)
//! bit for bit.

use super::chunk_rows;
use crate::activations::Activation;
use multiversion::multiversion;

/// Channels per block of the blocked kernels (16 f32: one AVX-512 register).
const BLOCK: usize = 16;

/// A block of `BLOCK` values at `at`.
#[inline(always)]
fn block(v: &[f32], at: usize) -> &[f32; BLOCK] {
    v[at..at + BLOCK].try_into().unwrap()
}

/// A block of `BLOCK` sums at `at`.
#[inline(always)]
fn sums_block(v: &[f64], at: usize) -> [f64; BLOCK] {
    v[at..at + BLOCK].try_into().unwrap()
}

/// `sums[ch] += sum over rows of x[row, ch]` and `sums[c + ch] += sum of x[row, ch]^2`:
/// the batch's mean and variance in one pass (var = E[x^2] - mean^2, in f64).
pub fn add_moments(x: &[f32], c: usize, sums: &mut [f64]) {
    if c.is_multiple_of(BLOCK) { add_moments_blocked(x, c, sums) } else { add_moments_reference(x, c, sums) }
}

#[multiversion(targets = "simd")]
fn add_moments_blocked(x: &[f32], c: usize, sums: &mut [f64]) {
    let rows = x.len() / c;
    for chunk in x[..rows * c].chunks(chunk_rows(c) * c) {
        for c0 in (0..c).step_by(BLOCK) {
            let (mut s, mut q) = (sums_block(sums, c0), sums_block(sums, c + c0));
            for row in chunk.chunks_exact(c) {
                let v = block(row, c0);
                for l in 0..BLOCK {
                    let v = v[l] as f64;
                    s[l] += v;
                    q[l] += v * v;
                }
            }
            sums[c0..c0 + BLOCK].copy_from_slice(&s);
            sums[c + c0..c + c0 + BLOCK].copy_from_slice(&q);
        }
    }
}

/// [`add_moments`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn add_moments_reference(x: &[f32], c: usize, sums: &mut [f64]) {
    let (values, squares) = sums[..2 * c].split_at_mut(c);
    for row in x.chunks_exact(c) {
        for ((s, q), &v) in values.iter_mut().zip(squares.iter_mut()).zip(row) {
            let v = v as f64;
            *s += v;
            *q += v * v;
        }
    }
}

/// Whether [`scale_shift`] applies `act` itself (the others are the caller's to apply after it).
pub fn applies(act: Activation) -> bool {
    matches!(act, Activation::Linear | Activation::Relu | Activation::Relu6)
}

/// act(z) for the activations [`scale_shift`] applies, as `kernels::activation` computes them.
#[inline(always)]
fn rectify(act: Activation, z: f32) -> f32 {
    match act {
        Activation::Relu => z.max(0.0),
        Activation::Relu6 => z.clamp(0.0, 6.0),
        _ => z,
    }
}

/// y = act(x * a + b) per channel (a = gamma / sqrt(var + eps), b = beta - mean * a),
/// or with a residual (shaped as x) y = act((x * a + b) + residual): the sum of
/// an Add after the normalisation, in the same pass. act applied here if
/// [`applies`] says so (else y = x * a + b (+ residual)).
pub fn scale_shift(x: &[f32], a: &[f32], b: &[f32], residual: Option<&[f32]>, act: Activation, y: &mut [f32]) {
    let act = if applies(act) { act } else { Activation::Linear };
    if a.len().is_multiple_of(BLOCK) {
        scale_shift_blocked(x, a, b, residual, act, y)
    } else {
        scale_shift_reference(x, a, b, residual, act, y)
    }
}

#[multiversion(targets = "simd")]
fn scale_shift_blocked(x: &[f32], a: &[f32], b: &[f32], residual: Option<&[f32]>, act: Activation, y: &mut [f32]) {
    // One loop per activation, so that none decides per value.
    match act {
        Activation::Relu => scale_shift_rows(x, a, b, residual, y, |z| rectify(Activation::Relu, z)),
        Activation::Relu6 => scale_shift_rows(x, a, b, residual, y, |z| rectify(Activation::Relu6, z)),
        _ => scale_shift_rows(x, a, b, residual, y, |z| z),
    }
}

/// [`scale_shift_blocked`]'s loops, with the activation `act`: one without a
/// residual and one with, so that neither decides per block.
#[inline(always)]
fn scale_shift_rows(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    act: impl Fn(f32) -> f32,
) {
    let c = a.len();
    let (ab, rows) = (a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)), y.chunks_exact_mut(c).zip(x.chunks_exact(c)));
    let Some(residual) = residual else {
        for (yr, xr) in rows {
            for ((out, xv), (av, bv)) in yr.chunks_exact_mut(BLOCK).zip(xr.chunks_exact(BLOCK)).zip(ab.clone()) {
                for l in 0..BLOCK {
                    out[l] = act(xv[l] * av[l] + bv[l]);
                }
            }
        }
        return;
    };
    for ((yr, xr), rr) in rows.zip(residual.chunks_exact(c)) {
        let blocks = yr.chunks_exact_mut(BLOCK).zip(xr.chunks_exact(BLOCK)).zip(rr.chunks_exact(BLOCK));
        for (((out, xv), rv), (av, bv)) in blocks.zip(ab.clone()) {
            for l in 0..BLOCK {
                out[l] = act(xv[l] * av[l] + bv[l] + rv[l]);
            }
        }
    }
}

/// [`scale_shift`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn scale_shift_reference(x: &[f32], a: &[f32], b: &[f32], residual: Option<&[f32]>, act: Activation, y: &mut [f32]) {
    let c = a.len();
    for (i, (yr, xr)) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
        for (ch, (y, &x)) in yr.iter_mut().zip(xr).enumerate() {
            let z = x * a[ch] + b[ch];
            *y = rectify(act, residual.map_or(z, |r| z + r[i * c + ch]));
        }
    }
}

/// A ReLU (or ReLU6) fused after the normalisation, differentiated from its
/// input z = x * a + b, recomputed here exactly as the forward pass computed
/// it: dz = dy where 0 < z <= cap, else 0. That is the same mask as the
/// activation's output gives (y > 0, and y < 6 for ReLU6), without reading
/// the output or writing dz back: the gradient passes read x and dy only.
#[derive(Clone, Copy, Debug)]
pub struct Gate<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    /// The largest z whose gradient passes: +inf for ReLU, the float below 6 for ReLU6.
    pub cap: f32,
}

impl<'a> Gate<'a> {
    /// The gate of `act` after the map x * a + b, if `act` is one (ReLU, ReLU6).
    pub fn of(act: Activation, a: &'a [f32], b: &'a [f32]) -> Option<Gate<'a>> {
        let cap = match act {
            Activation::Relu => f32::INFINITY,
            Activation::Relu6 => 6.0f32.next_down(),
            _ => return None,
        };
        Some(Gate { a, b, cap })
    }
}

/// `v` if `keep`, else 0, without a branch (a mask on the bits), so that lanes vectorize.
#[inline(always)]
fn pass_if(keep: bool, v: f32) -> f32 {
    f32::from_bits(v.to_bits() & (keep as u32).wrapping_neg())
}

/// dy through a gate of map (a, b) and cap, at one value x.
#[inline(always)]
fn through(x: f32, a: f32, b: f32, cap: f32, dy: f32) -> f32 {
    let z = x * a + b;
    pass_if((z > 0.0) & (z <= cap), dy)
}

/// dy through the gate at channel `ch` (dy itself without one).
#[inline(always)]
fn gated(gate: &Option<Gate>, x: f32, dy: f32, ch: usize) -> f32 {
    gate.map_or(dy, |g| through(x, g.a[ch], g.b[ch], g.cap, dy))
}

/// A gate's block of channels at `c0`: (a, b, cap).
type GateBlock<'a> = Option<(&'a [f32; BLOCK], &'a [f32; BLOCK], f32)>;

#[inline(always)]
fn gate_block<'a>(gate: &Option<Gate<'a>>, c0: usize) -> GateBlock<'a> {
    gate.map(|g| (block(g.a, c0), block(g.b, c0), g.cap))
}

/// A block of dy through the gate's block (dy itself without one): [`gated`] by lanes.
#[inline(always)]
fn gated_block(gate: GateBlock, x: &[f32; BLOCK], dy: &[f32; BLOCK]) -> [f32; BLOCK] {
    match gate {
        None => *dy,
        Some((a, b, cap)) => std::array::from_fn(|l| through(x[l], a[l], b[l], cap, dy[l])),
    }
}

/// Rows per group of [`add_grad_sums`]: each group's sums are taken in f32,
/// its even and odd rows apart (two chains of additions, not one), then
/// added together into the f64 totals.
const GROUP: usize = 8;

/// `sums[ch] += sum dz` and `sums[c + ch] += sum dz * xhat`, with xhat = (x - mean) * inv_std
/// and dz = dy through `gate` if any: the gradients of beta and gamma. By
/// groups of `GROUP` rows from the first.
pub fn add_grad_sums(x: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], gate: Option<Gate>, sums: &mut [f64]) {
    if mean.len().is_multiple_of(BLOCK) {
        add_grad_sums_blocked(x, dy, mean, inv_std, gate, sums)
    } else {
        add_grad_sums_reference(x, dy, mean, inv_std, gate, sums)
    }
}

#[multiversion(targets = "simd")]
fn add_grad_sums_blocked(x: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], gate: Option<Gate>, sums: &mut [f64]) {
    let c = mean.len();
    let rows = x.len().min(dy.len()) / c;
    // Chunks of whole groups.
    let chunk = (chunk_rows(c) / GROUP).max(1) * GROUP * c;
    let chunks = x[..rows * c].chunks(chunk).zip(dy[..rows * c].chunks(chunk));
    for (x, dy) in chunks {
        for c0 in (0..c).step_by(BLOCK) {
            let (m, s, gb) = (block(mean, c0), block(inv_std, c0), gate_block(&gate, c0));
            let (mut dbeta, mut dgamma) = (sums_block(sums, c0), sums_block(sums, c + c0));
            for (xg, dg) in x.chunks(GROUP * c).zip(dy.chunks(GROUP * c)) {
                // [even rows' dz, odd rows', even rows' dz * xhat, odd rows'].
                let mut parts = [[0.0f32; BLOCK]; 4];
                for (i, (xr, dr)) in xg.chunks_exact(c).zip(dg.chunks_exact(c)).enumerate() {
                    let xv = block(xr, c0);
                    let dz = gated_block(gb, xv, block(dr, c0));
                    let odd = i % 2;
                    for l in 0..BLOCK {
                        let xhat = (xv[l] - m[l]) * s[l];
                        parts[odd][l] += dz[l];
                        parts[2 + odd][l] += dz[l] * xhat;
                    }
                }
                for l in 0..BLOCK {
                    dbeta[l] += (parts[0][l] + parts[1][l]) as f64;
                    dgamma[l] += (parts[2][l] + parts[3][l]) as f64;
                }
            }
            sums[c0..c0 + BLOCK].copy_from_slice(&dbeta);
            sums[c + c0..c + c0 + BLOCK].copy_from_slice(&dgamma);
        }
    }
}

/// [`add_grad_sums`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn add_grad_sums_reference(x: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], gate: Option<Gate>, sums: &mut [f64]) {
    let c = mean.len();
    let rows = x.len().min(dy.len()) / c;
    let (dbeta, dgamma) = sums.split_at_mut(c);
    for (xg, dg) in x[..rows * c].chunks(GROUP * c).zip(dy[..rows * c].chunks(GROUP * c)) {
        for ch in 0..c {
            // [even rows' dz, odd rows', even rows' dz * xhat, odd rows'].
            let mut parts = [0.0f32; 4];
            for (i, (xr, dr)) in xg.chunks_exact(c).zip(dg.chunks_exact(c)).enumerate() {
                let dz = gated(&gate, xr[ch], dr[ch], ch);
                let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
                parts[i % 2] += dz;
                parts[2 + i % 2] += dz * xhat;
            }
            dbeta[ch] += (parts[0] + parts[1]) as f64;
            dgamma[ch] += (parts[2] + parts[3]) as f64;
        }
    }
}

/// dx = a * (dz - k1 - xhat * k2) per channel, xhat = (x - mean) * inv_std,
/// dz = dy through `gate` if any.
/// Training (batch statistics): k1 = sum dz / M, k2 = sum dz*xhat / M;
/// inference (fixed statistics): k1 = k2 = 0.
pub struct InputGrad<'a> {
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub a: &'a [f32],
    pub k1: &'a [f32],
    pub k2: &'a [f32],
    pub gate: Option<Gate<'a>>,
}

impl InputGrad<'_> {
    pub fn write(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        input_grad(self, x, dy, dx)
    }
}

fn input_grad(g: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    if g.mean.len().is_multiple_of(BLOCK) {
        input_grad_blocked(g, x, dy, dx)
    } else {
        input_grad_reference(g, x, dy, dx)
    }
}

/// [`input_grad`] a block of channels at a time.
#[multiversion(targets = "simd")]
fn input_grad_blocked(g: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let c = g.mean.len();
    let rows = x.len().min(dy.len()).min(dx.len()) / c;
    for r in 0..rows {
        for c0 in (0..c).step_by(BLOCK) {
            let at = r * c + c0;
            let xv = block(x, at);
            let dz = gated_block(gate_block(&g.gate, c0), xv, block(dy, at));
            let (m, s, a) = (block(g.mean, c0), block(g.inv_std, c0), block(g.a, c0));
            let (k1, k2) = (block(g.k1, c0), block(g.k2, c0));
            let out: &mut [f32; BLOCK] = (&mut dx[at..at + BLOCK]).try_into().unwrap();
            for l in 0..BLOCK {
                let dz = dz[l];
                let xhat = (xv[l] - m[l]) * s[l];
                out[l] = a[l] * (dz - k1[l] - xhat * k2[l]);
            }
        }
    }
}

/// [`input_grad`] row by row: the reference of the blocked kernel.
#[multiversion(targets = "simd")]
fn input_grad_reference(g: &InputGrad, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let c = g.mean.len();
    for ((xr, dr), out) in x.chunks_exact(c).zip(dy.chunks_exact(c)).zip(dx.chunks_exact_mut(c)) {
        for ch in 0..c {
            let dz = gated(&g.gate, xr[ch], dr[ch], ch);
            let xhat = (xr[ch] - g.mean[ch]) * g.inv_std[ch];
            out[ch] = g.a[ch] * (dz - g.k1[ch] - xhat * g.k2[ch]);
        }
    }
}

/// total += part, elementwise (ordered reduction of per-task f64 sums).
pub fn add_f64(total: &mut [f64], part: &[f64]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * scale).collect()
    }

    #[test]
    fn blocked_kernels_match_their_references_bit_for_bit() {
        for c in [16, 48] {
            // Rows across several chunks of the sums (`chunk_rows`), and a partial one.
            let rows = 2 * chunk_rows(16) + 37;
            let (x, dy) = (values(rows * c, 1, 3.0), values(rows * c, 2, 1.0));
            let (mean, inv_std) = (values(c, 3, 0.5), values(c, 4, 1.0));
            let (a, b, k1, k2) = (values(c, 5, 4.0), values(c, 6, 4.0), values(c, 7, 0.1), values(c, 8, 0.1));
            let start = values(2 * c, 9, 1.0).into_iter().map(f64::from).collect::<Vec<_>>();

            let (mut fast, mut plain) = (start.clone(), start.clone());
            add_moments_blocked(&x, c, &mut fast);
            add_moments_reference(&x, c, &mut plain);
            assert_eq!(fast, plain, "moments, {c} channels");
            for act in [Activation::Linear, Activation::Relu, Activation::Relu6] {
                let gate = Gate::of(act, &a, &b);
                let what = format!("{act}, {c} channels");
                let (mut fast, mut plain) = (start.clone(), start.clone());
                add_grad_sums_blocked(&x, &dy, &mean, &inv_std, gate, &mut fast);
                add_grad_sums_reference(&x, &dy, &mean, &inv_std, gate, &mut plain);
                assert_eq!(fast, plain, "gradient sums, {what}");

                let grad = InputGrad { mean: &mean, inv_std: &inv_std, a: &a, k1: &k1, k2: &k2, gate };
                let (mut fast, mut plain) = (vec![f32::NAN; x.len()], vec![0.0; x.len()]);
                input_grad_blocked(&grad, &x, &dy, &mut fast);
                input_grad_reference(&grad, &x, &dy, &mut plain);
                assert_eq!(fast, plain, "input gradient, {what}");

                let (mut fast, mut plain) = (vec![f32::NAN; x.len()], vec![0.0; x.len()]);
                scale_shift_blocked(&x, &a, &b, None, act, &mut fast);
                scale_shift_reference(&x, &a, &b, None, act, &mut plain);
                assert_eq!(fast, plain, "scale and shift, {what}");
                // With a residual: the normalisation, then the sum, then the activation.
                let (mut fast, mut summed) = (vec![f32::NAN; x.len()], vec![0.0; x.len()]);
                scale_shift_blocked(&x, &a, &b, Some(&dy), act, &mut fast);
                scale_shift_reference(&x, &a, &b, Some(&dy), act, &mut summed);
                assert_eq!(fast, summed, "scale, shift and residual, {what}");
                let mut z = vec![0.0; x.len()];
                scale_shift_reference(&x, &a, &b, None, Activation::Linear, &mut z);
                let sum = z.iter().zip(&dy).map(|(z, r)| rectify(act, z + r));
                assert!(sum.zip(&summed).all(|(s, v)| s.to_bits() == v.to_bits()), "residual added last, {what}");
                assert_ne!(summed, plain, "the residual changes the output, {what}");
                // The gate passes exactly where the activation's output does not cut.
                let passed = plain.iter().filter(|&&y| y > 0.0 && (act != Activation::Relu6 || y < 6.0)).count();
                if let Some(g) = gate {
                    let open = (0..x.len()).filter(|&i| gated(&Some(g), x[i], 1.0, i % c) == 1.0).count();
                    assert_eq!(open, passed, "gate, {what}");
                    assert!(passed > x.len() / 8 && passed < x.len() - x.len() / 8, "{what}: {passed} passed");
                }
            }
        }
    }
}
