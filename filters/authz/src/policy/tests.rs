use super::*;
use crate::config::Config;

/// A request with plain fields.
#[derive(Default)]
struct Req {
    method: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    source: Option<IpAddr>,
    remote: Option<IpAddr>,
    dest: Option<(IpAddr, u16)>,
    sni: Option<String>,
    peer: Option<String>,
    request_principal: Option<String>,
    claims: Option<Value>,
    audiences: Vec<String>,
    presenter: Option<String>,
}

impl Request for Req {
    fn method(&self) -> &str {
        &self.method
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let vs: Vec<&str> =
            self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!vs.is_empty()).then(|| Cow::Owned(vs.join(",")))
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.source
    }
    fn remote_ip(&self) -> Option<IpAddr> {
        self.remote
    }
    fn destination_ip(&self) -> Option<IpAddr> {
        self.dest.map(|d| d.0)
    }
    fn destination_port(&self) -> Option<u16> {
        self.dest.map(|d| d.1)
    }
    fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }
    fn peer_principal(&self) -> Option<&str> {
        self.peer.as_deref()
    }
    fn request_principal(&self) -> Option<&str> {
        self.request_principal.as_deref()
    }
    fn claims(&self) -> Option<&Value> {
        self.claims.as_ref()
    }
    fn audiences(&self) -> &[String] {
        &self.audiences
    }
    fn presenter(&self) -> Option<&str> {
        self.presenter.as_deref()
    }
}

fn get(path: &str) -> Req {
    Req { method: "GET".into(), host: "web.example.com".into(), path: path.into(), ..Req::default() }
}

fn with_method(method: &str, path: &str) -> Req {
    Req { method: method.into(), ..get(path) }
}

fn policies(json: &str) -> Vec<Policy> {
    match Config::from_json(json.as_bytes()) {
        Ok(c) => c.policies,
        Err(e) => panic!("config rejected: {e}"),
    }
}

fn decision(json: &str, r: &Req) -> Decision {
    evaluate(&policies(json), r).decision
}

fn allowed(json: &str, r: &Req) -> bool {
    matches!(decision(json, r), Decision::Allow { .. })
}

fn ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

// --- evaluation order ---

#[test]
fn no_policies_allow_everything() {
    assert_eq!(decision(r#"{"policies":[]}"#, &get("/")), Decision::Allow { by: None });
}

#[test]
fn allow_policy_allows_matching_path_and_method() {
    let p = r#"{"policies":[{"name":"a","action":"ALLOW","rules":[{"to":[{"operation":{"methods":["GET"],"paths":["/api/*"]}}]}]}]}"#;
    assert_eq!(decision(p, &get("/api/x")), Decision::Allow { by: Some(Hit { policy: 0, rule: 0 }) });
    assert!(!allowed(p, &with_method("POST", "/api/x")));
    assert!(!allowed(p, &get("/other")));
}

#[test]
fn default_deny_once_an_allow_policy_exists() {
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/public"]}}]}]}]}"#;
    assert_eq!(decision(p, &get("/private")), Decision::Deny { by: None });
}

#[test]
fn allow_policy_without_rules_allows_nothing() {
    assert!(!allowed(r#"{"policies":[{"name":"allow-nothing","action":"ALLOW"}]}"#, &get("/")));
}

#[test]
fn empty_rule_matches_everything() {
    assert!(allowed(r#"{"policies":[{"name":"allow-all","action":"ALLOW","rules":[{}]}]}"#, &get("/x")));
}

#[test]
fn deny_wins_over_allow() {
    let p = r#"{"policies":[
        {"name":"all","action":"ALLOW","rules":[{}]},
        {"name":"no-admin","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin*"]}}]}]}]}"#;
    assert_eq!(decision(p, &get("/admin/x")), Decision::Deny { by: Some(Hit { policy: 1, rule: 0 }) });
    assert!(allowed(p, &get("/home")));
}

#[test]
fn deny_policy_alone_allows_the_rest() {
    let p = r#"{"policies":[{"name":"d","action":"DENY","rules":[{"to":[{"operation":{"methods":["DELETE"]}}]}]}]}"#;
    assert!(allowed(p, &get("/x")));
    assert!(!allowed(p, &with_method("DELETE", "/x")));
}

#[test]
fn audit_never_changes_the_decision() {
    let p = r#"{"policies":[{"name":"audit-all","action":"AUDIT","rules":[{}]}]}"#;
    let e = evaluate(&policies(p), &get("/x"));
    assert_eq!(e.decision, Decision::Allow { by: None });
    assert_eq!(e.audits, vec![Hit { policy: 0, rule: 0 }]);
    // And it does not count as an ALLOW policy (no default deny).
    let p =
        r#"{"policies":[{"name":"audit-none","action":"AUDIT","rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}]}"#;
    let e = evaluate(&policies(p), &get("/x"));
    assert_eq!(e.decision, Decision::Allow { by: None });
    assert!(e.audits.is_empty());
}

#[test]
fn custom_is_identified_first_and_does_not_bypass_deny() {
    let p = r#"{"policies":[
        {"name":"ext","action":"CUSTOM","provider":{"cluster":"authz"},"rules":[{"to":[{"operation":{"paths":["/ext*"]}}]}]},
        {"name":"d","action":"DENY","rules":[{"to":[{"operation":{"paths":["/ext/secret"]}}]}]}]}"#;
    let e = evaluate(&policies(p), &get("/ext/secret"));
    assert_eq!(e.custom, Some(Hit { policy: 0, rule: 0 }));
    assert_eq!(e.decision, Decision::Deny { by: Some(Hit { policy: 1, rule: 0 }) });
    let e = evaluate(&policies(p), &get("/other"));
    assert_eq!(e.custom, None);
}

#[test]
fn custom_policy_is_not_an_allow_policy() {
    let p = r#"{"policies":[{"name":"ext","action":"CUSTOM","provider":{"cluster":"authz"},"rules":[{}]}]}"#;
    assert_eq!(evaluate(&policies(p), &get("/x")).decision, Decision::Allow { by: None });
}

#[test]
fn dry_run_deny_is_reported_not_enforced() {
    let p = r#"{"policies":[{"name":"d","action":"DENY","dryRun":true,"rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}]}"#;
    let e = evaluate(&policies(p), &get("/a"));
    assert_eq!(e.decision, Decision::Allow { by: None });
    assert_eq!(e.dry_run, Some(Decision::Deny { by: Some(Hit { policy: 0, rule: 0 }) }));
    assert_eq!(evaluate(&policies(p), &get("/b")).dry_run, None);
}

#[test]
fn dry_run_allow_reports_the_would_be_default_deny() {
    let p = r#"{"policies":[{"name":"a","action":"ALLOW","dryRun":true,"rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}]}"#;
    let e = evaluate(&policies(p), &get("/b"));
    assert_eq!(e.decision, Decision::Allow { by: None });
    assert_eq!(e.dry_run, Some(Decision::Deny { by: None }));
    let e = evaluate(&policies(p), &get("/a"));
    assert_eq!(e.dry_run, Some(Decision::Allow { by: Some(Hit { policy: 0, rule: 0 }) }));
}

#[test]
fn first_matching_rule_index_is_reported() {
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/x"]}}]},{"to":[{"operation":{"paths":["/y"]}}]}]}]}"#;
    assert_eq!(decision(p, &get("/y")), Decision::Allow { by: Some(Hit { policy: 0, rule: 1 }) });
}

// --- string matching ---

#[test]
fn string_match_exact_prefix_suffix_presence() {
    assert!(StringMatch::parse("abc").matches("abc"));
    assert!(!StringMatch::parse("abc").matches("abcd"));
    assert!(StringMatch::parse("ab*").matches("abcd"));
    assert!(!StringMatch::parse("ab*").matches("xab"));
    assert!(StringMatch::parse("*cd").matches("abcd"));
    assert!(!StringMatch::parse("*cd").matches("cdx"));
    assert!(StringMatch::parse("*").matches("x"));
    assert!(!StringMatch::parse("*").matches(""));
}

#[test]
fn hosts_match_case_insensitively_with_or_without_port() {
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"hosts":["Web.Example.COM"]}}]}]}]}"#;
    assert!(allowed(p, &Req { host: "WEB.example.com:8080".into(), ..get("/") }));
    assert!(allowed(p, &Req { host: "web.example.com".into(), ..get("/") }));
    assert!(!allowed(p, &Req { host: "other.example.com".into(), ..get("/") }));
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"hosts":["*.example.com"]}}]}]}]}"#;
    assert!(allowed(p, &Req { host: "api.EXAMPLE.com".into(), ..get("/") }));
}

#[test]
fn not_fields_exclude() {
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/api/*"],"notPaths":["/api/internal*"]}}]}]}]}"#;
    assert!(allowed(p, &get("/api/x")));
    assert!(!allowed(p, &get("/api/internal/x")));
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"notMethods":["DELETE"]}}]}]}]}"#;
    assert!(allowed(p, &get("/")));
    assert!(!allowed(p, &with_method("DELETE", "/")));
}

#[test]
fn ports_match_destination_port() {
    let p = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"ports":["8080", 9090]}}]}]}]}"#;
    assert!(allowed(p, &Req { dest: Some((IpAddr::from([10, 0, 0, 1]), 8080)), ..get("/") }));
    assert!(allowed(p, &Req { dest: Some((IpAddr::from([10, 0, 0, 1]), 9090)), ..get("/") }));
    assert!(!allowed(p, &Req { dest: Some((IpAddr::from([10, 0, 0, 1]), 80)), ..get("/") }));
    assert!(!allowed(p, &get("/")));
}

// --- paths ---

#[test]
fn path_templates_single_and_multi_segment() {
    let one = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/users/{*}/profile"]}}]}]}]}"#;
    assert!(allowed(one, &get("/users/42/profile")));
    assert!(!allowed(one, &get("/users/42/x/profile")));
    assert!(!allowed(one, &get("/users//profile")));
    let rest = r#"{"policies":[{"name":"a","rules":[{"to":[{"operation":{"paths":["/files/{**}"]}}]}]}]}"#;
    assert!(allowed(rest, &get("/files/a/b/c")));
    assert!(allowed(rest, &get("/files/")));
    assert!(!allowed(rest, &get("/filesystem")));
}

#[test]
fn deny_rules_see_the_normalized_path() {
    // lib.rs normalizes before building the request; the rule is written in normal form.
    let p = r#"{"policies":[{"name":"d","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin*"]}}]}]}]}"#;
    for raw in ["//admin", "/admin%2F..%2Fadmin", "/a/../admin", "/%61dmin", "/x/..\\admin", "/./admin/"] {
        let r = get(&crate::path::normalize(raw));
        assert!(!allowed(p, &r), "{raw} → {} bypassed the DENY", r.path);
    }
}

// --- sources ---

#[test]
fn principals_and_namespaces_come_from_the_peer() {
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"principals":["cluster.local/ns/prod/sa/web"]}}]}]}]}"#;
    let peer = |s: &str| Req { peer: Some(s.into()), ..get("/") };
    assert!(allowed(p, &peer("cluster.local/ns/prod/sa/web")));
    assert!(!allowed(p, &peer("cluster.local/ns/prod/sa/other")));
    assert!(!allowed(p, &get("/")), "no mTLS, no principal");
    let ns = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"namespaces":["prod"]}}]}]}]}"#;
    assert!(allowed(ns, &peer("cluster.local/ns/prod/sa/any")));
    assert!(!allowed(ns, &peer("cluster.local/ns/dev/sa/any")));
}

#[test]
fn principal_values_may_carry_spiffe_prefix() {
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"principals":["spiffe://td/ns/a/sa/b"]}}]}]}]}"#;
    assert!(allowed(p, &Req { peer: Some("td/ns/a/sa/b".into()), ..get("/") }));
}

#[test]
fn not_principals_star_requires_absence() {
    let p = r#"{"policies":[{"name":"d","action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]}]}"#;
    assert!(!allowed(p, &get("/")), "plaintext denied");
    assert!(allowed(p, &Req { peer: Some("td/ns/a/sa/b".into()), ..get("/") }));
}

#[test]
fn request_principals_need_a_token() {
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}]}"#;
    assert!(!allowed(p, &get("/")));
    assert!(allowed(p, &Req { request_principal: Some("iss/sub".into()), ..get("/") }));
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"requestPrincipals":["https://issuer/*"]}}]}]}]}"#;
    assert!(allowed(p, &Req { request_principal: Some("https://issuer/alice".into()), ..get("/") }));
    assert!(!allowed(p, &Req { request_principal: Some("https://evil/alice".into()), ..get("/") }));
}

#[test]
fn ip_blocks_match_the_peer_and_remote_ip_blocks_the_client() {
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"],"notIpBlocks":["10.9.0.0/16"]}}]}]}]}"#;
    assert!(allowed(p, &Req { source: ip("10.1.2.3"), ..get("/") }));
    assert!(!allowed(p, &Req { source: ip("10.9.2.3"), ..get("/") }));
    assert!(!allowed(p, &Req { source: ip("192.168.1.1"), ..get("/") }));
    let p = r#"{"policies":[{"name":"a","rules":[{"from":[{"source":{"remoteIpBlocks":["203.0.113.7"]}}]}]}]}"#;
    assert!(allowed(p, &Req { source: ip("10.0.0.1"), remote: ip("203.0.113.7"), ..get("/") }));
    assert!(!allowed(p, &Req { source: ip("203.0.113.7"), remote: ip("10.0.0.1"), ..get("/") }));
}

#[test]
fn cidr_parsing_and_v4_mapped_v6() {
    let c = Cidr::parse("192.168.0.0/16").ok();
    assert!(c.is_some_and(|c| c.contains(IpAddr::from([192, 168, 4, 4]))));
    let mapped: IpAddr = "::ffff:192.168.4.4".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    assert!(c.is_some_and(|c| c.contains(mapped)));
    assert!(Cidr::parse("2001:db8::/32").is_ok_and(|c| c.contains("2001:db8::1".parse().unwrap_or(mapped))));
    assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|c| c.contains(IpAddr::from([8, 8, 8, 8]))));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("nope").is_err());
}

#[test]
fn remote_ip_honours_trusted_proxies() {
    let peer = ip("10.0.0.9");
    // No trusted proxy: the peer itself, whatever the client claims.
    assert_eq!(remote_ip(Some("1.1.1.1"), peer, 0), peer);
    // One trusted proxy (the peer): the entry it appended.
    assert_eq!(remote_ip(Some("6.6.6.6, 1.1.1.1"), peer, 1), ip("1.1.1.1"));
    // The host already appended the peer: not counted twice.
    assert_eq!(remote_ip(Some("6.6.6.6, 1.1.1.1, 10.0.0.9"), peer, 1), ip("1.1.1.1"));
    // More trusted hops than entries: the leftmost.
    assert_eq!(remote_ip(Some("1.1.1.1"), peer, 5), ip("1.1.1.1"));
    // A forged garbage entry at the client position: no remote IP.
    assert_eq!(remote_ip(Some("junk"), peer, 1), None);
    assert_eq!(remote_ip(None, peer, 3), peer);
}

// --- when conditions ---

fn when(key: &str, values: &str) -> String {
    format!(r#"{{"policies":[{{"name":"a","rules":[{{"when":[{{"key":"{key}",{values}}}]}}]}}]}}"#)
}

#[test]
fn header_condition_name_is_case_insensitive() {
    let p = when("request.headers[X-Tenant]", r#""values":["acme"]"#);
    assert!(allowed(&p, &Req { headers: vec![("x-tenant".into(), "acme".into())], ..get("/") }));
    assert!(!allowed(&p, &Req { headers: vec![("x-tenant".into(), "other".into())], ..get("/") }));
    assert!(!allowed(&p, &get("/")));
}

#[test]
fn not_values_pass_when_absent() {
    let p = when("request.headers[x-debug]", r#""notValues":["*"]"#);
    assert!(allowed(&p, &get("/")));
    assert!(!allowed(&p, &Req { headers: vec![("x-debug".into(), "1".into())], ..get("/") }));
}

#[test]
fn every_when_condition_must_match() {
    let p = r#"{"policies":[{"name":"a","rules":[{"when":[
        {"key":"request.headers[a]","values":["1"]},{"key":"request.headers[b]","values":["2"]}]}]}]}"#;
    let both = Req { headers: vec![("a".into(), "1".into()), ("b".into(), "2".into())], ..get("/") };
    assert!(allowed(p, &both));
    assert!(!allowed(p, &Req { headers: vec![("a".into(), "1".into())], ..get("/") }));
}

#[test]
fn ip_and_port_conditions() {
    let r = Req {
        source: ip("10.1.1.1"),
        remote: ip("203.0.113.1"),
        dest: Some((IpAddr::from([10, 2, 0, 1]), 8443)),
        ..get("/")
    };
    assert!(allowed(&when("source.ip", r#""values":["10.0.0.0/8"]"#), &r));
    assert!(!allowed(&when("source.ip", r#""values":["11.0.0.0/8"]"#), &r));
    assert!(allowed(&when("remote.ip", r#""values":["203.0.113.0/24"]"#), &r));
    assert!(allowed(&when("destination.ip", r#""values":["10.2.0.1"]"#), &r));
    assert!(allowed(&when("destination.port", r#""values":["8443"]"#), &r));
    assert!(!allowed(&when("destination.port", r#""notValues":["8443"]"#), &r));
}

#[test]
fn identity_conditions() {
    let r = Req {
        peer: Some("td/ns/prod/sa/web".into()),
        request_principal: Some("iss/alice".into()),
        sni: Some("web.prod.svc".into()),
        audiences: vec!["a1".into(), "a2".into()],
        presenter: Some("cli".into()),
        ..get("/")
    };
    assert!(allowed(&when("source.principal", r#""values":["td/ns/prod/sa/web"]"#), &r));
    assert!(allowed(&when("source.namespace", r#""values":["prod"]"#), &r));
    assert!(!allowed(&when("source.namespace", r#""values":["dev"]"#), &r));
    assert!(allowed(&when("request.auth.principal", r#""values":["iss/*"]"#), &r));
    assert!(allowed(&when("request.auth.audiences", r#""values":["a2"]"#), &r));
    assert!(!allowed(&when("request.auth.audiences", r#""values":["a3"]"#), &r));
    assert!(allowed(&when("request.auth.presenter", r#""values":["cli"]"#), &r));
    assert!(allowed(&when("connection.sni", r#""values":["*.prod.svc"]"#), &r));
}

#[test]
fn claims_string_list_and_nested() {
    let claims = serde_json::json!({"groups": ["dev", "admin"], "role": "ops", "realm": {"access": {"level": 3}}});
    let r = Req { claims: Some(claims), ..get("/") };
    assert!(allowed(&when("request.auth.claims[groups]", r#""values":["admin"]"#), &r));
    assert!(!allowed(&when("request.auth.claims[groups]", r#""values":["root"]"#), &r));
    assert!(allowed(&when("request.auth.claims[role]", r#""values":["ops"]"#), &r));
    assert!(allowed(&when("request.auth.claims[realm][access][level]", r#""values":["3"]"#), &r));
    assert!(!allowed(&when("request.auth.claims[missing]", r#""values":["*"]"#), &r));
    assert!(!allowed(&when("request.auth.claims[role]", r#""values":["ops"]"#), &get("/")), "no token");
}

// --- identity helpers ---

#[test]
fn namespace_and_principal_from_spiffe() {
    assert_eq!(principal_from_uri("spiffe://td/ns/x/sa/y"), Some("td/ns/x/sa/y"));
    assert_eq!(principal_from_uri("spiffe://"), None);
    assert_eq!(namespace_of("td/ns/x/sa/y"), Some("x"));
    assert_eq!(namespace_of("td/sa/y"), None);
}

#[test]
fn request_principal_and_audiences_fall_back_to_claims() {
    let claims = serde_json::json!({"iss": "https://idp", "sub": "alice", "aud": ["a", "b"]});
    assert_eq!(request_principal_from(None, || Some(&claims)).as_deref(), Some("https://idp/alice"));
    assert_eq!(request_principal_from(Some(b"x/y"), || Some(&claims)).as_deref(), Some("x/y"));
    assert_eq!(request_principal_from(None, || None), None);
    assert_eq!(audiences_from(None, || Some(&claims)), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(audiences_from(Some(br#"["c"]"#), || Some(&claims)), vec!["c".to_string()]);
    assert_eq!(audiences_from(Some(b"c, d"), || None), vec!["c".to_string(), "d".to_string()]);
}

/// A request that records which costly values (a hostcall each in the filter) were read.
struct Counting<'a> {
    inner: &'a Req,
    reads: std::cell::RefCell<Vec<&'static str>>,
}

impl Counting<'_> {
    fn note(&self, what: &'static str) {
        self.reads.borrow_mut().push(what);
    }
}

impl Request for Counting<'_> {
    fn method(&self) -> &str {
        self.inner.method()
    }
    fn host(&self) -> &str {
        self.inner.host()
    }
    fn path(&self) -> &str {
        self.inner.path()
    }
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.note("header");
        self.inner.header(name)
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.note("source_ip");
        self.inner.source_ip()
    }
    fn remote_ip(&self) -> Option<IpAddr> {
        self.note("remote_ip");
        self.inner.remote_ip()
    }
    fn destination_ip(&self) -> Option<IpAddr> {
        self.note("destination_ip");
        self.inner.destination_ip()
    }
    fn destination_port(&self) -> Option<u16> {
        self.note("destination_port");
        self.inner.destination_port()
    }
    fn sni(&self) -> Option<&str> {
        self.note("sni");
        self.inner.sni()
    }
    fn peer_principal(&self) -> Option<&str> {
        self.note("peer_principal");
        self.inner.peer_principal()
    }
    fn request_principal(&self) -> Option<&str> {
        self.note("request_principal");
        self.inner.request_principal()
    }
    fn claims(&self) -> Option<&Value> {
        self.note("claims");
        self.inner.claims()
    }
    fn audiences(&self) -> &[String] {
        self.note("audiences");
        self.inner.audiences()
    }
    fn presenter(&self) -> Option<&str> {
        self.note("presenter");
        self.inner.presenter()
    }
}

#[test]
fn rules_read_only_the_values_their_fields_use_operation_first() {
    // Three rules: two whose operation does not match this request, then one that does.
    let p = r#"{"policies":[{"name":"a","action":"ALLOW","rules":[
        {"from":[{"source":{"requestPrincipals":["iss/other"]}}],"to":[{"operation":{"paths":["/a/*"]}}]},
        {"from":[{"source":{"requestPrincipals":["iss/other"]}}],"to":[{"operation":{"paths":["/b/*"]}}]},
        {"from":[{"source":{"requestPrincipals":["iss/me"]}}],"to":[{"operation":{"methods":["GET"],"paths":["/small"]}}]}]}]}"#;
    let req = Req { request_principal: Some("iss/me".into()), ..get("/small") };
    let r = Counting { inner: &req, reads: Default::default() };
    assert_eq!(evaluate(&policies(p), &r).decision, Decision::Allow { by: Some(Hit { policy: 0, rule: 2 }) });
    // No peer principal, IPs or port (no field asks), and the principal only for the
    // rule whose operation matched.
    assert_eq!(r.reads.take(), ["request_principal"]);

    // A port in the operation and an IP block in the source are read when present.
    let p = r#"{"policies":[{"name":"a","action":"ALLOW","rules":[
        {"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}}],"to":[{"operation":{"ports":["8080"]}}]}]}]}"#;
    let req = Req {
        source: ip("10.1.2.3"),
        dest: Some((ip("127.0.0.1").unwrap_or(IpAddr::from([0, 0, 0, 0])), 8080)),
        ..get("/")
    };
    let r = Counting { inner: &req, reads: Default::default() };
    assert!(matches!(evaluate(&policies(p), &r).decision, Decision::Allow { .. }));
    assert_eq!(r.reads.take(), ["destination_port", "source_ip"]);
}
