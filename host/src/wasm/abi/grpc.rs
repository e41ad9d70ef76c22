//! Imports: proxy_grpc_call, proxy_grpc_stream, proxy_grpc_send, proxy_grpc_cancel,
//! proxy_grpc_close.
//!
//! Unary calls go through `HostServices::grpc_call` (the upstream is a cluster name;
//! unknown → `ParseFailure`, as Envoy answers for 0.1.x compatibility; a host without
//! gRPC → `InternalFailure`). The answer arrives once: `on_grpc_receive` with the message
//! (buffer 5, metadata maps 4/5) or `on_grpc_close` with the status (`proxy_get_status`).
//! Streams are not supported (`InternalFailure`; their ids are never valid: `NotFound`).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use wasmtime::Linker;

use super::http_call::MAX_OUTSTANDING_CALLS;
use super::status::Status;
use super::{memory, C, R};
use crate::wasm::maps::decode_pairs;
use crate::wasm::state::{Ctx, GrpcResult, HostState};
use crate::wasm::types::CalloutError;

/// gRPC status codes used by the host.
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         up: u32,
         ul: u32,
         sp: u32,
         sl: u32,
         mp: u32,
         ml: u32,
         ip: u32,
         il: u32,
         gp: u32,
         gl: u32,
         timeout_ms: u32,
         ret: u32|
         -> R {
            let cluster = memory::read_string(&mut c, up, ul)?;
            let service = memory::read_string(&mut c, sp, sl)?;
            let method = memory::read_string(&mut c, mp, ml)?;
            let metadata = memory::read(&mut c, ip, il)?;
            let message = memory::read(&mut c, gp, gl)?;
            memory::check(&mut c, ret, 4)?;
            let st = c.data_mut();
            let Some(host) = st.host.clone().filter(|h| h.supports_grpc()) else {
                return Ok(Status::InternalFailure.raw());
            };
            if !host.has_cluster(&cluster) {
                return Ok(Status::ParseFailure.raw());
            }
            let Some(pairs) = decode_pairs(&metadata) else {
                return Ok(Status::ParseFailure.raw());
            };
            let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
            let Some(req) = build(&cluster, &service, &method, pairs, &message, timeout) else {
                return Ok(Status::ParseFailure.raw());
            };
            let ctx = st.current;
            let outstanding = match st.contexts.get(&ctx) {
                Some(Ctx::Root(r)) => r.calls.len(),
                Some(Ctx::Http(h)) => h.calls.len(),
                None => return Ok(Status::InternalFailure.raw()),
            };
            if outstanding >= MAX_OUTSTANDING_CALLS {
                return Ok(Status::InternalFailure.raw());
            }
            let token = st.token();
            let fut = host.grpc_call(&cluster, req, timeout);
            let vm = st.vm.clone();
            let task = tokio::task::spawn_local(async move {
                let result = answer(fut.await);
                if let Some(vm) = vm.upgrade() {
                    if !vm.is_broken() {
                        vm.deliver_grpc(ctx, token, result);
                    }
                }
            });
            match st.contexts.get_mut(&ctx) {
                Some(Ctx::Root(r)) => drop(r.calls.insert(token, task.abort_handle())),
                Some(Ctx::Http(h)) => drop(h.calls.insert(token, task.abort_handle())),
                None => task.abort(),
            }
            memory::write_u32(&mut c, ret, token)?;
            Ok(Status::Ok.raw())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C<'_>, _up: u32, _ul: u32, _sp: u32, _sl: u32, _mp: u32, _ml: u32, _ip: u32, _il: u32, ret: u32| -> R {
            memory::check(&mut c, ret, 4)?;
            Ok(Status::InternalFailure.raw())
        },
    )?;
    l.func_wrap("env", "proxy_grpc_send", |_c: C<'_>, _id: u32, _p: u32, _l: u32, _eos: u32| -> R {
        Ok(Status::NotFound.raw())
    })?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        l.func_wrap("env", name, |mut c: C<'_>, id: u32| -> R { Ok(cancel(c.data_mut(), id).raw()) })?;
    }
    Ok(())
}

/// Cancels call `id` of the current context: it will never be answered.
fn cancel(st: &mut HostState, id: u32) -> Status {
    let ctx = st.current;
    let handle = match st.contexts.get_mut(&ctx) {
        Some(Ctx::Root(r)) => r.calls.remove(&id),
        Some(Ctx::Http(h)) => h.calls.remove(&id),
        None => None,
    };
    match handle {
        Some(h) => {
            h.abort();
            Status::Ok
        }
        None => Status::NotFound,
    }
}

/// The HTTP/2 request of a unary call: `POST http://cluster/service/method`, gRPC
/// headers, the metadata, and the message in one uncompressed length-prefixed frame.
fn build(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: Vec<(Vec<u8>, Vec<u8>)>,
    message: &[u8],
    timeout: Option<Duration>,
) -> Option<http::Request<Bytes>> {
    let uri: http::Uri = format!("http://{cluster}/{service}/{method}").parse().ok()?;
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0);
    body.put_u32(u32::try_from(message.len()).ok()?);
    body.extend_from_slice(message);
    let mut req = http::Request::new(body.freeze());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let h = req.headers_mut();
    for (k, v) in metadata {
        if k.starts_with(b":") {
            continue;
        }
        h.append(HeaderName::from_bytes(&k).ok()?, HeaderValue::from_bytes(&v).ok()?);
    }
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Some(t) = timeout {
        h.insert("grpc-timeout", HeaderValue::from_str(&format!("{}m", t.as_millis())).ok()?);
    }
    Some(req)
}

/// Turns the transport result into the call's answer (status, message, metadata).
fn answer(res: Result<(http::Response<Bytes>, http::HeaderMap), CalloutError>) -> GrpcResult {
    let fail = |status, msg: String| GrpcResult {
        initial_metadata: http::HeaderMap::new(),
        message: Bytes::new(),
        trailing_metadata: http::HeaderMap::new(),
        status,
        status_message: msg,
    };
    let (resp, trailers) = match res {
        Ok(r) => r,
        Err(CalloutError::Timeout) => return fail(DEADLINE_EXCEEDED, "deadline exceeded".into()),
        Err(e) => return fail(UNAVAILABLE, e.to_string()),
    };
    let (parts, body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        return fail(UNAVAILABLE, format!("upstream answered HTTP {}", parts.status));
    }
    // grpc-status is in the trailers, or in the headers of a trailers-only response.
    let field = |name: &str| trailers.get(name).or_else(|| parts.headers.get(name)).cloned();
    let status = match field("grpc-status").and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok()) {
        Some(s) => s,
        None => return fail(UNKNOWN, "response without grpc-status".into()),
    };
    let status_message = field("grpc-message").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let message = if status == 0 {
        match frame(&body) {
            Some(m) => m,
            None => return fail(INTERNAL, "malformed or compressed gRPC message".into()),
        }
    } else {
        Bytes::new()
    };
    GrpcResult {
        initial_metadata: parts.headers,
        message,
        trailing_metadata: trailers,
        status,
        status_message: status_message.unwrap_or_default(),
    }
}

/// The message of the first uncompressed length-prefixed frame.
fn frame(body: &Bytes) -> Option<Bytes> {
    let head = body.get(..5)?;
    if head[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (body.len() >= 5 + len).then(|| body.slice(5..5 + len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_transport_results() {
        let ok = |headers: &[(&str, &str)], body: &[u8], trailers: &[(&str, &str)]| {
            let mut b = http::Response::builder();
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let mut t = http::HeaderMap::new();
            for (k, v) in trailers {
                t.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            answer(Ok((b.body(Bytes::copy_from_slice(body)).unwrap(), t)))
        };
        let r = ok(&[], b"\x00\x00\x00\x00\x02hi", &[("grpc-status", "0")]);
        assert_eq!((r.status, r.message.as_ref()), (0, &b"hi"[..]));
        let r = ok(&[("grpc-status", "7"), ("grpc-message", "no")], b"", &[]);
        assert_eq!((r.status, r.status_message.as_str()), (7, "no"));
        assert_eq!(ok(&[], b"\x01\x00\x00\x00\x00", &[("grpc-status", "0")]).status, INTERNAL);
        assert_eq!(ok(&[], b"\x00\x00\x00\x00\x09hi", &[("grpc-status", "0")]).status, INTERNAL);
        assert_eq!(ok(&[], b"", &[]).status, UNKNOWN);
        assert_eq!(answer(Err(CalloutError::Timeout)).status, DEADLINE_EXCEEDED);
        assert_eq!(answer(Err(CalloutError::Failed("x".into()))).status, UNAVAILABLE);
    }
}
