//! The discovery order: a window of recent posts shuffled by a seed. Each post's rank is a
//! fixed mix of the seed and its id, so the order is the same in every process and every
//! release, and a page continues after the last `(rank, id)` served: pages never repeat an
//! item, even when posts in the window are deleted between requests.

use quiver_model::PostId;

/// The position of `id` in the shuffle of `seed`.
pub(crate) fn rank(seed: u64, id: PostId) -> u64 {
    mix(seed ^ mix(id.0 as u64))
}

/// A new seed, below 2^53 so JavaScript clients keep it exact.
pub(crate) fn fresh_seed() -> u64 {
    rand::random::<u64>() >> 11
}

/// The splitmix64 finalizer: a bijection on `u64` whose output bits each depend on every
/// input bit. A specified function on purpose: `std`'s hashers may change between
/// releases, and the same seed must give the same order forever.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_fixed_values_so_orders_never_change() {
        // Pinned: a change here would reorder every client's discovery feed mid-walk.
        assert_eq!(rank(0, PostId(0)), 0xa706_dd2f_4d19_7e6f);
        assert_eq!(rank(42, PostId(7)), rank(42, PostId(7)));
    }

    #[test]
    fn different_seeds_give_different_orders() {
        let order = |seed| {
            let mut ids: Vec<i64> = (1..=50).collect();
            ids.sort_by_key(|&i| rank(seed, PostId(i)));
            ids
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
        assert_ne!(order(1), (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn fresh_seeds_fit_in_a_javascript_number() {
        for _ in 0..1000 {
            assert!(fresh_seed() < 1 << 53);
        }
    }
}
