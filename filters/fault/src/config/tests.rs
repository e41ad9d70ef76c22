use super::*;
use crate::policy::{AbortKind, Percent};

fn err(json: &str) -> String {
    Config::from_json(json.as_bytes()).err().unwrap_or_default()
}

fn ok(json: &str) -> Config {
    match Config::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{json}: {e}"),
    }
}

#[test]
fn empty_config_injects_nothing() {
    assert!(ok("").is_inert());
    assert!(ok("{}").is_inert());
    assert!(!ok(r#"{"headerControl":true}"#).is_inert());
}

#[test]
fn istio_fields_compile() {
    let c = ok(r#"{"delay":{"fixedDelay":"5s","percentage":{"value":0.1}},
                  "abort":{"grpcStatus":"UNAVAILABLE","percentage":{"value":10}},
                  "rules":[{"match":[{"uri":{"prefix":"/a"},"headers":{"x-test":{}}}],
                            "abort":{"httpStatus":418,"percentage":{"value":100}}}],
                  "headerControl":true,"headerMaxPercentage":{"value":50},"maxActiveFaults":7}"#);
    assert_eq!(c.rules.len(), 2, "rules first, then the top-level catch-all");
    let top = &c.rules[1];
    assert!(top.matches.is_empty());
    assert_eq!(top.delay.map(|d| (d.ms, d.percent.millionths())), Some((5000, 1000)));
    assert_eq!(top.abort.map(|a| a.kind), Some(AbortKind::Grpc(14)));
    assert_eq!(c.rules[0].abort.map(|a| a.kind), Some(AbortKind::Http(418)));
    assert_eq!(c.rules[0].matches[0].headers.len(), 1);
    assert_eq!(c.header_ceiling, Percent::from_value(50.0));
    assert_eq!(c.max_active_faults, Some(7));
}

#[test]
fn regex_errors_name_the_path() {
    let e = err(r#"{"rules":[{"abort":{"httpStatus":503,"percentage":{"value":1}}},
                              {"match":[{"uri":{"prefix":"/"}},{"uri":{"regex":"("}}],
                               "abort":{"httpStatus":503,"percentage":{"value":1}}}]}"#);
    assert!(e.starts_with("rules[1].match[1].uri.regex: invalid regex \"(\": "), "{e}");
}

#[test]
fn precise_errors() {
    let cases = [
        (r#"{"abort":{"httpStatus":700,"percentage":{"value":1}}}"#, "abort.httpStatus: 700 is not in 200..=599"),
        (
            r#"{"abort":{"grpcStatus":"NOPE","percentage":{"value":1}}}"#,
            "abort.grpcStatus: \"NOPE\" is not a gRPC status (a name such as \"UNAVAILABLE\" or a code 0..=16)",
        ),
        (
            r#"{"abort":{"httpStatus":503,"grpcStatus":"OK","percentage":{"value":1}}}"#,
            "abort: give only one of httpStatus, grpcStatus",
        ),
        (r#"{"abort":{"percentage":{"value":1}}}"#, "abort: needs httpStatus or grpcStatus"),
        (
            r#"{"delay":{"fixedDelay":"1s","percentage":{"value":101}}}"#,
            "delay.percentage.value: 101 is not in 0..=100 (a percentage: 0.1 means 0.1%)",
        ),
        (
            r#"{"delay":{"fixedDelay":"1s","percent":10}}"#,
            "delay.percent: the integer percent (10) is deprecated and not supported, \
             use percentage: {value: 10} (a double where 0.1 means 0.1%)",
        ),
        (
            r#"{"delay":{"fixedDelay":"1s"}}"#,
            "delay.percentage: required (Istio would silently inject into 0% of requests), \
             use percentage: {value: 100} for every request",
        ),
        (r#"{"delay":{"fixedDelay":"0s","percentage":{"value":1}}}"#, "delay.fixedDelay: must be at least 1ms"),
        (r#"{"delay":{"percentage":{"value":1}}}"#, "delay.fixedDelay: required"),
        (
            r#"{"delay":{"fixedDelay":"5","percentage":{"value":1}}}"#,
            "delay.fixedDelay: duration \"5\" has no unit (use e.g. \"25ms\", \"2s\", \"1m\")",
        ),
        (r#"{"rules":[{"match":[]}]}"#, "rules[0]: needs a delay or an abort"),
        (
            r#"{"rules":[{"match":[{"uri":{}}],"abort":{"httpStatus":503,"percentage":{"value":1}}}]}"#,
            "rules[0].match[0].uri: needs one of exact, prefix, regex",
        ),
        (
            r#"{"rules":[{"match":[{"uri":{"exact":"/","prefix":"/"}}],"abort":{"httpStatus":503,"percentage":{"value":1}}}]}"#,
            "rules[0].match[0].uri: give only one of exact, prefix, regex",
        ),
        (
            r#"{"rules":[{"match":[{"headers":{"X-Up":{"exact":"1"}}}],"abort":{"httpStatus":503,"percentage":{"value":1}}}]}"#,
            "rules[0].match[0].headers.X-Up: header names must be lower case, without spaces",
        ),
        (r#"{"headerMaxPercentage":{"value":5}}"#, "headerMaxPercentage: only applies with headerControl: true"),
        (r#"{"maxActiveFaults":0}"#, "maxActiveFaults: 0 would disable every fault, omit it for no limit"),
        (
            r#"{"delay":{"exponentialDelay":"1s","fixedDelay":"1s","percentage":{"value":1}}}"#,
            "delay.exponentialDelay: not supported, use fixedDelay",
        ),
    ];
    for (json, want) in cases {
        assert_eq!(err(json), want, "{json}");
    }
}

#[test]
fn type_errors_and_unknown_fields_carry_the_path() {
    let e = err(r#"{"rules":[{"abort":{"httpStatus":"503","percentage":{"value":1}}}]}"#);
    assert!(e.starts_with("rules[0].abort.httpStatus: invalid type: string \"503\""), "{e}");
    let e = err(r#"{"rules":[{"match":[{"url":{"prefix":"/"}}]}]}"#);
    assert!(e.starts_with("rules[0].match[0].url: unknown field `url`, expected `uri` or `headers`"), "{e}");
}

#[test]
fn every_error_is_reported() {
    let e = err(r#"{"delay":{"fixedDelay":"0s","percent":5},"abort":{"httpStatus":1,"percentage":{"value":1}}}"#);
    assert_eq!(e.split("; ").count(), 3, "{e}");
}
