//! The Grafana dashboard in `examples/observability/` against a real scrape: every metric
//! name its PromQL uses must exist on `/metrics` after traffic (so the dashboard cannot
//! drift from the metrics), and `istio_requests_total` carries every label Kiali groups by.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wasmesh_tests::{cluster_yaml, repo_root, temp_dir, wasm_module, write_atomic, Client, TestProxy, Upstream};

const NODE: &str = "node: { id: sidecar~reviews, metadata: { WORKLOAD_NAME: reviews-v1, NAMESPACE: shop, app: reviews, version: v1 } }\n";

/// The telemetry filter, then the `trap` test filter failing open (so a trap is counted in
/// `wasmesh_wasm_failures_total` and the request still goes through).
fn config(up: &Upstream, extra_cluster: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{NODE}listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    direction: inbound\n    default_cluster: reviews\n    filters:\n      - {{ name: telemetry, module: builtin:telemetry, config: {{ peer: {{ workload: productpage-v1, namespace: shop, app: productpage, version: v1 }} }} }}\n      - name: trap\n        module: \"{}\"\n        failure: open\nclusters:\n{}{extra_cluster}",
        wasm_module("trap").display(),
        cluster_yaml("reviews", "round_robin", &[(up.addr, &[])])
    )
}

/// Metric names in a PromQL expression: identifiers starting with `istio_` or `wasmesh_`,
/// outside quoted label values.
fn metric_names(expr: &str) -> Vec<String> {
    let mut unquoted = String::new();
    let mut in_quote = false;
    for ch in expr.chars() {
        match ch {
            '"' => in_quote = !in_quote,
            _ if in_quote => {}
            _ => unquoted.push(ch),
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("istio_") || t.starts_with("wasmesh_"))
        .map(str::to_string)
        .collect()
}

/// Every `expr` of every panel target (rows may nest panels) and every variable query.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// Sample names in a text-format scrape (`name{...} value` or `name value`).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_names_are_extracted_outside_label_values() {
    let e = r#"sum by (le) (rate(istio_request_duration_milliseconds_bucket{x="wasmesh_fake_total"}[5m])) / wasmesh_reload_total"#;
    assert_eq!(metric_names(e), ["istio_request_duration_milliseconds_bucket", "wasmesh_reload_total"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_exists_in_a_real_scrape() {
    let path = repo_root().join("examples/observability/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dash["schemaVersion"], 38);
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    for must in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_bytes_sum",
        "istio_response_bytes_sum",
        "wasmesh_reload_total",
        "wasmesh_wasm_failures_total",
        "wasmesh_downstream_connections_active",
    ] {
        assert!(used.contains(must), "the dashboard has no panel on {must}: {used:?}");
    }

    let up = Upstream::start("reviews").await;
    let dir = temp_dir("dashboards");
    let cfg = dir.join("wasmesh.yaml");
    write_atomic(&cfg, config(&up, "").as_bytes());
    let proxy = TestProxy::start_file(&cfg, 1);
    let c = Client::http1();
    for _ in 0..3 {
        assert_eq!(c.get(&proxy.url("main", "/ok")).await.status, 200);
    }
    assert_eq!(c.get(&proxy.url("main", "/status/500")).await.status, 500);
    let trapped = c.get_with(&proxy.url("main", "/"), &[("x-trap", "panic")]).await;
    assert_eq!(trapped.status, 200, "the trap filter fails open");
    // One applied reload, so wasmesh_reload_total has a series.
    let spare = cluster_yaml("spare", "round_robin", &[(up.addr, &[])]);
    write_atomic(&cfg, config(&up, &spare).as_bytes());

    let started = Instant::now();
    let scrape = loop {
        let s = c.get(&proxy.admin_url("/stats/prometheus")).await.text();
        if s.contains(r#"wasmesh_reload_total{result="applied"}"#) {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no applied reload within 10 s:\n{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let have = scraped_names(&scrape);
    let missing: Vec<&String> = used.iter().filter(|m| !have.contains(*m)).collect();
    assert!(missing.is_empty(), "dashboard metrics missing from /stats/prometheus: {missing:?}\n{scrape}");

    // Kiali's HTTP group-by labels and its mTLS-padlock labels are on every series.
    let parsed = prometheus_parse::Scrape::parse(scrape.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("exposition format: {e}"));
    let series: Vec<_> = parsed.samples.iter().filter(|s| s.metric == "istio_requests_total").collect();
    assert!(!series.is_empty(), "no istio_requests_total series");
    for s in &series {
        for label in [
            "reporter",
            "source_workload_namespace",
            "source_workload",
            "source_canonical_service",
            "source_canonical_revision",
            "destination_service_namespace",
            "destination_service",
            "destination_service_name",
            "destination_workload_namespace",
            "destination_workload",
            "destination_canonical_service",
            "destination_canonical_revision",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "source_principal",
            "destination_principal",
            "connection_security_policy",
        ] {
            assert!(s.labels.get(label).is_some(), "label {label} missing: {:?}", s.labels);
        }
    }
    let ok = series.iter().find(|s| s.labels.get("response_code") == Some("200")).expect("a 200 series");
    assert_eq!(ok.labels.get("reporter"), Some("destination"));
    assert_eq!(ok.labels.get("source_workload"), Some("productpage-v1"));
    assert_eq!(ok.labels.get("destination_workload"), Some("reviews-v1"));
    assert!(scrape.contains(r#"wasmesh_wasm_failures_total{kind="trap",plugin="trap"}"#), "{scrape}");
}
