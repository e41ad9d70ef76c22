use std::collections::BTreeMap;

use super::*;
use crate::config::{parse, HeaderOps};

fn cfg(json: &str) -> RouterConfig {
    match parse(json.as_bytes(), &BTreeMap::new()) {
        Ok(c) => c,
        Err(e) => panic!("config should parse: {e}"),
    }
}

/// Request headers: `method path` plus extra headers; authority `a.example`, scheme http.
fn hdrs(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "a.example".to_string()),
        (":scheme".to_string(), "http".to_string()),
    ];
    for (k, v) in extra {
        // Extra pseudo-headers replace the defaults.
        if let Some(slot) = h.iter_mut().find(|(n, _)| n == k) {
            slot.1 = v.to_string();
        } else {
            h.push((k.to_string(), v.to_string()));
        }
    }
    h
}

/// Index of the rule that matches, if any.
fn route_of(c: &RouterConfig, headers: &[(String, String)], port: Option<u32>) -> Option<usize> {
    find_route(c, &Request::from_headers(headers, port)).map(|(i, _)| i)
}

fn forward_rule(m: &str) -> String {
    format!(r#"{{"match": [{m}], "route": [{{"destination": {{"host": "c"}}}}]}}"#)
}

#[test]
fn first_match_wins_and_match_blocks_are_ored() {
    let c = cfg(r#"{"routes": [
        {"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "first"}}]},
        {"match": [{"uri": {"prefix": "/a/b"}}, {"uri": {"exact": "/z"}}], "route": [{"destination": {"host": "second"}}]},
        {"route": [{"destination": {"host": "catch-all"}}]}
    ]}"#);
    // /a/b matches both rule 0 and rule 1: the first wins.
    assert_eq!(route_of(&c, &hdrs("GET", "/a/b", &[]), None), Some(0));
    // Second match block of rule 1.
    assert_eq!(route_of(&c, &hdrs("GET", "/z", &[]), None), Some(1));
    assert_eq!(route_of(&c, &hdrs("GET", "/other", &[]), None), Some(2));
}

#[test]
fn conditions_in_a_block_are_anded() {
    let c = cfg(&format!(
        r#"{{"routes": [{}]}}"#,
        forward_rule(r#"{"uri": {"prefix": "/api"}, "method": {"exact": "POST"}, "headers": {"x-v": {"exact": "2"}}}"#)
    ));
    assert_eq!(route_of(&c, &hdrs("POST", "/api/x", &[("x-v", "2")]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/api/x", &[("x-v", "2")]), None), None);
    assert_eq!(route_of(&c, &hdrs("POST", "/web", &[("x-v", "2")]), None), None);
    assert_eq!(route_of(&c, &hdrs("POST", "/api/x", &[("x-v", "3")]), None), None);
}

#[test]
fn uri_match_kinds() {
    let c = cfg(&format!(
        r#"{{"routes": [{}, {}, {}, {}]}}"#,
        forward_rule(r#"{"uri": {"exact": "/exact"}}"#),
        forward_rule(r#"{"uri": {"prefix": "/pre"}}"#),
        forward_rule(r#"{"uri": {"regex": "/items/[0-9]+"}}"#),
        forward_rule(r#"{"uri": {"exact": "/CaSe"}, "ignoreUriCase": true}"#),
    ));
    // Exact ignores the query string; regex too; both match the whole path.
    assert_eq!(route_of(&c, &hdrs("GET", "/exact?x=1", &[]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/exact/", &[]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/prefix/deep", &[]), None), Some(1));
    assert_eq!(route_of(&c, &hdrs("GET", "/items/42?y", &[]), None), Some(2));
    assert_eq!(route_of(&c, &hdrs("GET", "/items/42/more", &[]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/x/items/42", &[]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/case", &[]), None), Some(3));
    assert_eq!(route_of(&c, &hdrs("GET", "/CASE", &[]), None), Some(3));
}

#[test]
fn method_authority_scheme_and_port() {
    let c = cfg(&format!(
        r#"{{"routes": [{}, {}, {}, {}]}}"#,
        forward_rule(r#"{"method": {"regex": "PUT|PATCH"}}"#),
        forward_rule(r#"{"authority": {"prefix": "api."}}"#),
        forward_rule(r#"{"scheme": {"exact": "https"}}"#),
        forward_rule(r#"{"port": 8443}"#),
    ));
    assert_eq!(route_of(&c, &hdrs("PATCH", "/", &[]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[(":authority", "api.example")]), None), Some(1));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[(":scheme", "https")]), None), Some(2));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[]), Some(8443)), Some(3));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[]), Some(8080)), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[]), None), None);
    // `host` stands in for a missing `:authority` (HTTP/1.0-style requests).
    let h = vec![(":path".to_string(), "/".to_string()), ("host".to_string(), "api.x".to_string())];
    assert_eq!(route_of(&c, &h, None), Some(1));
}

#[test]
fn header_matches_presence_and_without_headers() {
    let c = cfg(&format!(
        r#"{{"routes": [{}, {}, {}]}}"#,
        forward_rule(r#"{"headers": {"x-debug": {}}}"#),
        forward_rule(r#"{"headers": {"cookie": {"regex": ".*user=jason.*"}}}"#),
        forward_rule(
            r#"{"withoutHeaders": {"x-internal": {"exact": "yes"}}, "headers": {"x-tenant": {"prefix": "t-"}}}"#
        ),
    ));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-debug", "")]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("cookie", "a=b; user=jason; c=d")]), None), Some(1));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-tenant", "t-1")]), None), Some(2));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-tenant", "t-1"), ("x-internal", "no")]), None), Some(2));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-tenant", "t-1"), ("x-internal", "yes")]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-tenant", "u-1")]), None), None);
    // Header names compare case-insensitively.
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("X-Debug", "1")]), None), Some(0));
}

#[test]
fn without_headers_presence_means_absent() {
    let c = cfg(&format!(r#"{{"routes": [{}]}}"#, forward_rule(r#"{"withoutHeaders": {"authorization": {}}}"#)));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("authorization", "x")]), None), None);
}

#[test]
fn repeated_headers_are_joined() {
    let c = cfg(&format!(r#"{{"routes": [{}]}}"#, forward_rule(r#"{"headers": {"x-a": {"exact": "1,2"}}}"#)));
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[("x-a", "1")]), None), None);
    let mut h = hdrs("GET", "/", &[("x-a", "1")]);
    h.push(("x-a".to_string(), "2".to_string()));
    assert_eq!(route_of(&c, &h, None), Some(0));
}

#[test]
fn query_param_matches() {
    let c = cfg(&format!(
        r#"{{"routes": [{}, {}]}}"#,
        forward_rule(r#"{"queryParams": {"version": {"exact": "2"}, "flag": {"exact": ""}}}"#),
        forward_rule(r#"{"queryParams": {"id": {"regex": "[0-9]+"}}}"#),
    ));
    assert_eq!(route_of(&c, &hdrs("GET", "/p?version=2&flag", &[]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/p?flag=&version=2", &[]), None), Some(0));
    assert_eq!(route_of(&c, &hdrs("GET", "/p?version=2", &[]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/p?id=123", &[]), None), Some(1));
    assert_eq!(route_of(&c, &hdrs("GET", "/p?id=12a", &[]), None), None);
    assert_eq!(route_of(&c, &hdrs("GET", "/p", &[]), None), None);
}

#[test]
fn unselected_source_labels_never_match() {
    let c = cfg(r#"{"workloadLabels": {"app": "web"}, "routes": [
        {"match": [{"sourceLabels": {"app": "api"}}], "route": [{"destination": {"host": "for-api"}}]},
        {"match": [{"sourceLabels": {"app": "web"}, "uri": {"prefix": "/"}}], "route": [{"destination": {"host": "for-web"}}]}
    ]}"#);
    assert_eq!(route_of(&c, &hdrs("GET", "/", &[]), None), Some(1));
}

#[test]
fn unmatched_requests_pass_or_404_when_strict() {
    let rules = forward_rule(r#"{"uri": {"prefix": "/only"}}"#);
    let lax = cfg(&format!(r#"{{"routes": [{rules}]}}"#));
    let strict = cfg(&format!(r#"{{"strict": true, "routes": [{rules}]}}"#));
    let h = hdrs("GET", "/elsewhere", &[]);
    let req = Request::from_headers(&h, None);
    let mut rng = Rng::new(1);
    assert!(matches!(plan(&lax, &req, &mut rng), Plan::Pass));
    assert!(matches!(plan(&strict, &req, &mut rng), Plan::NotFound));
    let empty_strict = cfg(r#"{"strict": true}"#);
    assert!(matches!(plan(&empty_strict, &req, &mut rng), Plan::NotFound));
}

#[test]
fn weighted_split_is_within_tolerance() {
    let c = cfg(r#"{"routes": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 70},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
        {"destination": {"host": "ratings"}, "weight": 10},
        {"destination": {"host": "never"}, "weight": 0}
    ]}]}"#);
    let h = hdrs("GET", "/", &[]);
    let req = Request::from_headers(&h, None);
    for seed in [0_u64, 1, 42, u64::MAX] {
        let mut rng = Rng::new(seed);
        let mut counts = [0_u32; 4];
        const N: u32 = 20_000;
        for _ in 0..N {
            match plan(&c, &req, &mut rng) {
                Plan::Forward(f) => counts[f.destination_index] += 1,
                other => panic!("expected forward, got {other:?}"),
            }
        }
        assert_eq!(counts[3], 0, "weight 0 gets nothing");
        for (i, want) in [(0, 0.70), (1, 0.20), (2, 0.10)] {
            let got = f64::from(counts[i]) / f64::from(N);
            assert!((got - want).abs() < 0.015, "seed {seed}: destination {i} got {got}, want {want}");
        }
    }
}

#[test]
fn pick_weighted_boundaries() {
    let c = cfg(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 1}, {"destination": {"host": "b"}, "weight": 3}]}]}"#,
    );
    let RouteAction::Forward { destinations, total_weight } = &c.routes[0].action else { panic!("forward") };
    let picks: Vec<usize> = (0..8).map(|r| pick_weighted(destinations, *total_weight, r)).collect();
    assert_eq!(picks, vec![0, 1, 1, 1, 0, 1, 1, 1]);
}

#[test]
fn forward_sets_destination_subset_and_rewrites() {
    let c = cfg(r#"{"routes": [
        {"name": "api", "match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/", "authority": "api.internal"},
         "route": [{"destination": {"host": "backend", "subset": "v2"}}], "timeout": "3s"}
    ]}"#);
    let h = hdrs("GET", "/api/users?id=1", &[]);
    let req = Request::from_headers(&h, None);
    let Plan::Forward(f) = plan(&c, &req, &mut Rng::new(7)) else { panic!("forward") };
    assert_eq!(f.route.name.as_deref(), Some("api"));
    assert_eq!(f.destination.cluster, "backend");
    assert_eq!(f.destination.subset.as_deref(), Some("v2"));
    assert_eq!(f.path.as_deref(), Some("/users?id=1"));
    assert_eq!(f.authority, Some("api.internal"));
    assert_eq!(f.route.timeout_ms, Some(3000));
}

fn rewrite_of(rule_match: &str, rewrite: &str, path: &str) -> Option<String> {
    let c = cfg(&format!(
        r#"{{"routes": [{{"match": [{rule_match}], "rewrite": {rewrite}, "route": [{{"destination": {{"host": "c"}}}}]}}]}}"#
    ));
    let h = hdrs("GET", path, &[]);
    let req = Request::from_headers(&h, None);
    let (i, m) = find_route(&c, &req)?;
    rewrite_path(c.routes[i].rewrite.as_ref()?, m, &req)
}

#[test]
fn uri_rewrite_replaces_what_matched() {
    // Prefix: only the prefix is replaced; the query string stays.
    assert_eq!(
        rewrite_of(r#"{"uri": {"prefix": "/v1"}}"#, r#"{"uri": "/v2"}"#, "/v1/x?q=1").as_deref(),
        Some("/v2/x?q=1")
    );
    // Case-insensitive prefix replaces the request's own spelling of it.
    assert_eq!(
        rewrite_of(r#"{"uri": {"prefix": "/API"}, "ignoreUriCase": true}"#, r#"{"uri": "/api"}"#, "/Api/x").as_deref(),
        Some("/api/x")
    );
    // Exact and regex: the whole path (not the query) is replaced.
    assert_eq!(
        rewrite_of(r#"{"uri": {"exact": "/old"}}"#, r#"{"uri": "/new"}"#, "/old?a=b").as_deref(),
        Some("/new?a=b")
    );
    assert_eq!(
        rewrite_of(r#"{"uri": {"regex": "/r/.*"}}"#, r#"{"uri": "/fixed"}"#, "/r/1/2").as_deref(),
        Some("/fixed")
    );
    // No uri condition: Istio matches prefix "/" and so replaces the leading slash.
    assert_eq!(rewrite_of(r#"{"headers": {"x": {}}}"#, r#"{"uri": "/v2/"}"#, "/foo"), None);
    let c = cfg(r#"{"routes": [{"rewrite": {"uri": "/v2/"}, "route": [{"destination": {"host": "c"}}]}]}"#);
    let h = hdrs("GET", "/foo", &[]);
    let req = Request::from_headers(&h, None);
    let rw = c.routes[0].rewrite.as_ref().expect("rewrite");
    assert_eq!(rewrite_path(rw, None, &req).as_deref(), Some("/v2/foo"));
}

#[test]
fn regex_rewrite_uses_capture_groups() {
    let rw = r#"{"uriRegexRewrite": {"match": "^/service/([^/]+)(/.*)$", "rewrite": "\\2/instance/\\1"}}"#;
    assert_eq!(
        rewrite_of(r#"{"uri": {"prefix": "/service"}}"#, rw, "/service/foo/v1/api?x=1").as_deref(),
        Some("/v1/api/instance/foo?x=1")
    );
    // Global replace, like RE2::GlobalReplace.
    let rw = r#"{"uriRegexRewrite": {"match": "a", "rewrite": "b"}}"#;
    assert_eq!(rewrite_of(r#"{"uri": {"prefix": "/"}}"#, rw, "/aaa").as_deref(), Some("/bbb"));
}

fn location(rule_match: &str, redirect: &str, extra: &[(&str, &str)], path: &str, port: Option<u32>) -> (u32, String) {
    let c = cfg(&format!(r#"{{"routes": [{{"match": [{rule_match}], "redirect": {redirect}}}]}}"#));
    let h = hdrs("GET", path, extra);
    let req = Request::from_headers(&h, port);
    match plan(&c, &req, &mut Rng::new(1)) {
        Plan::Local(l) => {
            let loc = l.headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone());
            (l.status, loc.unwrap_or_default())
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
}

#[test]
fn redirect_locations() {
    let any = r#"{"uri": {"prefix": "/"}}"#;
    assert_eq!(location(any, r#"{"uri": "/new"}"#, &[], "/old?q=1", None), (301, "http://a.example/new?q=1".into()));
    assert_eq!(location(any, r#"{"uri": "/new?x=2"}"#, &[], "/old?q=1", None).1, "http://a.example/new?x=2");
    assert_eq!(
        location(any, r#"{"authority": "b.example", "redirectCode": 308}"#, &[], "/p", None),
        (308, "http://b.example/p".into())
    );
    // http → https: the http default port disappears; the https default is never written.
    assert_eq!(
        location(any, r#"{"scheme": "https"}"#, &[(":authority", "a.example:80")], "/p", None).1,
        "https://a.example/p"
    );
    assert_eq!(location(any, r#"{"scheme": "https", "port": 443}"#, &[], "/p", None).1, "https://a.example/p");
    assert_eq!(location(any, r#"{"scheme": "https", "port": 8443}"#, &[], "/p", None).1, "https://a.example:8443/p");
    // A non-default request port is kept.
    assert_eq!(
        location(any, r#"{"uri": "/n"}"#, &[(":authority", "a.example:8080")], "/p", None).1,
        "http://a.example:8080/n"
    );
    assert_eq!(
        location(any, r#"{"derivePort": "FROM_PROTOCOL_DEFAULT"}"#, &[(":authority", "a.example:8080")], "/p", None).1,
        "http://a.example/p"
    );
    assert_eq!(
        location(any, r#"{"derivePort": "FROM_REQUEST_PORT"}"#, &[], "/p", Some(9000)).1,
        "http://a.example:9000/p"
    );
    assert_eq!(location(any, r#"{"authority": "[::1]:8080"}"#, &[], "/p", None).1, "http://[::1]:8080/p");
    // prefixRewrite swaps the matched prefix.
    assert_eq!(
        location(r#"{"uri": {"prefix": "/v1/"}}"#, r#"{"prefixRewrite": "/v2/"}"#, &[], "/v1/a?b", None).1,
        "http://a.example/v2/a?b"
    );
}

#[test]
fn direct_response_and_route_response_headers() {
    let c = cfg(r#"{"routes": [{"directResponse": {"status": 418, "body": {"string": "teapot"}},
                                 "headers": {"response": {"set": {"content-type": "text/teapot"}, "add": {"x-a": "1"}}}}]}"#);
    let h = hdrs("GET", "/", &[]);
    let Plan::Local(l) = plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)) else { panic!("local") };
    assert_eq!(l.status, 418);
    assert_eq!(l.body, b"teapot");
    // The route's headers ride on the local reply (the host supplies text/plain otherwise).
    assert_eq!(
        l.headers,
        vec![("content-type".to_string(), "text/teapot".to_string()), ("x-a".to_string(), "1".to_string())]
    );
}

fn cors_cfg(extra: &str) -> RouterConfig {
    cfg(&format!(
        r#"{{"routes": [{{"corsPolicy": {{"allowOrigins": [{{"exact": "https://a.example"}}, {{"prefix": "https://dev."}}, {{"regex": "https://[a-z]+\\.b\\.example"}}],
            "allowMethods": ["GET", "POST"], "allowHeaders": ["x-token"], "exposeHeaders": ["x-trace"], "maxAge": "1h", "allowCredentials": true{extra}}},
            "route": [{{"destination": {{"host": "c"}}}}]}}]}}"#
    ))
}

#[test]
fn cors_origin_matching() {
    let c = cors_cfg("");
    let cors = c.routes[0].cors.as_ref().expect("cors");
    assert!(origin_allowed(cors, "https://a.example"));
    assert!(!origin_allowed(cors, "https://a.example.evil"));
    assert!(origin_allowed(cors, "https://dev.anything"));
    assert!(origin_allowed(cors, "https://shop.b.example"));
    assert!(!origin_allowed(cors, "https://shop.b.example.evil"));
    assert!(!origin_allowed(cors, "http://a.example"));
    let star = cfg(
        r#"{"routes": [{"corsPolicy": {"allowOrigins": [{"exact": "*"}]}, "route": [{"destination": {"host": "c"}}]}]}"#,
    );
    assert!(origin_allowed(star.routes[0].cors.as_ref().expect("cors"), "https://whoever"));
}

#[test]
fn cors_preflight_is_answered_locally() {
    let c = cors_cfg("");
    let h = hdrs("OPTIONS", "/x", &[("origin", "https://a.example"), ("access-control-request-method", "POST")]);
    let Plan::Local(l) = plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)) else { panic!("local") };
    assert_eq!(l.status, 200);
    let get = |k: &str| l.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("access-control-allow-origin"), Some("https://a.example"));
    assert_eq!(get("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(get("access-control-allow-headers"), Some("x-token"));
    assert_eq!(get("access-control-max-age"), Some("3600"));
    assert_eq!(get("access-control-allow-credentials"), Some("true"));

    // A preflight from an unknown origin is forwarded by default …
    let h = hdrs("OPTIONS", "/x", &[("origin", "https://evil"), ("access-control-request-method", "POST")]);
    assert!(matches!(plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)), Plan::Forward(_)));
    // … and answered without CORS headers with unmatchedPreflights: IGNORE.
    let ignore = cors_cfg(r#", "unmatchedPreflights": "IGNORE""#);
    let Plan::Local(l) = plan(&ignore, &Request::from_headers(&h, None), &mut Rng::new(1)) else { panic!("local") };
    assert_eq!((l.status, l.headers.len()), (200, 0));
    // OPTIONS without access-control-request-method is not a preflight.
    let h = hdrs("OPTIONS", "/x", &[("origin", "https://a.example")]);
    assert!(matches!(plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)), Plan::Forward(_)));
}

#[test]
fn cors_actual_request_echoes_allowed_origin() {
    let c = cors_cfg("");
    let h = hdrs("GET", "/x", &[("origin", "https://dev.site")]);
    let Plan::Forward(f) = plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)) else { panic!("forward") };
    assert_eq!(f.cors_origin.as_deref(), Some("https://dev.site"));
    let hs = actual_response_headers(c.routes[0].cors.as_ref().expect("cors"), "https://dev.site");
    assert!(hs.contains(&("access-control-expose-headers".to_string(), "x-trace".to_string())));
    assert!(hs.contains(&("access-control-allow-credentials".to_string(), "true".to_string())));
    let h = hdrs("GET", "/x", &[("origin", "https://evil")]);
    let Plan::Forward(f) = plan(&c, &Request::from_headers(&h, None), &mut Rng::new(1)) else { panic!("forward") };
    assert_eq!(f.cors_origin, None);
}

#[test]
fn mirror_percentage_is_sampled() {
    let c = cfg(r#"{"routes": [{"mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 25.0},
                                 "mirrors": [{"destination": {"host": "always"}}],
                                 "route": [{"destination": {"host": "c"}}]}]}"#);
    let h = hdrs("GET", "/", &[]);
    let req = Request::from_headers(&h, None);
    let mut rng = Rng::new(99);
    let (mut shadow, mut always) = (0_u32, 0_u32);
    const N: u32 = 20_000;
    for _ in 0..N {
        let Plan::Forward(f) = plan(&c, &req, &mut rng) else { panic!("forward") };
        for m in f.mirrors {
            match m.cluster.as_str() {
                "shadow" => shadow += 1,
                "always" => always += 1,
                other => panic!("unexpected mirror {other}"),
            }
        }
    }
    assert_eq!(always, N);
    let share = f64::from(shadow) / f64::from(N);
    assert!((share - 0.25).abs() < 0.015, "shadow share {share}");
    assert_eq!(shadow_authority("a.example"), "a.example-shadow");
    assert_eq!(shadow_authority("a.example:8080"), "a.example-shadow:8080");
}

#[test]
fn rng_chance_edges_and_port_decoding() {
    let mut rng = Rng::new(5);
    assert!((0..1000).all(|_| !rng.chance(0)));
    assert!((0..1000).all(|_| rng.chance(1_000_000)));
    // Different seeds give different streams.
    assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    assert_eq!(decode_port(&8080_u64.to_le_bytes()), Some(8080));
    assert_eq!(decode_port(b"9090"), Some(9090));
    assert_eq!(decode_port(b"nope"), None);
    assert!(HeaderOps::default().is_empty());
}
