//! Every hostcall with hostile arguments (deterministic pseudo-random picks from edge
//! values): the host answers a status or traps the guest — it never panics, and the
//! stream ends as `Continue` or a fail-closed 503.

use std::rc::Rc;

use super::*;
use crate::flags::ResponseFlags;

/// (module, name, params: `i` = i32, `I` = i64, has a result)
const HOSTCALLS: &[(&str, &str, &str, bool)] = &[
    ("env", "proxy_log", "iii", true),
    ("env", "proxy_get_log_level", "i", true),
    ("env", "proxy_get_current_time_nanoseconds", "i", true),
    ("env", "proxy_set_tick_period_milliseconds", "i", true),
    ("env", "proxy_get_buffer_bytes", "iiiii", true),
    ("env", "proxy_get_buffer_status", "iii", true),
    ("env", "proxy_set_buffer_bytes", "iiiii", true),
    ("env", "proxy_get_configuration", "ii", true),
    ("env", "proxy_get_header_map_pairs", "iii", true),
    ("env", "proxy_get_header_map_size", "ii", true),
    ("env", "proxy_set_header_map_pairs", "iii", true),
    ("env", "proxy_get_header_map_value", "iiiii", true),
    ("env", "proxy_add_header_map_value", "iiiii", true),
    ("env", "proxy_replace_header_map_value", "iiiii", true),
    ("env", "proxy_remove_header_map_value", "iii", true),
    ("env", "proxy_get_property", "iiii", true),
    ("env", "proxy_set_property", "iiii", true),
    ("env", "proxy_continue_stream", "i", true),
    ("env", "proxy_continue_request", "", true),
    ("env", "proxy_continue_response", "", true),
    ("env", "proxy_close_stream", "i", true),
    ("env", "proxy_send_local_response", "iiiiiiii", true),
    ("env", "proxy_set_effective_context", "i", true),
    ("env", "proxy_done", "", true),
    ("env", "proxy_get_status", "iii", true),
    ("env", "proxy_http_call", "iiiiiiiiii", true),
    ("env", "proxy_grpc_call", "iiiiiiiiiiii", true),
    ("env", "proxy_grpc_stream", "iiiiiiiii", true),
    ("env", "proxy_grpc_send", "iiii", true),
    ("env", "proxy_grpc_cancel", "i", true),
    ("env", "proxy_grpc_close", "i", true),
    ("env", "proxy_get_shared_data", "iiiii", true),
    ("env", "proxy_set_shared_data", "iiiii", true),
    ("env", "proxy_register_shared_queue", "iii", true),
    ("env", "proxy_resolve_shared_queue", "iiiii", true),
    ("env", "proxy_enqueue_shared_queue", "iii", true),
    ("env", "proxy_dequeue_shared_queue", "iii", true),
    ("env", "proxy_define_metric", "iiii", true),
    ("env", "proxy_get_metric", "ii", true),
    ("env", "proxy_record_metric", "iI", true),
    ("env", "proxy_increment_metric", "iI", true),
    ("env", "proxy_call_foreign_function", "iiiiii", true),
    ("env", "proxy_clear_route_cache", "", true),
    ("wasi_snapshot_preview1", "fd_write", "iiii", true),
    ("wasi_snapshot_preview1", "random_get", "ii", true),
    ("wasi_snapshot_preview1", "environ_get", "ii", true),
    ("wasi_snapshot_preview1", "environ_sizes_get", "ii", true),
    ("wasi_snapshot_preview1", "clock_time_get", "iIi", true),
    ("wasi_snapshot_preview1", "clock_res_get", "ii", true),
    ("wasi_snapshot_preview1", "fd_fdstat_get", "ii", true),
    ("wasi_snapshot_preview1", "args_sizes_get", "ii", true),
    ("wasi_unstable", "proc_exit", "i", false),
];

/// Edge values for every argument: small ids and types, page edges, sign bits.
const EDGES: &[u32] = &[
    0,
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
    64,
    255,
    1024,
    65_532,
    65_535,
    65_536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff0,
    0xffff_ffff,
];

/// A module calling `name` with arguments read from the plugin configuration (u32 LE
/// each; an i64 takes two). Data it may point at: 16 = "x-key", 64 = valid pairs.
fn caller(module: &str, name: &str, params: &str, result: bool) -> String {
    let sig: String = params.chars().map(|c| if c == 'I' { " i64" } else { " i32" }).collect();
    let res = if result { "(result i32)" } else { "" };
    let mut args = String::new();
    let mut off = 0;
    for c in params.chars() {
        if c == 'I' {
            args.push_str(&format!(" (i64.load offset={off} (i32.load (i32.const 8)))"));
            off += 8;
        } else {
            args.push_str(&format!(" (i32.load offset={off} (i32.load (i32.const 8)))"));
            off += 4;
        }
    }
    let call = if result { format!("(drop (call $target{args}))") } else { format!("(call $target{args})") };
    format!(
        r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "{module}" "{name}" (func $target (param{sig}) {res}))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-key")
  (data (i32.const 64) "\01\00\00\00\05\00\00\00\01\00\00\00x-key\00v\00")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 256) (i32.const 8) (i32.const 12)))
    {call}
    i32.const 0))"#
    )
}

#[test]
fn every_hostcall_survives_hostile_arguments() {
    let (mut continued, mut failed) = (0, 0);
    run(async {
        let (rt, _) = runtime();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for (module, name, params, result) in HOSTCALLS {
            let wat = caller(module, name, params, *result);
            for case in 0..12 {
                let words = params.chars().map(|c| if c == 'I' { 2 } else { 1 }).sum::<usize>();
                let args: Vec<u32> = (0..words)
                    .map(|_| match rng.u8(0..4) {
                        // Plausible: a pointer into the data or a small length.
                        0 => [16, 64, 80, 5, 21][rng.usize(0..5)],
                        _ => EDGES[rng.usize(0..EDGES.len())],
                    })
                    .collect();
                let config: Vec<u8> = args.iter().flat_map(|a| a.to_le_bytes()).collect();
                let mut f = filter(&format!("{name}-{case}"));
                // Binary config: a YAML string cannot hold it, so go through JSON-free bytes.
                f.config = Some(serde_yaml_ng::Value::String(String::from_utf8_lossy(&config).into_owned()));
                let p = Plugin::load(&rt, &f, wat.as_bytes()).unwrap();
                let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
                let mut s = chain.stream(info(1024));
                let mut head = request("/", &[("x-key", "v")]);
                match s.request_headers(&mut head, true).await {
                    Verdict::Continue => continued += 1,
                    Verdict::LocalReply(r) if r.flags.contains(ResponseFlags::WASM_FAILURE) => failed += 1,
                    // A filter may legitimately answer or close the stream.
                    Verdict::LocalReply(r) => {
                        assert!(r.details == "wasm_close_stream" || r.status >= 100, "{name}: {r:?}")
                    }
                    #[allow(unreachable_patterns)]
                    other => panic!("{name}: unexpected {other:?}"),
                }
                s.finish();
            }
        }
    });
    assert!(continued > 100 && failed > 100, "continued {continued}, failed {failed}");
}
