//! Depthwise 2-D convolution over one channels-last sample: each input
//! channel c is convolved with its own `m` filters, giving output channels
//! c * m .. (c + 1) * m (Keras' `DepthwiseConv2D` with `depth_multiplier` m),
//! with strides, padding and dilation.

use multiversion::multiversion;
use std::ops::Range;

/// The geometry of a depthwise convolution over one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depthwise {
    /// Input height, width, channels.
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Kernel height and width, depth multiplier.
    pub kh: usize,
    pub kw: usize,
    pub m: usize,
    /// Strides, dilation, padding before the first row and column.
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Depthwise {
    /// Output channels: c * m.
    pub fn out_channels(&self) -> usize {
        self.c * self.m
    }

    /// The input row and column tap (ky, kx) of output (oy, ox) reads, if inside the image.
    #[inline]
    fn tap(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        Some((self.tap_row(oy, ky)?, self.tap_column(ox, kx)?))
    }

    /// The input row kernel row `ky` of output row `oy` reads, if inside the image.
    #[inline]
    fn tap_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.sh + ky * self.dh).checked_sub(self.pt).filter(|&iy| iy < self.h)
    }

    /// The input column kernel column `kx` of output column `ox` reads, if inside the image.
    #[inline]
    fn tap_column(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.sw + kx * self.dw).checked_sub(self.pl).filter(|&ix| ix < self.w)
    }

    /// The output columns whose every tap lies inside the image's columns.
    fn inside_columns(&self) -> std::ops::Range<usize> {
        let first = self.pl.div_ceil(self.sw).min(self.ow);
        // The last: ox * sw + (kw - 1) * dw - pl <= w - 1.
        let end = match (self.w + self.pl).checked_sub((self.kw - 1) * self.dw + 1) {
            Some(reach) => (reach / self.sw + 1).min(self.ow),
            None => 0,
        };
        first..end.max(first)
    }

    /// The kernel rows whose taps from output row `oy` lie inside the image.
    fn inside_rows(&self, oy: usize) -> std::ops::Range<usize> {
        let inside = |ky: &usize| self.tap_row(oy, *ky).is_some();
        let first = (0..self.kh).find(inside).unwrap_or(self.kh);
        first..(first..self.kh).find(|ky| !inside(ky)).unwrap_or(self.kh)
    }

    /// Calls `f(output position, input position, kernel tap)` for every tap inside the image.
    #[inline]
    fn each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        if let Some((iy, ix)) = self.tap(oy, ox, ky, kx) {
                            f(oy * self.ow + ox, iy * self.w + ix, ky * self.kw + kx);
                        }
                    }
                }
            }
        }
    }
}

/// Channels whose sums [`forward`] keeps in registers over a pixel's taps:
/// blocks of 64, then of 16 (the remaining channels, if any, one at a time).
const CHANNEL_BLOCKS: [usize; 3] = [64, 16, 1];

/// x: (H,W,C), kernel (KH,KW,C,M), bias (C*M) -> y: (OH,OW,C*M), written.
/// With one filter per channel (M = 1), each output's sums stay in registers
/// over its taps and are written once; the sums are [`forward_reference`]'s,
/// in the same order (fused multiply-adds in both). With AVX-512, the pixels
/// whose taps all lie inside the image's columns go by blocks along their
/// row (`avx512::forward`), the others one at a time.
pub fn forward(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    if g.m == 1 {
        let (inputs, outputs) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
        assert!(x.len() >= inputs && y.len() >= outputs && kernel.len() >= g.kh * g.kw * g.c, "depthwise lengths");
        assert!(bias.is_none_or(|b| b.len() >= g.c), "bias too short");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, and the lengths were checked above.
            return unsafe { avx512::forward(g, x, kernel, bias, y) };
        }
        return forward_by_pixels(g, x, kernel, bias, y);
    }
    forward_reference(g, x, kernel, bias, y)
}

#[multiversion(targets = "simd")]
fn forward_by_pixels(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            forward_pixel(g, x, kernel, bias, (oy, ox), &mut y[(oy * g.ow + ox) * g.c..][..g.c]);
        }
    }
}

/// Output pixel (oy, ox) of [`forward`] (M = 1), every channel: blocks of 64,
/// then of 16, then single channels.
#[inline(always)]
fn forward_pixel(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, at: (usize, usize), out: &mut [f32]) {
    let mut c0 = 0;
    while c0 + CHANNEL_BLOCKS[0] <= g.c {
        pixel_block::<64>(g, x, kernel, bias, at, c0, out);
        c0 += CHANNEL_BLOCKS[0];
    }
    while c0 + CHANNEL_BLOCKS[1] <= g.c {
        pixel_block::<16>(g, x, kernel, bias, at, c0, out);
        c0 += CHANNEL_BLOCKS[1];
    }
    while c0 < g.c {
        pixel_block::<1>(g, x, kernel, bias, at, c0, out);
        c0 += CHANNEL_BLOCKS[2];
    }
}

/// Channels c0..c0 + W of output pixel (oy, ox) of [`forward`] (M = 1): the
/// bias, then each tap inside the image added in order, in registers.
#[inline(always)]
fn pixel_block<const W: usize>(
    g: &Depthwise,
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    (oy, ox): (usize, usize),
    c0: usize,
    out: &mut [f32],
) {
    let mut sums = [0.0f32; W];
    if let Some(b) = bias {
        sums.copy_from_slice(&b[c0..c0 + W]);
    }
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            if let Some((iy, ix)) = g.tap(oy, ox, ky, kx) {
                let xs = &x[(iy * g.w + ix) * g.c + c0..][..W];
                let ws = &kernel[(ky * g.kw + kx) * g.c + c0..][..W];
                for ((s, &x), &w) in sums.iter_mut().zip(xs).zip(ws) {
                    *s = x.mul_add(w, *s);
                }
            }
        }
    }
    out[c0..c0 + W].copy_from_slice(&sums);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Depthwise, forward_pixel, pixel_block};
    use std::arch::x86_64::*;
    use std::ops::Range;

    // [`super::forward`] (M = 1) by blocks of 16 channels, each over the whole
    // image (so that the input rows an output row shares with the next stay
    // in cache). In each output row, the pixels whose taps all lie inside the
    // image's columns go by blocks of 8, 4, 2 and 1 pixels along the row,
    // their sums in registers; then the pixels at the sides, and the
    // channels past the last multiple of 16, one pixel at a time with every
    // tap checked.
    // Safety: AVX-512F, and the lengths [`super::forward`] checked.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn forward(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let (c, vectors) = (g.c, g.c / 16 * 16);
        let inside = g.inside_columns();
        for c0 in (0..vectors).step_by(16) {
            for oy in 0..g.oh {
                let (rows, row) = (g.inside_rows(oy), &mut y[oy * g.ow * c..][..g.ow * c]);
                let mut ox = inside.start;
                while ox < inside.end {
                    let width = [8, 4, 2, 1].into_iter().find(|&p| ox + p <= inside.end).unwrap_or(1);
                    // SAFETY: every tap of pixels `inside` lies inside x; kernel and bias hold c values.
                    unsafe {
                        match width {
                            8 => block::<8>(g, x, kernel, bias, (oy, ox), rows.clone(), c0, row),
                            4 => block::<4>(g, x, kernel, bias, (oy, ox), rows.clone(), c0, row),
                            2 => block::<2>(g, x, kernel, bias, (oy, ox), rows.clone(), c0, row),
                            _ => block::<1>(g, x, kernel, bias, (oy, ox), rows.clone(), c0, row),
                        }
                    }
                    ox += width;
                }
            }
        }
        for oy in 0..g.oh {
            let row = &mut y[oy * g.ow * c..][..g.ow * c];
            for ox in (0..inside.start).chain(inside.end..g.ow) {
                forward_pixel(g, x, kernel, bias, (oy, ox), &mut row[ox * c..][..c]);
            }
            for ox in inside.clone() {
                for c0 in vectors..c {
                    pixel_block::<1>(g, x, kernel, bias, (oy, ox), c0, &mut row[ox * c..][..c]);
                }
            }
        }
    }

    /// Channels c0..c0 + 16 of pixels ox..ox + P of output row oy (every
    /// column tap inside the image; kernel rows `rows` inside it), into `row`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const P: usize>(
        g: &Depthwise,
        x: &[f32],
        kernel: &[f32],
        bias: Option<&[f32]>,
        (oy, ox): (usize, usize),
        rows: Range<usize>,
        c0: usize,
        row: &mut [f32],
    ) {
        let c = g.c;
        // SAFETY: the caller's bounds: c0 + 16 <= C, and every tap read is inside x.
        unsafe {
            let first = bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr().add(c0)));
            let mut acc = [first; P];
            for ky in rows {
                let iy = oy * g.sh + ky * g.dh - g.pt;
                for kx in 0..g.kw {
                    let w = _mm512_loadu_ps(kernel.as_ptr().add((ky * g.kw + kx) * c + c0));
                    let ix = ox * g.sw + kx * g.dw - g.pl;
                    let xs = x.as_ptr().add((iy * g.w + ix) * c + c0);
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_loadu_ps(xs.add(p * g.sw * c)), w, *acc);
                    }
                }
            }
            let out = row.as_mut_ptr().add(ox * c + c0);
            for (p, &acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(p * c), acc);
            }
        }
    }
}

/// [`forward`] tap by tap over the whole output: the reference of the
/// register-blocked path, and the path for depth multipliers above 1.
#[multiversion(targets = "simd")]
pub fn forward_reference(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (c, m, co) = (g.c, g.m, g.out_channels());
    for out in y.chunks_exact_mut(co) {
        match bias {
            Some(b) => out.copy_from_slice(b),
            None => out.fill(0.0),
        }
    }
    g.each_tap(|o, i, t| {
        let (xs, ys, ws) = (&x[i * c..][..c], &mut y[o * co..][..co], &kernel[t * co..][..co]);
        if m == 1 {
            for ((y, &x), &w) in ys.iter_mut().zip(xs).zip(ws) {
                *y = x.mul_add(w, *y);
            }
        } else {
            for (ch, &xv) in xs.iter().enumerate() {
                for k in 0..m {
                    ys[ch * m + k] = xv.mul_add(ws[ch * m + k], ys[ch * m + k]);
                }
            }
        }
    });
}

/// dz: (OH,OW,C*M) -> dW (KH,KW,C,M) and db (C*M), added to. With one
/// filter per channel and a 3x3 or 5x5 kernel, a block of channels' every
/// tap sums in registers over the whole sample (`weight_grad_by_taps`),
/// where the reference adds each product into dW in memory; the same sums
/// in the same order, so the same bits.
pub fn weight_grad(g: &Depthwise, x: &[f32], dz: &[f32], dw: &mut [f32], db: &mut [f32]) {
    if by_taps(g) {
        let (taps, c) = (g.kh * g.kw, g.c);
        assert!(x.len() >= g.h * g.w * c && dz.len() >= g.oh * g.ow * c, "depthwise lengths");
        assert!(dw.len() >= taps * c && db.len() >= c, "depthwise gradient lengths");
        return weight_grad_by_taps(g, x, dz, dw, db);
    }
    weight_grad_reference(g, x, dz, dw, db)
}

/// dz: (OH,OW,C*M) -> dx: (H,W,C), written. With one filter per channel and
/// a 3x3 or 5x5 kernel, each input pixel gathers its taps' terms in
/// registers (`input_grad_by_taps`), where the reference scatters each
/// product into dx in memory; the same terms in the same order (by output
/// pixel), so the same bits.
pub fn input_grad(g: &Depthwise, dz: &[f32], kernel: &[f32], dx: &mut [f32]) {
    if by_taps(g) {
        return input_grad_rows(g, dz, kernel, dx, 0..g.h);
    }
    input_grad_reference(g, dz, kernel, dx)
}

/// Input rows `rows` of [`input_grad`] by taps (`by_taps(g)` must hold):
/// dx holds those rows only, (rows, W, C), written; dz is the whole
/// sample's. Each pixel's sum is the same as over the whole image, so a
/// sample split into bands of rows gives the same bits.
pub fn input_grad_rows(g: &Depthwise, dz: &[f32], kernel: &[f32], dx: &mut [f32], rows: Range<usize>) {
    let c = g.c;
    assert!(by_taps(g), "the input gradient by rows needs one filter per channel and a 3x3 or 5x5 kernel");
    assert!(rows.end <= g.h && dz.len() >= g.oh * g.ow * c && dx.len() >= rows.len() * g.w * c, "depthwise lengths");
    assert!(kernel.len() >= g.kh * g.kw * c, "depthwise kernel length");
    input_grad_by_taps(g, dz, kernel, dx, rows)
}

/// Whether the register-blocked gradients apply: one filter per channel, a
/// kernel of 3x3 or 5x5 taps (compiled for each), and a nonzero dilation.
pub fn by_taps(g: &Depthwise) -> bool {
    g.m == 1 && matches!((g.kh, g.kw), (3, 3) | (5, 5)) && g.dh > 0 && g.dw > 0
}

#[multiversion(targets = "simd")]
fn weight_grad_by_taps(g: &Depthwise, x: &[f32], dz: &[f32], dw: &mut [f32], db: &mut [f32]) {
    // An output row's dz, and the sh input rows it moves the taps by.
    let rows = band_rows(g, (g.ow + g.sh * g.w) * g.c);
    match (g.kh, g.kw) {
        (3, 3) => by_bands_and_channel_blocks(0..g.oh, rows, g.c, |band, c0, lanes| match lanes {
            16 => weight_grad_block::<3, 3, 16>(g, x, dz, dw, db, c0, band),
            8 => weight_grad_block::<3, 3, 8>(g, x, dz, dw, db, c0, band),
            _ => weight_grad_block::<3, 3, 1>(g, x, dz, dw, db, c0, band),
        }),
        _ => by_bands_and_channel_blocks(0..g.oh, rows, g.c, |band, c0, lanes| match lanes {
            16 => weight_grad_block::<5, 5, 16>(g, x, dz, dw, db, c0, band),
            8 => weight_grad_block::<5, 5, 8>(g, x, dz, dw, db, c0, band),
            _ => weight_grad_block::<5, 5, 1>(g, x, dz, dw, db, c0, band),
        }),
    }
}

#[multiversion(targets = "simd")]
fn input_grad_by_taps(g: &Depthwise, dz: &[f32], kernel: &[f32], dx: &mut [f32], rows: Range<usize>) {
    // An input row's dx, and the dz rows that read it (one in sh).
    let (first, band) = (rows.start, band_rows(g, (g.w + g.ow.div_ceil(g.sh)) * g.c));
    match (g.kh, g.kw) {
        (3, 3) => by_bands_and_channel_blocks(rows, band, g.c, |rows, c0, lanes| match lanes {
            16 => input_grad_block::<3, 3, 16>(g, dz, kernel, dx, c0, first, rows),
            8 => input_grad_block::<3, 3, 8>(g, dz, kernel, dx, c0, first, rows),
            _ => input_grad_block::<3, 3, 1>(g, dz, kernel, dx, c0, first, rows),
        }),
        _ => by_bands_and_channel_blocks(rows, band, g.c, |rows, c0, lanes| match lanes {
            16 => input_grad_block::<5, 5, 16>(g, dz, kernel, dx, c0, first, rows),
            8 => input_grad_block::<5, 5, 8>(g, dz, kernel, dx, c0, first, rows),
            _ => input_grad_block::<5, 5, 1>(g, dz, kernel, dx, c0, first, rows),
        }),
    }
}

/// Values of a sample (input and output) that the gradients take through
/// every block of channels at once (1 MiB: within L2); a larger sample goes
/// by bands of rows of [`BAND_VALUES`], each through every block of
/// channels before the next, so that the image is read from memory once,
/// not once per block of channels (each pixel's 16 channels a kilobyte or
/// more from the next pixel's).
const SAMPLE_VALUES: usize = 1 << 18;

/// Values of a band of rows, with the rows its taps read (512 KiB).
const BAND_VALUES: usize = 1 << 17;

/// Rows per band of a sample of `g` whose rows span `row_values` values
/// each (with what each reads): all of them where the sample fits
/// [`SAMPLE_VALUES`].
fn band_rows(g: &Depthwise, row_values: usize) -> usize {
    if (g.h * g.w + g.oh * g.ow) * g.c <= SAMPLE_VALUES {
        return g.h.max(g.oh);
    }
    (BAND_VALUES / row_values.max(1)).max(1)
}

/// Calls `block(rows of the band, first channel, channels)` over `rows` in
/// bands of `band` rows, each band over `c` channels: blocks of 16, then of
/// 8, then single channels.
#[inline(always)]
fn by_bands_and_channel_blocks(
    rows: Range<usize>,
    band: usize,
    c: usize,
    mut block: impl FnMut(Range<usize>, usize, usize),
) {
    for start in rows.clone().step_by(band) {
        let band = start..(start + band).min(rows.end);
        let mut c0 = 0;
        for lanes in [16, 8, 1] {
            while c0 + lanes <= c {
                block(band.clone(), c0, lanes);
                c0 += lanes;
            }
        }
    }
}

/// Channels c0..c0 + L of [`weight_grad`] (M = 1) over output rows `rows`:
/// each tap's L sums (and the bias's) start from dW's (db's) values and
/// take the output pixels' terms in order, in registers. Bands of rows in
/// order give the same sums as the whole sample at once.
#[inline(always)]
fn weight_grad_block<const KH: usize, const KW: usize, const L: usize>(
    g: &Depthwise,
    x: &[f32],
    dz: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    c0: usize,
    rows: Range<usize>,
) {
    let c = g.c;
    let mut sums: [[[f32; L]; KW]; KH] =
        std::array::from_fn(|ky| std::array::from_fn(|kx| lanes(&dw[(ky * KW + kx) * c + c0..])));
    let mut bias: [f32; L] = lanes(&db[c0..]);
    let inside = g.inside_columns();
    for oy in rows {
        let rows: [Option<usize>; KH] = std::array::from_fn(|ky| g.tap_row(oy, ky));
        for ox in 0..g.ow {
            let d: [f32; L] = lanes(&dz[(oy * g.ow + ox) * c + c0..]);
            bias.iter_mut().zip(&d).for_each(|(b, &d)| *b += d);
            let columns: [Option<usize>; KW] = match inside.contains(&ox) {
                true => std::array::from_fn(|kx| Some(ox * g.sw + kx * g.dw - g.pl)),
                false => std::array::from_fn(|kx| g.tap_column(ox, kx)),
            };
            for (row, &iy) in sums.iter_mut().zip(&rows) {
                let Some(iy) = iy else { continue };
                for (tap, &ix) in row.iter_mut().zip(&columns) {
                    let Some(ix) = ix else { continue };
                    let xs: [f32; L] = lanes(&x[(iy * g.w + ix) * c + c0..]);
                    tap.iter_mut().zip(xs.iter().zip(&d)).for_each(|(s, (&x, &d))| *s += x * d);
                }
            }
        }
    }
    for (ky, row) in sums.iter().enumerate() {
        for (kx, tap) in row.iter().enumerate() {
            dw[(ky * KW + kx) * c + c0..][..L].copy_from_slice(tap);
        }
    }
    db[c0..c0 + L].copy_from_slice(&bias);
}

/// Channels c0..c0 + L of input rows `rows` of [`input_grad`] (M = 1; dx
/// holds rows from `first` on): each input pixel's L sums take, from zero,
/// the terms of the output pixels that read it, in the output pixels' order
/// (taps from the last to the first), in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_block<const KH: usize, const KW: usize, const L: usize>(
    g: &Depthwise,
    dz: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    c0: usize,
    first: usize,
    rows: Range<usize>,
) {
    let c = g.c;
    let weights: [[[f32; L]; KW]; KH] =
        std::array::from_fn(|ky| std::array::from_fn(|kx| lanes(&kernel[(ky * KW + kx) * c + c0..])));
    // The output row (column) whose tap `k` reads input row (column) `i`, if any.
    let reader = |i: usize, k: usize, (pad, dilation, stride, outputs): (usize, usize, usize, usize)| {
        let at = (i + pad).checked_sub(k * dilation)?;
        (at % stride == 0 && at / stride < outputs).then_some(at / stride)
    };
    for iy in rows {
        let rows: [Option<usize>; KH] = std::array::from_fn(|ky| reader(iy, ky, (g.pt, g.dh, g.sh, g.oh)));
        for ix in 0..g.w {
            let columns: [Option<usize>; KW] = std::array::from_fn(|kx| reader(ix, kx, (g.pl, g.dw, g.sw, g.ow)));
            let mut sums = [0.0f32; L];
            for (row, &oy) in weights.iter().zip(&rows).rev() {
                let Some(oy) = oy else { continue };
                for (w, &ox) in row.iter().zip(&columns).rev() {
                    let Some(ox) = ox else { continue };
                    let d: [f32; L] = lanes(&dz[(oy * g.ow + ox) * c + c0..]);
                    sums.iter_mut().zip(w.iter().zip(&d)).for_each(|(s, (&w, &d))| *s += w * d);
                }
            }
            dx[((iy - first) * g.w + ix) * c + c0..][..L].copy_from_slice(&sums);
        }
    }
}

/// The first L values of `v`.
#[inline(always)]
fn lanes<const L: usize>(v: &[f32]) -> [f32; L] {
    v[..L].try_into().expect("L values")
}

/// [`weight_grad`] tap by tap over the whole output: the reference of the
/// register-blocked path, and the path for depth multipliers above 1.
#[multiversion(targets = "simd")]
pub fn weight_grad_reference(g: &Depthwise, x: &[f32], dz: &[f32], dw: &mut [f32], db: &mut [f32]) {
    let (c, m, co) = (g.c, g.m, g.out_channels());
    for d in dz.chunks_exact(co) {
        for (b, &v) in db.iter_mut().zip(d) {
            *b += v;
        }
    }
    g.each_tap(|o, i, t| {
        let (xs, ds, ws) = (&x[i * c..][..c], &dz[o * co..][..co], &mut dw[t * co..][..co]);
        for (ch, &xv) in xs.iter().enumerate() {
            for k in 0..m {
                ws[ch * m + k] += xv * ds[ch * m + k];
            }
        }
    });
}

/// [`input_grad`] tap by tap over the whole output: the reference of the
/// register-blocked path, and the path for depth multipliers above 1.
#[multiversion(targets = "simd")]
pub fn input_grad_reference(g: &Depthwise, dz: &[f32], kernel: &[f32], dx: &mut [f32]) {
    let (c, m, co) = (g.c, g.m, g.out_channels());
    dx.fill(0.0);
    g.each_tap(|o, i, t| {
        let (xs, ds, ws) = (&mut dx[i * c..][..c], &dz[o * co..][..co], &kernel[t * co..][..co]);
        for (ch, xv) in xs.iter_mut().enumerate() {
            for k in 0..m {
                *xv += ws[ch * m + k] * ds[ch * m + k];
            }
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // The pixels and kernel rows the AVX-512 path reads without checks:
    // exactly those whose taps lie inside the image, on every geometry.
    #[test]
    fn inside_columns_and_rows_are_exactly_the_taps_inside_the_image() {
        for (size, k, s, d, pad) in
            [(7, 3, 1, 1, 1), (8, 3, 2, 1, 1), (9, 5, 1, 2, 4), (5, 3, 2, 1, 0), (4, 5, 1, 1, 1), (3, 7, 1, 1, 3)]
        {
            let span = d * (k - 1) + 1;
            let out = (size + 2 * pad - span) / s + 1;
            let g = Depthwise {
                h: size,
                w: size,
                c: 1,
                kh: k,
                kw: k,
                m: 1,
                sh: s,
                sw: s,
                dh: d,
                dw: d,
                pt: pad,
                pl: pad,
                oh: out,
                ow: out,
            };
            let inside_x = |ox: usize| (0..k).all(|kx| (ox * s + kx * d).checked_sub(pad).is_some_and(|ix| ix < size));
            let want: Vec<usize> = (0..out).filter(|&ox| inside_x(ox)).collect();
            assert_eq!(g.inside_columns().collect::<Vec<_>>(), want, "{size} {k}/{s} d{d} p{pad}");
            for oy in 0..out {
                let inside_y = |ky: usize| (oy * s + ky * d).checked_sub(pad).is_some_and(|iy| iy < size);
                let want: Vec<usize> = (0..k).filter(|&ky| inside_y(ky)).collect();
                assert_eq!(g.inside_rows(oy).collect::<Vec<_>>(), want, "{size} {k}/{s} d{d} p{pad} row {oy}");
            }
        }
    }

    /// n values in -1..1, a different run for each seed.
    pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0).collect()
    }

    /// An H x W x C input under a K x K kernel (one filter per channel),
    /// stride, dilation and padding the same both ways.
    pub(crate) fn square(h: usize, w: usize, c: usize, k: usize, s: usize, d: usize, pad: usize) -> Depthwise {
        let span = d * (k - 1) + 1;
        let (oh, ow) = ((h + 2 * pad - span) / s + 1, (w + 2 * pad - span) / s + 1);
        Depthwise { h, w, c, kh: k, kw: k, m: 1, sh: s, sw: s, dh: d, dw: d, pt: pad, pl: pad, oh, ow }
    }

    // The register-blocked forward pass against the tap-by-tap reference, bit
    // for bit: blocks of 64, 16 and single channels, rows of 8, 4, 2 and 1
    // pixels, strides, padding on every side, dilation, a kernel wider than
    // the image, with and without a bias.
    #[test]
    fn forward_by_pixels_matches_the_reference_exactly() {
        for (h, w, c, k, s, d, pad) in [
            (9, 7, 144, 3, 1, 1, 1),
            (8, 8, 37, 3, 2, 1, 1),
            (10, 9, 96, 5, 1, 2, 4),
            (6, 5, 16, 3, 2, 1, 0),
            (5, 23, 48, 3, 1, 1, 1),
            (4, 13, 33, 3, 1, 1, 1),
            (4, 4, 16, 5, 1, 1, 1),
        ] {
            let g = square(h, w, c, k, s, d, pad);
            let (oh, ow) = (g.oh, g.ow);
            let (x, kernel, bias) = (values(h * w * c, 1), values(k * k * c, 2), values(c, 3));
            for bias in [Some(&bias[..]), None] {
                let (mut want, mut got) = (vec![f32::NAN; oh * ow * c], vec![f32::NAN; oh * ow * c]);
                forward_reference(&g, &x, &kernel, bias, &mut want);
                forward(&g, &x, &kernel, bias, &mut got);
                assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w}x{c} {k}x{k}/{s}");
            }
        }
    }

    // The register-blocked gradients against the tap-by-tap references, bit
    // for bit: blocks of 16, 8 and single channels, 3x3 and 5x5 kernels,
    // strides, padding on every side (more than the kernel reaches: pixels
    // no output reads), dilation, a kernel wider than the image, samples
    // larger than SAMPLE_VALUES (by bands of rows, the last one short); and
    // dW, db added to (not written), dx written.
    #[test]
    fn gradients_by_taps_match_the_references_exactly() {
        for (h, w, c, k, s, d, pad) in [
            (40, 40, 96, 3, 1, 1, 1),
            (64, 60, 72, 3, 2, 1, 1),
            (44, 40, 80, 5, 1, 1, 2),
            (9, 7, 40, 3, 1, 1, 1),
            (8, 8, 27, 3, 2, 1, 1),
            (10, 9, 24, 5, 1, 2, 4),
            (6, 5, 16, 3, 2, 1, 0),
            (7, 6, 8, 5, 2, 1, 2),
            (4, 4, 19, 5, 1, 1, 1),
            (3, 5, 3, 3, 3, 2, 2),
        ] {
            let g = square(h, w, c, k, s, d, pad);
            let (oh, ow) = (g.oh, g.ow);
            assert!(by_taps(&g));
            let (x, kernel, dz) = (values(h * w * c, 1), values(k * k * c, 2), values(oh * ow * c, 3));
            let (dw0, db0) = (values(k * k * c, 4), values(c, 5));
            let ((mut dw, mut db), (mut want_dw, mut want_db)) = ((dw0.clone(), db0.clone()), (dw0, db0));
            weight_grad(&g, &x, &dz, &mut dw, &mut db);
            weight_grad_reference(&g, &x, &dz, &mut want_dw, &mut want_db);
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            let shape = format!("{h}x{w}x{c} {k}x{k}/{s} dilation {d} padding {pad}");
            assert!(same(&dw, &want_dw) && same(&db, &want_db), "weight gradient, {shape}");
            let (mut dx, mut want_dx) = (vec![f32::NAN; h * w * c], vec![f32::NAN; h * w * c]);
            input_grad(&g, &dz, &kernel, &mut dx);
            input_grad_reference(&g, &dz, &kernel, &mut want_dx);
            assert!(same(&dx, &want_dx), "input gradient, {shape}");
            // By bands of input rows (a row, then two, then the rest), each written over NaNs.
            let mut banded = vec![f32::NAN; h * w * c];
            for rows in [0..1, 1..3, 3..h] {
                input_grad_rows(&g, &dz, &kernel, &mut banded[rows.start * w * c..], rows);
            }
            assert!(same(&banded, &want_dx), "input gradient by bands of rows, {shape}");
        }
    }
}
