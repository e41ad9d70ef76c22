use std::sync::Arc;

use prometheus::Registry;

use super::facts::{service_host, service_name_namespace};
use super::*;
use crate::flags::ResponseFlags;
use crate::wasm::tests::{info, request};
use crate::wasm::TlsInfo;

/// Requests by code and peer principal; bytes and duration histograms.
const TEMPLATE: &str = r#"{
  "metrics": {"requests": "t_requests_total", "duration_ms": "t_duration_milliseconds",
              "request_bytes": "t_request_bytes", "request_messages": "t_messages_total"},
  "labels": [["reporter", "destination"],
             ["code", {"fact": "response_code", "default": "0"}],
             ["flags", {"fact": "response_flags", "default": "-"}],
             ["service", {"fact": "destination_service", "default": "unknown"}],
             ["service_ns", {"fact": "destination_service_namespace", "default": "local-ns"}],
             ["peer", {"fact": "peer_principal", "default": "configured-peer"}],
             ["policy", {"fact": "connection_security_policy"}],
             ["protocol", {"fact": "request_protocol"}]]
}"#;

fn stream(tls: Option<TlsInfo>) -> StreamShared {
    let mut i = info(1024);
    Arc::make_mut(&mut i.connection).tls = tls;
    StreamShared::new(i)
}

/// A finished stream to `cluster` with `status`, and its head facts.
fn finished(s: &mut StreamShared, cluster: &str, status: u16) -> HeadFacts {
    s.upstream.cluster = Some(cluster.into());
    s.upstream.request_header_bytes = 40;
    s.upstream.request_body_bytes = 2;
    let mut head = HeadFacts::default();
    head.note_request(&request("/", &[]));
    head.note_response(&http::Response::builder().status(status).body(()).unwrap().into_parts().0);
    head
}

fn record(m: &RequestMetrics, id: u32, s: &StreamShared, head: HeadFacts) {
    let use_ = Use { owner: Owner::new(std::ptr::null(), 1), template: m.get(id).unwrap(), messages: None };
    StreamMetrics { uses: vec![use_], head }.record(s);
}

#[test]
fn streams_with_the_same_facts_share_one_series_and_fill_every_label() {
    let store = Arc::new(CustomMetrics::new(Registry::new()));
    let m = RequestMetrics::new(store.clone());
    let id = m.define(TEMPLATE.as_bytes()).unwrap();
    assert_eq!(m.define(TEMPLATE.as_bytes()).unwrap(), id, "one id per template");
    let tls =
        TlsInfo { peer_certificate_presented: true, peer_uri_sans: vec!["spiffe://a".into()], ..TlsInfo::default() };
    for _ in 0..2 {
        let mut s = stream(Some(tls.clone()));
        let head = finished(&mut s, "outbound|80||web.prod.svc.cluster.local", 200);
        record(&m, id, &s, head);
    }
    let mut s = stream(None);
    let head = finished(&mut s, "plain", 503);
    s.upstream.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
    record(&m, id, &s, head);
    let text = store.render_all();
    let want = r#"t_requests_total{reporter="destination",code="200",flags="-",service="web.prod.svc.cluster.local",service_ns="prod",peer="spiffe://a",policy="mutual_tls",protocol="http"} 2"#;
    assert!(text.contains(want), "{text}");
    let want = r#"t_requests_total{reporter="destination",code="503",flags="UO",service="plain",service_ns="local-ns",peer="configured-peer",policy="none",protocol="http"} 1"#;
    assert!(text.contains(want), "{text}");
    assert!(text.contains(r#"t_request_bytes_sum{reporter="destination",code="200""#), "{text}");
    assert!(text.contains(r#"t_duration_milliseconds_count{reporter="destination",code="503""#), "{text}");
    assert!(!text.contains("t_messages_total"), "message counters exist for gRPC label sets only: {text}");
    let series = lock(&m.get(id).unwrap().series).len();
    assert_eq!(series, 2, "cached once per label set");
}

#[test]
fn grpc_streams_carry_their_status_and_message_counts() {
    let store = Arc::new(CustomMetrics::new(Registry::new()));
    let m = RequestMetrics::new(store.clone());
    let t = r#"{"metrics": {"requests": "g_total", "request_messages": "g_messages_total"},
                "labels": [["protocol", {"fact": "request_protocol"}], ["grpc", {"fact": "grpc_response_status"}]]}"#;
    let id = m.define(t.as_bytes()).unwrap();
    let s = stream(None);
    let mut head = HeadFacts::default();
    head.note_request(&request("/svc/M", &[("content-type", "application/grpc+proto")]));
    head.note_response(&http::Response::builder().status(200).body(()).unwrap().into_parts().0);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    head.note_trailers(&trailers);
    let use_ = Use { owner: Owner::new(std::ptr::null(), 1), template: m.get(id).unwrap(), messages: Some((3, 5)) };
    StreamMetrics { uses: vec![use_], head }.record(&s);
    let text = store.render_all();
    assert!(text.contains(r#"g_total{protocol="grpc",grpc="14"} 1"#), "{text}");
    assert!(text.contains(r#"g_messages_total{protocol="grpc",grpc="14"} 3"#), "{text}");
}

#[test]
fn a_later_template_of_the_same_owner_replaces_the_first() {
    let m = RequestMetrics::new(Arc::new(CustomMetrics::new(Registry::new())));
    let a = m.get(m.define(br#"{"metrics": {"requests": "a_total"}, "labels": []}"#).unwrap()).unwrap();
    let b = m.get(m.define(br#"{"metrics": {"requests": "b_total"}, "labels": []}"#).unwrap()).unwrap();
    let mut sm = StreamMetrics::default();
    let (one, two) = (Owner::new(std::ptr::null(), 1), Owner::new(std::ptr::null(), 2));
    sm.set(one, a.clone());
    sm.set(two, a);
    sm.set(one, b.clone());
    assert_eq!(sm.uses.len(), 2);
    assert!(Arc::ptr_eq(&sm.uses[0].template, &b));
    assert!(sm.set_messages(two, (1, 1)));
    assert!(!sm.set_messages(Owner::new(std::ptr::null(), 3), (1, 1)), "no use of its own");
}

#[test]
fn templates_are_validated_with_the_reason() {
    let m = RequestMetrics::new(Arc::new(CustomMetrics::new(Registry::new())));
    let err = |t: &str| m.define(t.as_bytes()).unwrap_err().to_string();
    assert!(err(r#"{"metrics": {"requests": "x"}, "labels": [["a", {"fact": "nope"}]]}"#)
        .contains("labels[0] \"a\": unknown variant `nope`"));
    assert!(err(r#"{"metrics": {"request": "x"}, "labels": []}"#).contains("unknown field `request`"));
    assert!(err(r#"{"metrics": {}, "labels": []}"#).contains("no metric"));
    assert!(err(r#"{"metrics": {"requests": "x-y"}, "labels": []}"#).contains("\"x-y\" is not a valid"));
    assert!(err(r#"{"metrics": {"requests": "x"}, "labels": [["a", "1"], ["a", "2"]]}"#).contains("twice"));
    assert!(err(r#"{"metrics": {"requests": "x"}, "labels": [["le", "1"]]}"#).contains("\"le\""));
    assert!(err(r#"{"metrics": {"requests": "x"}, "labels": [["a", 5]]}"#).contains("labels[0] \"a\""));
    assert!(err("{\"metrics\": {\"requests\": \"x\"},\n \"labels\": 5}").contains("line 2"), "serde names the line");
}

#[test]
fn service_hosts_and_names() {
    assert_eq!(service_host(Some("outbound|80||web.prod.svc.cluster.local"), None), Some("web.prod.svc.cluster.local"));
    assert_eq!(service_host(Some("inbound|8080||"), Some("api.example.com:8443")), Some("api.example.com"));
    assert_eq!(service_host(None, Some("[::1]:80")), Some("[::1]"));
    assert_eq!(service_host(Some(""), Some("web")), Some("web"));
    assert_eq!(service_host(None, None), None);
    assert_eq!(service_name_namespace("web.prod.svc.cluster.local"), ("web", Some("prod")));
    assert_eq!(service_name_namespace("api.example.com"), ("api.example.com", None));
    assert_eq!(service_name_namespace("127.0.0.1"), ("127.0.0.1", None));
}
