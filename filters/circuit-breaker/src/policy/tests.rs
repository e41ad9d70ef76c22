use super::*;

fn limits(conns: Option<u64>, pending: Option<u64>, requests: Option<u64>) -> PoolLimits {
    PoolLimits { max_connections: conns, max_pending_requests: pending, max_requests: requests, max_retries: None }
}

fn health(endpoints: u64, healthy: u64) -> impl FnOnce() -> Health {
    move || Health { endpoints, healthy }
}

const E5XX: Observation = Observation::Upstream5xx { status: 500 };
const E503: Observation = Observation::Upstream5xx { status: 503 };

/// Records `obs` `n` times at `now`, returning the last verdict.
fn feed(s: &mut EndpointState, cfg: &Outlier, obs: Observation, n: u32, now: u64) -> Verdict {
    let mut v = Verdict::None;
    for _ in 0..n {
        let (next, verdict) = s.record(cfg, obs, now, health(10, 10));
        *s = next;
        v = verdict;
    }
    v
}

#[test]
fn max_retries_alone_is_no_pool_limit_for_the_host() {
    assert!(PoolLimits::default().is_empty());
    let retries = PoolLimits { max_retries: Some(3), ..PoolLimits::default() };
    assert!(!retries.is_empty());
    assert!(!retries.has_pool_limits(), "maxRetries is the retry filter's");
    assert!(limits(Some(1), None, None).has_pool_limits());
    assert!(limits(None, Some(1), None).has_pool_limits());
    assert!(limits(None, None, Some(1)).has_pool_limits());
}

#[test]
fn classify_counts_only_the_endpoints_faults() {
    assert_eq!(Observation::classify(200, &[]), Observation::Success);
    assert_eq!(Observation::classify(404, &[]), Observation::Success);
    assert_eq!(Observation::classify(500, &[]), E5XX);
    assert_eq!(Observation::classify(503, &["UF"]), Observation::LocalOrigin);
    assert_eq!(Observation::classify(502, &["UR"]), Observation::LocalOrigin);
    assert_eq!(Observation::classify(504, &["UT"]), Observation::LocalOrigin);
    assert_eq!(
        Observation::classify(503, &["UO"]),
        Observation::Ignore,
        "our own overflow is not the endpoint's fault"
    );
    assert_eq!(Observation::classify(503, &["UH"]), Observation::Ignore);
    assert_eq!(Observation::classify(500, &["FI"]), Observation::Ignore, "a fault-injected abort");
    assert_eq!(Observation::classify(500, &["UF"]), E5XX, "a stale flag from an earlier attempt");
}

#[test]
fn consecutive_5xx_ejects_at_the_threshold_and_success_resets() {
    let cfg = Outlier::istio_default();
    let mut s = EndpointState::default();
    assert_eq!(feed(&mut s, &cfg, E5XX, 4, 1000), Verdict::None);
    assert_eq!(s.record(&cfg, Observation::Success, 1000, health(10, 10)).0.consecutive_5xx, 0, "success resets");
    let (after_ok, _) = s.record(&cfg, Observation::Success, 1000, health(10, 10));
    s = after_ok;
    assert_eq!(feed(&mut s, &cfg, E5XX, 4, 1000), Verdict::None, "the count starts over");
    assert_eq!(feed(&mut s, &cfg, E5XX, 1, 1000), Verdict::Eject { duration_ms: 30_000 });
    assert_eq!(s.ejections, 1);
    assert_eq!(s.ejected_until_ms, 31_000);
    assert_eq!(s.consecutive_5xx, 0);
}

#[test]
fn local_origin_failures_count_as_5xx_and_gateway_errors_unless_split() {
    let cfg = Outlier { consecutive_5xx: 0, consecutive_gateway: 2, ..Outlier::istio_default() };
    let mut s = EndpointState::default();
    assert_eq!(feed(&mut s, &cfg, Observation::LocalOrigin, 2, 0), Verdict::Eject { duration_ms: 30_000 });
    let split = Outlier { split_local_origin: true, consecutive_local_origin: 3, ..cfg };
    let mut s = EndpointState::default();
    assert_eq!(feed(&mut s, &split, Observation::LocalOrigin, 2, 0), Verdict::None);
    assert_eq!((s.consecutive_gateway, s.consecutive_local), (0, 2));
    // An upstream answer (even a 5xx) proves reachability: the local count restarts.
    let (next, _) = s.record(&split, E5XX, 0, health(10, 10));
    assert_eq!(next.consecutive_local, 0);
    s = next;
    assert_eq!(feed(&mut s, &split, Observation::LocalOrigin, 3, 0), Verdict::Eject { duration_ms: 30_000 });
}

#[test]
fn gateway_errors_are_502_to_504_and_a_500_resets_them() {
    let cfg = Outlier { consecutive_5xx: 0, consecutive_gateway: 3, ..Outlier::istio_default() };
    let mut s = EndpointState::default();
    feed(&mut s, &cfg, E503, 2, 0);
    assert_eq!(s.consecutive_gateway, 2);
    feed(&mut s, &cfg, E5XX, 1, 0);
    assert_eq!(s.consecutive_gateway, 0, "a non-gateway 5xx breaks the run");
    assert_eq!(
        feed(&mut s, &cfg, Observation::Upstream5xx { status: 504 }, 3, 0),
        Verdict::Eject { duration_ms: 30_000 }
    );
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let cfg = Outlier { consecutive_5xx: 1, interval_ms: 10_000, ..Outlier::istio_default() };
    assert_eq!(cfg.ejection_ms(1), 30_000);
    assert_eq!(cfg.ejection_ms(2), 60_000);
    assert_eq!(cfg.ejection_ms(10), 300_000, "capped at maxEjectionTime");
    let tiny_cap = Outlier { max_ejection_ms: 1, ..cfg };
    assert_eq!(tiny_cap.ejection_ms(3), 30_000, "the cap is never below the base");
    let mut s = EndpointState::default();
    assert_eq!(feed(&mut s, &cfg, E5XX, 1, 0), Verdict::Eject { duration_ms: 30_000 });
    // Fails again as soon as it is back (before an interval passes): 2 × base.
    assert_eq!(feed(&mut s, &cfg, E5XX, 1, 30_000), Verdict::Eject { duration_ms: 60_000 });
    assert_eq!(s.ejected_until_ms, 90_000);
}

#[test]
fn responses_during_an_ejection_change_nothing() {
    let cfg = Outlier { consecutive_5xx: 1, ..Outlier::istio_default() };
    let mut s = EndpointState::default();
    feed(&mut s, &cfg, E5XX, 1, 0);
    let before = s;
    assert_eq!(feed(&mut s, &cfg, E5XX, 5, 10_000), Verdict::None);
    assert_eq!(s, before);
}

#[test]
fn healthy_intervals_shed_the_multiplier() {
    let cfg = Outlier { consecutive_5xx: 1, interval_ms: 10_000, ..Outlier::istio_default() };
    let mut s = EndpointState { ejections: 3, ejected_until_ms: 100_000, ..EndpointState::default() };
    // Healthy for 25 s after the ejection ended: two intervals shed two ejections.
    assert_eq!(feed(&mut s, &cfg, E5XX, 1, 125_000), Verdict::Eject { duration_ms: 60_000 });
    assert_eq!(s.ejections, 2);
    let mut long_ago = EndpointState { ejections: 5, ejected_until_ms: 1_000, ..EndpointState::default() };
    assert_eq!(feed(&mut long_ago, &cfg, E5XX, 1, 10_000_000), Verdict::Eject { duration_ms: 30_000 });
}

#[test]
fn max_ejection_percent_counts_the_endpoint_being_ejected() {
    let cfg = Outlier::istio_default(); // 10 %
    assert!(cfg.may_eject(Health { endpoints: 10, healthy: 10 }), "1 of 10 = 10 %");
    assert!(!cfg.may_eject(Health { endpoints: 10, healthy: 9 }), "2 of 10 = 20 %");
    assert!(!cfg.may_eject(Health { endpoints: 3, healthy: 3 }), "1 of 3 = 33 % > 10 % (Envoy)");
    let one = Outlier { always_eject_one: true, ..cfg };
    assert!(one.may_eject(Health { endpoints: 3, healthy: 3 }));
    assert!(!one.may_eject(Health { endpoints: 3, healthy: 2 }));
    let half = Outlier { max_ejection_percent: 50, ..cfg };
    assert!(
        half.may_eject(Health { endpoints: 4, healthy: 3 }) && !half.may_eject(Health { endpoints: 4, healthy: 2 })
    );
    assert!(!cfg.may_eject(Health { endpoints: 0, healthy: 0 }));
}

#[test]
fn min_health_percent_stops_ejections() {
    let cfg = Outlier { max_ejection_percent: 100, min_health_percent: 50, ..Outlier::istio_default() };
    assert!(cfg.may_eject(Health { endpoints: 4, healthy: 2 }), "exactly 50 % healthy");
    assert!(!cfg.may_eject(Health { endpoints: 4, healthy: 1 }));
}

#[test]
fn suppressed_ejections_restart_the_count() {
    let cfg = Outlier { consecutive_5xx: 2, ..Outlier::istio_default() };
    let s = EndpointState { consecutive_5xx: 1, ..EndpointState::default() };
    let (next, v) = s.record(&cfg, E5XX, 0, health(3, 3));
    assert_eq!(v, Verdict::Suppressed);
    assert_eq!((next.consecutive_5xx, next.ejections, next.ejected_until_ms), (0, 0, 0));
}

#[test]
fn health_is_read_only_when_a_threshold_trips() {
    let cfg = Outlier::istio_default();
    let s = EndpointState::default();
    let (_, v) = s.record(&cfg, E5XX, 0, || panic!("health read below the threshold"));
    assert_eq!(v, Verdict::None);
}

#[test]
fn state_round_trips_through_shared_data_bytes() {
    let s = EndpointState {
        consecutive_5xx: 3,
        consecutive_gateway: 2,
        consecutive_local: 1,
        ejections: 4,
        ejected_until_ms: 1_700_000_000_123,
    };
    let b = s.encode();
    assert_eq!(b.len(), STATE_LEN);
    assert_eq!(EndpointState::decode(&b), s);
    assert_eq!(EndpointState::decode(b"junk"), EndpointState::default());
}
