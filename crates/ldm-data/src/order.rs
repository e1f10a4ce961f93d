//! The order in which one epoch visits the dataset.
//!
//! The order is a pure function of `(n, shuffle, seed, epoch)`, so a resumed
//! run can rebuild it from the [`crate::DataPosition`] stored in a checkpoint
//! instead of storing the permutation itself.

use crate::rng::{order_seed, SplitMix64};

/// File indices in the order epoch `epoch` visits them.
///
/// Without `shuffle` this is `0..n` every epoch (useful for evaluation and
/// for debugging). With `shuffle` it is a uniform Fisher–Yates permutation
/// drawn from a generator seeded by `(seed, epoch)`, so each epoch gets a
/// fresh order and every run with the same seed gets the same sequence of
/// orders.
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SplitMix64::new(order_seed(seed, epoch));
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_without_shuffle() {
        assert_eq!(epoch_order(5, false, 9, 3), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn shuffle_is_a_permutation_that_changes_per_epoch() {
        let a = epoch_order(50, true, 1, 0);
        let b = epoch_order(50, true, 1, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, true, 1, 0));
        assert_ne!(a, epoch_order(50, true, 2, 0));
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        assert!(epoch_order(0, true, 0, 0).is_empty());
        assert_eq!(epoch_order(1, true, 0, 0), vec![0]);
    }
}
