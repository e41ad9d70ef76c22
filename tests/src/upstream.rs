//! Real upstream servers on 127.0.0.1 for end-to-end tests.
//!
//! Routes of the standard upstream (HTTP/1.1 and HTTP/2 on one port):
//! - `/status/<code>`: that status;
//! - `/delay/<ms>`: answers after a delay;
//! - `/echo`: streams the request body back, counting bytes;
//! - `/bytes/<n>`: streams `n` bytes;
//! - `/trailers`: a body then trailers `x-trailer: done`;
//! - `/reset`: drops the connection without answering;
//! - `/ws`: accepts an upgrade and echoes bytes;
//! - anything else: 200, body = the upstream's name; request headers echoed as
//!   `x-echo-<name>` response headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name (the body of a plain 200).
    pub name: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

// === impl Upstream ===

impl Upstream {
    /// Starts the standard upstream named `name`.
    pub async fn start(name: &str) -> Upstream {
        Self::start_with(name, None).await
    }

    /// Starts the standard upstream behind TLS with this server config.
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Upstream {
        Self::start_with(name, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_string(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (n, h, tls) = (n.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(req, n.clone(), h.clone()));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, name: name.to_string(), hits, task }
    }

    /// Starts an upstream that answers every request with `status` (a sick backend).
    pub async fn start_failing(name: &str, status: u16) -> Upstream {
        Self::start(&format!("{name}#fail={status}")).await
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(req: Request<Incoming>, name: String, hits: Arc<AtomicUsize>) -> Result<Response<Body>, std::io::Error> {
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(code) = name.split_once("#fail=").and_then(|(_, c)| c.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(reply(status, name));
    }
    let path = req.uri().path().to_string();
    if let Some(code) = path.strip_prefix("/status/") {
        let status =
            code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        return Ok(reply(status, name));
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|m| m.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(reply(StatusCode::OK, name));
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n / chunk.len();
        let rest = n % chunk.len();
        let stream = futures_util::stream::iter(0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone())))
            .chain(futures_util::stream::iter((rest > 0).then(|| Ok(Frame::data(Bytes::from(vec![b'x'; rest]))))));
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    match path.as_str() {
        "/echo" => {
            // Streams back whatever arrives, frame by frame.
            let body = req.into_body().map_err(std::io::Error::other);
            Ok(Response::new(BodyExt::boxed(body)))
        }
        "/trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-trailer", HeaderValue::from_static("done"));
            let frames = vec![Ok(Frame::data(Bytes::from_static(b"body"))), Ok(Frame::trailers(trailers))];
            Ok(Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))))
        }
        "/reset" => Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset on purpose")),
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("connection", HeaderValue::from_static("upgrade"));
            r.headers_mut().insert("upgrade", HeaderValue::from_static("websocket"));
            Ok(r)
        }
        _ => {
            let mut r = reply(StatusCode::OK, name);
            for (k, v) in req.headers() {
                if let Ok(n) = http::HeaderName::from_bytes(format!("x-echo-{k}").as_bytes()) {
                    r.headers_mut().append(n, v.clone());
                }
            }
            Ok(r)
        }
    }
}

fn reply(status: StatusCode, name: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(name)).map_err(|e: Infallible| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed()
}

/// A port with nothing listening (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// A server that accepts and immediately closes every connection.
pub async fn accept_and_close() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            drop(tcp);
        }
    });
    (addr, task)
}

/// A server that accepts, reads, and never answers.
pub async fn blackhole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = l.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}
