use super::*;

struct R {
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

impl RequestView for R {
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

fn req(path: &'static str, headers: &[(&'static str, &'static str)]) -> R {
    R { path, headers: headers.to_vec() }
}

fn pct(v: f64) -> Percent {
    Percent::from_value(v).unwrap_or_default()
}

fn abort_rule(status: u16, percent: f64, matches: Vec<Match>) -> Rule {
    Rule { matches, delay: None, abort: Some(AbortFault { kind: AbortKind::Http(status), percent: pct(percent) }) }
}

/// A deterministic sequence of draws covering 0..1_000_000 evenly.
fn sweep(n: u64) -> impl FnMut() -> u64 {
    let mut i = 0u64;
    move || {
        i += 1;
        (i * 1_000_000 / n) % 1_000_000
    }
}

#[test]
fn percent_math_keeps_tenths_and_hundredths() {
    assert_eq!(pct(0.1).millionths(), 1_000, "0.1 means 0.1%, not 10%");
    assert_eq!(pct(0.01).millionths(), 100);
    assert_eq!(pct(50.0).millionths(), 500_000);
    assert_eq!(pct(100.0), Percent::ALL);
    assert_eq!(Percent::from_value(100.1), None);
    assert_eq!(Percent::from_value(-0.1), None);
    assert!(!pct(0.0).hit(0), "0% never fires");
    assert!(Percent::ALL.hit(999_999) && Percent::ALL.hit(u64::MAX));
    assert!(pct(0.1).hit(999) && !pct(0.1).hit(1_000));
}

#[test]
fn a_tenth_of_a_percent_fires_about_once_in_a_thousand() {
    let p = pct(0.1);
    let mut draw = sweep(1_000_000);
    let hits = (0..1_000_000).filter(|_| p.hit(draw())).count();
    assert_eq!(hits, 1_000);
    // And with a real PRNG: within ±20 % of 1000 over 10⁶ requests.
    let mut x: u64 = 42;
    let hits = (0..1_000_000)
        .filter(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.hit(x)
        })
        .count();
    assert!((800..1200).contains(&hits), "{hits}");
}

#[test]
fn first_matching_rule_wins() {
    let rules = vec![
        abort_rule(418, 100.0, vec![Match { uri: Some(StringMatch::Prefix("/tea".into())), headers: vec![] }]),
        abort_rule(503, 100.0, vec![]),
    ];
    let plan = |p| Plan::decide(&rules, &req(p, &[]), None, || 0);
    assert_eq!(plan("/teapot").abort, Some(AbortKind::Http(418)));
    assert_eq!(plan("/coffee").abort, Some(AbortKind::Http(503)));
}

#[test]
fn uri_and_header_matching() {
    let re = Regex::new("^(?:/v[0-9]+/items)$").ok();
    let m = Match {
        uri: re.map(StringMatch::Regex),
        headers: vec![("x-user".into(), StringMatch::Exact("tester".into())), ("x-debug".into(), StringMatch::Present)],
    };
    assert!(m.matches(&req("/v2/items?page=3", &[("x-user", "tester"), ("x-debug", "")])), "query ignored by regex");
    assert!(!m.matches(&req("/v2/items/1", &[("x-user", "tester"), ("x-debug", "1")])), "regex is anchored");
    assert!(!m.matches(&req("/v2/items", &[("x-user", "other"), ("x-debug", "1")])));
    assert!(!m.matches(&req("/v2/items", &[("x-user", "tester")])), "presence required");
    let exact = Match { uri: Some(StringMatch::Exact("/a".into())), headers: vec![] };
    assert!(exact.matches(&req("/a?x=1", &[])) && !exact.matches(&req("/ab", &[])));
    let rule = Rule {
        matches: vec![exact, Match { uri: Some(StringMatch::Prefix("/b".into())), headers: vec![] }],
        ..Rule::default()
    };
    assert!(rule.applies(&req("/b/c", &[])) && rule.applies(&req("/a", &[])) && !rule.applies(&req("/c", &[])));
}

#[test]
fn percentage_decides_per_request() {
    let rules = vec![Rule {
        matches: vec![],
        delay: Some(DelayFault { ms: 100, percent: pct(50.0) }),
        abort: Some(AbortFault { kind: AbortKind::Grpc(14), percent: pct(0.0) }),
    }];
    let mut draw = sweep(1000);
    let delayed =
        (0..1000).filter(|_| Plan::decide(&rules, &req("/", &[]), None, &mut draw).delay_ms == Some(100)).count();
    // Two draws per request (delay, abort) over an even sweep: half the delay draws hit.
    assert!((450..=550).contains(&delayed), "{delayed}");
    let never = (0..1000).all(|_| Plan::decide(&rules, &req("/", &[]), None, &mut draw).abort.is_none());
    assert!(never, "0% aborts none");
}

#[test]
fn header_faults_are_ignored_unless_enabled() {
    let r = req("/", &[(headers::ABORT, "503"), (headers::DELAY, "200")]);
    assert!(Plan::decide(&[], &r, None, || 0).is_empty());
    let p = Plan::decide(&[], &r, Some(Percent::ALL), || 0);
    assert_eq!(p, Plan { delay_ms: Some(200), abort: Some(AbortKind::Http(503)) });
}

#[test]
fn header_faults_parse_like_envoy() {
    let h = HeaderFaults::parse(&req(
        "/",
        &[
            (headers::ABORT, "503"),
            (headers::ABORT_GRPC, "14"),
            (headers::ABORT_PERCENT, "25"),
            (headers::DELAY, "1500"),
            (headers::DELAY_PERCENT, "0.5"),
        ],
    ));
    assert_eq!(h.abort_http, Some(503));
    assert_eq!(h.abort_grpc, Some(14));
    assert_eq!(h.abort_percent, Some(pct(25.0)));
    assert_eq!(h.delay_ms, Some(1500));
    assert_eq!(h.delay_percent, Some(pct(0.5)));
    // Out-of-range or malformed values are dropped.
    let bad = HeaderFaults::parse(&req(
        "/",
        &[(headers::ABORT, "700"), (headers::ABORT_GRPC, "17"), (headers::DELAY, "-5"), (headers::ABORT_PERCENT, "x")],
    ));
    assert_eq!(bad, HeaderFaults::default());
    assert!(!bad.any());
    assert_eq!(HeaderFaults::parse(&req("/", &[(headers::ABORT, "199")])).abort_http, None);
    assert_eq!(HeaderFaults::parse(&req("/", &[(headers::DELAY_PERCENT, "150")])).delay_percent, Some(Percent::ALL));
}

#[test]
fn header_percentage_is_capped_by_the_ceiling_and_http_beats_grpc() {
    let r = req("/", &[(headers::ABORT, "500"), (headers::ABORT_GRPC, "14"), (headers::ABORT_PERCENT, "100")]);
    // Ceiling 10 %: a draw of 15 % misses although the header asks for 100 %.
    let p = Plan::decide(&[], &r, Some(pct(10.0)), || 150_000);
    assert_eq!(p.abort, None);
    let p = Plan::decide(&[], &r, Some(pct(10.0)), || 50_000);
    assert_eq!(p.abort, Some(AbortKind::Http(500)));
    let g = req("/", &[(headers::ABORT_GRPC, "4")]);
    assert_eq!(Plan::decide(&[], &g, Some(Percent::ALL), || 0).abort, Some(AbortKind::Grpc(4)));
}

#[test]
fn header_faults_override_configured_ones_of_the_same_kind() {
    let rules = vec![Rule {
        matches: vec![],
        delay: Some(DelayFault { ms: 5, percent: Percent::ALL }),
        abort: Some(AbortFault { kind: AbortKind::Http(503), percent: Percent::ALL }),
    }];
    let r = req("/", &[(headers::DELAY, "900")]);
    let p = Plan::decide(&rules, &r, Some(Percent::ALL), || 0);
    assert_eq!(p, Plan { delay_ms: Some(900), abort: Some(AbortKind::Http(503)) });
}

#[test]
fn zero_delay_header_injects_nothing() {
    let r = req("/", &[(headers::DELAY, "0")]);
    assert!(Plan::decide(&[], &r, Some(Percent::ALL), || 0).is_empty());
}

#[test]
fn abort_replies() {
    let (s, h, b) = abort_reply(AbortKind::Http(503), false);
    assert_eq!((s, b), (503, &b"fault filter abort"[..]));
    assert!(h.iter().all(|(k, _)| *k != "grpc-status"));
    let (s, h, b) = abort_reply(AbortKind::Grpc(14), false);
    assert_eq!(s, 200);
    assert!(b.is_empty());
    assert!(h.contains(&("grpc-status", "14".to_string())));
    assert!(h.contains(&("content-type", "application/grpc".to_string())));
    // An HTTP abort of a gRPC request is mapped the way Envoy maps local replies.
    let (s, h, _) = abort_reply(AbortKind::Http(503), true);
    assert_eq!(s, 200);
    assert!(h.contains(&("grpc-status", "14".to_string())));
    assert_eq!(http_to_grpc(401), 16);
    assert_eq!(http_to_grpc(404), 12);
    assert_eq!(http_to_grpc(500), 2);
}

#[test]
fn grpc_status_names_and_numbers() {
    assert_eq!(parse_grpc_status("UNAVAILABLE"), Some(14));
    assert_eq!(parse_grpc_status("unavailable"), Some(14));
    assert_eq!(parse_grpc_status("OK"), Some(0));
    assert_eq!(parse_grpc_status("16"), Some(16));
    assert_eq!(parse_grpc_status("17"), None);
    assert_eq!(parse_grpc_status("NOPE"), None);
}
