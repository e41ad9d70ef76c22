use super::*;

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn ok(json: &str) -> RouterConfig {
    match parse(json.as_bytes(), &no_labels()) {
        Ok(c) => c,
        Err(e) => panic!("config should parse: {e}\n{json}"),
    }
}

fn err(json: &str) -> String {
    match parse(json.as_bytes(), &no_labels()) {
        Ok(_) => panic!("config should be rejected:\n{json}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_config_passes_everything() {
    let c = ok("");
    assert!(c.routes.is_empty());
    assert!(!c.strict);
    let c = ok("{}");
    assert!(c.routes.is_empty());
    assert_eq!(c.mirror_body_limit, DEFAULT_MIRROR_BODY_LIMIT);
}

#[test]
fn istio_virtual_service_http_list_parses() {
    // The bookinfo-style rules from Istio's docs, as JSON.
    let c = ok(r#"{"strict": true, "routes": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}]},
        {"match": [{"uri": {"prefix": "/api"}, "ignoreUriCase": true, "gateways": ["mesh"]}],
         "rewrite": {"uri": "/v1/api", "authority": "api.internal"},
         "timeout": "1.5s",
         "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                   {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10,
                    "headers": {"response": {"set": {"X-Canary": "yes"}}}}],
         "headers": {"request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]}},
         "mirror": {"host": "reviews-shadow"}, "mirrorPercentage": {"value": 12.5},
         "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}, {"regex": "https://.*\\.b\\.example"}],
                        "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"], "exposeHeaders": ["x-b"],
                        "maxAge": "24h", "allowCredentials": true}},
        {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new", "authority": "b.example", "redirectCode": 302}},
        {"match": [{"uri": {"exact": "/health"}}], "directResponse": {"status": 200, "body": {"string": "ok"}}},
        {"route": [{"destination": {"host": "reviews"}}]}
    ]}"#);
    assert!(c.strict);
    assert_eq!(c.routes.len(), 5);
    assert_eq!(c.routes[0].name.as_deref(), Some("jason"));
    assert!(
        matches!(c.routes[0].matches[0].headers[0], (ref n, StringMatch::Exact(ref v)) if n == "end-user" && v == "jason")
    );
    let r1 = &c.routes[1];
    assert_eq!(r1.timeout_ms, Some(1500));
    assert!(r1.matches[0].ignore_uri_case);
    let RouteAction::Forward { destinations, total_weight } = &r1.action else { panic!("forward") };
    assert_eq!(*total_weight, 100);
    assert_eq!(destinations[1].subset.as_deref(), Some("v3"));
    // Header names are lowercased.
    assert_eq!(destinations[1].headers.response.set, vec![("x-canary".to_string(), "yes".to_string())]);
    assert_eq!(r1.mirrors[0].cluster, "reviews-shadow");
    assert_eq!(r1.mirrors[0].per_million, 125_000);
    let cors = r1.cors.as_ref().expect("cors");
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.max_age_secs, Some(86_400));
    assert!(cors.allow_credentials);
    let RouteAction::Redirect(red) = &c.routes[2].action else { panic!("redirect") };
    assert_eq!(red.status, 302);
    let RouteAction::Direct(d) = &c.routes[3].action else { panic!("direct") };
    assert_eq!((d.status, d.body.as_slice()), (200, &b"ok"[..]));
    assert!(c.routes[4].matches.is_empty());
    assert!(!c.needs_port);
}

#[test]
fn bad_regex_names_the_field_path() {
    let e = err(r#"{"routes": [
        {"route": [{"destination": {"host": "a"}}]},
        {"route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"prefix": "/"}}, {"uri": {"regex": "("}}], "route": [{"destination": {"host": "a"}}]}
    ]}"#);
    assert!(e.starts_with(r#"routes[2].match[1].uri.regex: invalid regex "(": "#), "{e}");
    let e = err(
        r#"{"routes": [{"match": [{"headers": {"x-a": {"regex": "[z-a]"}}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with(r#"routes[0].match[0].headers.x-a.regex: invalid regex "[z-a]""#), "{e}");
    let e = err(
        r#"{"routes": [{"corsPolicy": {"allowOrigins": [{"regex": "a{99999999}"}]}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].corsPolicy.allowOrigins[0].regex: invalid regex"), "{e}");
    let e = err(
        r#"{"routes": [{"rewrite": {"uriRegexRewrite": {"match": "^/(a", "rewrite": "/"}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].rewrite.uriRegexRewrite.match: invalid regex"), "{e}");
    let e = err(
        r#"{"routes": [{"match": [{"queryParams": {"v": {"regex": "*"}}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].match[0].queryParams.v.regex: invalid regex"), "{e}");
}

#[test]
fn case_insensitive_regex_flag_compiles() {
    // Istio documents `(?i)` for case-insensitive matches.
    let c = ok(
        r#"{"routes": [{"match": [{"uri": {"regex": "(?i)/API/.*"}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    let Some(StringMatch::Regex(re)) = &c.routes[0].matches[0].uri else { panic!("regex") };
    assert!(re.is_match("/api/x"));
    // Anchored: a regex matches the whole value, not a substring.
    assert!(!re.is_match("/v1/api/x"));
}

#[test]
fn serde_errors_carry_the_path() {
    let e = err(r#"{"routes": [{"route": [{"destination": {"host": "a"}}]}, {"match": [{"urii": {"exact": "/"}}]}]}"#);
    assert!(e.starts_with("routes[1].match[0].urii: unknown field `urii`"), "{e}");
    let e = err(r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": "ten"}]}]}"#);
    assert!(e.starts_with("routes[0].route[0].weight: invalid type"), "{e}");
    let e = err(r#"{"route": []}"#);
    assert!(e.contains("unknown field `route`"), "{e}");
    // Type names in messages are Istio's, not Rust's.
    let e = err(r#"{"routes": [{"match": [{"uri": "/foo"}], "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(
        e.starts_with(r#"routes[0].match[0].uri: invalid type: string "/foo", expected a StringMatch object ({exact|prefix|regex: string})"#),
        "{e}"
    );
    let e = err(r#"[{"route": [{"destination": {"host": "a"}}]}]"#);
    assert_eq!(e, "the router config is an object, not a list: put a VirtualService's http: list under routes:");
    let e = err(r#""routes""#);
    assert!(e.contains("expected the router config object"), "{e}");
    let e = err(r#"{"routes": {"route": []}}"#);
    assert!(e.starts_with("routes: invalid type: map, expected a sequence"), "{e}");
    let e = err(r#"{"routes": [{"route": [{"destination": {}}]}]}"#);
    assert!(e.starts_with("routes[0].route[0].destination: missing field `host`"), "{e}");
}

#[test]
fn string_match_needs_exactly_one_kind() {
    let e = err(
        r#"{"routes": [{"match": [{"uri": {"exact": "/", "prefix": "/"}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert_eq!(e, "routes[0].match[0].uri: give only one of exact, prefix, regex");
    let e = err(r#"{"routes": [{"match": [{"method": {}}], "route": [{"destination": {"host": "a"}}]}]}"#);
    assert_eq!(e, "routes[0].match[0].method: needs one of exact, prefix, regex");
    // `{}` is presence for headers (and absence under withoutHeaders).
    let c = ok(
        r#"{"routes": [{"match": [{"headers": {"X-Present": {}}, "withoutHeaders": {"x-gone": {}}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    let m = &c.routes[0].matches[0];
    assert!(matches!(m.headers[0], (ref n, StringMatch::Present) if n == "x-present"));
    assert!(matches!(m.without_headers[0], (ref n, StringMatch::Present) if n == "x-gone"));
}

#[test]
fn weights_are_validated() {
    let e = err(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 50}, {"destination": {"host": "b"}, "weight": -1}]}]}"#,
    );
    assert_eq!(e, "routes[0].route[1].weight: must be >= 0, got -1");
    let e = err(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}}]}]}"#,
    );
    assert_eq!(e, "routes[0].route: the weights sum to 0: give at least one destination a positive weight");
    let e = err(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 3000000000}, {"destination": {"host": "b"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].route[0].weight: 3000000000 is larger than"), "{e}");
    // Weights need not sum to 100: each gets weight/sum.
    let c = ok(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 1}, {"destination": {"host": "b"}, "weight": 3}]}]}"#,
    );
    assert!(matches!(c.routes[0].action, RouteAction::Forward { total_weight: 4, .. }));
    // A single destination takes everything, whatever its weight.
    let c = ok(r#"{"routes": [{"route": [{"destination": {"host": "a"}, "weight": 0}]}]}"#);
    assert!(matches!(c.routes[0].action, RouteAction::Forward { total_weight: 1, .. }));
    let e = err(r#"{"routes": [{"route": [{"destination": {"host": " "}}]}]}"#);
    assert_eq!(e, "routes[0].route[0].destination.host: cluster name is empty");
}

#[test]
fn actions_are_exclusive_and_required() {
    let e = err(r#"{"routes": [{"match": [{"uri": {"prefix": "/"}}]}]}"#);
    assert_eq!(e, "routes[0]: needs one of route, redirect or directResponse");
    let e = err(r#"{"routes": [{"route": [{"destination": {"host": "a"}}], "redirect": {"uri": "/x"}}]}"#);
    assert_eq!(e, "routes[0]: route and redirect are mutually exclusive; give only one");
    let e = err(r#"{"routes": [{"redirect": {"uri": "/x"}, "rewrite": {"uri": "/y"}}]}"#);
    assert_eq!(e, "routes[0].rewrite: only applies to a route (not to redirect or directResponse)");
    let e = err(r#"{"routes": [{"directResponse": {"status": 200}, "timeout": "1s"}]}"#);
    assert_eq!(e, "routes[0].timeout: only applies to a route (not to redirect or directResponse)");
    let e = err(r#"{"routes": [{"directResponse": {"status": 200}, "mirror": {"host": "m"}}]}"#);
    assert_eq!(e, "routes[0].mirror: only applies to a route (not to redirect or directResponse)");
}

#[test]
fn fields_owned_by_other_filters_point_there() {
    let e = err(r#"{"routes": [{"retries": {"attempts": 3}, "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(e.starts_with("routes[0].retries: retries are not handled by the router"), "{e}");
    assert!(e.contains("builtin:retry"), "{e}");
    let e = err(r#"{"routes": [{"fault": {"abort": {}}, "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(e.contains("builtin:fault"), "{e}");
    let e = err(
        r#"{"routes": [{"mirror": {"host": "m"}, "mirrorPercent": 5, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].mirrorPercent: deprecated"), "{e}");
}

#[test]
fn redirect_validation() {
    let e = err(r#"{"routes": [{"redirect": {"redirectCode": 200}}]}"#);
    assert_eq!(e, "routes[0].redirect.redirectCode: 200 is not a redirect code (301, 302, 303, 307, 308)");
    let e = err(r#"{"routes": [{"redirect": {"port": 80, "derivePort": "FROM_REQUEST_PORT"}}]}"#);
    assert_eq!(e, "routes[0].redirect: port and derivePort are mutually exclusive");
    let e = err(r#"{"routes": [{"redirect": {"derivePort": "SOMETIMES"}}]}"#);
    assert!(e.starts_with("routes[0].redirect.derivePort: \"SOMETIMES\""), "{e}");
    let e = err(r#"{"routes": [{"match": [{"uri": {"exact": "/a"}}], "redirect": {"prefixRewrite": "/b"}}]}"#);
    assert_eq!(e, "routes[0].redirect.prefixRewrite: needs every match block to have a uri prefix match");
    let e = err(r#"{"routes": [{"redirect": {"uri": "relative"}}]}"#);
    assert_eq!(e, "routes[0].redirect.uri: \"relative\" must start with '/'");
    let c = ok(r#"{"routes": [{"redirect": {"derivePort": "FROM_REQUEST_PORT", "scheme": "HTTPS"}}]}"#);
    assert!(c.needs_port);
    let RouteAction::Redirect(r) = &c.routes[0].action else { panic!("redirect") };
    assert_eq!((r.status, r.scheme.as_deref(), r.port), (301, Some("https"), RedirectPort::RequestPort));
}

#[test]
fn direct_response_validation() {
    let e = err(r#"{"routes": [{"directResponse": {"status": 99}}]}"#);
    assert_eq!(e, "routes[0].directResponse.status: 99 is outside 200..=599");
    let e = err(r#"{"routes": [{"directResponse": {"status": 200, "body": {"bytes": "!!"}}}]}"#);
    assert_eq!(e, "routes[0].directResponse.body.bytes: is not valid base64");
    let c = ok(r#"{"routes": [{"directResponse": {"status": 503, "body": {"bytes": "aGVsbG8gd29ybGQ="}}}]}"#);
    let RouteAction::Direct(d) = &c.routes[0].action else { panic!("direct") };
    assert_eq!(d.body, b"hello world");
}

#[test]
fn header_edits_are_validated() {
    let e = err(
        r#"{"routes": [{"headers": {"request": {"set": {":path": "/x"}}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].headers.request.set.:path: pseudo-header"), "{e}");
    let e = err(
        r#"{"routes": [{"route": [{"destination": {"host": "a"}, "headers": {"response": {"add": {"bad name": "v"}}}}]}]}"#,
    );
    assert_eq!(e, "routes[0].route[0].headers.response.add.bad name: \"bad name\" is not a valid header name");
    let e = err(
        r#"{"routes": [{"headers": {"request": {"set": {"x-a": "a\r\nb"}}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].headers.request.set.x-a: \"a\\r\\nb\" contains control characters"), "{e}");
}

#[test]
fn rewrite_validation_and_substitution() {
    let e = err(
        r#"{"routes": [{"rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert_eq!(e, "routes[0].rewrite: uri and uriRegexRewrite are mutually exclusive");
    let e = err(
        r#"{"routes": [{"rewrite": {"uriRegexRewrite": {"match": "^/(a)$", "rewrite": "/\\2"}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].rewrite.uriRegexRewrite.rewrite: \\2 refers to a group"), "{e}");
    let c = ok(
        r#"{"routes": [{"rewrite": {"uriRegexRewrite": {"match": "^/service/([^/]+)(/.*)$", "rewrite": "\\2/instance/\\1$"}}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    let rw = c.routes[0].rewrite.as_ref().and_then(|r| r.uri_regex.as_ref()).expect("regex rewrite");
    assert_eq!(rw.1, "${2}/instance/${1}$$");
}

#[test]
fn durations_and_percentages() {
    assert_eq!(parse_duration_nanos("2s"), Ok(2_000_000_000));
    assert_eq!(parse_duration_nanos("0.5s"), Ok(500_000_000));
    assert_eq!(parse_duration_nanos("100ms"), Ok(100_000_000));
    assert_eq!(parse_duration_nanos("1m30s"), Ok(90_000_000_000));
    assert_eq!(parse_duration_nanos("1h"), Ok(3_600_000_000_000));
    assert_eq!(parse_duration_nanos("0s"), Ok(0));
    assert_eq!(parse_duration_nanos("250us"), Ok(250_000));
    for bad in ["", "2", "s", "2x", "-1s", "1..2s", "99999999999999h"] {
        assert!(parse_duration_nanos(bad).is_err(), "{bad:?} should be rejected");
    }
    let e = err(r#"{"routes": [{"timeout": "2 sec", "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(e.starts_with("routes[0].timeout: invalid duration \"2 sec\""), "{e}");
    // Under a millisecond rounds up (0 would mean "no timeout").
    let c = ok(r#"{"routes": [{"timeout": "10us", "route": [{"destination": {"host": "a"}}]}]}"#);
    assert_eq!(c.routes[0].timeout_ms, Some(1));
    let e = err(
        r#"{"routes": [{"mirror": {"host": "m"}, "mirrorPercentage": {"value": 120}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert_eq!(e, "routes[0].mirrorPercentage.value: 120 is outside 0..=100 (a percentage)");
    let e = err(
        r#"{"routes": [{"mirrors": [{"destination": {"host": "m", "subset": "v2"}}], "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].mirrors[0].destination.subset: mirrors go through http_call"), "{e}");
    let e = err(r#"{"routes": [{"mirrorPercentage": {"value": 1}, "route": [{"destination": {"host": "a"}}]}]}"#);
    assert_eq!(e, "routes[0].mirrorPercentage: needs mirror");
}

#[test]
fn source_labels_select_against_this_workload() {
    let json = r#"{"routes": [{"match": [{"sourceLabels": {"app": "web", "version": "v1"}}], "route": [{"destination": {"host": "a"}}]},
                                {"match": [{"sourceNamespace": "prod"}], "route": [{"destination": {"host": "a"}}]}]}"#;
    let mut node = BTreeMap::new();
    node.insert("app".to_string(), "web".to_string());
    node.insert("version".to_string(), "v1".to_string());
    node.insert("NAMESPACE".to_string(), "prod".to_string());
    let c = parse(json.as_bytes(), &node).expect("parses");
    assert!(c.routes[0].matches[0].source_selected);
    assert!(c.routes[1].matches[0].source_selected);
    node.insert("version".to_string(), "v2".to_string());
    node.insert("NAMESPACE".to_string(), "dev".to_string());
    let c = parse(json.as_bytes(), &node).expect("parses");
    assert!(!c.routes[0].matches[0].source_selected);
    assert!(!c.routes[1].matches[0].source_selected);
    // `workloadLabels` in the config replaces the node metadata.
    let with_override =
        json.replacen('{', r#"{"workloadLabels": {"app": "web", "version": "v1"}, "workloadNamespace": "prod","#, 1);
    let c = parse(with_override.as_bytes(), &node).expect("parses");
    assert!(c.routes[0].matches[0].source_selected);
    assert!(c.routes[1].matches[0].source_selected);
}

#[test]
fn cors_validation() {
    let e = err(
        r#"{"routes": [{"corsPolicy": {"unmatchedPreflights": "DROP"}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert!(e.starts_with("routes[0].corsPolicy.unmatchedPreflights: \"DROP\""), "{e}");
    let e = err(r#"{"routes": [{"corsPolicy": {"maxAge": "forever"}, "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(e.starts_with("routes[0].corsPolicy.maxAge: invalid duration"), "{e}");
    let c = ok(
        r#"{"routes": [{"corsPolicy": {"allowOrigin": ["https://old.example"], "unmatchedPreflights": "IGNORE"}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    let cors = c.routes[0].cors.as_ref().expect("cors");
    assert!(matches!(&cors.allow_origins[0], StringMatch::Exact(s) if s == "https://old.example"));
    assert!(cors.ignore_unmatched_preflights);
}

#[test]
fn port_match_is_checked_and_requested() {
    let e = err(r#"{"routes": [{"match": [{"port": 70000}], "route": [{"destination": {"host": "a"}}]}]}"#);
    assert_eq!(e, "routes[0].match[0].port: 70000 is not a port (1..=65535)");
    let c = ok(r#"{"routes": [{"match": [{"port": 8080}], "route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(c.needs_port);
}

#[test]
fn base64_round_trips_known_vectors() {
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
    assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
    assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
    assert_eq!(base64_decode("Zm9vYg").as_deref(), Some(&b"foob"[..]));
    assert_eq!(base64_decode("Z"), None);
    assert_eq!(base64_decode("Zm9v===="), None);
}

#[test]
fn only_the_headers_rules_read_are_fetched() {
    let c = ok(r#"{"routes": [
        {"match": [{"uri": {"prefix": "/a"}, "headers": {"X-User": {"exact": "j"}}}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{"withoutHeaders": {"x-user": {}}, "method": {"exact": "GET"}}], "route": [{"destination": {"host": "a"}}]}
    ]}"#);
    assert_eq!(c.needed_headers, vec![":path", "x-user", ":method"]);
    let c = ok(r#"{"routes": [{"redirect": {"uri": "/x"}}]}"#);
    assert_eq!(c.needed_headers, vec![":path", ":authority", ":scheme"]);
    let c = ok(
        r#"{"routes": [{"corsPolicy": {"allowOrigins": [{"exact": "*"}]}, "route": [{"destination": {"host": "a"}}]}]}"#,
    );
    assert_eq!(c.needed_headers, vec![":method", "origin", "access-control-request-method"]);
    // A catch-all rule reads nothing.
    let c = ok(r#"{"routes": [{"route": [{"destination": {"host": "a"}}]}]}"#);
    assert!(c.needed_headers.is_empty());
}

#[test]
fn surprising_but_valid_settings_are_warned_about() {
    let c = ok(r#"{"routes": [
        {"match": [{"headers": {"x": {}}}], "rewrite": {"uri": "/v2"}, "route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"prefix": "/api"}}], "rewrite": {"uri": "/"}, "route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"prefix": "/"}}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"exact": "/never"}}], "route": [{"destination": {"host": "a"}}]}
    ]}"#);
    assert_eq!(c.warnings.len(), 3, "{:#?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("routes[0].rewrite.uri: without a uri match only the leading '/' is replaced"),
        "{}",
        c.warnings[0]
    );
    assert!(c.warnings[0].contains("/foo becomes /v2foo"), "{}", c.warnings[0]);
    assert!(c.warnings[1].contains("/api/x becomes //x"), "{}", c.warnings[1]);
    assert_eq!(c.warnings[2], "routes[3] is unreachable: routes[2] matches every request first");
    // The usual shapes are quiet.
    let c = ok(r#"{"routes": [
        {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/"}, "route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"prefix": "/"}, "method": {"exact": "GET"}}], "route": [{"destination": {"host": "a"}}]},
        {"route": [{"destination": {"host": "a"}}]}
    ]}"#);
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
}

#[test]
fn every_bad_rule_is_reported() {
    let e = match parse(
        br#"{"routes": [
            {"match": [{"uri": {"regex": "("}}], "route": [{"destination": {"host": "a"}}]},
            {"route": [{"destination": {"host": "a"}}]},
            {"redirect": {"redirectCode": 200}}
        ]}"#,
        &no_labels(),
    ) {
        Ok(_) => panic!("two bad rules"),
        Err(e) => e,
    };
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(e.0[0].path, "routes[0].match[0].uri.regex");
    assert_eq!(e.0[1].path, "routes[2].redirect.redirectCode");
    assert!(e.to_string().contains("; routes[2].redirect.redirectCode: 200 is not a redirect code"), "{e}");
}

#[test]
fn the_callbacks_a_config_needs_follow_its_rules() {
    // Request-side rules only: no response headers, no bodies.
    let c = ok(
        r#"{"routes": [{"route": [{"destination": {"host": "web"}}], "headers": {"request": {"set": {"a": "1"}}}}]}"#,
    );
    assert!(!c.edits_responses() && !c.mirrors());
    // Response ops on the route, on a destination, or CORS: response headers.
    for json in [
        r#"{"routes": [{"route": [{"destination": {"host": "web"}}], "headers": {"response": {"remove": ["server"]}}}]}"#,
        r#"{"routes": [{"route": [{"destination": {"host": "web"}, "headers": {"response": {"add": {"x": "1"}}}}]}]}"#,
        r#"{"routes": [{"route": [{"destination": {"host": "web"}}], "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}]}}]}"#,
    ] {
        assert!(ok(json).edits_responses(), "{json}");
    }
    // A mirror reads request bodies.
    let c = ok(r#"{"routes": [{"route": [{"destination": {"host": "web"}}], "mirror": {"host": "shadow"}}]}"#);
    assert!(c.mirrors() && !c.edits_responses());
}
