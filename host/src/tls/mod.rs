//! TLS for listeners ([`ServerTls`]: SNI, client auth per mode, rotation) and clusters
//! ([`ClientTls`]: identity-checked upstreams), what a handshake established
//! ([`TlsFacts`], SPIFFE), and plaintext/TLS detection for permissive ports. See README.md.

mod client;
mod error;
mod files;
mod identity;
mod server;
pub mod spiffe;
#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

pub use client::ClientTls;
pub use error::TlsError;
pub use identity::{facts, upstream_facts, PeerIdentity, TlsFacts};
pub use server::ServerTls;
pub use spiffe::SpiffeId;

/// ALPN id of HTTP/2.
pub const ALPN_H2: &str = "h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP1: &str = "http/1.1";

/// How long [`peek_is_tls`] waits for the first bytes before deciding "plaintext".
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the first bytes of a connection start a TLS handshake record: content type
/// 22 (handshake), then a record version `0x03 0x00..=0x04`. Needs at least 3 bytes;
/// plaintext HTTP never starts with 0x16.
pub fn looks_like_tls(first_bytes: &[u8]) -> bool {
    matches!(first_bytes, [0x16, 0x03, minor, ..] if *minor <= 0x04)
}

/// Whether `first_bytes`, a prefix of the stream, could still become a TLS record
/// header once more bytes arrive.
fn could_be_tls(first_bytes: &[u8]) -> bool {
    match first_bytes {
        [] | [0x16] | [0x16, 0x03] => true,
        _ => looks_like_tls(first_bytes),
    }
}

/// Peeks (without consuming) at the start of `tcp` and says whether the client is
/// speaking TLS. Waits at most [`DETECT_TIMEOUT`]; a client that sends nothing in that
/// time, or closes, is treated as plaintext.
pub async fn peek_is_tls(tcp: &TcpStream) -> io::Result<bool> {
    peek_is_tls_within(tcp, DETECT_TIMEOUT).await
}

/// [`peek_is_tls`] with an explicit bound on the wait.
pub async fn peek_is_tls_within(tcp: &TcpStream, wait: Duration) -> io::Result<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 3];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(r) => r?,
            Err(_elapsed) => return Ok(false),
        };
        if n == 0 {
            return Ok(false); // closed before saying anything
        }
        let seen = &buf[..n];
        if n == buf.len() || !could_be_tls(seen) {
            return Ok(looks_like_tls(seen));
        }
        // A partial record header: peek returns at once while bytes are buffered, so
        // wait a little for the rest instead of spinning.
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
