//! The admin HTTP endpoint: `/healthz`, `/ready`, `/metrics` (alias `/stats/prometheus`),
//! `/config_dump`, `/clusters`. Bind it to loopback: it is not authenticated.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use self::metrics_body::MetricsBody;
use crate::reload::ReloadOutcome;
use crate::server::Shared;

mod metrics_body;

/// An admin response body: a whole one, or the streamed metrics.
type AdminBody = Either<Full<Bytes>, MetricsBody>;

/// Serves the admin endpoint on `socket` until the task is aborted.
pub async fn serve(socket: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin socket");
            return;
        }
    };
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Dispatches one admin request.
fn route(shared: &Shared, req: Request<Incoming>) -> Response<AdminBody> {
    if req.uri().path() == "/reload" && req.method() == Method::POST {
        return match shared.reload() {
            None => text(StatusCode::CONFLICT, "this proxy was not started from a config file\n"),
            Some(ReloadOutcome::Rejected { error }) => {
                let mut r = json(&serde_json::json!({ "result": "rejected", "error": error }));
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                r
            }
            Some(ReloadOutcome::Unchanged) => json(&serde_json::json!({ "result": "unchanged" })),
            Some(ReloadOutcome::Applied { generation }) => {
                json(&serde_json::json!({ "result": "applied", "generation": generation }))
            }
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported (and POST /reload)\n");
    }
    match req.uri().path() {
        "/reload" => {
            let g = shared.generation.load();
            let last = shared.reloader.as_ref().and_then(|r| r.last());
            json(&serde_json::json!({ "generation": g.number, "last_reload": last, "listeners": shared.listeners.all() }))
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" => {
            if shared.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" | "/stats/prometheus" => {
            let host = Bytes::from(crate::telemetry::render(&shared.registry));
            let mut r = Response::new(Either::Right(MetricsBody::new(host, shared.wasm.clone())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/config_dump" => {
            let g = shared.generation.load();
            json(&serde_json::json!({ "generation": g.number, "config": &*g.config }))
        }
        "/clusters" => {
            let g = shared.generation.load();
            let mut names: Vec<&String> = g.clusters.keys().collect();
            names.sort();
            let clusters: Vec<serde_json::Value> =
                names.into_iter().filter_map(|n| g.clusters.get(n)).map(|c| c.cluster.snapshot()).collect();
            json(&serde_json::json!({ "generation": g.number, "clusters": clusters }))
        }
        "/" => text(
            StatusCode::OK,
            "wasmesh admin: /healthz /ready /metrics /stats/prometheus /config_dump /clusters /reload (GET status, POST reload)\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    r
}

fn json(value: &serde_json::Value) -> Response<AdminBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}
