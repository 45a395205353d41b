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

/// MurmurHash3's 32-bit finaliser: a bijection of `u32` whose every output bit depends on every
/// input bit.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Fills `out` with a dropout mask: each value is `scale` when its 16-bit lane is at least
/// `dropped`, else 0 (dropped with probability `dropped / 2¹⁶`). Lanes `2j` and `2j + 1` are the
/// halves of `fmix32(fmix32(j·φ ⊕ key_lo) ⊕ key_hi)` (φ = 0x9E3779B9): a counter-based stream,
/// the same values whatever the machine, and in blocks of 16 counters so that the compiler
/// vectorises it (AVX2 where the CPU has it): ~0.4 ns a value with AVX2 against ~1 ns for one
/// splitmix64 call per four lanes; without AVX2 (SSE2 has no 32-bit vector multiply) ~1.2 ns
/// (BENCHMARKS.md). A long mask is split over libtorch's threads (stretches of whole blocks, each
/// with its own counters: the same values as on one thread). `out` may hold at most 2³³ values.
pub(crate) fn fill_keep_mask(out: &mut [f32], key: u64, dropped: u16, scale: f32) {
    let threads = crate::parallel::team_for(out.len(), crate::parallel::threads());
    if threads == 1 {
        fill_keep_mask_from(out, 0, key, dropped, scale);
        return;
    }
    // Stretches of whole 32-value blocks; stretch `i` starts at counter `start / 2`.
    let stretch = out.len().div_ceil(threads).div_ceil(32) * 32;
    let parts: Vec<(usize, &mut [f32])> = out.chunks_mut(stretch).enumerate().map(|(i, c)| (i * stretch, c)).collect();
    crate::parallel::for_each(parts, |(start, part)| {
        fill_keep_mask_from(part, (start / 2) as u32, key, dropped, scale)
    });
}

/// [`fill_keep_mask`] of the stretch whose first value is lane `2 * j0` of the stream.
fn fill_keep_mask_from(out: &mut [f32], j0: u32, key: u64, dropped: u16, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { fill_keep_mask_avx2(out, j0, key, dropped, scale) };
        return;
    }
    fill_keep_mask_portable(out, j0, key, dropped, scale);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_keep_mask_avx2(out: &mut [f32], j0: u32, key: u64, dropped: u16, scale: f32) {
    fill_keep_mask_portable(out, j0, key, dropped, scale);
}

/// Counter `j`'s two 16-bit lanes of the mask stream keyed by `(lo, hi)`.
#[inline(always)]
fn mask_lanes(j: u32, lo: u32, hi: u32) -> u32 {
    const PHI: u32 = 0x9E37_79B9;
    fmix32(fmix32(j.wrapping_mul(PHI) ^ lo) ^ hi)
}

/// `scale` (its bits) when `lane >= dropped`, else +0.0: branch-free, by a bit mask.
#[inline(always)]
fn kept(lane: u32, dropped: u32, scale: u32) -> f32 {
    f32::from_bits(scale & 0u32.wrapping_sub(u32::from(lane >= dropped)))
}

// No branch per value and the hashes' halves spread through an array: the kernel builds the
// crate at opt-level 2 with incremental codegen units, where `if lane >= dropped { scale } else
// { 0.0 }` stayed a branch (mispredicted on every tenth value) and the halves were written one by
// one: the mask took 4x as long as in a release build (BENCHMARKS.md, "Rust passes on libtorch's
// threads").
#[inline(always)]
fn fill_keep_mask_portable(out: &mut [f32], j0: u32, key: u64, dropped: u16, scale: f32) {
    let (lo, hi) = (key as u32, (key >> 32) as u32);
    let (dropped, scale) = (u32::from(dropped), scale.to_bits());
    let mut blocks = out.chunks_exact_mut(32);
    let mut j = j0;
    for block in blocks.by_ref() {
        let mut r = [0u32; 16];
        for (i, r) in r.iter_mut().enumerate() {
            *r = mask_lanes(j.wrapping_add(i as u32), lo, hi);
        }
        let mut halves = [0u32; 32];
        for (pair, r) in halves.chunks_exact_mut(2).zip(r) {
            pair[0] = r & 0xFFFF;
            pair[1] = r >> 16;
        }
        for (o, half) in block.iter_mut().zip(halves) {
            *o = kept(half, dropped, scale);
        }
        j = j.wrapping_add(16);
    }
    for (i, o) in blocks.into_remainder().iter_mut().enumerate() {
        let r = mask_lanes(j.wrapping_add(i as u32 / 2), lo, hi);
        *o = kept(if i % 2 == 0 { r & 0xFFFF } else { r >> 16 }, dropped, scale);
    }
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

    /// Split over two threads, a mask of any length is the one-thread stream.
    #[test]
    fn a_mask_split_over_threads_is_the_same_stream() {
        let _threads = crate::parallel::Threads::set(2);
        let per = crate::parallel::VALUES_PER_THREAD;
        for n in [2 * per, 3 * per + 7, (5 << 16) + 33] {
            let (mut split, mut one) = (vec![0f32; n], vec![0f32; n]);
            fill_keep_mask(&mut split, 7, 30000, 2.0);
            fill_keep_mask_from(&mut one, 0, 7, 30000, 2.0);
            assert!(split == one, "{n} values: the split mask differs");
        }
    }

    #[test]
    fn fmix32_gives_murmur3s_outputs() {
        // MurmurHash3_x86_32 of an empty input with seed 1 is fmix32(1).
        assert_eq!(fmix32(1), 0x514E_28B7);
        assert_eq!(fmix32(0), 0);
    }

    /// The mask keeps each value with probability 1 - p, its lanes look independent, the tail
    /// (lengths not a multiple of 32) follows the same stream, keys give different masks, and
    /// the vectorised path equals the portable one.
    #[test]
    fn the_keep_mask_is_unbiased_and_one_stream() {
        let n = 1 << 20;
        let mut a = vec![0f32; n];
        fill_keep_mask(&mut a, 42, 6554, 1.25);
        let kept = a.iter().filter(|&&x| x == 1.25).count();
        assert_eq!(kept + a.iter().filter(|&&x| x == 0.0).count(), n);
        let p = 6554.0 / 65536.0;
        let expected = (1.0 - p) * n as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((kept as f64 - expected).abs() < 5.0 * sd, "kept {kept}, expected {expected:.0} ± {sd:.0}");
        // Neighbours independent: P(both kept) ≈ (1 - p)².
        let both = a.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64 / (n - 1) as f64;
        assert!((both - (1.0 - p) * (1.0 - p)).abs() < 0.005, "{both}");
        let mut short = vec![0f32; 1000 * 32 + 7];
        fill_keep_mask(&mut short, 42, 6554, 1.25);
        assert_eq!(short[..], a[..short.len()]);
        let mut other = vec![0f32; n];
        fill_keep_mask(&mut other, 43, 6554, 1.25);
        let same = a.iter().zip(&other).filter(|(x, y)| x == y).count() as f64 / n as f64;
        let chance = (1.0 - p) * (1.0 - p) + p * p;
        assert!((same - chance).abs() < 0.005, "{same} against {chance}");
        let mut portable = vec![0f32; n];
        fill_keep_mask_portable(&mut portable, 0, 42, 6554, 1.25);
        assert_eq!(portable, a);
    }

    /// The stream itself, pinned: 70 values (two blocks and a tail) for one key at p = 1/2, as an
    /// independent transcription of the definition above computes them (Python, 2026-12-07).
    #[test]
    fn the_keep_mask_is_the_documented_stream() {
        let mut out = vec![0f32; 70];
        fill_keep_mask(&mut out, 0x0123_4567_89AB_CDEF, 32768, 2.0);
        let bits: String = out.iter().map(|&x| if x == 2.0 { '1' } else { '0' }).collect();
        assert_eq!(bits, "0100100101111100100111000110100010000001111100100011100101101000000000");
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
