//! Imports: proxy_get_header_map_pairs, proxy_set_header_map_pairs,
//! proxy_get_header_map_value, proxy_add_header_map_value,
//! proxy_replace_header_map_value, proxy_remove_header_map_value,
//! proxy_get_header_map_size.
//!
//! Maps: 0 request headers, 1 request trailers, 2 response headers, 3 response trailers,
//! 4/5 gRPC call initial/trailing metadata, 6/7 http_call response headers/trailers. A map not available in this phase reads as
//! empty and ignores writes (Envoy answers BadArgument there, which made the Rust SDK
//! panic: envoy#26485). An unknown map id is `BadArgument`.

use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::maps::{decode_pairs, encode_pairs, MapRef};
use crate::wasm::state::{HostState, Scope};
use crate::wasm::text::{lossy, lossy_bytes};

/// Runs `op` on map `ty` of the current context (`None`: not available now; the bool
/// says whether writes are allowed).
fn with_map<T>(st: &mut HostState, ty: u32, op: impl FnOnce(Option<(MapRef<'_>, bool)>) -> T) -> Result<T, Status> {
    match ty {
        0..=3 => {
            let Some(stream) = st.current_stream().cloned() else {
                return Ok(op(None));
            };
            let Ok(mut guard) = stream.try_borrow_mut() else {
                return Ok(op(None));
            };
            let s = &mut *guard;
            let tls = s.info.connection.tls.is_some();
            let map = match ty {
                0 => s.request.as_mut().map(|p| (MapRef::Request(p, tls), s.request_live)),
                1 => s.request_trailers.as_deref_mut().map(|h| (MapRef::Plain(h), s.request_trailers_live)),
                2 => s.response.as_mut().map(|p| (MapRef::Response(p), s.response_live)),
                _ => s.response_trailers.as_deref_mut().map(|h| (MapRef::Plain(h), s.response_trailers_live)),
            };
            Ok(op(map))
        }
        4 | 5 => match &mut st.scope {
            Scope::Grpc(g) if ty == 4 => Ok(op(Some((MapRef::Plain(&mut g.initial_metadata), false)))),
            Scope::Grpc(g) => Ok(op(Some((MapRef::Plain(&mut g.trailing_metadata), false)))),
            _ => Ok(op(None)),
        },
        6 | 7 => match &mut st.scope {
            Scope::CallResponse(r) if ty == 6 => Ok(op(r.head.as_mut().map(|h| (MapRef::Response(h), false)))),
            Scope::CallResponse(r) => Ok(op(Some((MapRef::Plain(&mut r.trailers), false)))),
            _ => Ok(op(None)),
        },
        _ => Err(Status::BadArgument),
    }
}

fn status(r: Result<(), Status>) -> u32 {
    match r {
        Ok(()) => Status::Ok.raw(),
        Err(s) => s.raw(),
    }
}

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_get_header_map_pairs", |mut c: C<'_>, ty: u32, ret_ptr: u32, ret_len: u32| -> R {
        // Encoded while the head is borrowed: no copy per header.
        let bytes = match with_map(c.data_mut(), ty, |m| {
            let Some((m, _)) = m else { return Vec::new() };
            // Names are `HeaderName`s or pseudo-header literals: valid UTF-8 already.
            let pairs: Vec<_> = m.pairs().into_iter().map(|(k, v)| (k.as_bytes(), lossy_bytes(v))).collect();
            if pairs.is_empty() {
                Vec::new()
            } else {
                encode_pairs(&pairs)
            }
        }) {
            Ok(b) => b,
            Err(s) => return Ok(s.raw()),
        };
        memory::return_bytes(&mut c, &bytes, ret_ptr, ret_len)?;
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_get_header_map_size", |mut c: C<'_>, ty: u32, ret: u32| -> R {
        let size = match with_map(c.data_mut(), ty, |m| m.map(|(m, _)| encode_pairs(&m.pairs()).len()).unwrap_or(0)) {
            Ok(n) => n,
            Err(s) => return Ok(s.raw()),
        };
        memory::write_u32(&mut c, ret, size as u32)?;
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_set_header_map_pairs", |mut c: C<'_>, ty: u32, ptr: u32, len: u32| -> R {
        let raw = memory::read(&mut c, ptr, len)?;
        let Some(pairs) = decode_pairs(&raw) else {
            return Ok(Status::BadArgument.raw());
        };
        Ok(status(with_map(c.data_mut(), ty, |m| {
            if let Some((mut m, true)) = m {
                m.set_pairs(pairs);
            }
        })))
    })?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, ty: u32, kptr: u32, klen: u32, ret_ptr: u32, ret_len: u32| -> R {
            let v01 = c.data().first.abi == crate::wasm::plugin::AbiVersion::V0_1_0;
            let found = memory::answer_from_scratch(&mut c, ret_ptr, ret_len, |c, out| {
                memory::with_bytes(c, kptr, klen, |key, st| {
                    let key = lossy(key);
                    with_map(st, ty, |m| {
                        let value =
                            m.and_then(|(m, _)| m.get(&key).map(|v| out.extend_from_slice(lossy_bytes(v).as_ref())));
                        value.is_some()
                    })
                })
            })?;
            match found {
                Ok(true) => Ok(Status::Ok.raw()),
                // v0.1.0: a missing key is OK with an empty value.
                Ok(false) if v01 => {
                    memory::return_bytes(&mut c, &[], ret_ptr, ret_len)?;
                    Ok(Status::Ok.raw())
                }
                Ok(false) => Ok(Status::NotFound.raw()),
                Err(s) => Ok(s.raw()),
            }
        },
    )?;
    for (name, op) in [("proxy_add_header_map_value", Op::Add), ("proxy_replace_header_map_value", Op::Replace)] {
        l.func_wrap("env", name, move |mut c: C<'_>, ty: u32, kptr: u32, klen: u32, vptr: u32, vlen: u32| -> R {
            // Key and value are read in place from guest memory (no copies before the map
            // makes its own).
            let done = memory::with_two(&mut c, (kptr, klen), (vptr, vlen), |key, value, st| {
                let key = lossy(key);
                with_map(st, ty, |m| match m {
                    Some((mut m, true)) if op == Op::Add => m.add(&key, value),
                    Some((mut m, true)) => m.replace(&key, value),
                    _ => tracing::debug!(key = %key, "header write outside its phase; ignored"),
                })
            })?;
            Ok(status(done))
        })?;
    }
    l.func_wrap("env", "proxy_remove_header_map_value", |mut c: C<'_>, ty: u32, kptr: u32, klen: u32| -> R {
        let done = memory::with_bytes(&mut c, kptr, klen, |key, st| {
            let key = lossy(key);
            with_map(st, ty, |m| {
                if let Some((mut m, true)) = m {
                    m.remove(&key);
                }
            })
        })?;
        Ok(status(done))
    })?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
}
