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

/// x: (H,W,C), kernel (KH,KW,C,M), bias (C*M) -> y: (OH,OW,C*M), written.
#[multiversion(targets = "simd")]
pub fn forward(g: &Depthwise, x: &[f32], kernel: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
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
