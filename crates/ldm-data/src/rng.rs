//! A tiny counter-based random number generator.
//!
//! Every random decision of the data pipeline (epoch shuffles, crop offsets,
//! flips) is derived from a seed computed from *where* the decision is made
//! (run seed, epoch, position in the epoch), never from a thread-local or
//! shared generator. That is what makes batches independent of how many
//! workers decode them and in which order the workers finish, and what lets a
//! resumed run reproduce the exact batches of an uninterrupted one.
//!
//! SplitMix64 is used because its whole state is one `u64`, its output passes
//! BigCrush, and seeding it from hashed counters needs no warm-up.

/// Weyl-sequence increment of SplitMix64 (odd, close to 2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Domain tags keep the shuffle stream of epoch `e` unrelated to the sample
/// stream of position `e`, even though both are derived from small integers.
const DOMAIN_ORDER: u64 = 0x6f72_6465_725f_5631; // "order_V1"
const DOMAIN_SAMPLE: u64 = 0x7361_6d70_6c5f_5631; // "sampl_V1"
const DOMAIN_CAPTION: u64 = 0x6361_7074_6e5f_5631; // "captn_V1"

/// SplitMix64's finalizer: a bijective avalanche mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds a sequence of words into one well-mixed seed. Each step passes
/// through the bijective mixer, so distinct inputs of equal length collide
/// only by chance (about 2^-64).
fn hash_words(domain: u64, words: &[u64]) -> u64 {
    words
        .iter()
        .fold(mix(domain), |h, &w| mix(h ^ mix(w.wrapping_add(GOLDEN))))
}

/// Seed of the shuffle of epoch `epoch` for run seed `seed`.
pub fn order_seed(seed: u64, epoch: u64) -> u64 {
    hash_words(DOMAIN_ORDER, &[seed, epoch])
}

/// Seed of all random choices (crop offset, flip) of the sample at position
/// `position` of epoch `epoch`.
///
/// The position is the index into the epoch's order, not the slot in a batch,
/// so skipping an unreadable file does not change the augmentation of the
/// files after it. Pass the result to [`crate::load_image_chw`] to reproduce
/// exactly what the loader produced for that sample.
pub fn sample_seed(seed: u64, epoch: u64, position: u64) -> u64 {
    hash_words(DOMAIN_SAMPLE, &[seed, epoch, position])
}

/// Seed of the caption drawn for item `index` in epoch `epoch` (see
/// [`crate::caption_for_epoch`]).
///
/// Keyed on the item, not its position in the shuffled epoch, so the choice
/// does not depend on the order, and tagged with its own domain so it is
/// unrelated to the crop and flip of the sample that happens to sit at
/// position `index`.
pub(crate) fn caption_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    hash_words(DOMAIN_CAPTION, &[seed, epoch, index])
}

/// SplitMix64 generator. Cheap to create, so every sample gets its own.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A uniform integer in `0..bound` (`bound` must be > 0).
    ///
    /// Uses Lemire's multiply-and-reject so small ranges are exactly uniform
    /// rather than slightly biased as with `next_u64() % bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "below(0) has no valid result");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_seed_dependent() {
        let stream = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        let (a, b, c) = (stream(7), stream(7), stream(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[rng.below(5) as usize] += 1;
        }
        // Each bucket expects 1000; 800 is > 6 standard deviations away.
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn derived_seeds_separate_their_inputs() {
        assert_ne!(sample_seed(0, 0, 1), sample_seed(0, 1, 0));
        assert_ne!(sample_seed(1, 0, 0), sample_seed(0, 0, 0));
        assert_ne!(order_seed(0, 0), sample_seed(0, 0, 0));
        assert_ne!(caption_seed(1, 2, 3), sample_seed(1, 2, 3));
        assert_eq!(sample_seed(3, 4, 5), sample_seed(3, 4, 5));
    }
}
