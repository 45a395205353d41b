//! Fixed pseudo-random values from integers (splitmix64): data orders and per-step seeds that do
//! not depend on libtorch's global generator, so a run resumed at any step draws what an unstopped
//! one drew.

/// The 64-bit golden ratio, splitmix64's increment.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a fixed, well-spread 64-bit value for each input.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Value `n` of the stream `seed`: independent values per seed and counter.
pub(crate) fn stream(seed: u64, n: u64) -> u64 {
    splitmix64(seed ^ n.wrapping_mul(GOLDEN))
}

/// Value `n` of the stream `seed` as a libtorch seed (non-negative).
pub(crate) fn torch_seed(seed: u64, n: u64) -> i64 {
    (stream(seed, n) >> 1) as i64
}

/// Serialises the crate's unit tests that seed libtorch's global generator and then draw from it:
/// tests run in parallel threads, and a draw from another test in between would change what a
/// seeded test sees.
#[cfg(all(test, feature = "reference"))]
pub(crate) fn test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_gives_the_published_first_outputs() {
        // splitmix64 seeded with 0 (Vigna's reference): state += GOLDEN, then the output function.
        assert_eq!(splitmix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn streams_differ_by_seed_and_counter_and_seeds_are_non_negative() {
        let a: Vec<i64> = (0..100).map(|n| torch_seed(7, n)).collect();
        let b: Vec<i64> = (0..100).map(|n| torch_seed(8, n)).collect();
        assert!(a.iter().all(|&s| s >= 0));
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 100);
    }
}
