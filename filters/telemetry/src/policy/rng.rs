//! A small, fast PRNG (SplitMix64) for ids and sampling; seeded once per VM from the
//! WASI random source and the clock (`lib.rs`). Not for secrets.

use wasmesh_sdk::rng::SplitMix64;

/// The SDK's SplitMix64, plus trace/span ids and sampling.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

// === impl Rng ===

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A non-zero 64-bit id (span ids must not be zero).
    pub fn span_id(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    /// A non-zero 128-bit id (trace ids must not be zero).
    pub fn trace_id(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.span_id())
    }

    /// True with probability `percent`/100 (0 → never, 100 → always).
    pub fn chance(&mut self, percent: f64) -> bool {
        percent_hit(self.next_u64(), percent)
    }
}

/// True when `draw` (uniform over u64) falls in the first `percent` % of the range, in
/// steps of 0.0001 %; 0 → never, 100 → always.
pub fn percent_hit(draw: u64, percent: f64) -> bool {
    if percent <= 0.0 {
        return false;
    }
    if percent >= 100.0 {
        return true;
    }
    // percent in (0, 100): parts per million, exact for Istio's 0.01 steps.
    let ppm = (percent * 10_000.0).round() as u64;
    draw % 1_000_000 < ppm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut r = Rng::new(0);
        let a = r.trace_id();
        let b = r.trace_id();
        assert!(a != 0 && b != 0 && a != b);
        assert_ne!(r.span_id(), r.span_id());
    }

    #[test]
    fn chance_matches_the_percentage() {
        assert!(!percent_hit(0, 0.0));
        assert!(percent_hit(u64::MAX, 100.0));
        assert!(percent_hit(9_999, 1.0) && !percent_hit(10_000, 1.0));
        assert!(percent_hit(99, 0.01) && !percent_hit(100, 0.01));
        let mut r = Rng::new(42);
        let hits = (0..100_000).filter(|_| r.chance(10.0)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        let hits = (0..10_000).filter(|_| r.chance(0.0)).count();
        assert_eq!(hits, 0);
    }
}
