//! The demo backends `wasmesh demo` starts beside the proxy: small HTTP services on
//! loopback that echo what they received and say which version answered.
//!
//! Paths: `/status/<code>` answers that status, `/delay/<ms>` waits first, anything
//! else echoes method, path, version and headers as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves one demo backend named `service` at `version` on `addr` until the task ends.
pub async fn backend(addr: SocketAddr, service: String, version: String) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let (service, version) = (service.clone(), version.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, service.clone(), version.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>, service: String, version: String) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    let method = req.method().to_string();
    let http_version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let body_len = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let body = serde_json::json!({
        "service": service,
        "version": version,
        "method": method,
        "uri": uri,
        "http_version": http_version,
        "request_body_bytes": body_len,
        "headers": headers,
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    if let Ok(v) = header::HeaderValue::from_str(&version) {
        resp.headers_mut().insert("x-demo-version", v);
    }
    Ok(resp)
}
