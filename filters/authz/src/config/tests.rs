use super::*;

fn err(json: &str) -> String {
    match Config::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn ok(json: &str) -> Config {
    match Config::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("rejected: {e}\n{json}"),
    }
}

fn with_when(key: &str) -> String {
    format!(r#"{{"policies":[{{"name":"p","rules":[{{}},{{"when":[{{"key":"{key}","values":["x"]}}]}}]}}]}}"#)
}

#[test]
fn empty_config_has_no_policies() {
    assert!(ok("").policies.is_empty());
    assert!(ok("{}").policies.is_empty());
    assert_eq!(ok("{}").path_mode, PathMode::Rewrite);
}

#[test]
fn full_istio_shape_parses() {
    let c = ok(r#"{"trustedProxies": 2, "pathNormalization": "reject", "policies":[
        {"name":"ext","action":"CUSTOM","provider":{"cluster":"authz","pathPrefix":"/check","timeout":"250ms",
          "failOpen":true,"statusOnError":"503","includeRequestHeadersInCheck":["X-User"],
          "headersToUpstreamOnAllow":["X-Auth-User"],"headersToDownstreamOnDeny":["WWW-Authenticate"]}, "rules":[{}]},
        {"name":"a","action":"ALLOW","dryRun":true,"rules":[{
          "from":[{"source":{"principals":["td/ns/a/sa/b"],"notPrincipals":["x*"],"requestPrincipals":["*"],
            "notRequestPrincipals":["evil/*"],"namespaces":["a"],"notNamespaces":["b"],"ipBlocks":["10.0.0.0/8"],
            "notIpBlocks":["10.1.0.0/16"],"remoteIpBlocks":["1.2.3.4"],"notRemoteIpBlocks":["::1"]}}],
          "to":[{"operation":{"hosts":["a.com"],"notHosts":["b.com"],"ports":["80"],"notPorts":[81],
            "methods":["GET"],"notMethods":["POST"],"paths":["/x","/y/*","*.png","/u/{*}/v/{**}"],"notPaths":["/z"]}}],
          "when":[{"key":"request.auth.claims[realm][role]","values":["admin"],"notValues":["guest"]}]}]}]}"#);
    assert_eq!(c.trusted_proxies, 2);
    assert_eq!(c.path_mode, PathMode::Reject);
    let p = c.policies[0].provider.clone();
    assert!(p.as_ref().is_some_and(|p| p.timeout_ms == 250 && p.fail_open && p.status_on_error == 503));
    assert!(p.as_ref().is_some_and(|p| p.path_prefix == "/check" && p.authority == "authz"));
    assert!(p.as_ref().is_some_and(|p| p.include_request_headers == vec!["x-user".to_string()]));
    assert!(c.policies[1].dry_run);
    assert_eq!(c.policies[1].rules[0].when[0].key, Key::Claim(vec!["realm".into(), "role".into()]));
}

#[test]
fn provider_path_alias_and_defaults() {
    let c =
        ok(r#"{"policies":[{"name":"e","action":"CUSTOM","provider":{"cluster":"authz","path":"/v1"},"rules":[{}]}]}"#);
    let p = c.policies[0].provider.clone();
    assert!(p.is_some_and(|p| p.path_prefix == "/v1" && p.timeout_ms == 600_000 && p.status_on_error == 403));
}

#[test]
fn unknown_condition_key_is_rejected_with_its_path() {
    let e = err(&with_when("request.foo"));
    assert!(e.contains("policies[0].rules[1].when[0].key: unknown condition key \"request.foo\""), "{e}");
}

#[test]
fn experimental_condition_key_is_rejected() {
    let e = err(&with_when("experimental.envoy.filters.network.mysql_proxy[db.table]"));
    assert!(e.contains("policies[0].rules[1].when[0].key") && e.contains("experimental keys are not supported"), "{e}");
}

#[test]
fn malformed_header_and_claim_keys_are_rejected() {
    assert!(err(&with_when("request.headers")).contains("request.headers[<name>]"));
    assert!(err(&with_when("request.headers[]")).contains("request.headers[<name>]"));
    assert!(err(&with_when("request.headers[a b]")).contains("request.headers[<name>]"));
    assert!(err(&with_when("request.auth.claims[a]x")).contains("request.auth.claims[<claim>]"));
    assert!(err(&with_when("request.auth.claims[]")).contains("request.auth.claims[<claim>]"));
}

#[test]
fn every_supported_condition_key_parses() {
    for k in [
        "request.headers[X-A]",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "request.auth.claims[groups]",
        "connection.sni",
    ] {
        ok(&with_when(k));
    }
    for (k, v) in
        [("source.ip", "10.0.0.0/8"), ("remote.ip", "1.2.3.4"), ("destination.ip", "::1"), ("destination.port", "80")]
    {
        ok(&format!(r#"{{"policies":[{{"name":"p","rules":[{{"when":[{{"key":"{k}","values":["{v}"]}}]}}]}}]}}"#));
    }
    assert_eq!(parse_key("request.headers[X-A]"), Ok(Key::Header("x-a".into())));
    assert_eq!(parse_key("request.headers[:authority]"), Ok(Key::Header(":authority".into())));
}

#[test]
fn condition_values_are_typed() {
    let e = err(r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"source.ip","values":["10.0.0.0/40"]}]}]}]}"#);
    assert!(e.contains("policies[0].rules[0].when[0].values[0]"), "{e}");
    let e = err(r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"destination.port","notValues":["http"]}]}]}]}"#);
    assert!(e.contains("policies[0].rules[0].when[0].notValues[0]"), "{e}");
    let e = err(r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"source.ip"}]}]}]}"#);
    assert!(e.contains("needs values or notValues"), "{e}");
}

#[test]
fn unknown_fields_are_rejected_with_the_policy_index() {
    let e = err(r#"{"policies":[{"name":"ok"},{"name":"p","rules":[{"to":[{"operation":{"pathz":["/"]}}]}]}]}"#);
    assert!(e.contains("policies[1]") && e.contains("pathz"), "{e}");
    let e = err(r#"{"policy":[]}"#);
    assert!(e.contains("policy"), "{e}");
}

#[test]
fn actions_and_providers_are_checked() {
    assert!(err(r#"{"policies":[{"name":"p","action":"allow"}]}"#).contains("policies[0].action"));
    assert!(
        err(r#"{"policies":[{"name":"p","action":"CUSTOM"}]}"#).contains("policies[0].provider: action CUSTOM needs")
    );
    assert!(err(r#"{"policies":[{"name":"p","provider":{"cluster":"x"}}]}"#).contains("only action CUSTOM"));
    let e = err(r#"{"policies":[{"name":"p","action":"CUSTOM","dryRun":true,"provider":{"cluster":"x"}}]}"#);
    assert!(e.contains("policies[0].dryRun"), "{e}");
    let e = err(r#"{"policies":[{"name":"p","action":"CUSTOM","provider":{"cluster":"x","timeout":"5"}}]}"#);
    assert!(e.contains("policies[0].provider.timeout"), "{e}");
    let e = err(r#"{"policies":[{"name":"p","action":"CUSTOM","provider":{"cluster":"x","statusOnError":99}}]}"#);
    assert!(e.contains("policies[0].provider.statusOnError"), "{e}");
}

#[test]
fn names_must_be_present_and_unique() {
    assert!(err(r#"{"policies":[{"name":""}]}"#).contains("policies[0].name: must not be empty"));
    assert!(err(r#"{"policies":[{"name":"a"},{"name":"a"}]}"#).contains("policies[1].name: duplicate"));
}

#[test]
fn wildcards_only_at_the_ends() {
    let e = err(r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"notPrincipals":["a*b"]}}]}]}]}"#);
    assert!(e.contains("policies[0].rules[0].from[0].source.notPrincipals[0]"), "{e}");
    assert!(err(r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"methods":["*GET*"]}}]}]}]}"#)
        .contains("methods[0]"));
    assert!(err(r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"hosts":[""]}}]}]}]}"#).contains("hosts[0]"));
}

#[test]
fn paths_that_could_never_match_are_rejected() {
    let e =
        err(r#"{"policies":[{"name":"p","action":"DENY","rules":[{"to":[{"operation":{"paths":["/a//admin"]}}]}]}]}"#);
    assert!(e.contains("policies[0].rules[0].to[0].operation.paths[0]") && e.contains("\"/a/admin\""), "{e}");
    assert!(err(r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"notPaths":["/a/../b*"]}}]}]}]}"#)
        .contains("notPaths[0]"));
    assert!(err(r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"paths":["admin"]}}]}]}]}"#)
        .contains("must start with '/'"));
}

#[test]
fn templates_are_checked() {
    let e = |p: &str| {
        err(&format!(r#"{{"policies":[{{"name":"p","rules":[{{"to":[{{"operation":{{"paths":["{p}"]}}}}]}}]}}]}}"#))
    };
    assert!(e("/a/{**}/b").contains("must be the last segment"));
    assert!(e("/a/x{*}").contains("whole segments"));
    assert!(e("/a/{x}").contains("whole segments"));
    assert!(e("a/{*}").contains("must start with '/'"));
    assert!(e("/a//{*}").contains("normal form"));
}

#[test]
fn bad_ips_and_ports_name_their_field() {
    let e = err(
        r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"remoteIpBlocks":["x"]}}]},{"to":[{"operation":{"ports":[0]}}]}]}]}"#,
    );
    assert!(e.contains("policies[0].rules[0].from[0].source.remoteIpBlocks[0]"), "{e}");
    assert!(e.contains("policies[0].rules[1].to[0].operation.ports[0]"), "{e}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let e = err(
        r#"{"pathNormalization":"maybe","policies":[{"name":"","action":"NOPE"},{"name":"b","rules":[{"when":[{"key":"bad","values":["x"]}]}]}]}"#,
    );
    for want in ["pathNormalization", "policies[0].name", "policies[0].action", "policies[1].rules[0].when[0].key"] {
        assert!(e.contains(want), "{want} missing in {e}");
    }
}

#[test]
fn the_request_principal_is_batched_only_for_policies_that_match_on_it() {
    assert!(
        !ok(r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}]}"#).reads_request_principal
    );
    assert!(!ok(&with_when("request.headers[x-a]")).reads_request_principal);
    assert!(ok(&with_when("request.auth.principal")).reads_request_principal);
    assert!(
        ok(r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}]}"#)
            .reads_request_principal
    );
    assert!(
        ok(r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"notRequestPrincipals":["a/b"]}}]}]}]}"#)
            .reads_request_principal
    );
}
