//! The telemetry filter through the real proxy: Istio's standard metrics with exact label
//! values after known traffic (parsed with a real exposition-format parser), trace
//! context kept across two hops, and spans exported over OTLP/HTTP to a real receiver.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

const NODE: &str = "node: { id: sidecar~reviews, metadata: { WORKLOAD_NAME: reviews-v1, NAMESPACE: shop, app: reviews, version: v1, CLUSTER_ID: c1 } }\n";

/// The `reviews` sidecar ([`NODE`]): listener `main` with `filters` (YAML list items)
/// in front of cluster `reviews` on `up`.
fn sidecar_yaml(filters: &str, up: &Upstream) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{NODE}listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: reviews\n    filters:\n{filters}clusters:\n{}",
        cluster_yaml("reviews", "round_robin", &[(up.addr, &[])])
    )
}

/// Parses `/metrics` with a real Prometheus text-format parser; panics on a format error.
async fn scrape(proxy: &TestProxy) -> prometheus_parse::Scrape {
    let text = Client::http1().get(&proxy.admin_url("/metrics")).await.text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("exposition format: {e}\n{text}"))
}

fn counter(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_standard_metrics_after_known_traffic() {
    let up = Upstream::start("web").await;
    let yaml = sidecar_yaml(
        "      - { name: telemetry, module: builtin:telemetry, config: { peer: { workload: productpage-v1, namespace: shop, app: productpage, version: v1 } } }\n      - name: fault\n        module: builtin:fault\n        config: { rules: [ { match: [ { uri: { prefix: /broken } } ], abort: { httpStatus: 503, percentage: { value: 100 } } } ] }\n",
        &up,
    );
    let proxy = TestProxy::start(&yaml, 1);
    let c = Client::http1();
    for _ in 0..3 {
        assert_eq!(c.get(&proxy.url("main", "/ok")).await.status, 200);
    }
    assert_eq!(c.get(&proxy.url("main", "/status/500")).await.status, 500);
    assert_eq!(c.get(&proxy.url("main", "/broken")).await.status, 503);
    let s = scrape(&proxy).await;
    let base = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "shop"),
        ("source_app", "productpage"),
        ("destination_workload", "reviews-v1"),
        ("destination_workload_namespace", "shop"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_service", "reviews"),
        ("request_protocol", "http"),
        ("connection_security_policy", "none"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_eq!(counter(&s, "istio_requests_total", &with(&[("response_code", "200"), ("response_flags", "-")])), 3.0);
    assert_eq!(counter(&s, "istio_requests_total", &with(&[("response_code", "500"), ("response_flags", "-")])), 1.0);
    assert_eq!(counter(&s, "istio_requests_total", &with(&[("response_code", "503"), ("response_flags", "FI")])), 1.0);
    // Every standard label is present on the series, in Istio's label set.
    let sample = s.samples.iter().find(|x| x.metric == "istio_requests_total").expect("series");
    for label in [
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_cluster",
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    ] {
        assert!(sample.labels.get(label).is_some(), "label {label} missing: {:?}", sample.labels);
    }
    // The duration histogram is a real histogram with all five observations.
    let count = counter(&s, "istio_request_duration_milliseconds_count", &[]);
    let hist = s.samples.iter().any(|x| {
        x.metric == "istio_request_duration_milliseconds" && matches!(x.value, prometheus_parse::Value::Histogram(_))
    });
    assert!(hist || count == 5.0, "duration histogram missing");
}

/// A real OTLP/HTTP receiver: keeps every request body posted to it.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        g.lock().expect("lock").push(body);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn tracing_proxy(next: std::net::SocketAddr, otlp: std::net::SocketAddr, direction: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{NODE}listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    direction: {direction}\n    default_cluster: next\n    filters:\n      - {{ name: telemetry, module: builtin:telemetry, config: {{ tracing: {{ cluster: otlp, sampling: 100, flush_interval: 50ms }} }} }}\nclusters:\n{}{}",
        cluster_yaml("next", "round_robin", &[(next, &[])]),
        cluster_yaml("otlp", "round_robin", &[(otlp, &[])])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_survives_two_hops_and_spans_reach_the_collector() {
    let up = Upstream::start("web").await;
    let (otlp, spans) = collector().await;
    let b = TestProxy::start(&tracing_proxy(up.addr, otlp, "inbound"), 1);
    let a = TestProxy::start(&tracing_proxy(b.addr("main"), otlp, "outbound"), 1);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r =
        Client::http1().get_with(&a.url("main", "/"), &[("traceparent", &format!("00-{trace_id}-{parent}-01"))]).await;
    assert_eq!(r.status, 200);
    let seen = r.header("x-echo-traceparent").expect("traceparent reached the upstream");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[1], trace_id, "one trace id end to end");
    assert_ne!(parts[2], parent, "each hop adds its own span as the parent");
    assert_eq!(parts[3], "01", "sampled");
    // Both hops export their span over OTLP/HTTP.
    let started = Instant::now();
    loop {
        let bodies: Vec<serde_json::Value> =
            spans.lock().expect("lock").iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();
        let mut found: Vec<serde_json::Value> = Vec::new();
        for body in &bodies {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for sp in ss["spans"].as_array().into_iter().flatten() {
                        if sp["traceId"] == trace_id {
                            found.push(sp.clone());
                        }
                    }
                }
            }
        }
        if found.len() >= 2 {
            let kinds: Vec<i64> = found.iter().filter_map(|sp| sp["kind"].as_i64()).collect();
            assert!(kinds.contains(&2) && kinds.contains(&3), "SERVER and CLIENT spans: {kinds:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "spans not exported: {bodies:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_no_filter_reads_pass_untouched_and_are_still_measured() {
    // Telemetry reads no body of a plain HTTP request: both bodies bypass the chain (no
    // pump, no body callback) and their sizes still reach istio_request/response_bytes.
    let up = Upstream::start("web").await;
    let yaml = sidecar_yaml(
        "      - { name: telemetry, module: builtin:telemetry, config: {} }\n      - { name: fault, module: builtin:fault, config: { rules: [] } }\n",
        &up,
    );
    let proxy = TestProxy::start(&yaml, 1);
    let sent = Bytes::from(vec![b'q'; 5000]);
    let r = Client::http1()
        .request(http::Method::POST, &proxy.url("main", "/echo"), wasmesh_tests::client::full(sent.clone()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, sent, "the body arrived whole and came back");
    let s = scrape(&proxy).await;
    // Sizes are headers + body (Envoy's request.total_size / response.total_size).
    for name in ["istio_request_bytes_sum", "istio_response_bytes_sum"] {
        let v = counter(&s, name, &[]);
        assert!((5000.0..6000.0).contains(&v), "{name} = {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_still_reach_the_body_callbacks_for_message_counts() {
    // Telemetry names only headers and on_log for its streams; a gRPC request asks for
    // the bodies itself, so its messages are counted in both directions.
    let up = Upstream::start("web").await;
    let yaml = sidecar_yaml("      - { name: telemetry, module: builtin:telemetry, config: {} }\n", &up);
    let proxy = TestProxy::start(&yaml, 1);
    // Three length-prefixed gRPC messages; /echo sends the same bytes back.
    let mut body = Vec::new();
    for msg in [&b"ab"[..], b"", b"cde"] {
        body.push(0u8);
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(msg);
    }
    let req = http::Request::post(proxy.url("main", "/echo"))
        .header("content-type", "application/grpc")
        .body(wasmesh_tests::client::full(body.clone()))
        .expect("request");
    let r = Client::http1().send(req).await;
    assert_eq!((r.status.as_u16(), r.body.as_ref()), (200, body.as_slice()));
    let s = scrape(&proxy).await;
    assert_eq!(counter(&s, "istio_request_messages_total", &[]), 3.0);
    assert_eq!(counter(&s, "istio_response_messages_total", &[]), 3.0);
}

/// Sidecar A (outbound, the frontend) calls sidecar B (inbound, the api) over mutual TLS;
/// both run telemetry with metadata exchange. Each side reports the other's workload as
/// learnt from the exchanged headers, B the certificates' SPIFFE ids and `mutual_tls`, A
/// the service of its Istio-style cluster name — the labels the proxy fills in per
/// request from the filter's template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_exchange_and_mtls_fill_both_reporters_labels() {
    use wasmesh_tests::pki::Ca;
    const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
    const API_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
    let dir = wasmesh_tests::temp_dir("telemetry-mtls");
    let ca = Ca::new("telemetry test CA");
    ca.write(&dir, "ca.pem");
    ca.leaf(&dir, "frontend", &[], &[FRONTEND_ID]);
    ca.leaf(&dir, "api", &["localhost", "127.0.0.1"], &[API_ID]);
    let d = dir.display();
    let app = Upstream::start("app").await;
    let telemetry =
        "    filters:\n      - { name: telemetry, module: builtin:telemetry, config: { metadata_exchange: true } }\n";
    let b = TestProxy::start(
        &format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nnode: {{ id: sidecar~api, metadata: {{ WORKLOAD_NAME: api-v2, NAMESPACE: shop, app: api, version: v2 }} }}\nlisteners:\n  - name: inbound\n    address: \"127.0.0.1:0\"\n    direction: inbound\n    default_cluster: \"inbound|8080||\"\n    tls: {{ cert: \"{d}/api.pem\", key: \"{d}/api.key\", client_ca: \"{d}/ca.pem\", mode: mutual }}\n{telemetry}clusters:\n{}",
            cluster_yaml("inbound|8080||", "round_robin", &[(app.addr, &[])])
        ),
        1,
    );
    let cluster = "outbound|8080||api.shop.svc.cluster.local";
    let a = TestProxy::start(
        &format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nnode: {{ id: sidecar~frontend, metadata: {{ WORKLOAD_NAME: frontend-v1, NAMESPACE: web, app: frontend, version: v1 }} }}\nlisteners:\n  - name: outbound\n    address: \"127.0.0.1:0\"\n    direction: outbound\n    default_cluster: \"{cluster}\"\n{telemetry}clusters:\n  - name: \"{cluster}\"\n    connect_timeout: 1s\n    endpoints:\n      - address: \"{}\"\n    tls: {{ mode: mutual, ca: \"{d}/ca.pem\", cert: \"{d}/frontend.pem\", key: \"{d}/frontend.key\", subject_alt_names: [\"{API_ID}\"] }}\n",
            b.addr("inbound")
        ),
        1,
    );
    let c = Client::http1();
    for path in ["/ok", "/ok", "/status/404"] {
        let r = c.get(&a.url("outbound", path)).await;
        assert_eq!(r.header("x-envoy-peer-metadata"), None, "the exchange headers stop at the sidecar");
        assert_ne!(r.status.as_u16(), 503, "{}", r.text());
    }
    let (sa, sb) = (scrape(&a).await, scrape(&b).await);
    let dest = [
        ("reporter", "destination"),
        ("source_workload", "frontend-v1"),
        ("source_workload_namespace", "web"),
        ("source_canonical_service", "frontend"),
        ("source_principal", FRONTEND_ID),
        ("destination_workload", "api-v2"),
        ("destination_principal", API_ID),
        ("destination_version", "v2"),
        ("destination_service_namespace", "shop"),
        ("connection_security_policy", "mutual_tls"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
    ];
    let with = |base: &[(&'static str, &'static str)], code: &'static str| {
        let mut v = base.to_vec();
        v.push(("response_code", code));
        v
    };
    assert_eq!(counter(&sb, "istio_requests_total", &with(&dest, "200")), 2.0, "{:?}", sb.samples);
    assert_eq!(counter(&sb, "istio_requests_total", &with(&dest, "404")), 1.0);
    assert_eq!(counter(&sb, "istio_requests_total", &[]), 3.0, "every request on one label set per code");
    let src = [
        ("reporter", "source"),
        ("source_workload", "frontend-v1"),
        ("source_principal", "unknown"),
        ("destination_workload", "api-v2"),
        ("destination_app", "api"),
        ("destination_canonical_revision", "v2"),
        ("destination_service", "api.shop.svc.cluster.local"),
        ("destination_service_name", "api"),
        ("destination_service_namespace", "shop"),
        ("connection_security_policy", "unknown"),
        ("grpc_response_status", ""),
    ];
    assert_eq!(counter(&sa, "istio_requests_total", &with(&src, "200")), 2.0, "{:?}", sa.samples);
    assert_eq!(counter(&sa, "istio_requests_total", &with(&src, "404")), 1.0);
    // Sizes and durations land in the histograms of the same label sets.
    for name in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
        let count = format!("{name}_count");
        assert_eq!(counter(&sa, &count, &with(&src, "200")), 2.0, "{name} on A");
        assert_eq!(counter(&sb, &count, &with(&dest, "404")), 1.0, "{name} on B");
    }
    let sum = |s: &prometheus_parse::Scrape, name: &str| counter(s, name, &[]);
    assert!(sum(&sb, "istio_request_bytes_sum") > 3.0 * 30.0, "request heads counted");
    assert!(sum(&sb, "istio_response_bytes_sum") > 3.0 * 30.0, "response heads counted");
}
