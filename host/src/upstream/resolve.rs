//! Endpoint addresses: `ip:port` literals, or `hostname:port` resolved at build (blocking,
//! on the control side) and again by the cluster's refresh task (async).
//!
//! A name yields one endpoint (Envoy's logical DNS): the first IPv4 address the resolver
//! returns, else its first address — so `localhost` means `127.0.0.1` where both exist.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Where an endpoint address points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A literal socket address.
    Ip(SocketAddr),
    /// A host name and port, resolved by DNS.
    Name {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Parses `ip:port`, `[v6]:port` or `hostname:port`.
pub(crate) fn parse(address: &str) -> Result<Target, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(Target::Ip(addr));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("endpoint address \"{address}\" has no port (expected host:port)"));
    };
    let port: u16 =
        port.parse().map_err(|_| format!("endpoint address \"{address}\" has an invalid port \"{port}\""))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_host {
        return Err(format!("endpoint address \"{address}\" is neither ip:port nor hostname:port"));
    }
    Ok(Target::Name { host: host.to_string(), port })
}

/// Resolves `host:port` with the system resolver, blocking the calling thread.
pub(crate) fn resolve_blocking(host: &str, port: u16) -> io::Result<SocketAddr> {
    prefer_v4((host, port).to_socket_addrs()?)
}

/// Resolves `host:port` with the system resolver on tokio's blocking pool.
pub(crate) async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    prefer_v4(tokio::net::lookup_host((host, port)).await?)
}

fn prefer_v4(addrs: impl Iterator<Item = SocketAddr>) -> io::Result<SocketAddr> {
    let mut first = None;
    for a in addrs {
        if a.is_ipv4() {
            return Ok(a);
        }
        first.get_or_insert(a);
    }
    first.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_names() {
        assert_eq!(parse("127.0.0.1:80"), Ok(Target::Ip("127.0.0.1:80".parse().expect("literal"))));
        assert_eq!(parse("[::1]:8080"), Ok(Target::Ip("[::1]:8080".parse().expect("literal"))));
        assert_eq!(parse("web.svc.local:9000"), Ok(Target::Name { host: "web.svc.local".into(), port: 9000 }));
        assert!(parse("localhost").is_err());
        assert!(parse("localhost:99999").is_err());
        assert!(parse(":80").is_err());
        assert!(parse("bad host:80").is_err());
        assert!(parse("[::1:80").is_err());
    }

    #[test]
    fn localhost_resolves_to_loopback_v4_first() {
        let a = resolve_blocking("localhost", 8080).expect("localhost resolves");
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 8080);
    }
}
