//! Depthwise 2-D convolution over one channels-last sample: each input
//! channel c is convolved with its own `m` filters, giving output channels
//! c * m .. (c + 1) * m (Keras' `DepthwiseConv2D` with `depth_multiplier` m),
//! with strides, padding and dilation.

use multiversion::multiversion;

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
        let iy = (oy * self.sh + ky * self.dh).checked_sub(self.pt)?;
        let ix = (ox * self.sw + kx * self.dw).checked_sub(self.pl)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
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
/// With one filter per channel (M = 1), each output pixel's sums stay in
/// registers over its taps, a block of channels at a time, and are written
/// once; the sums are [`forward_reference`]'s, in the same order.
pub fn forward(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    if g.m == 1 {
        let (inputs, outputs) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
        assert!(x.len() >= inputs && y.len() >= outputs && kernel.len() >= g.kh * g.kw * g.c, "depthwise lengths");
        assert!(bias.is_none_or(|b| b.len() >= g.c), "bias too short");
        return forward_by_pixels(g, x, kernel, bias, y);
    }
    forward_reference(g, x, kernel, bias, y)
}

#[multiversion(targets = "simd")]
fn forward_by_pixels(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let out = &mut y[(oy * g.ow + ox) * g.c..][..g.c];
            let mut c0 = 0;
            while c0 + CHANNEL_BLOCKS[0] <= g.c {
                pixel_block::<64>(g, x, kernel, bias, (oy, ox, c0), out);
                c0 += CHANNEL_BLOCKS[0];
            }
            while c0 + CHANNEL_BLOCKS[1] <= g.c {
                pixel_block::<16>(g, x, kernel, bias, (oy, ox, c0), out);
                c0 += CHANNEL_BLOCKS[1];
            }
            while c0 < g.c {
                pixel_block::<1>(g, x, kernel, bias, (oy, ox, c0), out);
                c0 += CHANNEL_BLOCKS[2];
            }
        }
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
    (oy, ox, c0): (usize, usize, usize),
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
                    *s += x * w;
                }
            }
        }
    }
    out[c0..c0 + W].copy_from_slice(&sums);
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
                *y += x * w;
            }
        } else {
            for (ch, &xv) in xs.iter().enumerate() {
                for k in 0..m {
                    ys[ch * m + k] += xv * ws[ch * m + k];
                }
            }
        }
    });
}

/// dz: (OH,OW,C*M) -> dW (KH,KW,C,M) and db (C*M), added to.
#[multiversion(targets = "simd")]
pub fn weight_grad(g: &Depthwise, x: &[f32], dz: &[f32], dw: &mut [f32], db: &mut [f32]) {
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

/// dz: (OH,OW,C*M) -> dx: (H,W,C), written.
#[multiversion(targets = "simd")]
pub fn input_grad(g: &Depthwise, dz: &[f32], kernel: &[f32], dx: &mut [f32]) {
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
mod tests {
    use super::*;

    // The register-blocked forward pass against the tap-by-tap reference, bit
    // for bit: blocks of 64, 16 and single channels, strides, padding on
    // every side, dilation, with and without a bias.
    #[test]
    fn forward_by_pixels_matches_the_reference_exactly() {
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0).collect()
        };
        for (h, w, c, k, s, d, pad) in
            [(9, 7, 144, 3, 1, 1, 1), (8, 8, 37, 3, 2, 1, 1), (10, 9, 96, 5, 1, 2, 4), (6, 5, 16, 3, 2, 1, 0)]
        {
            let span = d * (k - 1) + 1;
            let (oh, ow) = ((h + 2 * pad - span) / s + 1, (w + 2 * pad - span) / s + 1);
            let g = Depthwise { h, w, c, kh: k, kw: k, m: 1, sh: s, sw: s, dh: d, dw: d, pt: pad, pl: pad, oh, ow };
            let (x, kernel, bias) = (values(h * w * c, 1), values(k * k * c, 2), values(c, 3));
            for bias in [Some(&bias[..]), None] {
                let (mut want, mut got) = (vec![f32::NAN; oh * ow * c], vec![f32::NAN; oh * ow * c]);
                forward_reference(&g, &x, &kernel, bias, &mut want);
                forward(&g, &x, &kernel, bias, &mut got);
                assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w}x{c} {k}x{k}/{s}");
            }
        }
    }
}
