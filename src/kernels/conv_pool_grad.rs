//! Weight and bias gradients of a convolution with its max-pooling fused in
//! (see `conv_direct::conv_relu_pool2x2` and `conv_pool_winograd`), straight
//! from the pooled gradients.
//! Each pooled value's gradient reaches only its argmax position, so the
//! convolution-sized gradient dz (4x the pooled values for 2x2 windows, three
//! quarters zeros) is never written nor read back: a block of 8 filters'
//! gradient for one pooling window stays in a register, masked per window
//! position by comparing argmax indices. Over one input channel (the first
//! convolution of an MNIST classifier), the kernels instead pick each
//! filter's winning input values with a permute, one multiply-add per tap
//! where masking costs four: the reference model's weight gradient 0.21 ->
//! 0.15 ms per batch of 128 with AVX-512, its training step 19% faster
//! with AVX2 alone. Where F is a power of two, each filter's winner is found
//! from its position (the index shifted) by a table rather than decoded from
//! its index, and the permute reads one register rather than two: the
//! criterion bench of a batch's weight gradient (one thread) 405 -> 345 µs
//! with AVX-512, 664 -> 629 µs with AVX2.

use super::Window;
use super::activation::derivative_from_output;
use crate::activations::Activation;

// Differentiates y[q, f] = act(max_{p in window q} z[p, f]),  z[p, f] = b[f] + sum_t x[p + t] * w[t, f]:
//   g[q, f] = dy[q, f] * act'(y[q, f])
//   dw[t, f] += sum_q x[argmax(q, f) + t] * g[q, f],   db[f] += sum_q g[q, f]
// x: (H,W,C); dy, y, argmax: (PH,PW,F), argmax indexing the convolution's output (OH,OW,F);
// dw: (KH*KW*C, F), db: (F); both are added to.
#[allow(clippy::too_many_arguments)] // the forward's inputs and outputs, and what to add to
pub fn conv_pool_weight_grad(
    conv: &Window,
    pool: &Window,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    argmax: &[u32],
    f: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let pooled = pool.positions() * f;
    assert!(x.len() >= conv.h * conv.w * conv.c && dy.len() >= pooled && y.len() >= pooled && argmax.len() >= pooled);
    assert!(dw.len() >= conv.patch_len() * f && db.len() >= f && pool.c == f);
    #[cfg(target_arch = "x86_64")]
    if f.is_multiple_of(8)
        && matches!(act, Activation::Relu | Activation::Linear)
        && conv.patch_len() <= avx2::MAX_TAPS
        && (conv.pt, conv.pl) == (0, 0)
        && conv.oh > 0
        && conv.ow > 0
        && (conv.oh - 1) * conv.sh + conv.kh <= conv.h
        && (conv.ow - 1) * conv.sw + conv.kw <= conv.w
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        let relu = act == Activation::Relu;
        // SAFETY: the CPU has AVX2 and FMA (and AVX-512F for the first); sizes and valid
        // padding (every tap of every position inside x) are checked above. argmax values are only compared.
        unsafe {
            if f.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                avx512::conv_pool_weight_grad(conv, pool, relu, x, dy, y, argmax, f, dw, db)
            } else {
                avx2::conv_pool_weight_grad(conv, pool, relu, x, dy, y, argmax, f, dw, db)
            }
        }
        return;
    }
    conv_pool_weight_grad_scalar(conv, pool, act, x, dy, y, argmax, f, dw, db);
}

/// Portable reference version of [`conv_pool_weight_grad`].
#[allow(clippy::too_many_arguments)] // as conv_pool_weight_grad
pub fn conv_pool_weight_grad_scalar(
    conv: &Window,
    pool: &Window,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    argmax: &[u32],
    f: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let pooled = pool.positions() * f;
    for (i, ((&d, &yv), &a)) in dy[..pooled].iter().zip(&y[..pooled]).zip(&argmax[..pooled]).enumerate() {
        let fi = i % f;
        let g = d * derivative_from_output(act, yv);
        db[fi] += g;
        let p = a as usize / f;
        for (t, v) in super::conv_direct::taps(conv, x, p / conv.ow, p % conv.ow) {
            dw[t * f + fi] += v * g;
        }
    }
}

/// Whether the kernels may pick each filter's winning input values from
/// the two rows of two under its pooling window: one input channel, stride
/// 1, and whole 2x2 pooling windows 2 apart over the convolution's output.
#[cfg(target_arch = "x86_64")]
fn picks_winners(conv: &Window, pool: &Window) -> bool {
    conv.c == 1
        && (conv.sh, conv.sw) == (1, 1)
        && (pool.kh, pool.kw, pool.sh, pool.sw, pool.pt, pool.pl) == (2, 2, 2, 2, 0, 0)
        && (pool.h, pool.w) == (conv.oh, conv.ow)
        && 2 * pool.oh <= pool.h
        && 2 * pool.ow <= pool.w
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Window;
    use std::arch::x86_64::*;

    /// Taps accumulated per pass, one AVX register each.
    pub const TAPS: usize = 9;

    /// Most taps (KH*KW*C) handled: 8 passes.
    pub const MAX_TAPS: usize = 8 * TAPS;

    /// Input offset of tap t from a position's window corner; taps past K
    /// (padding the last pass) read offset 0 and are not stored.
    pub fn tap_offsets(conv: &Window) -> [usize; MAX_TAPS] {
        let mut offsets = [0usize; MAX_TAPS];
        for ky in 0..conv.kh {
            for kx in 0..conv.kw {
                for ci in 0..conv.c {
                    offsets[(ky * conv.kw + kx) * conv.c + ci] = (ky * conv.w + kx) * conv.c + ci;
                }
            }
        }
        offsets
    }

    /// How to find a winner from its position, for registers of L lanes. A
    /// winner's index is its position in the convolution's output times F, plus
    /// its filter; where F is a power of two, the index shifted right by the
    /// returned count is that position. Less the window's first position, it is
    /// 0, 1, OW or OW + 1, and its last log2(L) bits index the returned table,
    /// which maps those four to 0 to 3 (the winner's place among a tap's four
    /// values). None where F is not a power of two or the four share their last
    /// bits (the kernels then decode the winner's offset from the window's first
    /// index). Three operations a vector instead of seven or more.
    pub fn by_position<const L: usize>(conv: &Window, f: usize) -> (Option<__m128i>, [i32; L]) {
        let mut corners = [0i32; L];
        let (lower, last) = (conv.ow % L, (conv.ow + 1) % L);
        if !f.is_power_of_two() || matches!(lower, 0 | 1) || last == 0 {
            return (None, corners);
        }
        (corners[1], corners[lower], corners[last]) = (1, 2, 3);
        // SAFETY: SSE2 is part of x86_64.
        (Some(unsafe { _mm_cvtsi32_si128(f.trailing_zeros() as i32) }), corners)
    }

    /// [`super::conv_pool_weight_grad`] for valid padding, F a multiple of 8, ReLU
    /// or linear. Per block of 8 filters and pass of 9 taps, every pooling window
    /// masks its gradient vector once per window position and adds it, times
    /// the position's 9 input values, to 9 accumulators; or, where
    /// [`super::picks_winners`], adds it once, times the values each filter's
    /// winning position reads, picked per lane from the tap's four by a permute.
    /// Safety: AVX2 and FMA; sizes, K <= MAX_TAPS and valid padding checked by the caller.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_pool_weight_grad(
        conv: &Window,
        pool: &Window,
        relu: bool,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        argmax: &[u32],
        f: usize,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let k = conv.patch_len();
        let passes = k.div_ceil(TAPS);
        let offsets = tap_offsets(conv);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let picks = super::picks_winners(conv, pool);
        let (right, below) = (_mm256_set1_epi32(f as i32), _mm256_set1_epi32((conv.ow * f) as i32));
        let below_minus_one = _mm256_set1_epi32((conv.ow * f) as i32 - 1);
        let (by_position, corners) = by_position::<8>(conv, f);
        // SAFETY: `corners` holds 8 values.
        let corners = unsafe { _mm256_loadu_si256(corners.as_ptr() as *const __m256i) };
        for fb in (0..f).step_by(8) {
            for pass in 0..passes {
                let offsets: &[usize; TAPS] = offsets[pass * TAPS..][..TAPS].try_into().expect("TAPS offsets");
                let mut acc = [_mm256_setzero_ps(); TAPS];
                let mut bias = _mm256_setzero_ps();
                for qy in 0..pool.oh {
                    for qx in 0..pool.ow {
                        let q = (qy * pool.ow + qx) * f + fb;
                        // SAFETY: q + 8 <= PH*PW*F, checked by the caller.
                        let (mut g, winners) = unsafe {
                            (
                                _mm256_loadu_ps(dy.as_ptr().add(q)),
                                _mm256_loadu_si256(argmax.as_ptr().add(q) as *const __m256i),
                            )
                        };
                        if relu {
                            // SAFETY: as above.
                            let out = unsafe { _mm256_loadu_ps(y.as_ptr().add(q)) };
                            g = _mm256_and_ps(g, _mm256_cmp_ps::<_CMP_GT_OQ>(out, _mm256_setzero_ps()));
                        }
                        bias = _mm256_add_ps(bias, g);
                        if picks {
                            // The winner among the window's four positions, as an index
                            // into a tap's four values (two rows of two), 0 to 3.
                            let position = 2 * qy * conv.ow + 2 * qx;
                            let select = match by_position {
                                // Its position in the convolution's output less the
                                // window's first (0, 1, OW or OW + 1), looked up (its
                                // last 3 bits) in `corners`.
                                Some(shift) => _mm256_permutevar8x32_epi32(
                                    corners,
                                    _mm256_sub_epi32(
                                        _mm256_srl_epi32(winners, shift),
                                        _mm256_set1_epi32(position as i32),
                                    ),
                                ),
                                // Its offset 0, F, OW*F or (OW+1)*F from the first
                                // position's index, decoded.
                                None => {
                                    let first = position * f + fb;
                                    let at = _mm256_sub_epi32(
                                        winners,
                                        _mm256_add_epi32(_mm256_set1_epi32(first as i32), lanes),
                                    );
                                    let lower = _mm256_cmpgt_epi32(at, below_minus_one);
                                    let across =
                                        _mm256_cmpeq_epi32(_mm256_sub_epi32(at, _mm256_and_si256(lower, below)), right);
                                    _mm256_or_si256(
                                        _mm256_and_si256(lower, _mm256_set1_epi32(2)),
                                        _mm256_and_si256(across, _mm256_set1_epi32(1)),
                                    )
                                }
                            };
                            let corner = 2 * qy * conv.w + 2 * qx;
                            for (a, &offset) in acc.iter_mut().zip(offsets) {
                                // SAFETY: the two rows of two values from corner + offset lie in x:
                                // valid padding, stride 1 and whole pooling windows (`picks_winners`).
                                let four = unsafe {
                                    let at = x.as_ptr().add(corner + offset);
                                    let pair = |p: *const f32| _mm_loadl_epi64(p as *const __m128i);
                                    _mm_castsi128_ps(_mm_unpacklo_epi64(pair(at), pair(at.add(conv.w))))
                                };
                                let v = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(four), select);
                                *a = _mm256_fmadd_ps(v, g, *a);
                            }
                            continue;
                        }
                        for wy in 0..pool.kh {
                            let py = (qy * pool.sh + wy).wrapping_sub(pool.pt);
                            if py >= pool.h {
                                continue;
                            }
                            for wx in 0..pool.kw {
                                let px = (qx * pool.sw + wx).wrapping_sub(pool.pl);
                                if px >= pool.w {
                                    continue;
                                }
                                let p = py * pool.w + px;
                                let here = _mm256_add_epi32(_mm256_set1_epi32((p * f + fb) as i32), lanes);
                                let mask = _mm256_castsi256_ps(_mm256_cmpeq_epi32(winners, here));
                                let gp = _mm256_and_ps(g, mask);
                                let corner = (py * conv.sh * conv.w + px * conv.sw) * conv.c;
                                for (a, &offset) in acc.iter_mut().zip(offsets) {
                                    // SAFETY: corner + offset indexes x: valid padding, checked by the caller.
                                    let v = unsafe { _mm256_broadcast_ss(&*x.as_ptr().add(corner + offset)) };
                                    *a = _mm256_fmadd_ps(v, gp, *a);
                                }
                            }
                        }
                    }
                }
                for (j, a) in acc.iter().enumerate().take(k - pass * TAPS) {
                    let out = &mut dw[(pass * TAPS + j) * f + fb..][..8];
                    // SAFETY: `out` holds 8 values.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(_mm256_loadu_ps(out.as_ptr()), *a)) };
                }
                if pass == 0 {
                    let out = &mut db[fb..][..8];
                    // SAFETY: `out` holds 8 values.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(_mm256_loadu_ps(out.as_ptr()), bias)) };
                }
            }
        }
    }
}

/// The AVX2 kernel with 16 filters per register, and two registers sharing
/// each broadcast input value: per lane the same operations in the same
/// order, so both give the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Window;
    use super::avx2::{MAX_TAPS, TAPS, tap_offsets};
    use std::arch::x86_64::*;

    /// [`super::avx2::conv_pool_weight_grad`] by blocks of 32 filters (two
    /// registers sharing each input value's broadcast) where F is a multiple
    /// of 32, else of 16; where [`super::picks_winners`], picking each filter's
    /// winning input values ([`Grads::block`]). Safety: AVX-512F; sizes, K <= MAX_TAPS and valid
    /// padding checked by the caller.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn conv_pool_weight_grad(
        conv: &Window,
        pool: &Window,
        relu: bool,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        argmax: &[u32],
        f: usize,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let k = conv.patch_len();
        let offsets: [usize; MAX_TAPS] = tap_offsets(conv);
        let picks = super::picks_winners(conv, pool);
        for pass in 0..k.div_ceil(TAPS) {
            let offsets: &[usize; TAPS] = offsets[pass * TAPS..][..TAPS].try_into().expect("TAPS offsets");
            let taps = (pass * TAPS, (k - pass * TAPS).min(TAPS));
            let grads = Grads { conv, pool, relu, x, dy, y, argmax, f };
            // SAFETY: the caller's checks; each block's filters lie below f;
            // picking, the geometry `picks_winners` checks.
            unsafe {
                if f.is_multiple_of(32) {
                    for fb in (0..f).step_by(32) {
                        match picks {
                            true => grads.block::<2, true>(fb, offsets, taps, dw, db),
                            false => grads.block::<2, false>(fb, offsets, taps, dw, db),
                        }
                    }
                } else {
                    for fb in (0..f).step_by(16) {
                        match picks {
                            true => grads.block::<1, true>(fb, offsets, taps, dw, db),
                            false => grads.block::<1, false>(fb, offsets, taps, dw, db),
                        }
                    }
                }
            }
        }
    }

    /// How far ahead, in pooled pixels, [`Grads::block`] asks for the values it
    /// streams (three arrays of a batch's pooled size, read once, from beyond
    /// L2): on an Intel Xeon (AVX-512, 2 MB of L2 a core) the weight gradient
    /// of the reference model's batch, one thread, 1-8% less in each of seven
    /// alternating pairs (547-582 -> 512-561 µs; 8 pixels ahead and 64 alike).
    const PREFETCH_PIXELS: usize = 24;

    /// The forward pass's values that the gradients read.
    struct Grads<'a> {
        conv: &'a Window,
        pool: &'a Window,
        relu: bool,
        x: &'a [f32],
        dy: &'a [f32],
        y: &'a [f32],
        argmax: &'a [u32],
        f: usize,
    }

    impl Grads<'_> {
        /// Adds the gradients of filters fb..fb + 16 V for the pass of taps
        /// first_tap..first_tap + taps (and the bias's, on the first pass) to TAPS x V
        /// accumulators. Each pooling window's gradient vectors are masked once per
        /// window position and added, times the position's input values; or, with
        /// PICK, added once, times the values each filter's winning position reads,
        /// picked per lane from a tap's two rows of two (one register) by a
        /// permute. The same terms in the same order either way (the masked ones
        /// add exact zeros), so the same bits.
        /// Safety: as [`conv_pool_weight_grad`], with fb + 16 V <= f; with PICK,
        /// the geometry `picks_winners` checks.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn block<const V: usize, const PICK: bool>(
            &self,
            fb: usize,
            offsets: &[usize; TAPS],
            (first_tap, taps): (usize, usize),
            dw: &mut [f32],
            db: &mut [f32],
        ) {
            let Grads { conv, pool, relu, x, dy, y, argmax, f } = *self;
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            // A winner's offset from its window's first position, in the
            // convolution's output: 0, F (right), OW*F (below) or both.
            let (right, below) = (_mm512_set1_epi32(f as i32), _mm512_set1_epi32((conv.ow * f) as i32));
            let (by_position, corners) = super::avx2::by_position::<16>(conv, f);
            // SAFETY: `corners` holds 16 values.
            let corners = unsafe { _mm512_loadu_si512(corners.as_ptr() as *const __m512i) };
            let mut acc = [[_mm512_setzero_ps(); V]; TAPS];
            let mut bias = [_mm512_setzero_ps(); V];
            for qy in 0..pool.oh {
                for qx in 0..pool.ow {
                    let q = (qy * pool.ow + qx) * f + fb;
                    // The gradients, winners and outputs PREFETCH_PIXELS pooled
                    // pixels on. Past the sample's end they are the next sample's,
                    // read next where one block of filters and one pass of taps
                    // cover a sample (the reference model's 32 filters, 9 taps);
                    // a prefetch never faults.
                    for v in 0..V {
                        let ahead = q + PREFETCH_PIXELS * f + 16 * v;
                        _mm_prefetch::<_MM_HINT_T0>(dy.as_ptr().wrapping_add(ahead) as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(argmax.as_ptr().wrapping_add(ahead) as *const i8);
                        if relu {
                            _mm_prefetch::<_MM_HINT_T0>(y.as_ptr().wrapping_add(ahead) as *const i8);
                        }
                    }
                    let mut g = [_mm512_setzero_ps(); V];
                    let mut winners = [_mm512_setzero_si512(); V];
                    for v in 0..V {
                        // SAFETY: q + 16 V <= PH*PW*F, checked by the caller.
                        unsafe {
                            g[v] = _mm512_loadu_ps(dy.as_ptr().add(q + 16 * v));
                            winners[v] = _mm512_loadu_si512(argmax.as_ptr().add(q + 16 * v) as *const __m512i);
                            if relu {
                                let out = _mm512_loadu_ps(y.as_ptr().add(q + 16 * v));
                                g[v] = _mm512_maskz_mov_ps(
                                    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(out, _mm512_setzero_ps()),
                                    g[v],
                                );
                            }
                        }
                        bias[v] = _mm512_add_ps(bias[v], g[v]);
                    }
                    if PICK {
                        // Per lane, the winner's value among a tap's two rows of
                        // two, gathered in one register's first four lanes: 0 or 1
                        // in the upper row, 2 or 3 in the lower.
                        let position = 2 * qy * conv.ow + 2 * qx;
                        let select: [__m512i; V] = match by_position {
                            // The winner's position in the convolution's output (its index
                            // shifted), less the window's first: 0, 1, OW or OW + 1, then
                            // looked up (its last 4 bits) in `corners`.
                            Some(shift) => std::array::from_fn(|v| {
                                let from = _mm512_sub_epi32(
                                    _mm512_srl_epi32(winners[v], shift),
                                    _mm512_set1_epi32(position as i32),
                                );
                                _mm512_permutexvar_epi32(from, corners)
                            }),
                            None => std::array::from_fn(|v| {
                                let here =
                                    _mm512_add_epi32(_mm512_set1_epi32((position * f + fb + 16 * v) as i32), lanes);
                                let at = _mm512_sub_epi32(winners[v], here);
                                let lower = _mm512_cmpge_epi32_mask(at, below);
                                let across =
                                    _mm512_cmpeq_epi32_mask(_mm512_mask_sub_epi32(at, lower, at, below), right);
                                let row = _mm512_maskz_mov_epi32(lower, _mm512_set1_epi32(2));
                                _mm512_mask_add_epi32(row, across, row, _mm512_set1_epi32(1))
                            }),
                        };
                        let corner = 2 * qy * conv.w + 2 * qx;
                        for (a, &offset) in acc.iter_mut().zip(offsets) {
                            // SAFETY: the window's two rows of two values from
                            // corner + offset lie in x: valid padding, stride 1 and
                            // whole pooling windows (`picks_winners`).
                            let four = unsafe {
                                let at = x.as_ptr().add(corner + offset);
                                let pair = |p: *const f32| _mm_loadl_epi64(p as *const __m128i);
                                _mm512_castps128_ps512(_mm_castsi128_ps(_mm_unpacklo_epi64(
                                    pair(at),
                                    pair(at.add(conv.w)),
                                )))
                            };
                            // One source register: a permute of two costs this
                            // host (Zen 4) about as much as the multiply-add.
                            for ((av, &gv), &sv) in a.iter_mut().zip(&g).zip(&select) {
                                *av = _mm512_fmadd_ps(_mm512_permutexvar_ps(sv, four), gv, *av);
                            }
                        }
                        continue;
                    }
                    for wy in 0..pool.kh {
                        let py = (qy * pool.sh + wy).wrapping_sub(pool.pt);
                        if py >= pool.h {
                            continue;
                        }
                        for wx in 0..pool.kw {
                            let px = (qx * pool.sw + wx).wrapping_sub(pool.pl);
                            if px >= pool.w {
                                continue;
                            }
                            let p = py * pool.w + px;
                            let gp: [__m512; V] = std::array::from_fn(|v| {
                                let here = _mm512_add_epi32(_mm512_set1_epi32((p * f + fb + 16 * v) as i32), lanes);
                                _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(winners[v], here), g[v])
                            });
                            let corner = (py * conv.sh * conv.w + px * conv.sw) * conv.c;
                            for (a, &offset) in acc.iter_mut().zip(offsets) {
                                // SAFETY: corner + offset indexes x: valid padding, checked by the caller.
                                let xv = unsafe { _mm512_set1_ps(*x.as_ptr().add(corner + offset)) };
                                for (av, &gv) in a.iter_mut().zip(&gp) {
                                    *av = _mm512_fmadd_ps(xv, gv, *av);
                                }
                            }
                        }
                    }
                }
            }
            let add = |out: &mut [f32], sums: &[__m512; V]| {
                let out = &mut out[..16 * V];
                for (v, s) in sums.iter().enumerate() {
                    // SAFETY: `out` holds 16 V values.
                    unsafe {
                        let o = out.as_mut_ptr().add(16 * v);
                        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), *s));
                    }
                }
            };
            for (t, a) in acc.iter().enumerate().take(taps) {
                add(&mut dw[(first_tap + t) * f + fb..], a);
            }
            if first_tap == 0 {
                add(&mut db[fb..], &bias);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv_direct::{conv_weight_grad_scalar, pad_filters, padded_len};
    use crate::kernels::pool::{max_pool_backward_through, max_pool_forward};

    /// The gradients the unfused path computes: scatter to dz, then the dense weight gradient.
    #[allow(clippy::too_many_arguments)]
    fn through_dz(
        conv: &Window,
        act: Activation,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        a: &[u32],
        f: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut dz = vec![0.0; conv.positions() * f];
        max_pool_backward_through(act, dy, y, a, &mut dz);
        let (mut dw, mut db) = (vec![0.25; conv.patch_len() * f], vec![0.5; f]);
        conv_weight_grad_scalar(conv, x, &dz, f, &mut dw);
        for (i, d) in dz.iter().enumerate() {
            db[i % f] += d;
        }
        (dw, db)
    }

    #[test]
    fn fused_gradients_match_the_scatter_then_dense_path() {
        // (H, W, C, kernel, conv stride, F, pool size, pool stride): 2x2 pools, an odd
        // output (27 -> 13, last row unpooled), one channel with 16 filters and 25 taps (3
        // passes), RGB with 27 taps, overlapping 3x3/2 pools. One channel, the winners
        // found by their positions (`by_position`) or decoded from their indices: OW = 15,
        // 16 and 17 (both kernels decode; 17 with F = 48, not a power of two), OW = 9
        // (AVX-512 by position, AVX2 decodes), OW = 10, 12, 26 and 28 (both by position),
        // 27 (AVX2 alone, F = 8).
        let cases = [
            (28, 28, 1, 3, 1, 32, 2, 2),
            (29, 29, 1, 3, 1, 8, 2, 2),
            (29, 30, 1, 3, 1, 16, 2, 2),
            (17, 16, 1, 5, 1, 32, 2, 2),
            (18, 18, 1, 3, 1, 16, 2, 2),
            (17, 17, 1, 3, 1, 32, 2, 2),
            (19, 19, 1, 3, 1, 48, 2, 2),
            (11, 11, 1, 3, 1, 16, 2, 2),
            (12, 12, 1, 3, 1, 32, 2, 2),
            (10, 12, 3, 3, 1, 16, 2, 2),
            (11, 11, 2, 2, 2, 24, 3, 2),
        ];
        for (h, w, c, k, s, f, pk, ps) in cases {
            let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
            let conv = Window { h, w, c, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pt: 0, pl: 0, oh, ow };
            let (ph, pw) = ((oh - pk) / ps + 1, (ow - pk) / ps + 1);
            let pool = Window {
                h: oh,
                w: ow,
                c: f,
                kh: pk,
                kw: pk,
                sh: ps,
                sw: ps,
                dh: 1,
                dw: 1,
                pt: 0,
                pl: 0,
                oh: ph,
                ow: pw,
            };
            let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5).collect();
            let kernel: Vec<f32> = (0..conv.patch_len() * f).map(|i| ((i * 13) % 11) as f32 / 11.0 - 0.5).collect();
            let mut wp = vec![0.0; padded_len(conv.patch_len(), f)];
            pad_filters(&kernel, None, f, &mut wp);
            for act in [Activation::Relu, Activation::Linear, Activation::Tanh] {
                let mut z = vec![0.0; conv.positions() * f];
                crate::kernels::conv_direct::conv_forward_scalar(&conv, &x, &wp, f, false, 0..conv.oh, &mut z);
                crate::kernels::activation::forward(act, &mut z, None, f);
                let (mut y, mut a) = (vec![0.0; pool.positions() * f], vec![0u32; pool.positions() * f]);
                max_pool_forward(&pool, &z, &mut y, &mut a);
                let dy: Vec<f32> = (0..y.len()).map(|i| ((i * 29) % 23) as f32 / 23.0 - 0.5).collect();
                let (want_w, want_b) = through_dz(&conv, act, &x, &dy, &y, &a, f);
                for fast in [true, false] {
                    let (mut dw, mut db) = (vec![0.25; conv.patch_len() * f], vec![0.5; f]);
                    if fast {
                        conv_pool_weight_grad(&conv, &pool, act, &x, &dy, &y, &a, f, &mut dw, &mut db);
                    } else {
                        conv_pool_weight_grad_scalar(&conv, &pool, act, &x, &dy, &y, &a, f, &mut dw, &mut db);
                    }
                    for (got, want) in dw.iter().zip(&want_w).chain(db.iter().zip(&want_b)) {
                        assert!((got - want).abs() < 1e-4, "{act:?} fast={fast} h={h} c={c}: {got} vs {want}");
                    }
                }
                // The AVX-512 kernel gives the AVX2 kernel's bits (16 and 32 filters).
                #[cfg(target_arch = "x86_64")]
                if f.is_multiple_of(16) && act != Activation::Tanh && std::arch::is_x86_feature_detected!("avx512f") {
                    let relu = act == Activation::Relu;
                    let (mut dw, mut db) = (vec![0.25; conv.patch_len() * f], vec![0.5; f]);
                    let (mut dw2, mut db2) = (dw.clone(), db.clone());
                    // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA here); valid padding, K <= 72 taps.
                    unsafe {
                        avx512::conv_pool_weight_grad(&conv, &pool, relu, &x, &dy, &y, &a, f, &mut dw, &mut db);
                        avx2::conv_pool_weight_grad(&conv, &pool, relu, &x, &dy, &y, &a, f, &mut dw2, &mut db2);
                    }
                    assert_eq!((dw, db), (dw2, db2), "{act:?} h={h} c={c} f={f}");
                }
            }
        }
    }
}
