use std::time::Duration;

use prometheus::Registry;

use super::*;

fn cfg(yaml: &str) -> config::Cluster {
    serde_yaml_ng::from_str(yaml).expect("test cluster yaml")
}

fn build(yaml: &str) -> (Arc<Cluster>, Registry) {
    let registry = Registry::new();
    let metrics = UpstreamMetrics::new(&registry);
    (Cluster::build(&cfg(yaml), &metrics).expect("cluster builds"), registry)
}

fn pick(c: &Cluster, subset: Option<&str>) -> Result<Arc<EndpointState>, UpstreamError> {
    c.pick(&PickRequest { subset, ..Default::default() })
}

const VERSIONED: &str = r#"
name: web
endpoints:
  - { address: "127.0.0.1:9001", labels: { version: v1 } }
  - { address: "127.0.0.1:9002", labels: { version: v1, zone: a } }
  - { address: "127.0.0.1:9003", labels: { version: v2 } }
subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
  - { name: v1a, labels: { version: v1, zone: a } }
  - { name: v3, labels: { version: v3 } }
"#;

#[test]
fn subsets_select_by_labels() {
    let (c, _) = build(VERSIONED);
    let v1: Vec<u16> = (0..6).map(|_| pick(&c, Some("v1")).expect("pick").addr().port()).collect();
    assert_eq!(v1, [9001, 9002, 9001, 9002, 9001, 9002]);
    assert!((0..5).all(|_| pick(&c, Some("v2")).expect("pick").addr().port() == 9003));
    assert!((0..5).all(|_| pick(&c, Some("v1a")).expect("pick").addr().port() == 9002));
    let all: Vec<u16> = (0..3).map(|_| pick(&c, None).expect("pick").addr().port()).collect();
    assert_eq!(all, [9001, 9002, 9003]);
    assert!(matches!(pick(&c, Some("nope")), Err(UpstreamError::UnknownSubset { .. })));
    assert!(matches!(pick(&c, Some("v3")), Err(UpstreamError::NoHealthyUpstream { .. })));
    assert_eq!(c.subset_names().collect::<Vec<_>>(), ["v1", "v2", "v1a", "v3"]);
}

#[test]
fn empty_cluster_has_no_healthy_upstream() {
    let (c, _) = build("name: empty\nendpoints: []\n");
    let err = pick(&c, None).expect_err("nothing to pick");
    assert!(matches!(err, UpstreamError::NoHealthyUpstream { .. }));
    assert_eq!(err.flags().to_string(), "UH");
}

#[test]
fn ejected_endpoints_are_skipped_until_all_are() {
    let (c, _) = build(VERSIONED);
    let eps = c.endpoints();
    eps[0].eject(Duration::from_secs(60));
    assert!((0..20).all(|_| pick(&c, None).expect("pick").addr().port() != 9001));
    assert_eq!(c.healthy_endpoints(), 2);
    // The only v2 endpoint ejected: panic mode still routes the subset to it.
    eps[2].eject(Duration::from_secs(60));
    assert_eq!(pick(&c, Some("v2")).expect("panic pick").addr().port(), 9003);
    assert!((0..20).all(|_| pick(&c, None).expect("pick").addr().port() == 9002));
    // Every endpoint ejected: picks spread over all of them again.
    eps[1].eject(Duration::from_secs(60));
    let mut seen: Vec<u16> = (0..30).map(|_| pick(&c, None).expect("pick").addr().port()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [9001, 9002, 9003]);
    assert_eq!(c.healthy_endpoints(), 0);
}

#[test]
fn consistent_hash_cluster_uses_the_key() {
    let (c, _) = build(
        "name: sticky\nlb: consistent_hash\nhash: { algorithm: maglev }\nendpoints:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:2\n  - address: 127.0.0.1:3\n",
    );
    let key = PickRequest { hash_key: Some(b"alice"), ..Default::default() };
    let first = c.pick(&key).expect("pick").addr();
    assert!((0..20).all(|_| c.pick(&key).expect("pick").addr() == first));
}

#[test]
fn active_requests_and_metrics_follow_guards_and_ejections() {
    let (c, registry) = build(VERSIONED);
    let ep = pick(&c, None).expect("pick");
    let g1 = ep.track();
    let g2 = ep.track();
    assert_eq!(c.active_requests(), 2);
    let text = crate::telemetry::render(&registry);
    assert!(text.contains("wasmesh_upstream_requests_active{cluster=\"web\"} 2"), "{text}");
    assert!(text.contains("wasmesh_upstream_endpoints_healthy{cluster=\"web\"} 3"), "{text}");
    assert!(text.contains("wasmesh_upstream_endpoints{cluster=\"web\"} 3"), "{text}");
    drop((g1, g2));
    ep.eject(Duration::from_secs(60));
    let text = crate::telemetry::render(&registry);
    assert!(text.contains("wasmesh_upstream_requests_active{cluster=\"web\"} 0"), "{text}");
    assert!(text.contains("wasmesh_upstream_endpoints_healthy{cluster=\"web\"} 2"), "{text}");
    assert!(text.contains("wasmesh_upstream_ejections_total{cluster=\"web\"} 1"), "{text}");
    // A dropped cluster leaves the healthy gauge.
    drop(c);
    let text = crate::telemetry::render(&registry);
    assert!(!text.contains("wasmesh_upstream_endpoints_healthy{cluster=\"web\"}"), "{text}");
}

#[test]
fn snapshot_lists_endpoints_and_subsets() {
    let (c, _) = build(VERSIONED);
    let ep = c.endpoints()[2].clone();
    let _g = ep.track();
    ep.eject(Duration::from_secs(30));
    let v = c.snapshot();
    assert_eq!(v["name"], "web");
    assert_eq!(v["lb"], "round_robin");
    assert_eq!(v["active_requests"], 1);
    let e = &v["endpoints"][2];
    assert_eq!(e["address"], "127.0.0.1:9003");
    assert_eq!(e["resolved"], "127.0.0.1:9003");
    assert_eq!(e["labels"]["version"], "v2");
    assert_eq!(e["weight"], 1);
    assert_eq!(e["active_requests"], 1);
    assert_eq!(e["ejected"], true);
    assert_eq!(e["healthy"], true);
    assert_eq!(v["subsets"][0]["endpoints"], serde_json::json!(["127.0.0.1:9001", "127.0.0.1:9002"]));
}

#[test]
fn invalid_clusters_are_refused_with_a_reason() {
    let registry = Registry::new();
    let metrics = UpstreamMetrics::new(&registry);
    let cases = [
        ("name: c\nendpoints: [{ address: '127.0.0.1:1', weight: 0 }]\n", "weight"),
        ("name: c\nendpoints: [{ address: '127.0.0.1:1' }, { address: '127.0.0.1:1' }]\n", "twice"),
        ("name: c\nendpoints: [{ address: 'no-port' }]\n", "no port"),
        ("name: c\nendpoints: [{ address: 'bad host:80' }]\n", "neither"),
        ("name: c\nlb: consistent_hash\nhash: { algorithm: maglev, table_size: 6000000 }\nendpoints: []\n", "maximum"),
        ("name: c\nlb: consistent_hash\nhash: { table_size: 0 }\nendpoints: []\n", "table_size"),
        ("name: c\nendpoints: []\nsubsets: [{ name: a, labels: {} }, { name: a, labels: {} }]\n", "twice"),
    ];
    for (yaml, needle) in cases {
        let err = Cluster::build(&cfg(yaml), &metrics).expect_err(yaml);
        assert!(matches!(err, UpstreamError::InvalidConfig { .. }), "{yaml}: {err}");
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
    }
}

// --- DNS ---

#[tokio::test]
async fn hostname_endpoints_resolve_at_build_and_refresh() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (c, _) = build(&format!(
        "name: dns\ndns_refresh: 20ms\nendpoints:\n  - address: localhost:{port}\n  - address: 127.0.0.1:9\n"
    ));
    let eps = c.endpoints();
    assert_eq!(eps[0].address(), format!("localhost:{port}"));
    assert_eq!(eps[0].addr(), SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(c.endpoint(eps[0].addr()).map(|e| e.address().to_string()), Some(format!("localhost:{port}")));

    // Same answer again: nothing swapped, state kept.
    eps[0].eject(Duration::from_secs(60));
    assert!(!c.refresh_dns().await);
    assert!(Arc::ptr_eq(&c.endpoints()[0], &eps[0]));
    assert!(c.endpoints()[0].is_ejected());

    // The refresh task runs while the cluster lives and ends once it is dropped.
    let task = c.spawn_dns_refresh().expect("a name to refresh");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!task.is_finished());
    drop((c, eps));
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("task ends").expect("task ok");
}

#[test]
fn ip_only_clusters_need_no_refresh() {
    let (c, _) = build(VERSIONED);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async { assert!(c.spawn_dns_refresh().is_none()) });
}

#[test]
fn a_changed_address_gets_a_fresh_endpoint_and_others_keep_their_state() {
    let (c, _) = build(
        "name: swap\nendpoints:\n  - { address: localhost:7001, labels: { v: a } }\n  - { address: 127.0.0.1:7002, labels: { v: a } }\nsubsets: [{ name: a, labels: { v: a } }]\n",
    );
    let before = c.endpoints();
    let guard = before[0].track();
    before[1].eject(Duration::from_secs(60));

    // Unchanged answers and failed lookups (None) swap nothing.
    assert!(!c.apply_resolved(&[Some(before[0].addr()), None]));
    assert!(!c.apply_resolved(&[None, None]));

    let moved: SocketAddr = "127.0.0.2:7001".parse().expect("literal");
    assert!(c.apply_resolved(&[Some(moved), Some(before[1].addr())]));
    let after = c.endpoints();
    assert_eq!(after[0].addr(), moved);
    assert_eq!(after[0].address(), "localhost:7001");
    assert_eq!(after[0].active_requests(), 0);
    assert!(Arc::ptr_eq(&after[1], &before[1]));
    assert!(after[1].is_ejected());
    // The subset was rebuilt over the new endpoint too.
    assert!((0..4).any(|_| pick(&c, Some("a")).expect("pick").addr() == moved));
    // The in-flight request still counts on the cluster and ends on its old endpoint.
    assert_eq!(c.active_requests(), 1);
    drop(guard);
    assert_eq!(c.active_requests(), 0);
    assert_eq!(before[0].active_requests(), 0);
}

#[test]
fn previous_hosts_are_avoided_while_another_is_available() {
    for lb in ["random", "round_robin", "least_request", "consistent_hash"] {
        let (c, _) = build(&format!(
            "name: web\nlb: {lb}\nendpoints:\n  - {{ address: \"127.0.0.1:9001\" }}\n  - {{ address: \"127.0.0.1:9002\" }}\n"
        ));
        let first: SocketAddr = "127.0.0.1:9001".parse().expect("literal");
        let both = [first, "127.0.0.1:9002".parse().expect("literal")];
        for _ in 0..50 {
            let req = PickRequest { hash_key: Some(b"k"), exclude: &both[..1], ..Default::default() };
            assert_eq!(c.pick(&req).expect("pick").addr().port(), 9002, "{lb}");
        }
        // Every endpoint tried already: balancing goes on as without the exclusion.
        let req = PickRequest { exclude: &both, ..Default::default() };
        assert!(c.pick(&req).is_ok(), "{lb}");
    }
}
