use super::*;

fn limits(conns: Option<u64>, pending: Option<u64>, requests: Option<u64>) -> PoolLimits {
    PoolLimits { max_connections: conns, max_pending_requests: pending, max_requests: requests }
}

#[test]
fn max_requests_overflows_at_the_limit() {
    let l = limits(None, None, Some(10));
    assert_eq!(l.check(9), None);
    assert_eq!(l.check(10), Some(Overflow::MaxRequests));
    assert_eq!(l.check(11), Some(Overflow::MaxRequests));
}

#[test]
fn pending_limit_with_connection_limit_follows_http1_queueing() {
    // Istio's circuit-breaking task: maxConnections 1, http1MaxPendingRequests 1.
    let l = limits(Some(1), Some(1), None);
    assert_eq!(l.check(0), None);
    assert_eq!(l.check(1), None, "the second request waits as pending");
    assert_eq!(l.check(2), Some(Overflow::MaxPendingRequests), "the third overflows");
}

#[test]
fn a_connection_or_pending_limit_alone_never_trips() {
    assert_eq!(limits(Some(1), None, None).check(1_000), None);
    assert_eq!(limits(None, Some(1), None).check(1_000), None, "no connection limit: nothing is pending");
    assert_eq!(PoolLimits::default().check(u64::MAX), None);
}

#[test]
fn max_requests_is_checked_before_pending() {
    let l = limits(Some(1), Some(1), Some(1));
    assert_eq!(l.check(1), Some(Overflow::MaxRequests));
    assert_eq!(Overflow::MaxRequests.reason(), "max_requests");
    assert_eq!(Overflow::MaxPendingRequests.reason(), "max_pending_requests");
}

#[test]
fn tables_parse_per_cluster_and_name_what_is_wrong() {
    let t =
        LimitTable::parse(br#"{"web": {"max_requests": 5}, "db": {"max_connections": 1, "max_pending_requests": 2}}"#)
            .expect("valid table");
    assert_eq!(t.get("web"), Some(&limits(None, None, Some(5))));
    assert_eq!(t.get("db"), Some(&limits(Some(1), Some(2), None)));
    assert_eq!(t.get("other"), None);
    let t = LimitTable::parse(br#"{"*": {"max_requests": 5}, "b": {}}"#).expect("valid table");
    assert_eq!(t.get("a"), Some(&limits(None, None, Some(5))), "an unlisted cluster takes \"*\"");
    assert_eq!(t.get("b"), Some(&PoolLimits::default()), "a listed cluster does not");
    assert_eq!(LimitTable::parse(b"{}").expect("empty table"), LimitTable::default());
    let err = LimitTable::parse(br#"{"web": {"max_requests": -1}}"#).expect_err("negative limit");
    assert!(err.starts_with("web.max_requests: "), "{err}");
    let err = LimitTable::parse(br#"{"web": {"max_request": 1}}"#).expect_err("misspelt field");
    assert!(err.contains("max_request"), "{err}");
    assert!(LimitTable::parse(b"[1]").is_err());
    assert!(LimitTable::parse(b"{} \n").is_ok(), "trailing white space");
    assert!(LimitTable::parse(b"{}\0").is_err(), "trailing bytes");
    assert!(LimitTable::parse(b"\xff").is_err());
}
