//! Seeded random streams. One model seed fans out into independent streams
//! (initialisers, shuffling, dropout) so that adding a layer does not change
//! the order in which the data is shuffled.

use rand::SeedableRng;

/// The generator used everywhere: small, fast, and the same on every platform.
pub type Rng = rand_pcg::Pcg64Mcg;

/// A generator for `stream` derived from `seed`.
pub fn stream(seed: u64, stream: u64) -> Rng {
    // splitmix64 of (seed, stream): nearby inputs give unrelated states.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Rng::seed_from_u64(z ^ (z >> 31))
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
