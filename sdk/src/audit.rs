//! Audit records: the one JSON line per security decision (an `authz` AUDIT match or
//! denial, an `authn` rejection) written to the host's access-log sink. One shape for
//! every filter, so one query finds every denial.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// One audit record (`"type":"audit"`), written as one JSON line by [`write`].
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// Always `"audit"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339 UTC time ([`crate::rfc3339`]).
    pub time: String,
    /// `x-request-id`.
    pub request_id: Option<&'a str>,
    /// Peer principal.
    pub principal: Option<&'a str>,
    /// Request principal.
    pub request_principal: Option<&'a str>,
    /// Peer IP.
    pub source_ip: Option<String>,
    /// Method.
    pub method: &'a str,
    /// Host.
    pub host: &'a str,
    /// Path (normalized by authz; without the query).
    pub path: &'a str,
    /// The deciding policy (`null` = authz's default decision).
    pub policy: Option<&'a str>,
    /// Its action (`ALLOW`, `DENY`, `AUDIT`, `CUSTOM`; `null` for the default and authn).
    pub action: Option<&'static str>,
    /// The rule index within it.
    pub rule: Option<usize>,
    /// `allow`, `deny` or `audit`.
    pub decision: &'static str,
    /// True when nothing was enforced (dry-run policy).
    pub dry_run: bool,
    /// Why (e.g. `no ALLOW policy matched`, `Jwt is expired`).
    pub reason: Option<String>,
}

/// Writes `record` as one line to the host's access-log sink (the proxy log if the host
/// has none).
pub fn write(record: &Record<'_>) {
    if let Ok(line) = serde_json::to_string(record) {
        if crate::ext::access_log(&line).is_err() {
            proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Info, &line).ok();
        }
    }
}

/// An IP from `ip:port` or a bare IP (e.g. the `source.address` property), an
/// IPv4-mapped IPv6 address as IPv4.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>().map(|s| s.ip()).or_else(|_| text.parse::<IpAddr>()).ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_one_json_line() {
        let r = Record {
            kind: "audit",
            time: crate::rfc3339(1_764_000_000_123),
            request_id: Some("rid-1"),
            principal: Some("td/ns/a/sa/b"),
            request_principal: None,
            source_ip: Some("10.0.0.1".into()),
            method: "GET",
            host: "web",
            path: "/admin",
            policy: Some("no-admin"),
            action: Some("DENY"),
            rule: Some(0),
            decision: "deny",
            dry_run: false,
            reason: Some("matched DENY policy no-admin".into()),
        };
        let line = serde_json::to_string(&r).unwrap_or_default();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["type"], "audit");
        assert_eq!(v["time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["policy"], "no-admin");
        assert_eq!(v["rule"], 0);
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["dry_run"], false);
        assert_eq!(v["request_principal"], serde_json::Value::Null);
    }

    #[test]
    fn parse_ip_takes_socket_or_bare_addresses() {
        assert_eq!(parse_ip("10.0.0.1:5000"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip("[::ffff:10.0.0.1]:80"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip("::1"), "::1".parse().ok());
        assert_eq!(parse_ip("nope"), None);
    }
}
