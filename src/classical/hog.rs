//! Histograms of oriented gradients (Dalal and Triggs; scikit-image's
//! `feature.hog` defaults but for the cell size): centred differences, per
//! pixel the channel with the strongest gradient, 9 unsigned orientation
//! bins over 0-180 degrees, 4 x 4 cells over the image (7 x 7 pixels on
//! MNIST, 8 x 8 on CIFAR-10), blocks of 2 x 2 cells one cell apart,
//! L2-Hys normalised. Pixels past the last whole cell are left out.

/// Orientation bins.
pub const ORIENTATIONS: usize = 9;
/// Cells along each side of the image.
pub const CELLS: usize = 4;
/// Cells along each side of a block.
const BLOCK: usize = 2;
/// L2-Hys clips normalised values at this.
const CLIP: f32 = 0.2;

/// Features of an (h, w, c) image: blocks x 2 x 2 cells x 9 orientations.
pub fn len() -> usize {
    let blocks = CELLS - BLOCK + 1;
    blocks * blocks * BLOCK * BLOCK * ORIENTATIONS
}

/// Whether an image of this size has whole cells of at least 2 x 2 pixels.
pub fn fits(h: usize, w: usize) -> bool {
    h >= 2 * CELLS && w >= 2 * CELLS
}

/// The HOG features of one (h, w, c) image into `out` (`len()` values).
//   image: (h, w, c) -> out: (blocks_y, blocks_x, 2, 2, 9)
pub fn hog(image: &[f32], h: usize, w: usize, c: usize, out: &mut [f32]) {
    debug_assert!(fits(h, w) && image.len() == h * w * c && out.len() == len());
    let (ch, cw) = (h / CELLS, w / CELLS);
    let mut cells = [0.0f32; CELLS * CELLS * ORIENTATIONS];
    let at = |y: usize, x: usize, k: usize| image[(y * w + x) * c + k];
    for y in 0..ch * CELLS {
        for x in 0..cw * CELLS {
            let (mut gx, mut gy, mut best) = (0.0f32, 0.0f32, -1.0f32);
            for k in 0..c {
                let dx = if x == 0 || x + 1 == w { 0.0 } else { at(y, x + 1, k) - at(y, x - 1, k) };
                let dy = if y == 0 || y + 1 == h { 0.0 } else { at(y + 1, x, k) - at(y - 1, x, k) };
                let m = dx * dx + dy * dy;
                if m > best {
                    (gx, gy, best) = (dx, dy, m);
                }
            }
            let magnitude = best.sqrt();
            let degrees = gy.atan2(gx).to_degrees().rem_euclid(180.0);
            let bin = ((degrees / (180.0 / ORIENTATIONS as f32)) as usize).min(ORIENTATIONS - 1);
            cells[((y / ch) * CELLS + x / cw) * ORIENTATIONS + bin] += magnitude / (ch * cw) as f32;
        }
    }
    let blocks = CELLS - BLOCK + 1;
    for by in 0..blocks {
        for bx in 0..blocks {
            let o = &mut out[(by * blocks + bx) * BLOCK * BLOCK * ORIENTATIONS..][..BLOCK * BLOCK * ORIENTATIONS];
            for (i, chunk) in o.chunks_exact_mut(ORIENTATIONS).enumerate() {
                let (cy, cx) = (by + i / BLOCK, bx + i % BLOCK);
                chunk.copy_from_slice(&cells[(cy * CELLS + cx) * ORIENTATIONS..][..ORIENTATIONS]);
            }
            l2_normalise(o);
            o.iter_mut().for_each(|v| *v = v.min(CLIP));
            l2_normalise(o);
        }
    }
}

fn l2_normalise(v: &mut [f32]) {
    let norm = (v.iter().map(|x| x * x).sum::<f32>() + 1e-10).sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vertical edge has horizontal gradients: all weight in the 0-degree
    /// bin of the cells along it, and each block's vector has unit length.
    #[test]
    fn a_vertical_edge_votes_for_zero_degrees() {
        let (h, w) = (28, 28);
        let image: Vec<f32> = (0..h * w).map(|i| if i % w >= 14 { 1.0 } else { 0.0 }).collect();
        let mut out = vec![0.0; len()];
        hog(&image, h, w, 1, &mut out);
        for block in out.chunks(BLOCK * BLOCK * ORIENTATIONS) {
            let norm: f32 = block.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(norm < 1e-3 || (norm - 1.0).abs() < 1e-3, "{norm}");
            for cell in block.chunks(ORIENTATIONS) {
                assert!(cell[1..].iter().all(|&v| v == 0.0), "{cell:?}");
            }
        }
        assert!(out.iter().any(|&v| v > 0.1));
        // A horizontal edge votes at 90 degrees (bin 4).
        let image: Vec<f32> = (0..h * w).map(|i| if i / w >= 14 { 1.0 } else { 0.0 }).collect();
        hog(&image, h, w, 1, &mut out);
        let total: f32 = out.iter().sum();
        let ninety: f32 = out.chunks(ORIENTATIONS).map(|c| c[4]).sum();
        assert!((total - ninety).abs() < 1e-5 && total > 0.1);
    }

    #[test]
    fn colour_images_use_the_strongest_channel() {
        let (h, w) = (32, 32);
        // Red carries a strong vertical edge, green a weak horizontal one.
        let image: Vec<f32> = (0..h * w)
            .flat_map(|i| {
                let (y, x) = (i / w, i % w);
                [if x >= 16 { 1.0 } else { 0.0 }, if y >= 16 { 0.1 } else { 0.0 }, 0.0]
            })
            .collect();
        let mut out = vec![0.0; len()];
        hog(&image, h, w, 3, &mut out);
        let zero: f32 = out.chunks(ORIENTATIONS).map(|c| c[0]).sum();
        let ninety: f32 = out.chunks(ORIENTATIONS).map(|c| c[4]).sum();
        assert!(zero > 0.5 && ninety > 0.0 && zero > ninety, "{zero} {ninety}");
    }
}
