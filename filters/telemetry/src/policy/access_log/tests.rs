use serde_json::Value;

use super::*;

fn record() -> Record {
    let mut r = Record {
        // 2026-11-24T13:32:17.123Z
        start_unix_ns: Some(1_795_527_137_123_456_789),
        duration_ns: Some(57_900_000),
        method: Some("GET".into()),
        path: Some("/reviews/0?x=1".into()),
        protocol: Some("HTTP/1.1".into()),
        authority: Some("reviews:9080".into()),
        request_id: Some("9e1c-77".into()),
        user_agent: Some("curl/8.5.0".into()),
        x_forwarded_for: Some("10.0.0.9".into()),
        response_code: Some(503),
        response_flags: vec!["UF".into(), "URX".into()],
        code_details: Some("upstream_reset_before_response_started{connection_failure}".into()),
        bytes_received: Some(120),
        bytes_sent: Some(91),
        upstream_service_time: Some("55".into()),
        upstream_host: Some("10.1.2.3:9080".into()),
        upstream_local_address: Some("10.0.0.1:41234".into()),
        upstream_cluster: Some("outbound|9080||reviews.default.svc.cluster.local".into()),
        route_name: Some("default".into()),
        downstream_local_address: Some("10.0.0.1:15001".into()),
        downstream_remote_address: Some("10.0.0.9:50000".into()),
        requested_server_name: None,
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ..Record::default()
    };
    r.request_headers.insert("x-tenant".into(), "acme".into());
    r
}

#[test]
fn istio_default_text_format_field_by_field() {
    let line = LogFormat::istio_text().render(&record());
    let want = concat!(
        "[2026-11-24T13:32:17.123Z] ",
        "\"GET /reviews/0?x=1 HTTP/1.1\" ",
        "503 ",
        "UF,URX ",
        "upstream_reset_before_response_started{connection_failure} ",
        "- ",
        "\"-\" ",
        "120 ",
        "91 ",
        "57 ",
        "55 ",
        "\"10.0.0.9\" ",
        "\"curl/8.5.0\" ",
        "\"9e1c-77\" ",
        "\"reviews:9080\" ",
        "\"10.1.2.3:9080\" ",
        "outbound|9080||reviews.default.svc.cluster.local ",
        "10.0.0.1:41234 ",
        "10.0.0.1:15001 ",
        "10.0.0.9:50000 ",
        "- ",
        "default",
    );
    assert_eq!(line, want);
}

#[test]
fn text_format_of_an_empty_record_uses_dashes_and_zeros() {
    let line = LogFormat::istio_text().render(&Record::default());
    assert_eq!(line, "[-] \"- - -\" 0 - - - \"-\" 0 0 - - \"-\" \"-\" \"-\" \"-\" \"-\" - - - - - -");
}

#[test]
fn original_path_wins_and_custom_formats_work() {
    let mut r = record();
    r.original_path = Some("/api/reviews/0".into());
    let f = LogFormat::parse_text("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %REQ(x-tenant)% %REQ(X-MISSING?X-TENANT)% %REQ(:AUTHORITY):7% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %TRACE_ID% %RESP(grpc-status)% 100%%")
        .err();
    assert_eq!(f.as_deref(), Some("unknown operator %% at byte 185"));
    let f = LogFormat::parse_text(
        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %REQ(x-tenant)% %REQ(X-MISSING?X-TENANT)% %REQ(:AUTHORITY):7% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %TRACE_ID% %RESP(grpc-status)% done",
    );
    let f = f.unwrap_or(LogFormat::Json);
    r.response_headers.insert("grpc-status".into(), "14".into());
    assert_eq!(
        f.render(&r),
        "/api/reviews/0 /reviews/0?x=1 acme acme reviews 10.0.0.9 4bf92f3577b34da6a3ce929d0e0e4736 14 done"
    );
    assert_eq!(
        f.extra_headers(),
        (vec!["x-tenant".to_string(), "x-missing".to_string()], vec!["grpc-status".to_string()])
    );
}

#[test]
fn req_without_query_and_attempt_count() {
    let mut r = record();
    r.original_path = Some("/api/reviews/0?secret=1".into());
    r.attempt_count = Some(3);
    let f = LogFormat::parse_text("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ_WITHOUT_QUERY(:PATH)% %REQ_WITHOUT_QUERY(x-none)% %UPSTREAM_REQUEST_ATTEMPT_COUNT%");
    assert_eq!(f.map(|f| f.render(&r)), Ok("/api/reviews/0 /reviews/0 - 3".to_string()));
    let f = LogFormat::parse_text("%UPSTREAM_REQUEST_ATTEMPT_COUNT%").unwrap_or(LogFormat::Json);
    assert_eq!(f.render(&Record::default()), "0");
}

#[test]
fn bad_formats_are_rejected_with_positions() {
    assert_eq!(LogFormat::parse_text("[%START_TIME").err().as_deref(), Some("unterminated operator at byte 1"));
    assert_eq!(LogFormat::parse_text("%REQ()%").err().as_deref(), Some("unknown operator %REQ()% at byte 0"));
    assert_eq!(LogFormat::parse_text("%REQ(A B)%").err().as_deref(), Some("unknown operator %REQ(A B)% at byte 0"));
    assert_eq!(LogFormat::parse_text("x %REQ(A):z%").err().as_deref(), Some("unknown operator %REQ(A):z% at byte 2"));
    assert_eq!(LogFormat::parse_text("plain"), Ok(LogFormat::Text(vec![Token::Lit("plain".into())])));
}

#[test]
fn json_format_has_istios_keys_in_order() {
    let line = LogFormat::Json.render(&record());
    let keys: Vec<String> = line
        .trim_matches(|c| c == '{' || c == '}')
        .split(",\"")
        .filter_map(|kv| kv.trim_start_matches('"').split('"').next().map(str::to_string))
        .collect();
    assert_eq!(keys, JSON_KEYS.map(String::from).to_vec(), "{line}");
    let v: Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(v["start_time"], "2026-11-24T13:32:17.123Z");
    assert_eq!(v["route_name"], "default");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/reviews/0?x=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["response_code"], 503);
    assert_eq!(v["response_flags"], "UF,URX");
    assert_eq!(v["response_code_details"], "upstream_reset_before_response_started{connection_failure}");
    assert_eq!(v["connection_termination_details"], Value::Null);
    assert_eq!(v["bytes_received"], 120);
    assert_eq!(v["bytes_sent"], 91);
    assert_eq!(v["duration"], 57);
    assert_eq!(v["upstream_service_time"], "55");
    assert_eq!(v["x_forwarded_for"], "10.0.0.9");
    assert_eq!(v["user_agent"], "curl/8.5.0");
    assert_eq!(v["request_id"], "9e1c-77");
    assert_eq!(v["authority"], "reviews:9080");
    assert_eq!(v["upstream_host"], "10.1.2.3:9080");
    assert_eq!(v["upstream_cluster"], "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(v["upstream_local_address"], "10.0.0.1:41234");
    assert_eq!(v["downstream_local_address"], "10.0.0.1:15001");
    assert_eq!(v["downstream_remote_address"], "10.0.0.9:50000");
    assert_eq!(v["requested_server_name"], Value::Null);
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn json_escapes_hostile_values() {
    let r = Record { user_agent: Some("evil\"agent\n{".into()), ..Record::default() };
    let line = LogFormat::Json.render(&r);
    assert!(!line.contains('\n'));
    let v: Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(v["user_agent"], "evil\"agent\n{");
    assert_eq!(v["response_code"], 0);
    assert_eq!(v["response_flags"], Value::Null);
}

#[test]
fn filters_select_requests() {
    let mut r = record();
    let errors = AccessLogFilter { only_errors: true, ..AccessLogFilter::default() };
    assert!(errors.matches(&r));
    r.response_code = Some(200);
    assert!(!errors.matches(&r));
    r.content_type = Some("application/grpc".into());
    r.grpc_status = Some(14);
    assert!(errors.matches(&r), "gRPC failures are errors");
    r.grpc_status = Some(0);
    assert!(!errors.matches(&r));
    r.response_code = None;
    assert!(errors.matches(&r), "no response is an error");
    assert!(AccessLogFilter::default().matches(&r));

    let mut r = record();
    let gte = AccessLogFilter { status_gte: Some(500), ..AccessLogFilter::default() };
    assert!(gte.matches(&r));
    r.response_code = Some(404);
    assert!(!gte.matches(&r));
    let band = AccessLogFilter { status_gte: Some(400), status_lt: Some(500), ..AccessLogFilter::default() };
    assert!(band.matches(&r));
    r.response_code = Some(500);
    assert!(!band.matches(&r));
    let flags = AccessLogFilter { response_flags: vec!["UO".into(), "URX".into()], ..AccessLogFilter::default() };
    assert!(flags.matches(&r));
    r.response_flags.clear();
    assert!(!flags.matches(&r));
    let slow = AccessLogFilter { min_duration_ms: Some(58), ..AccessLogFilter::default() };
    assert!(!slow.matches(&r));
    r.duration_ns = Some(58_000_000);
    assert!(slow.matches(&r));
}
