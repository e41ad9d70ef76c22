//! Imports: the WASI preview1 subset a proxy-wasm filter needs, under both
//! `wasi_snapshot_preview1` and `wasi_unstable`: fd_write (stdout → info log, stderr →
//! error log), clock_time_get, clock_res_get, random_get, environ_* (the plugin's `env`),
//! args_* (empty), proc_exit (a plugin failure), sched_yield, fd_fdstat_get for 0–2. No
//! files, sockets or preopens: every other call answers `BADF`/`NOTSUP`.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::Linker;

use super::status::errno;
use super::{log, memory, C, R};
use crate::wasm::state::HostState;

/// The guest called `proc_exit`: a plugin failure (kind `proc_exit`).
#[derive(Debug, thiserror::Error)]
#[error("guest called proc_exit({0})")]
pub struct ProcExit(pub i32);

/// Most iovecs per fd_write.
const MAX_IOVS: u32 = 1024;
/// Most bytes of one fd_write that reach the log.
const MAX_WRITE_LOG: usize = 64 * 1024;

fn monotonic_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

pub(crate) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for m in ["wasi_snapshot_preview1", "wasi_unstable"] {
        add_module(l, m)?;
    }
    Ok(())
}

fn add_module(l: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    l.func_wrap(m, "fd_write", |mut c: C<'_>, fd: u32, iovs: u32, n: u32, ret: u32| -> R {
        if fd != 1 && fd != 2 {
            return Ok(errno::BADF);
        }
        if n > MAX_IOVS {
            return Ok(errno::INVAL);
        }
        let table = memory::read(&mut c, iovs, n * 8)?;
        let mut out = Vec::new();
        let mut total: u32 = 0;
        for iov in table.chunks_exact(8) {
            let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
            let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
            memory::check(&mut c, ptr, len)?;
            if out.len() < MAX_WRITE_LOG {
                let take = len.min((MAX_WRITE_LOG - out.len()) as u32);
                out.extend(memory::read(&mut c, ptr, take)?);
            }
            total = total.saturating_add(len);
        }
        let text = String::from_utf8_lossy(&out);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            let plugin = c.data().current_plugin().name.clone();
            log::emit(if fd == 1 { 2 } else { 4 }, &plugin, text);
            if fd != 1 {
                c.data_mut().last_error_log = Some(text.to_string());
            }
        }
        memory::write_u32(&mut c, ret, total)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "fd_read", |_c: C<'_>, _fd: u32, _i: u32, _n: u32, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_close", |_c: C<'_>, _fd: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_seek", |_c: C<'_>, _fd: u32, _o: i64, _w: u32, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_tell", |_c: C<'_>, _fd: u32, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_sync", |_c: C<'_>, _fd: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_datasync", |_c: C<'_>, _fd: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_advise", |_c: C<'_>, _fd: u32, _o: i64, _l: i64, _a: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_allocate", |_c: C<'_>, _fd: u32, _o: i64, _l: i64| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_fdstat_set_flags", |_c: C<'_>, _fd: u32, _f: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_fdstat_set_rights", |_c: C<'_>, _fd: u32, _a: i64, _b: i64| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_filestat_get", |_c: C<'_>, _fd: u32, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_filestat_set_size", |_c: C<'_>, _fd: u32, _s: i64| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_filestat_set_times", |_c: C<'_>, _fd: u32, _a: i64, _b: i64, _f: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_pread", |_c: C<'_>, _fd: u32, _i: u32, _n: u32, _o: i64, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_pwrite", |_c: C<'_>, _fd: u32, _i: u32, _n: u32, _o: i64, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_readdir", |_c: C<'_>, _fd: u32, _b: u32, _l: u32, _k: i64, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_renumber", |_c: C<'_>, _a: u32, _b: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_prestat_get", |_c: C<'_>, _fd: u32, _r: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_prestat_dir_name", |_c: C<'_>, _fd: u32, _p: u32, _l: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "fd_fdstat_get", |mut c: C<'_>, fd: u32, ret: u32| -> R {
        if fd > 2 {
            return Ok(errno::BADF);
        }
        // filetype CHARACTER_DEVICE, no flags, rights: fd_read (stdin) or fd_write.
        let mut stat = [0u8; 24];
        stat[0] = 2;
        let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        memory::write(&mut c, ret, &stat)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(
        m,
        "path_open",
        |_c: C<'_>, _fd: u32, _df: u32, _p: u32, _l: u32, _o: u32, _rb: i64, _ri: i64, _ff: u32, _r: u32| -> R {
            Ok(errno::BADF)
        },
    )?;
    l.func_wrap(m, "path_create_directory", |_c: C<'_>, _fd: u32, _p: u32, _l: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "path_remove_directory", |_c: C<'_>, _fd: u32, _p: u32, _l: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "path_unlink_file", |_c: C<'_>, _fd: u32, _p: u32, _l: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "path_filestat_get", |_c: C<'_>, _fd: u32, _f: u32, _p: u32, _l: u32, _r: u32| -> R {
        Ok(errno::BADF)
    })?;
    l.func_wrap(
        m,
        "path_filestat_set_times",
        |_c: C<'_>, _fd: u32, _f: u32, _p: u32, _l: u32, _a: i64, _b: i64, _g: u32| -> R { Ok(errno::BADF) },
    )?;
    l.func_wrap(m, "path_link", |_c: C<'_>, _a: u32, _b: u32, _p: u32, _l: u32, _d: u32, _q: u32, _m: u32| -> R {
        Ok(errno::BADF)
    })?;
    l.func_wrap(m, "path_readlink", |_c: C<'_>, _fd: u32, _p: u32, _l: u32, _b: u32, _bl: u32, _r: u32| -> R {
        Ok(errno::BADF)
    })?;
    l.func_wrap(m, "path_rename", |_c: C<'_>, _fd: u32, _p: u32, _l: u32, _d: u32, _q: u32, _m: u32| -> R {
        Ok(errno::BADF)
    })?;
    l.func_wrap(m, "path_symlink", |_c: C<'_>, _p: u32, _l: u32, _fd: u32, _q: u32, _m: u32| -> R { Ok(errno::BADF) })?;
    l.func_wrap(m, "poll_oneoff", |_c: C<'_>, _i: u32, _o: u32, _n: u32, _r: u32| -> R { Ok(errno::NOTSUP) })?;
    l.func_wrap(m, "proc_raise", |_c: C<'_>, _s: u32| -> R { Ok(errno::NOTSUP) })?;
    l.func_wrap(m, "sched_yield", |_c: C<'_>| -> R { Ok(errno::SUCCESS) })?;
    l.func_wrap(m, "sock_accept", |_c: C<'_>, _fd: u32, _f: u32, _r: u32| -> R { Ok(errno::NOTSUP) })?;
    l.func_wrap(m, "sock_recv", |_c: C<'_>, _fd: u32, _i: u32, _n: u32, _f: u32, _r: u32, _o: u32| -> R {
        Ok(errno::NOTSUP)
    })?;
    l.func_wrap(m, "sock_send", |_c: C<'_>, _fd: u32, _i: u32, _n: u32, _f: u32, _r: u32| -> R { Ok(errno::NOTSUP) })?;
    l.func_wrap(m, "sock_shutdown", |_c: C<'_>, _fd: u32, _h: u32| -> R { Ok(errno::NOTSUP) })?;
    l.func_wrap(m, "proc_exit", |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(ProcExit(code)))
    })?;
    l.func_wrap(m, "args_sizes_get", |mut c: C<'_>, argc: u32, size: u32| -> R {
        memory::write_u32(&mut c, argc, 0)?;
        memory::write_u32(&mut c, size, 0)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "args_get", |_c: C<'_>, _a: u32, _b: u32| -> R { Ok(errno::SUCCESS) })?;
    l.func_wrap(m, "environ_sizes_get", |mut c: C<'_>, count: u32, size: u32| -> R {
        let env = &c.data().first.env;
        let n = env.len() as u32;
        let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        memory::write_u32(&mut c, count, n)?;
        memory::write_u32(&mut c, size, bytes as u32)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "environ_get", |mut c: C<'_>, ptrs: u32, buf: u32| -> R {
        let env = c.data().first.env.clone();
        let mut at = buf;
        for (i, (k, v)) in env.iter().enumerate() {
            let entry = format!("{k}={v}\0");
            memory::write(&mut c, at, entry.as_bytes())?;
            memory::write_u32(&mut c, ptrs.wrapping_add(4 * i as u32), at)?;
            at = at.wrapping_add(entry.len() as u32);
        }
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "clock_res_get", |mut c: C<'_>, id: u32, ret: u32| -> R {
        if id > 3 {
            return Ok(errno::INVAL);
        }
        memory::write_u64(&mut c, ret, 1_000)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "clock_time_get", |mut c: C<'_>, id: u32, _precision: i64, ret: u32| -> R {
        let ns = match id {
            0 => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64,
            1..=3 => monotonic_origin().elapsed().as_nanos() as u64,
            _ => return Ok(errno::INVAL),
        };
        memory::write_u64(&mut c, ret, ns)?;
        Ok(errno::SUCCESS)
    })?;
    l.func_wrap(m, "random_get", |mut c: C<'_>, ptr: u32, len: u32| -> R {
        memory::check(&mut c, ptr, len)?;
        let mut buf = vec![0u8; len as usize];
        if getrandom::getrandom(&mut buf).is_err() {
            return Ok(errno::NOTSUP);
        }
        memory::write(&mut c, ptr, &buf)?;
        Ok(errno::SUCCESS)
    })?;
    Ok(())
}
