//! Imports: proxy_http_call. The upstream is a configured cluster name (Envoy);
//! `:method`, `:path` and `:authority` are required; timeout 0 means none. The answer is
//! delivered exactly once through `on_http_call_response`, or never if the calling
//! context goes away first (the call is aborted).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::maps::decode_pairs;
use crate::wasm::state::{Ctx, HostState};

/// Most calls (and `resume_after` timers) one context may have in flight.
pub(super) const MAX_OUTSTANDING_CALLS: usize = 1024;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         uptr: u32,
         ulen: u32,
         hptr: u32,
         hlen: u32,
         bptr: u32,
         blen: u32,
         tptr: u32,
         tlen: u32,
         timeout_ms: u32,
         ret_token: u32|
         -> R {
            let cluster = memory::read_string(&mut c, uptr, ulen)?;
            let raw_headers = memory::read(&mut c, hptr, hlen)?;
            let body = memory::read(&mut c, bptr, blen)?;
            let _trailers = memory::read(&mut c, tptr, tlen)?;
            memory::check(&mut c, ret_token, 4)?;
            let Some(pairs) = decode_pairs(&raw_headers) else {
                return Ok(Status::BadArgument.raw());
            };
            let st = c.data_mut();
            let Some(host) = st.host.clone() else {
                return Ok(Status::InternalFailure.raw());
            };
            if !host.has_cluster(&cluster) {
                tracing::debug!(cluster, "http_call to an unknown cluster");
                return Ok(Status::BadArgument.raw());
            }
            let Some(req) = build_request(pairs, Bytes::from(body)) else {
                return Ok(Status::BadArgument.raw());
            };
            let ctx = st.current;
            let outstanding = match st.contexts.get(&ctx) {
                Some(Ctx::Root(r)) => r.calls.len(),
                Some(Ctx::Http(h)) => h.calls.len(),
                None => return Ok(Status::InternalFailure.raw()),
            };
            if outstanding >= MAX_OUTSTANDING_CALLS {
                tracing::warn!(plugin = %st.current_plugin().name, "too many outstanding http_calls");
                return Ok(Status::InternalFailure.raw());
            }
            let token = st.token();
            let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
            let fut = host.http_call(&cluster, req, timeout);
            let vm = st.vm.clone();
            let task = tokio::task::spawn_local(async move {
                let res = fut.await;
                if let Some(vm) = vm.upgrade() {
                    if !vm.is_broken() {
                        vm.deliver_call(ctx, token, res);
                    }
                }
            });
            match st.contexts.get_mut(&ctx) {
                Some(Ctx::Root(r)) => drop(r.calls.insert(token, task.abort_handle())),
                Some(Ctx::Http(h)) => drop(h.calls.insert(token, task.abort_handle())),
                None => task.abort(),
            }
            memory::write_u32(&mut c, ret_token, token)?;
            Ok(Status::Ok.raw())
        },
    )?;
    Ok(())
}

/// Builds the request from the pairs: pseudo-headers give method and URI
/// (`scheme://authority/path`), the rest become headers. `None` when something required
/// is missing or invalid.
fn build_request(pairs: Vec<(Vec<u8>, Vec<u8>)>, body: Bytes) -> Option<http::Request<Bytes>> {
    let (mut method, mut path, mut authority, mut scheme) = (None, None, None, None);
    let mut headers = http::HeaderMap::new();
    for (k, v) in pairs {
        match k.as_slice() {
            b":method" => method = Some(v),
            b":path" => path = Some(v),
            b":authority" => authority = Some(v),
            b":scheme" => scheme = Some(v),
            k if k.starts_with(b":") => {}
            k => {
                let name = HeaderName::from_bytes(k).ok()?;
                headers.append(name, HeaderValue::from_bytes(&v).ok()?);
            }
        }
    }
    let method = http::Method::from_bytes(&method?).ok()?;
    let authority = String::from_utf8(authority?).ok()?;
    let path = String::from_utf8(path?).ok()?;
    let scheme = scheme.and_then(|s| String::from_utf8(s).ok()).unwrap_or_else(|| "http".into());
    if authority.is_empty() || !path.starts_with('/') {
        return None;
    }
    let uri: http::Uri = format!("{scheme}://{authority}{path}").parse().ok()?;
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req)
}
