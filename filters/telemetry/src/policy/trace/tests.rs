use std::collections::HashMap;

use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
const SPAN: u64 = 0x00f067aa0ba902b7;

fn headers(pairs: &[(&str, &str)]) -> Incoming {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    extract(|i| map.get(HEADERS[i]).map(String::as_str))
}

fn edits_map(edits: &Outgoing) -> HashMap<&'static str, Option<String>> {
    edits.iter().map(|(_, name, value)| (name, value.map(str::to_string))).collect()
}

#[test]
fn w3c_traceparent_is_extracted() {
    let inc = headers(&[("traceparent", TP), ("tracestate", "congo=t61rcWkgMzE")]);
    assert_eq!(inc.parent, Some(SpanContext { trace_id: TRACE, span_id: SPAN }));
    assert_eq!(inc.sampled, Some(true));
    assert_eq!(inc.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    assert!(inc.seen_w3c && !inc.seen_b3 && !inc.seen_b3_single);
    let inc = headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
    assert_eq!(inc.sampled, Some(false));
}

#[test]
fn invalid_traceparents_are_ignored() {
    let bad = [
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", // short flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx", // v00 has 4 fields
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // sign
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", // non-hex flags
        "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // non-ASCII
    ];
    for b in bad {
        let inc = headers(&[("traceparent", b), ("tracestate", "a=b")]);
        assert_eq!(inc.parent, None, "{b:?}");
        assert_eq!(inc.sampled, None, "{b:?}");
        assert_eq!(inc.tracestate, None, "tracestate without a valid traceparent is dropped ({b:?})");
        assert!(inc.seen_w3c);
    }
    // A future version may append fields.
    let future = format!("01{}-extra", &TP[2..]);
    assert_eq!(parse_traceparent(&future).map(|(c, _)| c.span_id), Some(SPAN));
}

#[test]
fn b3_multi_headers_are_extracted() {
    let inc = headers(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(
        inc.parent,
        Some(SpanContext { trace_id: 0x80f198ee56343ba864fe8b2a57d3eff7, span_id: 0xe457b5a2e4d86bd1 })
    );
    assert_eq!(inc.sampled, Some(true));
    assert!(inc.seen_b3 && !inc.debug);

    // 64-bit trace id, sampled=false, and the debug flag.
    let inc = headers(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-sampled", "false"),
    ]);
    assert_eq!(inc.parent.map(|p| p.trace_id), Some(0xa3ce929d0e0e4736));
    assert_eq!(inc.sampled, Some(false));
    let inc = headers(&[("x-b3-flags", "1")]);
    assert!(inc.debug && inc.parent.is_none());
    // Sampling only: no parent, but the decision is honoured.
    let inc = headers(&[("x-b3-sampled", "0")]);
    assert_eq!((inc.parent, inc.sampled), (None, Some(false)));
}

#[test]
fn invalid_b3_multi_headers_are_ignored() {
    for (t, s) in [
        ("80f198ee56343ba8", "e457b5a2e4d86bd"),    // short span
        ("80f198ee56343ba864", "e457b5a2e4d86bd1"), // 18-digit trace
        ("0000000000000000", "e457b5a2e4d86bd1"),   // zero trace
        ("80f198ee56343ba8", "0000000000000000"),   // zero span
        ("80f198ee56343baz", "e457b5a2e4d86bd1"),   // non-hex
        ("+0f198ee56343ba8", "e457b5a2e4d86bd1"),   // sign
    ] {
        let inc = headers(&[("x-b3-traceid", t), ("x-b3-spanid", s), ("x-b3-sampled", "yes")]);
        assert_eq!(inc.parent, None, "{t} {s}");
        assert_eq!(inc.sampled, None);
    }
    assert_eq!(headers(&[("x-b3-traceid", "80f198ee56343ba8")]).parent, None, "span id required");
}

#[test]
fn b3_single_header_is_extracted() {
    let inc = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]);
    assert_eq!(inc.parent.map(|p| p.span_id), Some(0xe457b5a2e4d86bd1));
    assert_eq!(inc.sampled, Some(true));
    assert!(inc.seen_b3_single);
    let inc = headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d")]);
    assert!(inc.debug && inc.parent.is_some());
    let inc = headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1")]);
    assert_eq!((inc.parent.is_some(), inc.sampled), (true, None));
    let inc = headers(&[("b3", "0")]);
    assert_eq!((inc.parent, inc.sampled), (None, Some(false)));
    for bad in [
        "",
        "x",
        "2",
        "80f198ee56343ba8",
        "80f198ee56343ba8-e457b5a2e4d86bd1-x",
        "a-b-c-d-e",
        "80f198ee56343ba8-e457b5a2e4d86bd1-1-zz",
    ] {
        let inc = headers(&[("b3", bad)]);
        assert_eq!((inc.parent, inc.sampled, inc.debug), (None, None, false), "{bad:?}");
    }
}

#[test]
fn traceparent_wins_over_b3() {
    let inc = headers(&[("traceparent", TP), ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0")]);
    assert_eq!(inc.parent.map(|p| p.trace_id), Some(TRACE));
    assert_eq!(inc.sampled, Some(true));
    // An invalid traceparent falls back to B3.
    let inc = headers(&[("traceparent", "bogus"), ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0")]);
    assert_eq!(inc.parent.map(|p| p.trace_id), Some(0x80f198ee56343ba8));
    assert_eq!(inc.sampled, Some(false));
}

#[test]
fn sampling_decisions() {
    let none = Incoming::default();
    let yes = Incoming { sampled: Some(true), ..Incoming::default() };
    let no = Incoming { sampled: Some(false), ..Incoming::default() };
    let debug = Incoming { sampled: Some(false), debug: true, ..Incoming::default() };
    assert!(decide(&yes, false, 0.0, 5), "parent's yes wins over 0%");
    assert!(!decide(&no, false, 100.0, 5), "parent's no wins over 100%");
    assert!(decide(&debug, false, 0.0, 5), "debug forces");
    assert!(decide(&no, true, 0.0, 5), "x-client-trace-id forces");
    assert!(decide(&none, false, 1.0, 9_999));
    assert!(!decide(&none, false, 1.0, 10_000));
    assert!(!decide(&none, false, 0.0, 0));
    assert!(decide(&none, false, 100.0, u128::MAX));
    // 1% of random trace ids.
    let mut rng = Rng::new(7);
    let hits = (0..100_000).filter(|_| Hop::start(&none, false, 1.0, &mut rng).sampled).count();
    assert!((700..1_300).contains(&hits), "{hits}");
}

#[test]
fn hop_continues_the_parent_and_rewrites_every_form() {
    let inc = headers(&[("traceparent", TP), ("tracestate", "k=v"), ("b3", "1"), ("x-b3-sampled", "0")]);
    let mut rng = Rng::new(1);
    let hop = Hop::start(&inc, false, 0.0, &mut rng);
    assert_eq!(hop.trace_id, TRACE);
    assert_eq!(hop.parent_span_id, Some(SPAN));
    assert_ne!(hop.span_id, SPAN);
    assert!(hop.sampled);
    let e = edits_map(&hop.outgoing_headers(&[Propagation::W3c], &inc));
    let span = format!("{:016x}", hop.span_id);
    assert_eq!(e["traceparent"], Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01")));
    assert_eq!(e["tracestate"].as_deref(), Some("k=v"));
    assert_eq!(e["x-b3-traceid"].as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(e["x-b3-spanid"], Some(span.clone()));
    assert_eq!(e["x-b3-parentspanid"].as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(e["x-b3-sampled"].as_deref(), Some("1"));
    assert_eq!(e["x-b3-flags"], None, "flags removed");
    assert_eq!(e["b3"], Some(format!("4bf92f3577b34da6a3ce929d0e0e4736-{span}-1-00f067aa0ba902b7")));
    // The upstream, reading what we wrote, sees our span as its parent.
    let next = headers(&[("traceparent", e["traceparent"].as_deref().unwrap_or_default())]);
    assert_eq!(next.parent, Some(SpanContext { trace_id: TRACE, span_id: hop.span_id }));
}

#[test]
fn root_hop_writes_configured_formats_only() {
    let inc = Incoming::default();
    let mut rng = Rng::new(3);
    let hop = Hop::start(&inc, true, 0.0, &mut rng);
    assert!(hop.sampled && hop.parent_span_id.is_none());
    let e = edits_map(&hop.outgoing_headers(&[Propagation::B3], &inc));
    assert!(!e.contains_key("traceparent") && !e.contains_key("b3"));
    assert_eq!(e["x-b3-parentspanid"], None, "a root span has no parent: header removed");
    assert_eq!(e["x-b3-traceid"], Some(hop.trace_id_hex()));
    let e = edits_map(&hop.outgoing_headers(&[Propagation::W3c], &inc));
    assert_eq!(e["tracestate"], None);
    assert!(e["traceparent"].as_deref().is_some_and(|v| parse_traceparent(v).is_some()));
}

#[test]
fn debug_and_64_bit_ids_round_trip_in_b3() {
    let inc =
        headers(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "00f067aa0ba902b7"), ("x-b3-flags", "1")]);
    let mut rng = Rng::new(9);
    let hop = Hop::start(&inc, false, 0.0, &mut rng);
    assert!(hop.sampled && hop.debug);
    let e = edits_map(&hop.outgoing_headers(&[Propagation::B3, Propagation::B3Single], &inc));
    assert_eq!(e["x-b3-traceid"].as_deref(), Some("a3ce929d0e0e4736"));
    assert_eq!(e["x-b3-flags"].as_deref(), Some("1"));
    assert_eq!(e["x-b3-sampled"], None);
    assert!(e["b3"].as_deref().is_some_and(|b| b.starts_with("a3ce929d0e0e4736-") && b.contains("-d-")));
    let again = headers(&[("b3", e["b3"].as_deref().unwrap_or_default())]);
    assert_eq!(again.parent.map(|p| (p.trace_id, p.span_id)), Some((0xa3ce929d0e0e4736, hop.span_id)));
    assert!(again.debug);
    // Unsampled decisions propagate as such.
    let inc = headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
    let hop = Hop::start(&inc, false, 100.0, &mut rng);
    assert!(!hop.sampled);
    let e = edits_map(&hop.outgoing_headers(&[Propagation::W3c, Propagation::B3], &inc));
    assert!(e["traceparent"].as_deref().is_some_and(|v| v.ends_with("-00")));
    assert_eq!(e["x-b3-sampled"].as_deref(), Some("0"));
}

#[test]
fn hex_matches_format_zero_padded() {
    for v in [0u128, 1, 0xabc, u128::from(u64::MAX), u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
        assert_eq!(hex(v, 32), format!("{v:032x}"));
        assert_eq!(hex(v, 16), format!("{:016x}", v & u128::from(u64::MAX)));
    }
    assert_eq!(hex64(0xff), "00000000000000ff");
    // Every nibble value in every position, and pseudo-random words.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for shift in 0..16 {
        for n in 0..16u64 {
            let v = n << (shift * 4);
            assert_eq!(hex64(v), format!("{v:016x}"));
        }
        x = x.rotate_left(7).wrapping_mul(0x2545_f491_4f6c_dd1d);
        assert_eq!(hex64(x), format!("{x:016x}"));
    }
}
