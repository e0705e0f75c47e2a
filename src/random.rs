//! Seeded random streams. One model seed fans out into independent streams
//! (initialisers, shuffling, dropout) so that adding a layer does not change
//! the order in which the data is shuffled.

use rand::SeedableRng;

/// The generator used everywhere: small, fast, and the same on every platform.
pub type Rng = rand_pcg::Pcg64Mcg;

/// A generator for `stream` derived from `seed`.
pub fn stream(seed: u64, stream: u64) -> Rng {
    Rng::seed_from_u64(stream_key(seed, stream))
}

/// The 64-bit key of `stream` under `seed`: nearby inputs give unrelated keys.
fn stream_key(seed: u64, stream: u64) -> u64 {
    mix(seed ^ stream.wrapping_mul(GOLDEN).wrapping_add(0xD1B5_4A32_D192_ED03))
}

/// The golden-ratio increment of splitmix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function (a bijection of u64 whose outputs look independent).
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for `stream` in epoch `epoch` (counted from 1 over the
/// model's life), so that an epoch's randomness does not depend on the epochs before it.
pub fn epoch_stream(seed: u64, stream: u64, epoch: u64) -> Rng {
    self::stream(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407), stream)
}

/// The random draws of one training batch: one independent stream per
/// sample, keyed by the sample's position in the epoch. A sample's dropout
/// mask or augmentation is then the same however the batch is split (across
/// processes, see [`crate::distributed`]) and whatever came before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchDraws {
    key: u64,
    first: u64,
}

impl BatchDraws {
    /// Draws for a batch whose first sample is at position `first` of the
    /// epoch; `key` identifies the epoch and the layer.
    pub fn new(key: u64, first: u64) -> Self {
        BatchDraws { key, first }
    }

    /// Draws for layer `stream` in epoch `epoch` (counted from 1 over the
    /// model's life), for the batch starting at position `first`.
    pub fn for_epoch(seed: u64, stream: u64, epoch: u64, first: u64) -> Self {
        BatchDraws::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407) ^ stream.rotate_left(17), first)
    }

    /// The stream of the batch's sample `i`.
    pub fn sample(&self, i: usize) -> Rng {
        stream(self.key, self.first + i as u64)
    }

    /// Dropout masks, `per` values for each sample of the batch (`masks.len() / per`
    /// samples): 0 with probability `rate`, else `keep`. A sample's draws are
    /// splitmix64's sequence from its stream's key (its k-th 64-bit draw is
    /// mix(key + k * golden), so the draws are independent of each other and
    /// vectorize); each gives two values (24-bit uniforms, as `random::<f32>()`).
    /// Samples are drawn in parallel.
    pub fn fill_masks(&self, masks: &mut [f32], per: usize, rate: f32, keep: f32) {
        use crate::device::ForEachTask;
        use rayon::prelude::*;
        // u / 2^24 < rate  <=>  u < ceil(rate * 2^24), for integers u.
        let below = (rate as f64 * (1u64 << 24) as f64).ceil() as u64;
        masks.par_chunks_mut(per.max(1)).enumerate().for_each_task(|(i, mask)| {
            let key = stream_key(self.key, self.first + i as u64);
            fill_mask(mask, key, below, keep);
        });
    }
}

/// One sample's dropout mask from its key (see [`BatchDraws::fill_masks`]).
#[multiversion::multiversion(targets = "simd")]
fn fill_mask(mask: &mut [f32], key: u64, below: u64, keep: f32) {
    let pick = |u: u64| if u < below { 0.0 } else { keep };
    let draw = |k: usize| mix(key.wrapping_add((k as u64 + 1).wrapping_mul(GOLDEN)));
    let mut pairs = mask.chunks_exact_mut(2);
    let tail = pairs.len();
    for (k, pair) in (&mut pairs).enumerate() {
        let w = draw(k);
        pair[0] = pick((w >> 8) & 0xFF_FFFF);
        pair[1] = pick(w >> 40);
    }
    if let [last] = pairs.into_remainder() {
        *last = pick(draw(tail) >> 40);
    }
}

/// Stream numbers, so each use draws from its own stream.
pub mod streams {
    /// Layer `i`'s initialiser uses `INIT + i`.
    pub const INIT: u64 = 1 << 32;
    /// Layer `i`'s dropout masks use `DROPOUT + i` (per epoch).
    pub const DROPOUT: u64 = 2 << 32;
    /// The shuffle (per epoch).
    pub const SHUFFLE: u64 = 3 << 32;
    /// The order of an image folder's samples.
    pub const FOLDER: u64 = 4 << 32;
}

#[cfg(test)]
mod mask_tests {
    use super::BatchDraws;

    #[test]
    fn dropout_masks_drop_the_rate_and_depend_only_on_the_sample() {
        for (rate, per) in [(0.25f32, 1001), (0.5, 2), (0.0, 7), (0.9, 333)] {
            let keep = 1.0 / (1.0 - rate);
            let draws = BatchDraws::new(11, 40);
            let mut masks = vec![f32::NAN; 6 * per];
            draws.fill_masks(&mut masks, per, rate, keep);
            assert!(masks.iter().all(|&m| m == 0.0 || m == keep), "rate {rate}: values 0 or {keep}");
            let dropped = masks.iter().filter(|&&m| m == 0.0).count() as f32 / masks.len() as f32;
            let spread = 4.0 * (rate * (1.0 - rate) / masks.len() as f32).sqrt() + 1e-6;
            assert!((dropped - rate).abs() <= spread, "rate {rate}: dropped {dropped}");
            // Sample 3 of this batch is sample 0 of a batch starting three later.
            let mut alone = vec![f32::NAN; per];
            BatchDraws::new(11, 43).fill_masks(&mut alone, per, rate, keep);
            assert_eq!(alone, masks[3 * per..4 * per], "rate {rate}");
            if rate > 0.0 && per > 2 {
                assert_ne!(masks[..per], masks[per..2 * per], "rate {rate}: samples draw independently");
            }
            // Neighbours (of one draw and of successive draws) are dropped independently.
            for lag in [1, 2] {
                let pairs = masks.len() - lag;
                let both =
                    (0..pairs).filter(|&i| masks[i] == 0.0 && masks[i + lag] == 0.0).count() as f32 / pairs as f32;
                let p = rate * rate;
                let spread = 4.0 * (p * (1.0 - p) / pairs as f32).sqrt() + 1e-6;
                assert!((both - p).abs() <= spread, "rate {rate}, lag {lag}: both dropped {both}, expected {p}");
            }
        }
    }
}
