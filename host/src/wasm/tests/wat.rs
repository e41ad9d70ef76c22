//! Hostile and edge cases with inline WAT guests: garbage ids, map types and lengths get
//! a status (checked inside the guest: a wrong status traps), garbage pointers trap, and
//! limits (deadline, memory) fail the plugin — never a host panic.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::flags::ResponseFlags;

/// Every import a test may use.
const IMPORTS: &str = r#"
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_metric" (func $get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc_metric (param i32 i64) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
"#;

/// The ABI marker and a bump allocator from 1024, as inline test modules need them.
const ALLOC: &str = r#"(global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)"#;

/// A v0.2.1 module whose `on_request_headers` runs `body` then continues. Memory:
/// 16 = "x-key", 32 = "clear_route_cache", 64 = "node", 80 = out-pointers, 128 = "auth",
/// 144 = malformed pairs (count 0xffff), 240 = ":path", 1024+ = bump heap.
fn module(body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 16) "x-key")
  (data (i32.const 32) "clear_route_cache")
  (data (i32.const 64) "node")
  (data (i32.const 128) "auth")
  (data (i32.const 144) "\ff\ff\00\00\01\00\00\00")
  (data (i32.const 240) ":path")
{ALLOC}
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    {body}
    i32.const 0))"#
    )
}

/// `(call …)` must return `want`, else the guest traps.
fn expect(want: u32, call: &str) -> String {
    format!("(if (i32.ne {call} (i32.const {want})) (then unreachable))\n")
}

/// Runs one request through a chain of the WAT module; returns the verdict.
fn one_request(wat: &str, tweak: impl FnOnce(&mut Filter)) -> (Verdict, prometheus::Registry, Duration) {
    let mut out = None;
    run(async {
        let (rt, reg) = runtime();
        let mut f = filter("wat");
        tweak(&mut f);
        let p = Plugin::load(&rt, &f, wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let t = Instant::now();
        let v = s.request_headers(&mut request("/", &[]), true).await;
        out = Some((v, reg, t.elapsed()));
    });
    out.unwrap()
}

fn assert_failed(v: &Verdict) {
    match v {
        Verdict::LocalReply(r) => {
            assert_eq!(r.status, 503);
            assert!(r.flags.contains(ResponseFlags::WASM_FAILURE));
        }
        other => panic!("expected a wasm failure, got {other:?}"),
    }
}

#[test]
fn garbage_ids_and_types_get_statuses() {
    let body = [
        expect(2, "(call $get_value (i32.const 99) (i32.const 16) (i32.const 5) (i32.const 80) (i32.const 84))"),
        expect(2, "(call $get_pairs (i32.const 99) (i32.const 80) (i32.const 84))"),
        // Response headers do not exist in the request phase: NotFound / empty, not BadArgument.
        expect(1, "(call $get_value (i32.const 2) (i32.const 16) (i32.const 5) (i32.const 80) (i32.const 84))"),
        expect(0, "(call $get_pairs (i32.const 2) (i32.const 80) (i32.const 84))"),
        expect(0, "(call $add_value (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 16) (i32.const 5))"),
        expect(1, "(call $get_value (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 80) (i32.const 84))"),
        expect(1, "(call $get_buffer (i32.const 99) (i32.const 0) (i32.const 10) (i32.const 80) (i32.const 84))"),
        expect(1, "(call $get_buffer (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 80) (i32.const 84))"),
        expect(2, "(call $set_ctx (i32.const 12345))"),
        expect(1, "(call $get_shared (i32.const 16) (i32.const 5) (i32.const 80) (i32.const 84) (i32.const 88))"),
        expect(1, "(call $enqueue (i32.const 999) (i32.const 16) (i32.const 5))"),
        expect(1, "(call $dequeue (i32.const 999) (i32.const 80) (i32.const 84))"),
        expect(0, "(call $register (i32.const 16) (i32.const 5) (i32.const 80))"),
        expect(7, "(call $dequeue (i32.load (i32.const 80)) (i32.const 80) (i32.const 84))"),
        expect(1, "(call $get_metric (i32.const 999) (i32.const 80))"),
        expect(2, "(call $define (i32.const 9) (i32.const 16) (i32.const 5) (i32.const 80))"),
        expect(0, "(call $define (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 80))"),
        expect(2, "(call $inc_metric (i32.load (i32.const 80)) (i64.const -1))"),
        expect(1, "(call $foreign (i32.const 16) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 80) (i32.const 84))"),
        expect(0, "(call $foreign (i32.const 32) (i32.const 17) (i32.const 0) (i32.const 0) (i32.const 80) (i32.const 84))"),
        // http_call: unknown cluster, then malformed header pairs.
        expect(2, "(call $http_call (i32.const 128) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 80))"),
        expect(2, "(call $http_call (i32.const 128) (i32.const 4) (i32.const 144) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 80))"),
        expect(10, "(call $grpc_call (i32.const 128) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 80))"),
        expect(1, "(call $get_property (i32.const 16) (i32.const 5) (i32.const 80) (i32.const 84))"),
        expect(3, "(call $get_property (i32.const 64) (i32.const 4) (i32.const 80) (i32.const 84))"),
        expect(2, "(call $log (i32.const 9) (i32.const 16) (i32.const 5))"),
        expect(2, "(call $continue (i32.const 7))"),
        expect(2, "(call $set_pairs (i32.const 0) (i32.const 144) (i32.const 8))"),
        expect(2, "(call $local_response (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 144) (i32.const 8) (i32.const -1))"),
        expect(2, "(call $local_response (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))"),
        expect(8, "(call $fd_write (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 80))"),
        expect(0, "(call $random (i32.const 200) (i32.const 16))"),
    ]
    .concat();
    let (v, _, _) = one_request(&module(&body), |_| {});
    assert!(matches!(v, Verdict::Continue), "a status differed from the expected one: {v:?}");
}

#[test]
fn garbage_pointers_trap_and_fail_the_plugin() {
    for call in [
        "(drop (call $get_property (i32.const 0xfffffff0) (i32.const 100) (i32.const 80) (i32.const 84)))",
        "(drop (call $get_value (i32.const 0) (i32.const 240) (i32.const 5) (i32.const 0xffffffff) (i32.const 84)))",
        "(drop (call $get_pairs (i32.const 0) (i32.const 80) (i32.const 70000)))",
        "(drop (call $log (i32.const 2) (i32.const 16) (i32.const 0xffffffff)))",
        "(drop (call $set_shared (i32.const 16) (i32.const 5) (i32.const 65530) (i32.const 100) (i32.const 0)))",
        "(drop (call $random (i32.const 65000) (i32.const 1000)))",
        "(drop (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 2) (i32.const 80)))",
    ] {
        let (v, reg, _) = one_request(&module(call), |_| {});
        assert!(matches!(v, Verdict::LocalReply(_)), "{call} did not fail");
        assert_failed(&v);
        assert_eq!(
            metric(&reg, "wasmesh_wasm_failures_total", &[("plugin", "wat"), ("kind", "memory_fault")]),
            Some(1.0),
            "{call}"
        );
    }
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let (v, reg, took) = one_request(&module("(loop $l (br $l))"), |_| {});
    assert_failed(&v);
    assert!(took >= Duration::from_millis(80), "deadline fired early: {took:?}");
    assert!(took < Duration::from_millis(300), "deadline fired late: {took:?}");
    assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("kind", "deadline")]), Some(1.0));
}

#[test]
fn memory_growth_over_the_cap_fails() {
    let (v, reg, _) = one_request(&module("(drop (memory.grow (i32.const 100)))"), |f| f.limits.memory_mb = 2);
    assert_failed(&v);
    assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("kind", "memory_limit")]), Some(1.0));
    // Within the cap growth works.
    let (v, _, _) =
        one_request(&module("(if (i32.lt_s (memory.grow (i32.const 10)) (i32.const 0)) (then unreachable))"), |f| {
            f.limits.memory_mb = 2
        });
    assert!(matches!(v, Verdict::Continue));
}

#[test]
fn hostile_modules_are_load_errors() {
    let (rt, _) = runtime();
    let load = |wat: &str| Plugin::load(&rt, &filter("bad"), wat.as_bytes()).unwrap_err().to_string();
    let err = load(r#"(module (func (export "proxy_on_context_create") (param i32 i32)))"#);
    assert!(err.contains("ABI version"), "{err}");
    let err = load(r#"(module (import "env" "proxy_nope" (func)) (func (export "proxy_abi_version_0_2_1")))"#);
    assert!(err.contains("bad") && err.contains("link"), "{err}");
    let err =
        load(r#"(module (import "env" "proxy_log" (func (param i64))) (func (export "proxy_abi_version_0_2_1")))"#);
    assert!(err.contains("link"), "{err}");
    let err = load(
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
        (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 0))"#,
    );
    assert!(err.contains("on_configure returned false"), "{err}");
    let err = load(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
        (func (export "_start") (call $exit (i32.const 1))))"#,
    );
    assert!(err.contains("proc_exit"), "{err}");
    // proc_exit(0) at the end of _start is a normal command-model exit.
    Plugin::load(
        &rt,
        &filter("ok"),
        br#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
        (func (export "_start") (call $exit (i32.const 0))))"#,
    )
    .unwrap();
    let err = load(
        r#"(module (func (export "proxy_abi_version_0_2_1"))
        (func (export "proxy_on_request_headers") (param f64) (result i32) i32.const 0))"#,
    );
    assert!(err.contains("wrong signature"), "{err}");
    let err = load("not wasm at all");
    assert!(err.contains("compile"), "{err}");
}

#[test]
fn abi_v0_1_0_two_argument_headers_and_empty_missing_value() {
    let wat = r#"(module
      (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "x-missingx-v01yes")
      (func (export "proxy_abi_version_0_1_0"))
      (func (export "malloc") (param i32) (result i32) i32.const 4096)
      (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
        (if (i32.ne (call $get_value (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        (drop (call $add (i32.const 0) (i32.const 25) (i32.const 5) (i32.const 30) (i32.const 3)))
        i32.const 0))"#;
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("old"), wat.as_bytes()).unwrap();
        assert_eq!(p.abi, AbiVersion::V0_1_0);
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-v01"), "yes");
    });
}

#[test]
fn empty_chain_passes_everything_through() {
    run(async {
        let (rt, _) = runtime();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![]);
        assert!(chain.is_empty());
        let mut s = chain.stream(info(10));
        assert!(s.is_passthrough());
        let mut head = request("/", &[]);
        assert!(matches!(s.request_headers(&mut head, false).await, Verdict::Continue));
        let big = bytes::Bytes::from(vec![0u8; 100]);
        match s.request_body(big.clone(), true).await {
            BodyVerdict::Forward(b) => assert_eq!(b, big),
            other => panic!("{other:?}"),
        }
        assert!(s.property("x").is_none());
    });
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_failure() {
    let wat = module("(call $recurse)").replace(
        "(func (export \"proxy_abi_version_0_2_1\"))",
        "(func (export \"proxy_abi_version_0_2_1\")) (func $recurse (call $recurse))",
    );
    let (v, reg, _) = one_request(&wat, |_| {});
    assert_failed(&v);
    assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("kind", "stack_overflow")]), Some(1.0));
}

#[test]
fn initialize_then_main_run_once_at_start() {
    // _initialize and main each bump a counter; on_request_headers checks it is exactly 11
    // and that _start (which would add 100) never ran.
    let wat = r#"(module
      (memory (export "memory") 1)
      (global $n (mut i32) (i32.const 0))
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "_initialize") (global.set $n (i32.add (global.get $n) (i32.const 1))))
      (func (export "main") (param i32 i32) (result i32)
        (global.set $n (i32.add (global.get $n) (i32.const 10))) (i32.const 0))
      (func (export "_start") (global.set $n (i32.add (global.get $n) (i32.const 100))))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (global.get $n) (i32.const 11)) (then unreachable))
        i32.const 0))"#;
    let (v, _, _) = one_request(wat, |_| {});
    assert!(matches!(v, Verdict::Continue), "{v:?}");
}

#[test]
fn cluster_stats_and_filter_state_properties() {
    struct Stats;
    impl HostServices for Stats {
        fn http_call(
            &self,
            _: &str,
            _: http::Request<bytes::Bytes>,
            _: Option<Duration>,
        ) -> futures_util::future::LocalBoxFuture<'static, Result<http::Response<bytes::Bytes>, CalloutError>> {
            Box::pin(async { Err(CalloutError::UnknownCluster) })
        }
        fn has_cluster(&self, _: &str) -> bool {
            false
        }
        fn access_log(&self, _: &str) {}
        fn cluster_stat(&self, cluster: &str, stat: &str) -> Option<u64> {
            (cluster == "web" && stat == "active_requests").then_some(5)
        }
    }
    // get_property("wasmesh.cluster.web.active_requests") must be the decimal text "5"; then
    // set_property("a.b", "v") is readable by the host as "a.b".
    let wat = format!(
        r#"(module
      (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "wasmesh.cluster.web.active_requests")
      (data (i32.const 64) "a\00b")
      (data (i32.const 72) "v")
      {ALLOC}
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (call $get (i32.const 16) (i32.const 35) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 84)) (i32.const 1)) (then unreachable))
        (if (i32.ne (i32.load8_u (i32.load (i32.const 80))) (i32.const 0x35)) (then unreachable))
        (drop (call $set (i32.const 64) (i32.const 3) (i32.const 72) (i32.const 1)))
        i32.const 0))"#
    );
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("props"), wat.as_bytes()).unwrap();
        let mut w = WorkerWasm::new(rt.clone(), Rc::new(Stats));
        let chain = w.chain(&Arc::new(ChainSpec { plugins: vec![p] }));
        let mut s = chain.stream(info(1024));
        assert!(matches!(s.request_headers(&mut request("/", &[]), true).await, Verdict::Continue));
        assert_eq!(s.property("a.b").unwrap(), "v");
    });
}

#[test]
fn bodies_skip_filters_without_body_callbacks_without_copying() {
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("nobody"), module("").as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(4));
        assert!(matches!(s.request_headers(&mut request("/", &[]), false).await, Verdict::Continue));
        let chunk = bytes::Bytes::from(vec![7u8; 64]);
        match s.request_body(chunk.clone(), true).await {
            BodyVerdict::Forward(out) => assert_eq!(out.as_ptr(), chunk.as_ptr(), "the chunk was copied"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn resume_after_and_accumulated_response_flags() {
    // on_request_headers: flags NR, FI, NR (deduplicated), resume_after(30 ms), Pause.
    // on_response_headers: wasmesh.response.flags must read "UF,NR,FI" (8 bytes).
    let expected = i64::from_le_bytes(*b"UF,NR,FI");
    let wat = format!(
        r#"(module
      (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "wasmesh.response.flag")
      (data (i32.const 48) "NRFI")
      (data (i32.const 64) "wasmesh.resume_after")
      (data (i32.const 88) "\1e\00\00\00")
      (data (i32.const 96) "wasmesh.response.flags")
      {ALLOC}
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $set (i32.const 16) (i32.const 21) (i32.const 48) (i32.const 2)))
        (drop (call $set (i32.const 16) (i32.const 21) (i32.const 50) (i32.const 2)))
        (drop (call $set (i32.const 16) (i32.const 21) (i32.const 48) (i32.const 2)))
        (if (i32.ne (call $foreign (i32.const 64) (i32.const 20) (i32.const 88) (i32.const 4) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        i32.const 1)
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (call $get (i32.const 96) (i32.const 22) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 84)) (i32.const 8)) (then unreachable))
        (if (i64.ne (i64.load (i32.load (i32.const 80))) (i64.const {expected})) (then unreachable))
        i32.const 0))"#
    );
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("flags"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let t = Instant::now();
        let v = within(s.request_headers(&mut request("/", &[]), true)).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
        assert!(t.elapsed() >= Duration::from_millis(30), "resumed after {:?}", t.elapsed());
        assert_eq!(s.property("wasmesh.response.flag").unwrap(), "NR,FI");
        let flags = s.upstream_info().flags;
        assert!(flags.contains(ResponseFlags::NO_ROUTE_FOUND) && flags.contains(ResponseFlags::FAULT_INJECTED));
        s.upstream_info().flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        let v = s.response_headers(&mut response(503, &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
    });
}

#[test]
fn local_reply_grpc_status_only_for_grpc_requests() {
    let wat = module(
        "(drop (call $local_response (i32.const 403) (i32.const 16) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 7)))",
    );
    let mut replies = Vec::new();
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("grpc"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        for ct in ["text/plain", "application/grpc+proto"] {
            let mut s = chain.stream(info(1024));
            match s.request_headers(&mut request("/", &[("content-type", ct)]), true).await {
                Verdict::LocalReply(r) => replies.push(r),
                other => panic!("no local reply: {other:?}"),
            }
        }
    });
    assert_eq!((replies[0].status, replies[0].details.as_str()), (403, "x-key"));
    assert!(replies[0].headers.is_empty(), "{:?}", replies[0].headers);
    assert_eq!(replies[1].headers, vec![("grpc-status".to_owned(), "7".to_owned())]);
}

#[test]
fn retry_upstream_asks_for_another_attempt_before_earlier_filters_see_the_response() {
    let header_adder = r#"(module
      (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "x-a1")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
        (drop (call $add (i32.const 2) (i32.const 16) (i32.const 3) (i32.const 19) (i32.const 1)))
        i32.const 0))"#;
    let retrier = r#"(module
      (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "wasmesh.retry_upstream")
      (data (i32.const 40) "\19\00\00\00")
      (data (i32.const 48) "x-refused1")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (call $foreign (i32.const 16) (i32.const 22) (i32.const 40) (i32.const 4) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then (drop (call $add (i32.const 2) (i32.const 48) (i32.const 9) (i32.const 57) (i32.const 1)))))
        i32.const 0))"#;
    run(async {
        let (rt, _) = runtime();
        let a = Plugin::load(&rt, &filter("a"), header_adder.as_bytes()).unwrap();
        let b = Plugin::load(&rt, &filter("b"), retrier.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![a, b]);
        let mut s = chain.stream(info(1024));
        assert!(matches!(s.request_headers(&mut request("/", &[]), true).await, Verdict::Continue));

        s.set_retry_available(true);
        let mut resp = response(503, &[]);
        match s.response_headers(&mut resp, true).await {
            Verdict::Retry(backoff) => assert_eq!(backoff, Duration::from_millis(25)),
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(resp.headers.get("x-a").is_none(), "an earlier filter saw the dropped response");

        s.set_retry_available(false);
        let mut resp = response(503, &[]);
        assert!(matches!(s.response_headers(&mut resp, true).await, Verdict::Continue));
        assert_eq!(hv(&resp.headers, "x-refused"), "1");
        assert_eq!(hv(&resp.headers, "x-a"), "1");
    });
}

#[test]
fn a_trap_in_a_timer_fails_the_paused_streams_of_that_vm() {
    let wat = r#"(module
      (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $tick (i32.const 20))) i32.const 1)
      (func (export "proxy_on_tick") (param i32) unreachable)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1))"#;
    run(async {
        let (rt, reg) = runtime();
        let p = Plugin::load(&rt, &filter("ticker"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let v = within(s.request_headers(&mut request("/", &[]), true)).await;
        assert_failed(&v);
        assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("plugin", "ticker"), ("kind", "trap")]), Some(1.0));
    });
}

#[test]
fn outstanding_http_calls_are_capped_per_context() {
    let pairs = crate::wasm::maps::encode_pairs(&[(":method", "GET"), (":path", "/"), (":authority", "a")]);
    let data: String = pairs.iter().map(|b| format!("\\{b:02x}")).collect();
    let wat = format!(
        r#"(module
      (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "auth")
      (data (i32.const 64) "{data}")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32) (local $ok i32)
        (loop $l
          (if (i32.eqz (call $call (i32.const 16) (i32.const 4) (i32.const 64) (i32.const {len})
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 8)))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 1100))))
        (if (i32.ne (local.get $ok) (i32.const 1024)) (then unreachable))
        i32.const 0))"#,
        len = pairs.len()
    );
    run(async {
        let (rt, _) = runtime();
        // A peer that accepts and never answers keeps every call in flight.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = TestHost {
            clusters: HashMap::from([("auth".to_owned(), silent.local_addr().unwrap())]),
            ..Default::default()
        };
        let p = Plugin::load(&rt, &filter("caller"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(host), vec![p]);
        let mut s = chain.stream(info(1024));
        let v = s.request_headers(&mut request("/", &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
        s.finish();
    });
}

#[test]
fn a_worker_vm_that_fails_to_start_is_counted_once_and_fails_closed() {
    // on_configure passes the first time (validation) and traps afterwards (workers).
    let wat = format!(
        r#"(module
      (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "seen")
      {ALLOC}
      (func (export "proxy_on_configure") (param i32 i32) (result i32)
        (if (i32.eqz (call $get (i32.const 16) (i32.const 4) (i32.const 80) (i32.const 84) (i32.const 88)))
          (then unreachable))
        (drop (call $set (i32.const 16) (i32.const 4) (i32.const 16) (i32.const 4) (i32.const 0)))
        i32.const 1))"#
    );
    run(async {
        let (rt, reg) = runtime();
        let p = Plugin::load(&rt, &filter("flaky"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        assert_failed(&s.request_headers(&mut request("/", &[]), true).await);
        assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("plugin", "flaky"), ("kind", "trap")]), Some(1.0));
        assert_eq!(
            metric(&reg, "wasmesh_wasm_vm_starts_total", &[("plugin", "flaky"), ("result", "failed")]),
            Some(1.0)
        );
    });
}

#[test]
fn on_done_false_defers_on_log_until_proxy_done() {
    // on_done returns false and arms a 20 ms tick; on_tick switches to the context and
    // calls proxy_done; on_log records "logged" in shared data.
    let wat = r#"(module
      (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
      (import "env" "proxy_set_effective_context" (func $ctx (param i32) (result i32)))
      (import "env" "proxy_done" (func $done (result i32)))
      (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "logged")
      (global $pending (mut i32) (i32.const 0))
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_done") (param $c i32) (result i32)
        (global.set $pending (local.get $c))
        (drop (call $tick (i32.const 20)))
        i32.const 0)
      (func (export "proxy_on_tick") (param i32)
        (if (global.get $pending) (then
          (drop (call $ctx (global.get $pending)))
          (drop (call $done))
          (global.set $pending (i32.const 0)))))
      (func (export "proxy_on_log") (param i32)
        (drop (call $set (i32.const 16) (i32.const 6) (i32.const 16) (i32.const 6) (i32.const 0)))))"#;
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("late"), wat.as_bytes()).unwrap();
        let vm_id = p.vm_id.clone();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        assert!(matches!(s.request_headers(&mut request("/", &[]), true).await, Verdict::Continue));
        s.finish();
        assert!(rt.shared_data.get(&vm_id, "logged").is_none(), "on_log ran before proxy_done");
        let mut waited = 0;
        while rt.shared_data.get(&vm_id, "logged").is_none() && waited < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(rt.shared_data.get(&vm_id, "logged").is_some(), "proxy_done never completed the context");
    });
}

#[test]
fn cluster_name_is_readable_in_the_request_phase() {
    let wat = format!(
        r#"(module
      (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "cluster_name")
      {ALLOC}
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (call $get (i32.const 16) (i32.const 12) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 84)) (i32.const 3)) (then unreachable))
        (if (i32.ne (i32.load16_u (i32.load (i32.const 80))) (i32.const 0x6577)) (then unreachable))
        i32.const 0))"#
    );
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("cn"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        s.upstream_info().cluster = Some("web".into());
        let v = s.request_headers(&mut request("/", &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
    });
}

/// The import, memory and property batch (at 16: `[11]"plugin_name" [4]"nope"`) of the
/// property-batch tests.
const BATCH_MODULE_HEAD: &str = r#"(import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "\0b\00\00\00plugin_name\04\00\00\00nope")"#;

/// Traps unless the answer at `*80` (length at 84) is `[3]"wat" [u32::MAX]`: the batch of
/// [`BATCH_MODULE_HEAD`] read in a filter named `wat`. Needs a local `$v`.
const EXPECT_BATCH_ANSWER: &str = r#"(if (i32.ne (i32.load (i32.const 84)) (i32.const 11)) (then unreachable))
        (local.set $v (i32.load (i32.const 80)))
        (if (i32.ne (i32.load (local.get $v)) (i32.const 3)) (then unreachable))
        (if (i32.ne (i32.load8_u (i32.add (local.get $v) (i32.const 4))) (i32.const 0x77)) (then unreachable))
        (if (i32.ne (i32.load (i32.add (local.get $v) (i32.const 7))) (i32.const -1)) (then unreachable))"#;

#[test]
fn get_properties_answers_values_and_absent_markers_in_one_call() {
    // args at 16: [11]"plugin_name" [4]"nope"; name at 100 (clear of the out-pointers at 80/84); malformed args at 48 (length
    // 200 with 3 bytes behind it). The answer must be [3]"wat" [u32::MAX].
    let wat = format!(
        r#"(module
      {BATCH_MODULE_HEAD}
      (data (i32.const 48) "\c8\00\00\00abc")
      (data (i32.const 100) "wasmesh.get_properties")
      {ALLOC}
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $v i32)
        (if (i32.ne (call $foreign (i32.const 100) (i32.const 22) (i32.const 16) (i32.const 23) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        {EXPECT_BATCH_ANSWER}
        (if (i32.ne (call $foreign (i32.const 100) (i32.const 22) (i32.const 48) (i32.const 7) (i32.const 80) (i32.const 84)) (i32.const 2))
          (then unreachable))
        i32.const 0))"#
    );
    let (v, _, _) = one_request(&wat, |_| {});
    assert!(matches!(v, Verdict::Continue), "the batch answer differed from the expected one: {v:?}");
}

/// A module whose response callbacks, `on_done` and `on_log` trap if called; `configure`
/// and `request` run in `on_configure` and `on_request_headers`. Memory:
/// 16 = "wasmesh.http_callbacks", 48 = mask 1 (request headers), 52 = mask 9 (headers),
/// 56 = mask 256 (unknown bit), 60 = mask 193 (request headers, on_done, on_log),
/// 64 = mask 0 (none).
fn interest_module(configure: &str, request: &str) -> String {
    foreign_module(
        "wasmesh.http_callbacks",
        r#"(data (i32.const 48) "\01\00\00\00\09\00\00\00\00\01\00\00\c1\00\00\00")
      (func $set (param $mask_at i32) (result i32)
        (call $foreign (i32.const 16) (i32.const 22) (local.get $mask_at) (i32.const 4) (i32.const 80) (i32.const 84)))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) unreachable)
      (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) unreachable)
      (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) unreachable)
      (func (export "proxy_on_done") (param i32) (result i32) unreachable)
      (func (export "proxy_on_log") (param i32) unreachable)"#,
        configure,
        request,
    )
}

/// A module with `proxy_call_foreign_function` as `$foreign`, the function's `name` at
/// 16, `rest` (data and functions), and `configure` / `request` run in `on_configure` /
/// `on_request_headers`. Out-pointers at 80 and 84.
fn foreign_module(name: &str, rest: &str, configure: &str, request: &str) -> String {
    format!(
        r#"(module
      (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "{name}")
      {ALLOC}
      {rest}
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure} i32.const 1)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {request} i32.const 0))"#
    )
}

/// What [`interest_request`] saw.
struct InterestRun {
    /// Verdict of the response-headers phase.
    response: Verdict,
    /// Whether the chain wanted the response body.
    wants_body: bool,
    /// Request-headers verdict of a second stream, after the first one finished.
    next: Verdict,
    /// Whether a copy of the request head was kept after its phase.
    request_kept: bool,
    /// Whether a copy of the response head was kept after its phase.
    response_kept: bool,
}

/// One request through `wat` (fail-closed), finished, then a second one.
fn interest_request(wat: &str) -> InterestRun {
    let mut out = None;
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("interest"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let v = s.request_headers(&mut request("/", &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
        let request_kept = s.kept_heads().0;
        let wants_body = s.wants_body_or_trailers(true);
        let response = s.response_headers(&mut response(200, &[]), false).await;
        let response_kept = s.kept_heads().1;
        s.finish();
        let next = chain.stream(info(1024)).request_headers(&mut request("/", &[]), true).await;
        out = Some(InterestRun { response, wants_body, next, request_kept, response_kept });
    });
    out.unwrap()
}

/// `interest_module` declaring the mask at `mask_at` from its root context.
fn declaring(mask_at: u32) -> String {
    interest_module(&expect(0, &format!("(call $set (i32.const {mask_at}))")), "")
}

#[test]
fn http_callbacks_a_filter_did_not_ask_for_are_not_called() {
    // Declared from the root context: every stream calls request headers only.
    let r = interest_request(&declaring(48));
    assert!(matches!(r.response, Verdict::Continue), "response headers were called: {:?}", r.response);
    assert!(!r.wants_body, "the response body passes untouched");
    // Declared by one stream in its request-headers phase.
    let r = interest_request(&interest_module("", &expect(0, "(call $set (i32.const 48))")));
    assert!(matches!(r.response, Verdict::Continue), "{:?}", r.response);
    assert!(!r.wants_body);
    // Headers only: response headers are called (and trap: fail closed answers).
    let r = interest_request(&declaring(52));
    assert!(matches!(r.response, Verdict::LocalReply(_)), "{:?}", r.response);
    assert!(!r.wants_body);
    // Nothing declared: Envoy's behaviour, everything is called.
    let r = interest_request(&interest_module("", ""));
    assert!(matches!(r.response, Verdict::LocalReply(_)), "{:?}", r.response);
    assert!(r.wants_body);
    // An unknown bit is refused and changes nothing.
    let r = interest_request(&interest_module(&expect(2, "(call $set (i32.const 56))"), ""));
    assert!(matches!(r.response, Verdict::LocalReply(_)), "{:?}", r.response);
    assert!(r.wants_body);
}

#[test]
fn a_filter_that_wants_no_callback_gets_no_context() {
    // Mask 0 (at 64) from the root; a stream context's creation traps (its parent is
    // the root, not 0), so a context made for either stream would break the VM.
    let wat = declaring(64).replace(
        r#"(func (export "proxy_on_context_create") (param i32 i32))"#,
        r#"(func (export "proxy_on_context_create") (param i32) (param $root i32) (if (local.get $root) (then unreachable)))"#,
    );
    let r = interest_request(&wat);
    assert!(matches!(r.response, Verdict::Continue), "{:?}", r.response);
    assert!(matches!(r.next, Verdict::Continue), "a context was created: {:?}", r.next);
    assert!(!r.wants_body && !r.request_kept && !r.response_kept);
    // The same module declaring something does get a context (and traps).
    let wat = declaring(48).replace(
        r#"(func (export "proxy_on_context_create") (param i32 i32))"#,
        r#"(func (export "proxy_on_context_create") (param i32) (param $root i32) (if (local.get $root) (then unreachable)))"#,
    );
    let (v, _, _) = one_request(&wat, |_| {});
    assert!(matches!(v, Verdict::LocalReply(_)), "{v:?}");
}

#[test]
fn on_done_and_on_log_are_skipped_unless_asked_for() {
    // If the first stream's on_done/on_log ran, it trapped and broke the VM, and the
    // second stream is answered by the failure policy.
    assert!(matches!(interest_request(&declaring(48)).next, Verdict::Continue), "on_done/on_log were called");
    let asked = interest_request(&declaring(60));
    assert!(matches!(asked.response, Verdict::Continue), "{:?}", asked.response);
    assert!(matches!(asked.next, Verdict::LocalReply(_)), "asked for, they run (and trap)");
}

#[test]
fn heads_are_kept_only_for_filters_that_read_them_later() {
    // Request headers only: neither head outlives its phase (no copy is made).
    let r = interest_request(&declaring(48));
    assert!(!r.request_kept && !r.response_kept);
    // on_done/on_log may read both heads: both are kept, the response head although no
    // filter takes its phase.
    let r = interest_request(&declaring(60));
    assert!(r.request_kept && r.response_kept);
    // Response headers come after the request head: it is kept for them.
    assert!(interest_request(&declaring(52)).request_kept);
    // Nothing declared: everything may read them.
    let r = interest_request(&interest_module("", ""));
    assert!(r.request_kept, "kept for the later callbacks");
}

#[test]
fn answers_land_in_the_registered_answer_buffer_when_offered_and_fit() {
    // 8192: a 16-byte answer buffer. A read offers it by leaving its address in the
    // return slot (80); one that fits lands there, a longer one or one not offered is
    // allocated from the bump heap (1024+). Any other outcome traps.
    let wat = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 300) "wasmesh.answer_buffer")
  (data (i32.const 340) "\00\20\00\00\10\00\00\00")
  (data (i32.const 400) ":method")
  (data (i32.const 240) ":path")
{ALLOC}
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    {bad}
    {register}
    (i32.store (i32.const 80) (i32.const 8192))
    {fits}
    (if (i32.ne (i32.load (i32.const 80)) (i32.const 8192)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 84)) (i32.const 3)) (then unreachable))
    (if (i32.ne (i32.load8_u (i32.const 8192)) (i32.const 71)) (then unreachable))
    (i32.store (i32.const 80) (i32.const 8192))
    {too_long}
    (if (i32.eq (i32.load (i32.const 80)) (i32.const 8192)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 84)) (i32.const 21)) (then unreachable))
    (i32.store (i32.const 80) (i32.const 0))
    {fits}
    (if (i32.eq (i32.load (i32.const 80)) (i32.const 8192)) (then unreachable))
    i32.const 0))"#,
        bad = expect(2, "(call $foreign (i32.const 300) (i32.const 21) (i32.const 340) (i32.const 4) (i32.const 80) (i32.const 84))"),
        register = expect(0, "(call $foreign (i32.const 300) (i32.const 21) (i32.const 340) (i32.const 8) (i32.const 80) (i32.const 84))"),
        fits = expect(0, "(call $get_value (i32.const 0) (i32.const 400) (i32.const 7) (i32.const 80) (i32.const 84))"),
        too_long = expect(0, "(call $get_value (i32.const 0) (i32.const 240) (i32.const 5) (i32.const 80) (i32.const 84))"),
    );
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("wat"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let v = s.request_headers(&mut request("/0123456789abcdefghij", &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
    });
}

#[test]
fn a_defined_property_set_is_read_by_id_with_the_same_answer() {
    // args at 16: [11]"plugin_name" [4]"nope"; names at 100 (define) and 140 (by id).
    // The set's id (answered at *80, 4 bytes) is read back at 60; the by-id answer must be
    // [3]"wat" [u32::MAX]; an unknown id is NotFound, a short one BadArgument.
    let wat = format!(
        r#"(module
      {BATCH_MODULE_HEAD}
      (data (i32.const 64) "\07\00\00\00")
      (data (i32.const 100) "wasmesh.define_properties")
      (data (i32.const 140) "wasmesh.get_properties_by_id")
      {ALLOC}
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $v i32)
        (if (i32.ne (call $foreign (i32.const 100) (i32.const 25) (i32.const 16) (i32.const 23) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 84)) (i32.const 4)) (then unreachable))
        (i32.store (i32.const 60) (i32.load (i32.load (i32.const 80))))
        (if (i32.ne (call $foreign (i32.const 140) (i32.const 28) (i32.const 60) (i32.const 4) (i32.const 80) (i32.const 84)) (i32.const 0))
          (then unreachable))
        {EXPECT_BATCH_ANSWER}
        (if (i32.ne (call $foreign (i32.const 140) (i32.const 28) (i32.const 64) (i32.const 4) (i32.const 80) (i32.const 84)) (i32.const 1))
          (then unreachable))
        (if (i32.ne (call $foreign (i32.const 140) (i32.const 28) (i32.const 64) (i32.const 2) (i32.const 80) (i32.const 84)) (i32.const 2))
          (then unreachable))
        i32.const 0))"#
    );
    let (v, _, _) = one_request(&wat, |_| {});
    assert!(matches!(v, Verdict::Continue), "the by-id answer differed from the expected one: {v:?}");
}

/// A module that declares pool limits from `on_configure` (`configure`) or its request
/// headers (`request`). Memory: 16 = "wasmesh.pool_limits", 48 = a valid table (28
/// bytes with trailing white space), 96 = a misspelt one (25 bytes).
fn pool_limits_module(configure: &str, request: &str) -> String {
    foreign_module(
        "wasmesh.pool_limits",
        r#"(data (i32.const 48) "{\"web\":{\"max_requests\":2}}  ")
      (data (i32.const 96) "{\"web\":{\"max_request\":2}}")
      (func $declare (param $at i32) (param $len i32) (result i32)
        (call $foreign (i32.const 16) (i32.const 19) (local.get $at) (local.get $len) (i32.const 80) (i32.const 84)))"#,
        configure,
        request,
    )
}

#[test]
fn pool_limits_are_declared_once_from_the_root_and_checked_by_the_chain() {
    let (rt, _) = runtime();
    let load = |wat: String| Plugin::load(&rt, &filter("limits"), wat.as_bytes()).unwrap();
    let p = load(pool_limits_module(&expect(0, "(call $declare (i32.const 48) (i32.const 28))"), ""));
    let spec = ChainSpec { plugins: vec![p] };
    assert_eq!(spec.overflow("web", 1), None);
    assert_eq!(spec.overflow("web", 2), Some(crate::upstream::Overflow::MaxRequests));
    assert_eq!(spec.overflow("other", 1_000), None, "only the clusters it names");
    // A table that does not parse is refused and nothing is recorded.
    let bad = load(pool_limits_module(&expect(2, "(call $declare (i32.const 96) (i32.const 25))"), ""));
    assert!(bad.pool_limits.get().is_none());
    // From a stream: refused (the limits belong to the filter, not to one request).
    let wat = pool_limits_module("", &expect(2, "(call $declare (i32.const 48) (i32.const 28))"));
    let (v, _, _) = one_request(&wat, |_| {});
    assert!(matches!(v, Verdict::Continue), "{v:?}");
}

#[test]
fn a_stream_chooses_request_metrics_from_its_http_context() {
    // The root declares nothing; the stream defines a template and uses it for itself:
    // the proxy records the stream when it ends. Memory: 16 = define, 200 = use, 300 =
    // the template; the id answered at *80 is copied to 60.
    let json = r#"{"metrics":{"requests":"wat_requests_total"},"labels":[["code",{"fact":"response_code","default":"0"}],["via","wat"]]}"#;
    let define = format!(
        "(call $foreign (i32.const 16) (i32.const 30) (i32.const 300) (i32.const {}) (i32.const 80) (i32.const 84))",
        json.len()
    );
    let wat = foreign_module(
        "wasmesh.define_request_metrics",
        &format!(
            r#"(data (i32.const 200) "wasmesh.request_metrics")
      (data (i32.const 300) "{}")"#,
            json.replace('"', "\\\"")
        ),
        "",
        &format!(
            "{}(i32.store (i32.const 60) (i32.load (i32.load (i32.const 80))))\n{}",
            expect(0, &define),
            expect(0, "(call $foreign (i32.const 200) (i32.const 23) (i32.const 60) (i32.const 4) (i32.const 80) (i32.const 84))")
        ),
    );
    let mut text = String::new();
    run(async {
        let (rt, _) = runtime();
        let p = Plugin::load(&rt, &filter("wat"), wat.as_bytes()).unwrap();
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let v = s.request_headers(&mut request("/", &[]), true).await;
        assert!(matches!(v, Verdict::Continue), "{v:?}");
        let r = s.response_headers(&mut response(204, &[]), true).await;
        assert!(matches!(r, Verdict::Continue), "{r:?}");
        s.finish();
        text = rt.custom.render_all();
    });
    assert!(text.contains(r#"wat_requests_total{code="204",via="wat"} 1"#), "{text}");
}
