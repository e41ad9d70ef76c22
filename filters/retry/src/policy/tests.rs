use super::*;

fn on(list: &str) -> RetryOn {
    match RetryOn::parse(list, &[]) {
        Ok(o) => o,
        Err(e) => panic!("{list}: {e}"),
    }
}

fn resp(status: u16) -> Outcome {
    Outcome::Response { status, grpc_status: None }
}

fn grpc(code: u32) -> Outcome {
    Outcome::Response { status: 200, grpc_status: Some(code) }
}

fn policy(list: &str, attempts: u32) -> RetryPolicy {
    RetryPolicy { attempts, retry_on: on(list), ..RetryPolicy::istio_default() }
}

#[test]
fn five_xx_covers_every_5xx_and_every_missing_response() {
    let o = on("5xx");
    for s in [500, 501, 502, 503, 504, 599] {
        assert!(o.matches(resp(s)), "{s}");
    }
    for s in [200, 404, 409, 429] {
        assert!(!o.matches(resp(s)), "{s}");
    }
    assert!(o.matches(Outcome::ConnectFailure));
    assert!(o.matches(Outcome::Reset));
    assert!(o.matches(Outcome::PerTryTimeout));
    assert!(!o.matches(Outcome::Overflow), "Envoy never retries an overflow");
    assert!(!o.matches(Outcome::NoHealthyUpstream));
}

#[test]
fn gateway_error_is_502_503_504_only() {
    let o = on("gateway-error");
    assert!(o.matches(resp(502)) && o.matches(resp(503)) && o.matches(resp(504)));
    assert!(!o.matches(resp(500)) && !o.matches(resp(501)));
    assert!(o.matches(Outcome::ConnectFailure) && o.matches(Outcome::Reset));
}

#[test]
fn reset_and_connect_failure_are_distinct() {
    let r = on("reset");
    assert!(r.matches(Outcome::Reset) && r.matches(Outcome::PerTryTimeout));
    assert!(!r.matches(Outcome::ConnectFailure));
    assert!(!r.matches(resp(503)), "a real 503 is not a reset");
    let c = on("connect-failure");
    assert!(c.matches(Outcome::ConnectFailure));
    assert!(!c.matches(Outcome::Reset) && !c.matches(resp(503)));
    assert!(on("refused-stream").matches(Outcome::Reset));
}

#[test]
fn retriable_4xx_is_409_only() {
    let o = on("retriable-4xx");
    assert!(o.matches(resp(409)));
    assert!(!o.matches(resp(400)) && !o.matches(resp(429)) && !o.matches(resp(500)));
}

#[test]
fn bare_codes_and_status_list() {
    let o = on("503,429");
    assert!(o.matches(resp(503)) && o.matches(resp(429)));
    assert!(!o.matches(resp(500)));
    // Istio: a reset the host turns into a 502/503 does not match a bare code.
    assert!(!o.matches(Outcome::Reset) && !o.matches(Outcome::ConnectFailure));
    let listed = RetryOn::parse("retriable-status-codes", &[418]).unwrap_or_default();
    assert!(listed.matches(resp(418)) && !listed.matches(resp(503)));
    // The list without the condition still retries (the condition is switched on).
    let implicit = RetryOn::parse("", &[418]).unwrap_or_default();
    assert!(implicit.matches(resp(418)));
    // The condition without codes retries nothing by status.
    assert!(!on("retriable-status-codes").matches(resp(503)));
}

#[test]
fn grpc_conditions_read_grpc_status() {
    let o = on("cancelled,deadline-exceeded,resource-exhausted,internal,unavailable");
    for code in [1, 4, 8, 13, 14] {
        assert!(o.matches(grpc(code)), "{code}");
    }
    for code in [0, 2, 3, 5, 16] {
        assert!(!o.matches(grpc(code)), "{code}");
    }
    assert!(!on("unavailable").matches(grpc(1)));
    assert!(!on("5xx").matches(grpc(14)), "HTTP conditions ignore grpc-status");
}

#[test]
fn parse_rejects_unknown_and_out_of_range() {
    assert!(RetryOn::parse("5xx,bogus", &[]).err().unwrap_or_default().contains("\"bogus\""));
    assert!(RetryOn::parse("600", &[]).err().unwrap_or_default().contains("100..=599"));
    assert!(RetryOn::parse("99999999", &[]).err().unwrap_or_default().contains("100..=599"));
    assert_eq!(RetryOn::parse(" 5xx , ,reset ", &[]).map(|o| o.has(Condition::Reset)), Ok(true));
}

#[test]
fn classify_uses_flags_only_with_their_synthesised_status() {
    assert_eq!(Outcome::classify(503, &["UF"], None), Outcome::ConnectFailure);
    assert_eq!(Outcome::classify(502, &["UR"], None), Outcome::Reset);
    assert_eq!(Outcome::classify(502, &["UC"], None), Outcome::Reset);
    assert_eq!(Outcome::classify(504, &["UT"], None), Outcome::PerTryTimeout);
    assert_eq!(Outcome::classify(503, &["UO"], None), Outcome::Overflow);
    assert_eq!(Outcome::classify(503, &["UH"], None), Outcome::NoHealthyUpstream);
    assert_eq!(Outcome::classify(503, &["DI", "FI"], None), Outcome::FaultInjected);
    assert!(!on("5xx,retriable-status-codes,503").matches(Outcome::FaultInjected), "faults skip retries");
    // A stale UF from an earlier attempt does not turn a real 500 into a connect failure.
    assert_eq!(Outcome::classify(500, &["UF"], None), resp(500));
    assert_eq!(Outcome::classify(503, &[], Some(14)), Outcome::Response { status: 503, grpc_status: Some(14) });
}

#[test]
fn istio_default_retries_503_connect_failure_and_grpc_unavailable() {
    let p = RetryPolicy::istio_default();
    assert!(p.retry_on.matches(resp(503)));
    assert!(p.retry_on.matches(Outcome::ConnectFailure));
    assert!(p.retry_on.matches(Outcome::Reset), "refused-stream arrives as a reset");
    assert!(p.retry_on.matches(grpc(14)) && p.retry_on.matches(grpc(1)));
    assert!(!p.retry_on.matches(resp(500)) && !p.retry_on.matches(Outcome::PerTryTimeout));
    assert_eq!(p.decide(resp(503), true, 1), Decision::Retry { retry_number: 1 });
    assert_eq!(p.decide(resp(503), true, 2), Decision::Retry { retry_number: 2 });
    assert_eq!(p.decide(resp(503), true, 3), Decision::Exhausted);
}

#[test]
fn decide_counts_attempts() {
    let p = policy("5xx", 3);
    assert_eq!(p.decide(resp(200), true, 1), Decision::Pass);
    assert_eq!(p.decide(resp(500), true, 1), Decision::Retry { retry_number: 1 });
    assert_eq!(p.decide(resp(500), true, 3), Decision::Retry { retry_number: 3 });
    assert_eq!(p.decide(resp(500), true, 4), Decision::Exhausted);
    assert_eq!(p.decide(resp(500), true, 0), Decision::Retry { retry_number: 1 }, "missing count = first");
    let off = policy("5xx", 0);
    assert_eq!(off.decide(resp(500), true, 1), Decision::Pass, "attempts 0 = retries off, no URX");
}

#[test]
fn non_idempotent_methods_retry_only_connect_failures_unless_allowed() {
    let p = policy("5xx,connect-failure", 2);
    assert_eq!(p.decide(resp(503), false, 1), Decision::NonIdempotent);
    assert_eq!(p.decide(Outcome::Reset, false, 1), Decision::NonIdempotent);
    assert_eq!(p.decide(Outcome::ConnectFailure, false, 1), Decision::Retry { retry_number: 1 });
    assert_eq!(p.decide(resp(200), false, 1), Decision::Pass);
    let allowed = RetryPolicy { retry_non_idempotent: true, ..p };
    assert_eq!(allowed.decide(resp(503), false, 1), Decision::Retry { retry_number: 1 });
}

#[test]
fn idempotency_follows_rfc_9110() {
    for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        assert!(is_idempotent(m, || false), "{m}");
    }
    for m in ["POST", "PATCH", "CONNECT", "get", "PURGE"] {
        assert!(!is_idempotent(m, || false), "{m}");
    }
    assert!(is_idempotent("POST", || true), "Idempotency-Key makes a POST replayable");
}

#[test]
fn backoff_is_fully_jittered_and_capped() {
    let b = Backoff { base_ms: 25, max_ms: 250 };
    let mut rng = Rng::new(7);
    let (mut max1, mut max2, mut max5) = (0, 0, 0);
    for _ in 0..10_000 {
        let r = rng.next_u64();
        let d1 = b.delay_ms(1, r);
        let d2 = b.delay_ms(2, r);
        let d5 = b.delay_ms(5, r);
        assert!(d1 < 25 && d2 < 75 && d5 < 250, "{d1} {d2} {d5}");
        max1 = max1.max(d1);
        max2 = max2.max(d2);
        max5 = max5.max(d5);
    }
    // Full jitter reaches the top of each window.
    assert_eq!((max1, max2, max5), (24, 74, 249));
    assert!(b.delay_ms(40, u64::MAX) < 250, "huge retry numbers stay capped");
    assert_eq!(b.delay_ms(1, 0), 0);
    assert_eq!(Backoff { base_ms: 0, max_ms: 0 }.delay_ms(3, 12345), 0);
}

#[test]
fn rng_spreads_values() {
    let mut rng = Rng::new(1);
    let mut buckets = [0u32; 10];
    for _ in 0..10_000 {
        let i = usize::try_from(rng.next_u64() % 10).unwrap_or(0);
        buckets[i] += 1;
    }
    assert!(buckets.iter().all(|&n| (800..1200).contains(&n)), "{buckets:?}");
}

#[test]
fn budget_allows_percent_of_active_or_the_minimum() {
    let b = Budget { percent: 20.0, min_retry_concurrency: 3 };
    assert_eq!(b.limit(0), 3);
    assert_eq!(b.limit(10), 3);
    assert_eq!(b.limit(100), 20);
    assert!(b.allows(0, 2));
    assert!(!b.allows(0, 3), "min concurrency is a hard cap at low load");
    assert!(b.allows(100, 19));
    assert!(!b.allows(100, 20), "a retry storm stops at 20% of active requests");
    let none = Budget { percent: 0.0, min_retry_concurrency: 0 };
    assert!(!none.allows(1000, 0));
}

#[test]
fn admission_combines_budget_and_max_retries() {
    let b = Some(Budget { percent: 20.0, min_retry_concurrency: 3 });
    assert!(retry_admitted(None, None, 0, 1_000_000), "nothing configured: unlimited");
    assert!(retry_admitted(b, None, 100, 19) && !retry_admitted(b, None, 100, 20));
    assert!(retry_admitted(None, Some(2), 0, 1) && !retry_admitted(None, Some(2), 0, 2));
    assert!(!retry_admitted(b, Some(1), 100, 1), "the tighter limit wins");
    assert!(!retry_admitted(b, Some(50), 100, 25));
}

#[test]
fn flags_are_needed_only_where_they_can_change_the_decision() {
    // 502–504 are what the host synthesises with UR/UC/LR, UF/UO/UH, UT.
    for s in [502, 503, 504] {
        assert!(Outcome::flags_matter(s), "{s}");
    }
    // Elsewhere a flag can only turn the response into FaultInjected, never retried: so a
    // response the policy would not retry plainly stays final whatever the flags.
    let p = RetryPolicy::istio_default();
    for s in [200, 404, 500] {
        assert!(!Outcome::flags_matter(s), "{s}");
        let plain = resp(s);
        assert!(!p.retries(plain), "{s}");
        for flags in [&["FI"][..], &["UF"], &["UT"], &["DI", "FI"]] {
            assert!(!p.retries(Outcome::classify(s, flags, None)), "{s} {flags:?}");
        }
    }
    assert!(!p.retries(Outcome::FaultInjected));
    let off = RetryPolicy { attempts: 0, ..RetryPolicy::istio_default() };
    assert!(!off.retries(resp(503)), "attempts 0: nothing retried");
}

#[test]
fn idempotency_key_is_read_only_for_non_idempotent_methods() {
    let asked = std::cell::Cell::new(0);
    let key = || {
        asked.set(asked.get() + 1);
        true
    };
    assert!(is_idempotent("GET", key));
    assert_eq!(asked.get(), 0);
    assert!(is_idempotent("POST", key));
    assert_eq!(asked.get(), 1);
}
