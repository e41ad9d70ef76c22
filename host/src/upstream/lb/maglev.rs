//! Maglev (Eisenbud et al., NSDI 2016): a lookup table of prime size `M` filled by each
//! endpoint's permutation `(offset + j * skip) mod M`, with Envoy's weighting (an
//! endpoint of weight `w` takes a turn in `w / max_weight` of the rounds).
//! Changes in the endpoint set move few keys besides the changed endpoint's own.

use super::super::hash::xxh64;
use super::scan_from;

/// Largest table accepted (Envoy's bound); validated when the cluster is built.
pub(crate) const MAX_TABLE_SIZE: u64 = 5_000_011;

/// Extra hashes of a key tried when its table entry is unavailable.
const REHASHES: u64 = 8;

/// A built Maglev table: entry → endpoint index.
pub(crate) struct Maglev {
    table: Vec<u32>,
}

// === impl Maglev ===

impl std::fmt::Debug for Maglev {
    /// Sizes only: tables can hold a million entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev").field("table_size", &self.table.len()).finish()
    }
}

impl Maglev {
    /// Builds the table for `(address, weight)` endpoints; its size is the smallest prime
    /// at least `max(table_size, endpoints)`.
    pub(crate) fn new(endpoints: &[(&str, u32)], table_size: u32) -> Maglev {
        if endpoints.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let m = next_prime(u64::from(table_size).max(endpoints.len() as u64).clamp(2, MAX_TABLE_SIZE));
        let max_weight = endpoints.iter().map(|(_, w)| u64::from(*w)).max().unwrap_or(1).max(1);
        struct Build {
            pos: u64,
            skip: u64,
            weight: u64,
            target: u64,
        }
        let mut builds: Vec<Build> = endpoints
            .iter()
            .map(|(address, weight)| Build {
                pos: xxh64(address.as_bytes(), 0) % m,
                skip: xxh64(address.as_bytes(), 1) % (m - 1) + 1,
                weight: u64::from(*weight),
                target: 0,
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut round = 1u64;
        while filled < m {
            for (i, b) in builds.iter_mut().enumerate() {
                if filled == m {
                    break;
                }
                if round * b.weight < b.target {
                    continue;
                }
                b.target += max_weight;
                // `skip` is coprime with the prime `m`: the walk visits every entry.
                while table[b.pos as usize] != EMPTY {
                    b.pos = (b.pos + b.skip) % m;
                }
                table[b.pos as usize] = i as u32;
                b.pos = (b.pos + b.skip) % m;
                filled += 1;
            }
            round += 1;
        }
        Maglev { table }
    }

    /// The table's endpoint for `hash`; when it fails `ok`, a few rehashes, then the next
    /// passing endpoint after it.
    pub(crate) fn pick(&self, hash: u64, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let first = self.table[(hash % m) as usize] as usize;
        if ok(first) {
            return Some(first);
        }
        for seed in 1..=REHASHES {
            let i = self.table[(xxh64(&hash.to_le_bytes(), seed) % m) as usize] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        scan_from(first + 1, n, ok)
    }

    /// Table size (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

/// The smallest prime ≥ `n` (trial division: table sizes are at most a few million).
pub(crate) fn next_prime(n: u64) -> u64 {
    let mut c = n.max(2);
    loop {
        if is_prime(c) {
            return c;
        }
        c += 1;
    }
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}
