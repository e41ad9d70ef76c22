//! Ring hash (ketama style): each endpoint places points `xxh64("<address>_<i>")` on a
//! 64-bit ring; a key goes to the first point at or after its hash.
//!
//! An endpoint's points depend only on its own address and weight (`table_size` points
//! per unit of weight), never on the other endpoints, so adding or removing an endpoint
//! moves exactly the keys it gains or loses. Rings over [`MAX_POINTS`] are scaled down
//! (then a change in the total weight may move a few more keys).

use super::super::hash::xxh64;

/// Most points on one ring (12 MiB at 12 bytes a point).
const MAX_POINTS: u64 = 1 << 20;

/// A built ring: point hashes in ascending order and the endpoint owning each.
pub(crate) struct RingHash {
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

// === impl RingHash ===

impl std::fmt::Debug for RingHash {
    /// Sizes only: tables can hold a million entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingHash").field("points", &self.hashes.len()).finish()
    }
}

impl RingHash {
    /// Builds the ring for `(address, weight)` endpoints with `points_per_weight` points
    /// per unit of weight.
    pub(crate) fn new(endpoints: &[(&str, u32)], points_per_weight: u32) -> RingHash {
        let total_weight: u64 = endpoints.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut per_weight = u64::from(points_per_weight.max(1));
        if per_weight.saturating_mul(total_weight) > MAX_POINTS {
            per_weight = (MAX_POINTS / total_weight.max(1)).max(1);
        }
        let mut points: Vec<(u64, u32)> = Vec::new();
        let mut key = String::new();
        for (owner, (address, weight)) in endpoints.iter().enumerate() {
            for i in 0..per_weight * u64::from(*weight) {
                key.clear();
                key.push_str(address);
                key.push('_');
                key.push_str(&i.to_string());
                points.push((xxh64(key.as_bytes(), 0), owner as u32));
            }
        }
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip();
        RingHash { hashes, owners }
    }

    /// The owner of the first point at or after `hash` passing `ok`, walking the ring.
    pub(crate) fn pick(&self, hash: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let start = self.hashes.partition_point(|&h| h < hash);
        (0..len).map(|k| self.owners[(start + k) % len] as usize).find(|&i| ok(i))
    }

    /// Number of points (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }
}
