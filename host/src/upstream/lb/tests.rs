use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::upstream::endpoint::ClusterShared;
use crate::upstream::metrics::ClusterMetrics;

fn endpoints(weights: &[u32]) -> Vec<Arc<EndpointState>> {
    let shared = Arc::new(ClusterShared {
        name: "t".into(),
        active_requests: AtomicU64::new(0),
        metrics: ClusterMetrics::detached(),
    });
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let address = format!("10.0.{}.{}:8080", i / 250, i % 250 + 1);
            let addr = address.parse().expect("literal");
            Arc::new(EndpointState::new(address, addr, BTreeMap::new(), w, shared.clone()).expect("authority"))
        })
        .collect()
}

fn hash_settings(algorithm: HashAlgorithm, table_size: u32) -> HashSettings {
    HashSettings { algorithm, table_size, ..HashSettings::default() }
}

fn counts(b: &Balancer, eps: &[Arc<EndpointState>], picks: usize) -> Vec<usize> {
    let mut c = vec![0; eps.len()];
    for _ in 0..picks {
        c[b.pick(eps, None, Filter::Available).expect("a pick")] += 1;
    }
    c
}

fn assert_shares(counts: &[usize], expected: &[f64], tolerance: f64) {
    let total: usize = counts.iter().sum();
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        let share = c as f64 / total as f64;
        assert!((share - e).abs() <= tolerance, "endpoint {i}: share {share:.4}, expected {e:.4} (counts {counts:?})");
    }
}

/// Address each of `keys` maps to.
fn mapping(b: &Balancer, eps: &[Arc<EndpointState>], keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let i = b.pick(eps, Some(k.as_bytes()), Filter::Available).expect("a pick");
            eps[i].address().to_string()
        })
        .collect()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

// --- round robin ---

#[test]
fn round_robin_exact_order_equal_weights() {
    let eps = endpoints(&[1, 1, 1]);
    let b = Balancer::build(LbPolicy::RoundRobin, &HashSettings::default(), &eps);
    let order: Vec<usize> = (0..7).map(|_| b.pick(&eps, None, Filter::Available).expect("pick")).collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn round_robin_weighted_schedule_is_smooth_and_exact() {
    let rr = RoundRobin::new(&[5, 1, 1]);
    assert_eq!(rr.schedule(), &[0, 0, 0, 1, 2, 0, 0]);
    // gcd reduction: 200:100 is 2:1.
    assert_eq!(RoundRobin::new(&[200, 100]).schedule(), &[0, 1, 0]);
    let eps = endpoints(&[2, 1, 3]);
    let b = Balancer::build(LbPolicy::RoundRobin, &HashSettings::default(), &eps);
    let order: Vec<usize> = (0..12).map(|_| b.pick(&eps, None, Filter::Available).expect("pick")).collect();
    // slots: e0 at 1/4, 3/4; e1 at 1/2; e2 at 1/6, 1/2, 5/6 — ties by index.
    assert_eq!(order, [2, 0, 1, 2, 0, 2, 2, 0, 1, 2, 0, 2]);
}

#[test]
fn round_robin_is_exact_across_threads() {
    let eps = endpoints(&[1, 2, 3]);
    let b = Arc::new(Balancer::build(LbPolicy::RoundRobin, &HashSettings::default(), &eps));
    let eps = Arc::new(eps);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (b, eps) = (b.clone(), eps.clone());
            std::thread::spawn(move || counts(&b, &eps, 1500))
        })
        .collect();
    let mut total = vec![0; 3];
    for t in threads {
        for (i, c) in t.join().expect("thread").into_iter().enumerate() {
            total[i] += c;
        }
    }
    // 6000 picks = 1000 whole cycles of 1+2+3.
    assert_eq!(total, [1000, 2000, 3000]);
}

#[test]
fn round_robin_skips_ejected() {
    let eps = endpoints(&[1, 1, 1]);
    let b = Balancer::build(LbPolicy::RoundRobin, &HashSettings::default(), &eps);
    eps[1].eject(Duration::from_secs(60));
    let c = counts(&b, &eps, 300);
    assert_eq!(c[1], 0);
    assert!(c[0] >= 100 && c[2] >= 100, "{c:?}");
    eps[0].set_healthy(false);
    assert_eq!(counts(&b, &eps, 10), [0, 0, 10]);
    eps[2].eject(Duration::from_secs(60));
    assert_eq!(b.pick(&eps, None, Filter::Available), None);
    assert!(b.pick(&eps, None, Filter::Any).is_some());
}

// --- random ---

#[test]
fn random_follows_weights() {
    let eps = endpoints(&[1, 2, 7]);
    let b = Balancer::build(LbPolicy::Random, &HashSettings::default(), &eps);
    // σ of a share over 20 000 draws is at most 0.0036: 0.02 is over 5σ.
    assert_shares(&counts(&b, &eps, 20_000), &[0.1, 0.2, 0.7], 0.02);
    let eps = endpoints(&[1, 1, 1, 1]);
    let b = Balancer::build(LbPolicy::Random, &HashSettings::default(), &eps);
    assert_shares(&counts(&b, &eps, 20_000), &[0.25; 4], 0.02);
}

#[test]
fn random_skips_ejected() {
    let eps = endpoints(&[1, 1, 8]);
    let b = Balancer::build(LbPolicy::Random, &HashSettings::default(), &eps);
    eps[2].eject(Duration::from_secs(60));
    let c = counts(&b, &eps, 2_000);
    assert_eq!(c[2], 0);
    assert!(c[0] > 700 && c[1] > 700, "{c:?}");
}

// --- least request ---

#[test]
fn least_request_is_uniform_when_idle() {
    let eps = endpoints(&[1, 1, 1]);
    let b = Balancer::build(LbPolicy::LeastRequest, &HashSettings::default(), &eps);
    assert_shares(&counts(&b, &eps, 20_000), &[1.0 / 3.0; 3], 0.02);
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let eps = endpoints(&[1, 1, 1]);
    let b = Balancer::build(LbPolicy::LeastRequest, &HashSettings::default(), &eps);
    let _busy: Vec<_> = (0..5).flat_map(|_| [eps[0].track(), eps[1].track()]).collect();
    assert_eq!(eps[0].active_requests(), 5);
    // Endpoint 2 wins whenever it is one of the two distinct candidates: 2/3 of picks
    // (1/3 for plain random).
    let c = counts(&b, &eps, 20_000);
    assert_shares(&c, &[1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0], 0.02);
}

#[test]
fn least_request_holds_load_per_weight() {
    // Picks that keep their request open: load follows weight 1:3.
    let eps = endpoints(&[1, 3]);
    let b = Balancer::build(LbPolicy::LeastRequest, &HashSettings::default(), &eps);
    let mut held = Vec::new();
    for _ in 0..400 {
        let i = b.pick(&eps, None, Filter::Available).expect("pick");
        held.push(eps[i].track());
    }
    let (a0, a1) = (eps[0].active_requests() as f64, eps[1].active_requests() as f64);
    assert!((a0 / 400.0 - 0.25).abs() < 0.05, "{a0} vs {a1}");
}

// --- consistent hash ---

#[test]
fn consistent_hash_is_stable_across_rebuilds() {
    for algorithm in [HashAlgorithm::RingHash, HashAlgorithm::Maglev] {
        let hs = hash_settings(algorithm, 1024);
        let eps = endpoints(&[1; 5]);
        let ks = keys(2_000);
        let a = mapping(&Balancer::build(LbPolicy::ConsistentHash, &hs, &eps), &eps, &ks);
        // A fresh build (new endpoint states, same addresses) maps every key the same.
        let eps2 = endpoints(&[1; 5]);
        let b = mapping(&Balancer::build(LbPolicy::ConsistentHash, &hs, &eps2), &eps2, &ks);
        assert_eq!(a, b, "{algorithm:?}");
        // And the keys spread over every endpoint.
        let mut per: HashMap<&str, usize> = HashMap::new();
        for e in &a {
            *per.entry(e).or_default() += 1;
        }
        assert_eq!(per.len(), 5, "{algorithm:?}: {per:?}");
        assert!(per.values().all(|&n| (250..=550).contains(&n)), "{algorithm:?}: {per:?}");
    }
}

/// Removes endpoint 3 of 10 and adds an 11th; returns (moved share on removal, keys of
/// other endpoints moved on removal, moved share on addition, keys moved elsewhere than
/// to the new endpoint).
fn remap(algorithm: HashAlgorithm, table_size: u32) -> (f64, usize, f64, usize) {
    let hs = hash_settings(algorithm, table_size);
    let ks = keys(20_000);
    let all = endpoints(&[1; 11]);
    let ten = &all[..10];
    let before = mapping(&Balancer::build(LbPolicy::ConsistentHash, &hs, ten), ten, &ks);

    let removed = ten[3].address().to_string();
    let nine: Vec<_> = ten.iter().filter(|e| e.address() != removed).cloned().collect();
    let after = mapping(&Balancer::build(LbPolicy::ConsistentHash, &hs, &nine), &nine, &ks);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let others_moved = before.iter().zip(&after).filter(|(a, b)| a != b && **a != removed).count();

    let eleven = &all[..];
    let added = eleven[10].address().to_string();
    let grown = mapping(&Balancer::build(LbPolicy::ConsistentHash, &hs, eleven), eleven, &ks);
    let moved_add = before.iter().zip(&grown).filter(|(a, b)| a != b).count();
    let wrong_add = before.iter().zip(&grown).filter(|(a, b)| a != b && **b != added).count();
    let n = ks.len() as f64;
    (moved as f64 / n, others_moved, moved_add as f64 / n, wrong_add)
}

#[test]
fn ring_hash_remaps_only_the_changed_endpoints_keys() {
    let (moved, others, moved_add, wrong_add) = remap(HashAlgorithm::RingHash, 1024);
    assert!((0.06..=0.14).contains(&moved), "removal moved {moved}");
    assert_eq!(others, 0, "keys of untouched endpoints moved on removal");
    assert!((0.05..=0.13).contains(&moved_add), "addition moved {moved_add}");
    assert_eq!(wrong_add, 0, "keys moved between untouched endpoints on addition");
}

#[test]
fn maglev_remaps_few_keys_of_other_endpoints() {
    // Maglev trades perfect minimal disruption for balance; the bigger the table, the
    // fewer bystanders move (measured: ~2% of keys at M=1031, ~0.2% at M=65537).
    for (table_size, bystanders) in [(1024, 700), (65_537, 100)] {
        let (moved, others, moved_add, wrong_add) = remap(HashAlgorithm::Maglev, table_size);
        assert!((0.06..=0.16).contains(&moved), "M={table_size}: removal moved {moved}");
        assert!(others < bystanders, "M={table_size}: {others} keys of other endpoints moved");
        assert!((0.05..=0.15).contains(&moved_add), "M={table_size}: addition moved {moved_add}");
        assert!(wrong_add < bystanders, "M={table_size}: {wrong_add} keys moved between untouched endpoints");
    }
}

#[test]
fn consistent_hash_respects_weights() {
    for algorithm in [HashAlgorithm::RingHash, HashAlgorithm::Maglev] {
        let eps = endpoints(&[1, 3]);
        let b = Balancer::build(LbPolicy::ConsistentHash, &hash_settings(algorithm, 4096), &eps);
        let ks = keys(20_000);
        let on_heavy = mapping(&b, &eps, &ks).iter().filter(|a| *a == eps[1].address()).count();
        let share = on_heavy as f64 / ks.len() as f64;
        assert!((share - 0.75).abs() < 0.05, "{algorithm:?}: heavy share {share}");
    }
}

#[test]
fn maglev_table_size_is_prime() {
    let eps = [("a:1", 1), ("b:1", 1)];
    assert_eq!(Maglev::new(&eps, 1024).len(), 1031);
    assert_eq!(Maglev::new(&eps, 65_537).len(), 65_537);
    assert_eq!(maglev::next_prime(1), 2);
    assert_eq!(maglev::next_prime(90), 97);
}

#[test]
fn ring_points_scale_with_weight_and_cap() {
    assert_eq!(RingHash::new(&[("a:1", 1), ("b:1", 2)], 100).len(), 300);
    let huge = RingHash::new(&[("a:1", 1000), ("b:1", 1000)], 1024);
    assert!(huge.len() <= 1 << 20);
}

#[test]
fn consistent_hash_skips_ejected_and_falls_back_to_random_without_key() {
    for algorithm in [HashAlgorithm::RingHash, HashAlgorithm::Maglev] {
        let eps = endpoints(&[1; 4]);
        let b = Balancer::build(LbPolicy::ConsistentHash, &hash_settings(algorithm, 1024), &eps);
        let key = b"session-42".as_slice();
        let home = b.pick(&eps, Some(key), Filter::Available).expect("pick");
        eps[home].eject(Duration::from_secs(60));
        let away = b.pick(&eps, Some(key), Filter::Available).expect("pick");
        assert_ne!(away, home);
        // Stable while the ejection lasts, and back home after it.
        assert_eq!(b.pick(&eps, Some(key), Filter::Available), Some(away));
        eps[home].uneject();
        assert_eq!(b.pick(&eps, Some(key), Filter::Available), Some(home));
        // No key: every endpoint gets traffic.
        let c = counts(&b, &eps, 4_000);
        assert!(c.iter().all(|&n| n > 700), "{algorithm:?}: {c:?}");
    }
}
