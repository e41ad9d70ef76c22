//! `WorkerPools`: one worker's HTTP clients, one per cluster (HTTP/1.1 keep-alive or
//! HTTP/2 prior knowledge), each pooling connections per endpoint. `!Send` by design.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::cluster::{Cluster, PoolConfig};
use super::endpoint::EndpointState;
use super::error::{BoxError, UpstreamError};
use crate::config::UpstreamProtocol;
use crate::tls::ClientTls;

/// The request body type sent upstream (the same type as the proxy's body).
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// What a pooled client was built from: rebuilt when either changes (a TLS rotation
/// yields a new `ClientConfig`).
#[derive(Clone)]
struct ClientKey {
    pool: PoolConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.pool == other.pool
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

/// One worker's upstream clients, keyed by cluster name. A client is kept across config
/// reloads while its cluster's pool settings stay the same, so warm connections survive.
#[derive(Default)]
pub struct WorkerPools {
    clients: RefCell<HashMap<String, (ClientKey, HttpClient)>>,
}

// === impl WorkerPools ===

impl WorkerPools {
    /// No clients yet; each is created on its cluster's first request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` to `endpoint` of `cluster` and waits for the response head.
    ///
    /// The URI becomes `http://<endpoint addr><path and query>`; the `Host` header is
    /// kept as the caller set it, or taken from the request's original authority (an
    /// HTTP/2 downstream has none) — only without either does it name the endpoint.
    /// No timeout is applied here beyond the connect timeout: wrap the call (see
    /// [`WorkerPools::send_timeout`]).
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &EndpointState,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = self.client(cluster);
        let original = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = original.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let path = original.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let scheme = if cluster.tls().is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        *req.uri_mut() = Uri::builder()
            .scheme(scheme)
            .authority(endpoint.authority().clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Request { source: Box::new(e) })?;
        *req.version_mut() = match cluster.protocol() {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        let metrics = cluster.metrics();
        metrics.requests.inc();
        client.request(req).await.map_err(|e| {
            let err = UpstreamError::from_client(e, cluster.protocol());
            if matches!(err, UpstreamError::ConnectFailure { .. }) {
                metrics.connect_failures.inc();
            }
            err
        })
    }

    /// [`WorkerPools::send`] bounded by `timeout` (until the response head); past it the
    /// attempt is dropped and `UpstreamError::Timeout` returned.
    pub async fn send_timeout(
        &self,
        cluster: &Cluster,
        endpoint: &EndpointState,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match timeout {
            None => self.send(cluster, endpoint, req).await,
            Some(t) => {
                tokio::time::timeout(t, self.send(cluster, endpoint, req)).await.map_err(|_| UpstreamError::Timeout)?
            }
        }
    }

    /// Drops the clients (and their idle connections) of clusters `keep` rejects, e.g.
    /// those a reload removed.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.clients.borrow_mut().retain(|name, _| keep(name));
    }

    /// The client for `cluster`, created (or replaced, when its settings changed) here.
    fn client(&self, cluster: &Cluster) -> HttpClient {
        let key = ClientKey { pool: cluster.pool, tls: cluster.tls().map(|t| t.config()) };
        let mut clients = self.clients.borrow_mut();
        if let Some((k, client)) = clients.get(cluster.name()) {
            if *k == key {
                return client.clone();
            }
        }
        let client = build_client(&key, cluster.tls().map(Arc::as_ref));
        clients.insert(cluster.name().to_string(), (key, client.clone()));
        client
    }
}

impl std::fmt::Debug for WorkerPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.borrow();
        f.debug_struct("WorkerPools").field("clusters", &clients.keys().collect::<Vec<_>>()).finish()
    }
}

fn build_client(key: &ClientKey, tls: Option<&ClientTls>) -> HttpClient {
    let cfg = &key.pool;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = https_connector(connector, key, tls);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(cfg.max_idle_per_endpoint)
        .http2_only(cfg.protocol == UpstreamProtocol::Http2);
    builder.build(connector)
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
