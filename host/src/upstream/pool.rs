//! `WorkerPools`: one worker's upstream connections, per cluster and endpoint: HTTP/1.1
//! keep-alive connections (one exchange at a time each, the most recently used first) or
//! one multiplexed HTTP/2 connection (prior knowledge). A worker owns its pools; the only
//! `Send` part is the handle a response body carries to give its connection back.
//!
//! Built on hyper's connection-level client rather than hyper-util's pooled `Client`: the
//! pool is a list per endpoint, a connection returns to it when its response body ends
//! (no task per response, no pool key hashing), and a request a reused connection never
//! sent (the upstream closed it while idle) goes once more on a fresh connection.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustc_hash::FxHashMap;
use tower_service::Service;

use super::cluster::{Cluster, PoolConfig};
use super::endpoint::EndpointState;
use super::error::{BoxError, UpstreamError};
use crate::config::UpstreamProtocol;
use crate::tls::ClientTls;

/// The request body type sent upstream (the same type as the proxy's body).
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a pooled cluster was built from: rebuilt when either changes (a TLS rotation
/// yields a new `ClientConfig`).
struct ClientKey {
    pool: PoolConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientKey {
    fn of(cluster: &Cluster) -> ClientKey {
        ClientKey { pool: cluster.pool, tls: cluster.tls().map(|t| t.config()) }
    }

    /// True when `cluster` still has these pool settings and this TLS configuration.
    fn matches(&self, cluster: &Cluster) -> bool {
        self.pool == cluster.pool
            && match (&self.tls, cluster.tls()) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, &b.config()),
                _ => false,
            }
    }
}

/// One worker's upstream connections, keyed by cluster name. A cluster's pool is kept
/// across config reloads while its pool settings stay the same, so warm connections
/// survive.
#[derive(Default)]
pub struct WorkerPools {
    clusters: RefCell<FxHashMap<String, Arc<ClusterPool>>>,
}

/// The connections of one cluster on one worker.
struct ClusterPool {
    key: ClientKey,
    connector: HttpsConnector<HttpConnector>,
    scheme: Scheme,
    /// Idle HTTP/1.1 connections per endpoint, the most recently used last. (Fx: an
    /// `Authority` hashes byte by byte, which SipHash made ~5% of an empty-chain request.)
    idle: Mutex<FxHashMap<Authority, Vec<Idle>>>,
    /// The HTTP/2 connection per endpoint; its lock makes concurrent first requests
    /// share one handshake.
    h2: Mutex<FxHashMap<Authority, H2Slot>>,
}

/// How long a checkout waits for an idle connection that is not ready yet.
const READY_WAIT: Duration = Duration::from_millis(20);

type H2Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<UpstreamBody>>>>;

/// An HTTP/1.1 connection waiting for its next request.
struct Idle {
    conn: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

// === impl WorkerPools ===

impl WorkerPools {
    /// No connections yet; each cluster's pool is created on its first request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` to `endpoint` of `cluster` and waits for the response head.
    ///
    /// The `Host` header is kept as the caller set it, or taken from the request's
    /// original authority (an HTTP/2 downstream has none) — only without either does it
    /// name the endpoint. No timeout is applied here beyond the connect timeout: wrap the
    /// call (see [`WorkerPools::send_timeout`]).
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &EndpointState,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let pool = self.pool(cluster);
        let original = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(header::HOST) {
            let host = original.authority().unwrap_or(endpoint.authority());
            if let Ok(host) = HeaderValue::from_str(host.as_str()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let path = original.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = endpoint.authority();
        let metrics = cluster.metrics();
        metrics.requests.inc();
        let result = match cluster.protocol() {
            UpstreamProtocol::Http1 => {
                *req.uri_mut() = Uri::from(path);
                *req.version_mut() = Version::HTTP_11;
                pool.send_h1(authority, req).await
            }
            UpstreamProtocol::Http2 => {
                // HTTP/2 carries scheme and authority as pseudo-headers.
                *req.uri_mut() = Uri::builder()
                    .scheme(pool.scheme.clone())
                    .authority(authority.clone())
                    .path_and_query(path)
                    .build()
                    .map_err(|e| UpstreamError::Request { source: Box::new(e) })?;
                *req.version_mut() = Version::HTTP_2;
                pool.send_h2(authority, req).await
            }
        };
        if let Err(UpstreamError::ConnectFailure { .. }) = &result {
            metrics.connect_failures.inc();
        }
        result
    }

    /// [`WorkerPools::send`] bounded by `timeout` (until the response head); past it the
    /// attempt is dropped and `UpstreamError::Timeout` returned.
    pub async fn send_timeout(
        &self,
        cluster: &Cluster,
        endpoint: &EndpointState,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        match timeout {
            None => self.send(cluster, endpoint, req).await,
            Some(t) => {
                tokio::time::timeout(t, self.send(cluster, endpoint, req)).await.map_err(|_| UpstreamError::Timeout)?
            }
        }
    }

    /// Drops the pools (and their idle connections) of clusters `keep` rejects, e.g.
    /// those a reload removed.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.clusters.borrow_mut().retain(|name, _| keep(name));
    }

    /// The pool of `cluster`, created (or replaced, when its settings changed) here.
    fn pool(&self, cluster: &Cluster) -> Arc<ClusterPool> {
        if let Some(pool) = self.clusters.borrow().get(cluster.name()).filter(|p| p.key.matches(cluster)) {
            return pool.clone();
        }
        let pool = ClusterPool::new(ClientKey::of(cluster), cluster.tls().map(Arc::as_ref));
        self.clusters.borrow_mut().insert(cluster.name().to_string(), pool.clone());
        pool
    }
}

impl std::fmt::Debug for WorkerPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clusters = self.clusters.borrow();
        f.debug_struct("WorkerPools").field("clusters", &clusters.keys().collect::<Vec<_>>()).finish()
    }
}

// === impl ClusterPool ===

impl ClusterPool {
    fn new(key: ClientKey, tls: Option<&ClientTls>) -> Arc<Self> {
        let cfg = &key.pool;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = https_connector(http, &key, tls);
        let scheme = if key.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        let pool = Arc::new(ClusterPool {
            key,
            connector,
            scheme,
            idle: Mutex::new(FxHashMap::default()),
            h2: Mutex::new(FxHashMap::default()),
        });
        spawn_reaper(Arc::downgrade(&pool));
        pool
    }

    /// One HTTP/1.1 exchange: on an idle connection if there is one, else a new one.
    async fn send_h1(
        self: &Arc<Self>,
        authority: &Authority,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        if let Some(mut conn) = self.checkout(authority).await {
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled(authority, conn, resp)),
                // The connection closed before the request went out: once more, fresh.
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(UpstreamError::from_exchange(e.into_error(), UpstreamProtocol::Http1)),
                },
            }
        }
        // Boxed: the dial (TCP, TLS, handshake) is a large future that the common case,
        // an idle connection, should not carry (and copy) in every exchange's state.
        let mut conn = Box::pin(self.connect_h1(authority)).await?;
        let resp =
            conn.send_request(req).await.map_err(|e| UpstreamError::from_exchange(e, UpstreamProtocol::Http1))?;
        Ok(self.pooled(authority, conn, resp))
    }

    /// The most recently used idle connection that is still usable.
    async fn checkout(&self, authority: &Authority) -> Option<http1::SendRequest<UpstreamBody>> {
        let idle_timeout = self.key.pool.idle_timeout;
        loop {
            let idle = lock(&self.idle).get_mut(authority).and_then(Vec::pop)?;
            if idle.conn.is_closed() || idle.since.elapsed() >= idle_timeout {
                continue;
            }
            let mut conn = idle.conn;
            // Back in the list as soon as its response body ended (or was dropped), the
            // connection may not take the next request yet: it does within this worker's
            // turn, or after draining what is left of a dropped body (bounded by hyper;
            // a connection still busy after READY_WAIT is closed instead).
            if conn.is_ready() || matches!(tokio::time::timeout(READY_WAIT, conn.ready()).await, Ok(Ok(()))) {
                return Some(conn);
            }
        }
    }

    async fn connect_h1(&self, authority: &Authority) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.connect(authority).await?;
        let (conn, task) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::ConnectFailure { source: Box::new(e) })?;
        run_connection(task.with_upgrades());
        Ok(conn)
    }

    /// One HTTP/2 exchange on the endpoint's shared connection (opened on first use and
    /// after it closed).
    async fn send_h2(
        self: &Arc<Self>,
        authority: &Authority,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let slot = lock(&self.h2).entry(authority.clone()).or_default().clone();
        let mut conn = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(c) if !c.is_closed() => c.clone(),
                _ => {
                    // Boxed for the same reason as in `send_h1`.
                    let conn = Box::pin(self.connect_h2(authority)).await?;
                    *guard = Some(conn.clone());
                    conn
                }
            }
        };
        let resp =
            conn.send_request(req).await.map_err(|e| UpstreamError::from_exchange(e, UpstreamProtocol::Http2))?;
        Ok(resp.map(|body| PooledBody { body, back: None }))
    }

    /// A new HTTP/2 connection to `authority`, its connection task running.
    async fn connect_h2(&self, authority: &Authority) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.connect(authority).await?;
        let (conn, task) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::ConnectFailure { source: Box::new(e) })?;
        run_connection(task);
        Ok(conn)
    }

    /// Dials `authority` (TCP, then TLS for TLS clusters) within the connect timeout.
    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::Request { source: Box::new(e) })?;
        let mut connector = self.connector.clone();
        connector.call(uri).await.map_err(|source| UpstreamError::ConnectFailure { source })
    }

    /// The response, with a body that gives `conn` back when it ends (right away if
    /// there is none).
    fn pooled(
        self: &Arc<Self>,
        authority: &Authority,
        conn: http1::SendRequest<UpstreamBody>,
        resp: Response<Incoming>,
    ) -> Response<PooledBody> {
        let back = GiveBack { pool: Arc::downgrade(self), authority: authority.clone(), conn };
        let back = if resp.body().is_end_stream() {
            back.give();
            None
        } else {
            Some(back)
        };
        resp.map(|body| PooledBody { body, back })
    }

    /// Puts a connection whose exchange ended back in the idle list.
    fn put(&self, authority: Authority, conn: http1::SendRequest<UpstreamBody>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        let list = idle.entry(authority).or_default();
        if list.len() < self.key.pool.max_idle_per_endpoint {
            list.push(Idle { conn, since: Instant::now() });
        }
    }

    /// Closes connections idle for longer than the idle timeout.
    fn reap(&self) {
        let timeout = self.key.pool.idle_timeout;
        let mut idle = lock(&self.idle);
        for list in idle.values_mut() {
            list.retain(|i| !i.conn.is_closed() && i.since.elapsed() < timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

/// Runs a connection's I/O task on the worker's runtime until the connection closes.
fn run_connection(task: impl std::future::Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = task.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
}

/// Reaps idle connections every so often while the pool lives.
fn spawn_reaper(pool: Weak<ClusterPool>) {
    let Some(period) =
        pool.upgrade().map(|p| (p.key.pool.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5)))
    else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            pool.reap();
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An HTTP/1.1 connection to return to its pool when the response body ends.
struct GiveBack {
    pool: Weak<ClusterPool>,
    authority: Authority,
    conn: http1::SendRequest<UpstreamBody>,
}

impl GiveBack {
    fn give(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.authority, self.conn);
        }
    }
}

/// A response body from the upstream. Its connection goes back to the pool once the
/// body has been read to the end, or when the body is dropped (hyper then drains a short
/// rest or closes the connection; the next checkout sees which).
pub struct PooledBody {
    body: Incoming,
    back: Option<GiveBack>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.back.is_some()).finish_non_exhaustive()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            back.give();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(back) = this.back.take() {
                back.give();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Wraps the TCP connector with TLS for TLS clusters (SNI and identity checks come from
/// the cluster's `ClientTls`); plaintext clusters pass straight through.
fn https_connector(http: HttpConnector, key: &ClientKey, tls: Option<&ClientTls>) -> HttpsConnector<HttpConnector> {
    let config = match &key.tls {
        // hyper-rustls sets ALPN from the enabled protocols and refuses a preset one.
        Some(c) => {
            let mut c = (**c).clone();
            c.alpn_protocols.clear();
            c
        }
        // Never used for TLS (plaintext clusters dial `http://`), but the connector needs one.
        None => rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }),
    };
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let b = match tls.and_then(|t| t.fixed_server_name()) {
        Some(name) => b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
        None => b,
    };
    match key.pool.protocol {
        UpstreamProtocol::Http1 => b.enable_http1().wrap_connector(http),
        UpstreamProtocol::Http2 => b.enable_http2().wrap_connector(http),
    }
}

#[cfg(test)]
mod tests;
