//! Imports: proxy_get_buffer_bytes, proxy_set_buffer_bytes, proxy_get_buffer_status,
//! proxy_get_configuration (v0.1.0).
//!
//! Buffers: 0 request body, 1 response body (while in or paused from the body phase),
//! 4 http_call response body (in `on_http_call_response`), 5 gRPC message (in
//! `on_grpc_receive`), 6 VM configuration, 7 plugin
//! configuration. Others are `NotFound` (the SDK tolerates it; it panics on BadArgument).

use bytes::BytesMut;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::{HostState, Scope};

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, ty: u32, start: u32, max: u32, ret_ptr: u32, ret_len: u32| -> R {
            let data = read_buffer(c.data(), ty, |b| {
                let start = (start as usize).min(b.len());
                let end = start.saturating_add(max as usize).min(b.len());
                b[start..end].to_vec()
            });
            match data {
                Some(d) => {
                    memory::return_bytes(&mut c, &d, ret_ptr, ret_len)?;
                    Ok(Status::Ok.raw())
                }
                None => Ok(Status::NotFound.raw()),
            }
        },
    )?;
    l.func_wrap("env", "proxy_get_buffer_status", |mut c: C<'_>, ty: u32, ret_len: u32, ret_flags: u32| -> R {
        match read_buffer(c.data(), ty, |b| b.len()) {
            Some(n) => {
                memory::write_u32(&mut c, ret_len, n as u32)?;
                memory::write_u32(&mut c, ret_flags, 0)?;
                Ok(Status::Ok.raw())
            }
            None => Ok(Status::NotFound.raw()),
        }
    })?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, ty: u32, start: u32, size: u32, ptr: u32, len: u32| -> R {
            let data = memory::read(&mut c, ptr, len)?;
            let Some(stream) = c.data().current_stream().cloned() else {
                return Ok(Status::Ok.raw());
            };
            let Ok(mut s) = stream.try_borrow_mut() else {
                return Ok(Status::Ok.raw());
            };
            let buf = match ty {
                0 => s.request_body.as_mut(),
                1 => s.response_body.as_mut(),
                _ => None,
            };
            match buf {
                Some(b) => splice(b, start as usize, size as usize, &data),
                None => tracing::debug!(ty, "set_buffer_bytes on a buffer not available now; ignored"),
            }
            Ok(Status::Ok.raw())
        },
    )?;
    l.func_wrap("env", "proxy_get_configuration", |mut c: C<'_>, ret_ptr: u32, ret_len: u32| -> R {
        let cfg = c.data().current_plugin().config.clone();
        memory::return_bytes(&mut c, &cfg, ret_ptr, ret_len)?;
        Ok(Status::Ok.raw())
    })?;
    Ok(())
}

/// Applies `f` to buffer `ty` if it is available now.
fn read_buffer<T>(st: &HostState, ty: u32, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    match ty {
        0 | 1 => {
            let stream = st.current_stream()?;
            let s = stream.try_borrow().ok()?;
            let b = if ty == 0 { s.request_body.as_ref() } else { s.response_body.as_ref() };
            b.map(|b| f(b))
        }
        4 => match &st.scope {
            Scope::CallResponse(r) => Some(f(&r.body)),
            _ => None,
        },
        5 => match &st.scope {
            Scope::Grpc(g) => Some(f(&g.message)),
            _ => None,
        },
        6 => Some(f(&st.current_plugin().vm_config)),
        7 => Some(f(&st.current_plugin().config)),
        _ => None,
    }
}

/// Replaces `size` bytes at `start` with `data` (`start >= len` appends, `start = 0,
/// size = 0` prepends): Envoy's prepend/replace/append and the spec's general splice.
fn splice(b: &mut BytesMut, start: usize, size: usize, data: &[u8]) {
    let start = start.min(b.len());
    let end = start.saturating_add(size).min(b.len());
    let mut out = BytesMut::with_capacity(b.len() - (end - start) + data.len());
    out.extend_from_slice(&b[..start]);
    out.extend_from_slice(data);
    out.extend_from_slice(&b[end..]);
    *b = out;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splice_semantics() {
        let mut b = BytesMut::from(&b"hello"[..]);
        splice(&mut b, 0, 5, b"bye");
        assert_eq!(&b[..], b"bye");
        splice(&mut b, usize::MAX, 0, b"!");
        assert_eq!(&b[..], b"bye!");
        splice(&mut b, 0, 0, b">");
        assert_eq!(&b[..], b">bye!");
        splice(&mut b, 1, 3, b"hi");
        assert_eq!(&b[..], b">hi!");
    }
}
