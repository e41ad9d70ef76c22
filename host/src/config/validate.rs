//! Cross-field checks the types cannot express: names, references, addresses, limits.
//!
//! Every check runs; each problem becomes one `ConfigError` naming the path, the value
//! and what was expected, so a user fixes the whole file in one round.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};

use super::lines::LineIndex;
use super::{
    Cluster, Config, ConfigError, Filter, HashAlgorithm, HashKey, HttpSettings, LbPolicy, Listener, ListenerTls,
    Millis, TlsMode, UpstreamTls, UpstreamTlsMode,
};

/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 1024;
/// Bounds of a filter's memory cap, in MiB.
pub const MEMORY_MB: (u32, u32) = (1, 4096);
/// Bounds of a consistent-hash table.
pub const HASH_TABLE_SIZE: (u32, u32) = (1, 65_536);
/// Bounds of `max_request_headers_kb`.
pub const MAX_REQUEST_HEADERS_KB: (u32, u32) = (1, 8192);
/// Bounds of an HTTP/2 flow-control window (RFC 9113 §6.9.2: 65 535 ..= 2^31 − 1).
pub const H2_WINDOW: (u32, u32) = (65_535, (1 << 31) - 1);

/// Collects errors, looking up each path's line.
struct Checker<'a> {
    lines: &'a LineIndex,
    errors: Vec<ConfigError>,
}

/// Every problem in `config`, each with its path and line, in file order; empty when
/// valid.
pub fn validate(config: &Config, lines: &LineIndex) -> Vec<ConfigError> {
    let mut c = Checker { lines, errors: Vec::new() };
    c.top(config);
    let mut errors = c.errors;
    // File order; problems with no known line (defaults) go last.
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    errors
}

// === impl Checker ===

impl Checker<'_> {
    fn push(&mut self, path: String, message: String) {
        self.errors.push(ConfigError { line: self.lines.line_of(&path), path, message });
    }

    /// `path` must lie in `lo..=hi`.
    fn range<T: PartialOrd + Display + Copy>(&mut self, path: String, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.push(path, format!("{v} is out of range (expected {lo}..={hi})"));
        }
    }

    /// `path` must be at least `lo`.
    fn min(&mut self, path: String, v: u32, lo: u32) {
        if v < lo {
            self.push(path, format!("{v} is too small (expected at least {lo})"));
        }
    }

    /// A duration that must not be zero; `why` says what zero would do.
    fn positive(&mut self, path: String, v: Millis, why: &str) {
        if v.0 == 0 {
            self.push(path, format!("0ms {why} (expected a duration > 0)"));
        }
    }

    /// `path` names something and must not be empty.
    fn non_empty(&mut self, path: String, what: &str, v: &str) -> bool {
        if v.trim().is_empty() {
            self.push(path, format!("empty {what} (expected a non-empty name)"));
            false
        } else {
            true
        }
    }

    fn top(&mut self, config: &Config) {
        if config.workers > MAX_WORKERS {
            self.push(
                "workers".into(),
                format!(
                    "{} worker threads is too many (expected 0 for one per core, or at most {MAX_WORKERS})",
                    config.workers
                ),
            );
        }
        let admin = match parse_socket_addr(&config.admin.address) {
            Ok(a) => Some(a),
            Err(why) => {
                self.push("admin.address".into(), why);
                None
            }
        };
        self.listeners(config, admin);
        self.clusters(config);
    }

    fn listeners(&mut self, config: &Config, admin: Option<SocketAddr>) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        // Addresses bound so far: (address, who owns it, its path).
        let mut bound: Vec<(SocketAddr, String, String)> = Vec::new();
        if let Some(a) = admin {
            bound.push((a, "the admin endpoint".into(), "admin.address".into()));
        }
        for (i, l) in config.listeners.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if self.non_empty(format!("{p}.name"), "listener name", &l.name) {
                if let Some(first) = names.get(l.name.as_str()) {
                    self.push(
                        format!("{p}.name"),
                        format!("duplicate listener name \"{}\" (already used by listeners[{first}])", l.name),
                    );
                } else {
                    names.insert(&l.name, i);
                }
            }
            match parse_socket_addr(&l.address) {
                Err(why) => self.push(format!("{p}.address"), why),
                Ok(addr) => {
                    if let Some((_, owner, at)) = bound.iter().find(|(b, ..)| clash(*b, addr)) {
                        let msg = format!(
                            "address \"{}\" clashes with {owner} ({at}) on port {} (expected a distinct address:port)",
                            l.address,
                            addr.port()
                        );
                        self.push(format!("{p}.address"), msg);
                    }
                    bound.push((addr, format!("listener \"{}\"", l.name), format!("{p}.address")));
                }
            }
            if let Some(c) = &l.default_cluster {
                if self.non_empty(format!("{p}.default_cluster"), "cluster name", c)
                    && !config.clusters.iter().any(|cl| &cl.name == c)
                {
                    let known = list(config.clusters.iter().map(|c| c.name.as_str()));
                    self.push(
                        format!("{p}.default_cluster"),
                        format!("unknown cluster \"{c}\" (expected one of: {known})"),
                    );
                }
            }
            self.http(&format!("{p}.http"), &l.http);
            if let Some(tls) = &l.tls {
                self.tls(&format!("{p}.tls"), tls);
            }
            self.filters(&p, l);
        }
    }

    fn http(&mut self, p: &str, h: &HttpSettings) {
        let (lo, hi) = MAX_REQUEST_HEADERS_KB;
        self.range(format!("{p}.max_request_headers_kb"), h.max_request_headers_kb, lo, hi);
        self.min(format!("{p}.max_headers_count"), h.max_headers_count, 1);
        self.min(format!("{p}.max_concurrent_streams"), h.max_concurrent_streams, 1);
        let (lo, hi) = H2_WINDOW;
        self.range(format!("{p}.initial_stream_window_size"), h.initial_stream_window_size, lo, hi);
        self.range(format!("{p}.initial_connection_window_size"), h.initial_connection_window_size, lo, hi);
        self.min(format!("{p}.max_connections"), h.max_connections, 1);
        self.positive(
            format!("{p}.request_headers_timeout"),
            h.request_headers_timeout,
            "times out every request head at once",
        );
        self.positive(format!("{p}.idle_timeout"), h.idle_timeout, "closes every connection at once");
    }

    fn tls(&mut self, p: &str, tls: &ListenerTls) {
        self.non_empty(format!("{p}.cert"), "certificate path", &tls.cert);
        self.non_empty(format!("{p}.key"), "private key path", &tls.key);
        match &tls.client_ca {
            Some(ca) => {
                self.non_empty(format!("{p}.client_ca"), "CA bundle path", ca);
            }
            None if tls.mode == TlsMode::Mutual => self.push(
                format!("{p}.mode"),
                "mode \"mutual\" requires client_ca (a PEM bundle to verify client certificates)".into(),
            ),
            None => {}
        }
        self.listener_tls_extra(p, tls);
    }

    fn filters(&mut self, listener: &str, l: &Listener) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (j, f) in l.filters.iter().enumerate() {
            let p = format!("{listener}.filters[{j}]");
            if self.non_empty(format!("{p}.name"), "filter name", &f.name) {
                if let Some(first) = names.get(f.name.as_str()) {
                    self.push(
                        format!("{p}.name"),
                        format!(
                            "duplicate filter name \"{}\" in the chain of listener \"{}\" (already used by {listener}.filters[{first}])",
                            f.name, l.name
                        ),
                    );
                } else {
                    names.insert(&f.name, j);
                }
            }
            self.filter_module(&p, f);
            let (lo, hi) = MEMORY_MB;
            self.range(format!("{p}.limits.memory_mb"), f.limits.memory_mb, lo, hi);
            self.positive(
                format!("{p}.limits.callback_deadline"),
                f.limits.callback_deadline,
                "leaves no time for any callback",
            );
        }
    }

    fn filter_module(&mut self, p: &str, f: &Filter) {
        let path = format!("{p}.module");
        if let Some(name) = f.module.strip_prefix("builtin:") {
            if !is_builtin_name(name) {
                self.push(
                    path,
                    format!(
                        "invalid built-in module \"{}\" (expected builtin:<name>, name of letters, digits, '-' or '_')",
                        f.module
                    ),
                );
            }
        } else if f.module.trim().is_empty() {
            self.push(path, "empty module (expected builtin:<name> or a path to a .wasm file)".into());
        }
    }

    fn clusters(&mut self, config: &Config) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, c) in config.clusters.iter().enumerate() {
            let p = format!("clusters[{i}]");
            if self.non_empty(format!("{p}.name"), "cluster name", &c.name) {
                if let Some(first) = names.get(c.name.as_str()) {
                    self.push(
                        format!("{p}.name"),
                        format!("duplicate cluster name \"{}\" (already used by clusters[{first}])", c.name),
                    );
                } else {
                    names.insert(&c.name, i);
                }
            }
            self.positive(format!("{p}.connect_timeout"), c.connect_timeout, "leaves no time to connect");
            self.positive(format!("{p}.dns_refresh"), c.dns_refresh, "would re-resolve without pause");
            self.endpoints(&p, c);
            self.hash(&p, c);
            self.subsets(&p, c);
            if let Some(tls) = &c.tls {
                self.upstream_tls(&format!("{p}.tls"), tls);
            }
        }
    }

    fn endpoints(&mut self, p: &str, c: &Cluster) {
        if c.endpoints.is_empty() {
            self.push(
                format!("{p}.endpoints"),
                format!("cluster \"{}\" has no endpoints (expected at least one)", c.name),
            );
        }
        for (k, e) in c.endpoints.iter().enumerate() {
            let ep = format!("{p}.endpoints[{k}]");
            if let Err(why) = parse_endpoint(&e.address) {
                self.push(format!("{ep}.address"), why);
            }
            self.min(format!("{ep}.weight"), e.weight, 1);
        }
    }

    fn hash(&mut self, p: &str, c: &Cluster) {
        let h = &c.hash;
        let (lo, hi) = HASH_TABLE_SIZE;
        self.range(format!("{p}.hash.table_size"), h.table_size, lo, hi);
        let n = c.endpoints.len();
        if c.lb == LbPolicy::ConsistentHash && h.algorithm == HashAlgorithm::Maglev && (h.table_size as usize) < n {
            self.push(
                format!("{p}.hash.table_size"),
                format!("maglev table size {} is smaller than the {n} endpoints (expected at least {n})", h.table_size),
            );
        }
        let (variant, name) = match &h.key {
            HashKey::SourceIp => return,
            HashKey::Header(n) => ("header", n),
            HashKey::QueryParameter(n) => ("query_parameter", n),
            HashKey::Cookie(n) => ("cookie", n),
        };
        self.non_empty(format!("{p}.hash.key.{variant}"), &format!("{} name", variant.replace('_', " ")), name);
    }

    fn subsets(&mut self, p: &str, c: &Cluster) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (s, sub) in c.subsets.iter().enumerate() {
            let sp = format!("{p}.subsets[{s}]");
            if self.non_empty(format!("{sp}.name"), "subset name", &sub.name) {
                if let Some(first) = names.get(sub.name.as_str()) {
                    self.push(
                        format!("{sp}.name"),
                        format!(
                            "duplicate subset name \"{}\" in cluster \"{}\" (already used by {p}.subsets[{first}])",
                            sub.name, c.name
                        ),
                    );
                } else {
                    names.insert(&sub.name, s);
                }
            }
            if sub.labels.is_empty() {
                self.push(
                    format!("{sp}.labels"),
                    format!("subset \"{}\" has no labels (expected at least one label to select endpoints)", sub.name),
                );
            } else if !c.endpoints.iter().any(|e| selects(&sub.labels, &e.labels)) {
                self.push(
                    format!("{sp}.labels"),
                    format!(
                        "subset \"{}\" selects no endpoint of cluster \"{}\" (labels {})",
                        sub.name,
                        c.name,
                        labels(&sub.labels)
                    ),
                );
            }
        }
    }
}

// === TLS checks (the files themselves are read and checked by `crate::tls` at build) ===

impl Checker<'_> {
    /// SNI certificates and ALPN of a listener.
    fn listener_tls_extra(&mut self, p: &str, tls: &ListenerTls) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, s) in tls.sni.iter().enumerate() {
            let sp = format!("{p}.sni[{i}]");
            self.non_empty(format!("{sp}.cert"), "certificate path", &s.cert);
            self.non_empty(format!("{sp}.key"), "private key path", &s.key);
            if s.server_names.is_empty() {
                self.push(
                    format!("{sp}.server_names"),
                    "no server names (expected at least one name such as api.example.com or *.example.com)".into(),
                );
            }
            for (j, name) in s.server_names.iter().enumerate() {
                let np = format!("{sp}.server_names[{j}]");
                let bare = name.strip_prefix("*.").unwrap_or(name);
                if !is_dns_name(bare) {
                    self.push(
                        np,
                        format!(
                            "invalid server name \"{name}\" (expected a DNS name, optionally starting with \"*.\")"
                        ),
                    );
                } else if let Some(first) = seen.get(&name.to_ascii_lowercase()) {
                    self.push(np, format!("duplicate server name \"{name}\" (already used by {p}.sni[{first}])"));
                } else {
                    seen.insert(name.to_ascii_lowercase(), i);
                }
            }
        }
        self.alpn(p, &tls.alpn);
    }

    /// A cluster's `tls` block.
    fn upstream_tls(&mut self, p: &str, tls: &UpstreamTls) {
        self.non_empty(format!("{p}.ca"), "CA bundle path", &tls.ca);
        match (&tls.cert, &tls.key, tls.mode) {
            (Some(c), Some(k), UpstreamTlsMode::Mutual) => {
                self.non_empty(format!("{p}.cert"), "certificate path", c);
                self.non_empty(format!("{p}.key"), "private key path", k);
            }
            (Some(_), Some(_), UpstreamTlsMode::Simple) => self.push(
                format!("{p}.mode"),
                "mode \"simple\" presents no client certificate, but cert and key are set (expected mode: mutual, \
                 or no cert/key)"
                    .into(),
            ),
            (None, None, UpstreamTlsMode::Simple) => {}
            (c, _, _) => {
                let missing = if c.is_none() { "cert" } else { "key" };
                self.push(
                    format!("{p}.{missing}"),
                    format!("missing {missing} (a client certificate needs both cert and key, and mode: mutual)"),
                );
            }
        }
        if let Some(sni) = &tls.sni {
            if !is_dns_name(sni) && sni.parse::<IpAddr>().is_err() {
                self.push(format!("{p}.sni"), format!("invalid server name \"{sni}\" (expected a DNS name or an IP)"));
            }
        }
        for (i, san) in tls.subject_alt_names.iter().enumerate() {
            self.non_empty(format!("{p}.subject_alt_names[{i}]"), "subject alt name", san);
        }
        self.alpn(p, &tls.alpn);
    }

    /// ALPN protocol ids: 1..=255 bytes each (RFC 7301).
    fn alpn(&mut self, p: &str, alpn: &[String]) {
        for (i, a) in alpn.iter().enumerate() {
            if a.is_empty() || a.len() > 255 {
                self.push(
                    format!("{p}.alpn[{i}]"),
                    format!("invalid ALPN protocol \"{a}\" (expected 1..=255 bytes, e.g. h2 or http/1.1)"),
                );
            }
        }
    }
}

/// Whether an endpoint carrying `have` belongs to a subset selecting `want`.
fn selects(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// `{version: v1, zone: a}` → `version=v1, zone=a`.
fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// `"a", "b"`, or a note that there are none.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("\"{n}\"")).collect();
    if v.is_empty() {
        "(no clusters defined)".into()
    } else {
        v.join(", ")
    }
}

/// Whether two bound addresses would compete for the same connections: same port
/// (never port 0, which picks a free port) and the same IP or a wildcard on either side.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    x == y || x.is_unspecified() || y.is_unspecified()
}

/// A listener or admin address: `IP:port`, IPv6 in brackets.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("invalid socket address \"{s}\" (expected IP:port such as 0.0.0.0:8080 or [::1]:8080)"))
}

/// An endpoint address: `ip:port`, `[ipv6]:port` or `hostname:port`, port 1..=65535.
fn parse_endpoint(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid socket address \"{s}\": {why} (expected ip:port or hostname:port)"));
    let (host, port) = match s.rsplit_once(':') {
        Some(hp) => hp,
        None => return bad("no port"),
    };
    match port.parse::<u32>() {
        Ok(p) if (1..=65_535).contains(&p) => {}
        Ok(p) => return bad(&format!("port {p} is out of range 1..=65535")),
        Err(_) => return bad(&format!("port \"{port}\" is not a number")),
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => bad(&format!("\"{inner}\" is not an IPv6 address")),
        };
    }
    if host.contains(':') {
        return bad("an IPv6 address needs brackets, e.g. [::1]:8080");
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if !is_dns_name(host) {
        return bad(&format!("\"{host}\" is neither an IP address nor a valid hostname"));
    }
    Ok(())
}

/// RFC 1123 hostname: dot-separated labels of 1..=63 letters, digits or '-', not
/// starting or ending with '-', at most 253 characters, optional trailing dot, and
/// a last label that is not all digits (so `10.0.0.999` is rejected, not resolved).
fn is_dns_name(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    h.split('.').all(label_ok) && !h.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// Name after `builtin:`: letters, digits, `-`, `_`.
fn is_builtin_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
