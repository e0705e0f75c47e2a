//! Resampling an image by per-pixel taps: every output pixel is a weighted
//! sum of up to four input pixels (bilinear; one tap for a plain copy). One
//! kernel for resizing, flips, crops, translations and rotations; the taps
//! say where each output pixel comes from, and the backward pass sends the
//! gradient back along the same taps.

/// Where one output pixel comes from: input pixels (flat index y * W + x)
/// and their weights; unused taps have weight 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tap {
    pub src: [u32; 4],
    pub weight: [f32; 4],
}

impl Tap {
    /// Exactly input pixel `src`.
    pub fn copy(src: usize) -> Tap {
        Tap { src: [src as u32, 0, 0, 0], weight: [1.0, 0.0, 0.0, 0.0] }
    }
}

/// What a sample point outside the input reads, as Keras' `fill_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Mirror at the edge, the edge pixel included: (d c b a | a b c d | d c b a).
    #[default]
    Reflect,
    /// Zero.
    Constant,
    /// The nearest edge pixel.
    Nearest,
}

/// The input index for coordinate `i` along an axis of `size`, or `None` (zero).
fn fill_index(i: i64, size: usize, fill: Fill) -> Option<usize> {
    let n = size as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match fill {
        Fill::Constant => None,
        Fill::Nearest => Some(i.clamp(0, n - 1) as usize),
        Fill::Reflect => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            Some(if m < n { m } else { period - 1 - m } as usize)
        }
    }
}

/// Bilinear taps sampling an (h, w) input at (fy, fx), pixel centres at integers.
pub fn bilinear(fy: f32, fx: f32, h: usize, w: usize, fill: Fill) -> Tap {
    let (y0, x0) = (fy.floor(), fx.floor());
    let (dy, dx) = (fy - y0, fx - x0);
    let mut tap = Tap::default();
    let corners = [(0, 0, (1.0 - dy) * (1.0 - dx)), (0, 1, (1.0 - dy) * dx), (1, 0, dy * (1.0 - dx)), (1, 1, dy * dx)];
    for (k, (oy, ox, weight)) in corners.into_iter().enumerate() {
        let yy = fill_index(y0 as i64 + oy, h, fill);
        let xx = fill_index(x0 as i64 + ox, w, fill);
        if let (Some(yy), Some(xx)) = (yy, xx) {
            tap.src[k] = (yy * w + xx) as u32;
            tap.weight[k] = weight;
        }
    }
    tap
}

// x: (H*W, C) -> y: (OH*OW, C);  y[p, c] = sum_k weight[p][k] * x[src[p][k], c]
pub fn resample_forward(taps: &[Tap], x: &[f32], y: &mut [f32], c: usize) {
    for (tap, out) in taps.iter().zip(y.chunks_exact_mut(c)) {
        out.fill(0.0);
        for (&src, &wt) in tap.src.iter().zip(&tap.weight) {
            if wt != 0.0 {
                let pixel = &x[src as usize * c..][..c];
                out.iter_mut().zip(pixel).for_each(|(o, v)| *o += wt * v);
            }
        }
    }
}

// Differentiates y[p, c] = sum_k weight[p][k] * x[src[p][k], c]:  dx[src, c] += weight * dy[p, c]
pub fn resample_backward(taps: &[Tap], dy: &[f32], dx: &mut [f32], c: usize) {
    dx.fill(0.0);
    for (tap, g) in taps.iter().zip(dy.chunks_exact(c)) {
        for (&src, &wt) in tap.src.iter().zip(&tap.weight) {
            if wt != 0.0 {
                let pixel = &mut dx[src as usize * c..][..c];
                pixel.iter_mut().zip(g).for_each(|(d, g)| *d += wt * g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_modes_map_outside_points_like_keras() {
        let row: Vec<Option<usize>> = (-3..7).map(|i| fill_index(i, 4, Fill::Reflect)).collect();
        assert_eq!(row, [2, 1, 0, 0, 1, 2, 3, 3, 2, 1].map(Some));
        assert_eq!(fill_index(-1, 4, Fill::Nearest), Some(0));
        assert_eq!(fill_index(4, 4, Fill::Constant), None);
    }

    #[test]
    fn bilinear_taps_interpolate_and_copy_on_pixel_centres() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2x3, one channel
        let mut y = [0.0f32];
        resample_forward(&[bilinear(0.5, 1.5, 2, 3, Fill::Constant)], &x, &mut y, 1);
        assert_eq!(y[0], (1.0 + 2.0 + 4.0 + 5.0) / 4.0);
        assert_eq!(bilinear(1.0, 2.0, 2, 3, Fill::Constant).weight[0], 1.0);
    }
}
