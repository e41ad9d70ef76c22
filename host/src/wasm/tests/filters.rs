//! Real filters built with the official proxy-wasm SDK (`tests/filters`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::flags::ResponseFlags;

fn load(rt: &Arc<WasmRuntime>, name: &str, tweak: impl FnOnce(&mut Filter)) -> Arc<Plugin> {
    let mut f = filter(name);
    tweak(&mut f);
    Plugin::load(rt, &f, &test_filter(name)).unwrap()
}

fn reply(v: Verdict) -> LocalReply {
    match v {
        Verdict::LocalReply(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

fn forward(v: BodyVerdict) -> Bytes {
    match v {
        BodyVerdict::Forward(b) => b,
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn headers_filter_reads_writes_and_keeps_state() {
    run(async {
        let (rt, reg) = runtime();
        let p = load(&rt, "headers", |f| f.config = Some(serde_yaml_ng::Value::String("cfg-1".into())));
        let host = Rc::new(TestHost::default());
        let (_w, chain, _spec) = worker(&rt, host.clone(), vec![p]);
        assert!(!chain.is_empty());

        let mut s = chain.stream(info(1024));
        let mut head = request(
            "/orig?q=1",
            &[("x-in", "hello"), ("x-rewrite", "/new"), ("x-cluster", "backend"), ("x-remove", "1")],
        );
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        let h = &head.headers;
        assert_eq!(hv(h, "x-wasm-added"), "1");
        assert_eq!(hv(h, "x-config"), "cfg-1");
        assert_eq!(hv(h, "x-echo"), "hello");
        assert_eq!(hv(h, "x-authority"), "example.com");
        assert_eq!(hv(h, "x-plugin"), "headers");
        assert_eq!(hv(h, "x-source"), "127.0.0.1:5555");
        assert_eq!(hv(h, "x-count"), "1");
        assert!(h.get("x-remove").is_none());
        assert_eq!(head.uri, "/new");
        assert_eq!(s.property("wasmesh.upstream.cluster").unwrap(), "backend");

        let mut resp = response(200, &[("x-make-418", "1")]);
        assert!(matches!(s.response_headers(&mut resp, true).await, Verdict::Continue));
        assert_eq!(resp.status, 418);
        assert_eq!(hv(&resp.headers, "x-upstream-status"), "200");
        assert_eq!(hv(&resp.headers, "x-wasm-response"), "1");
        s.finish();
        assert_eq!(host.access_log.borrow().as_slice(), ["/new 418"]);

        // Shared data persists across streams; the metric counts both.
        let mut s2 = chain.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(s2.request_headers(&mut head, true).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-count"), "2");
        drop(s2);
        assert_eq!(filter_metric(&rt, "test_headers_requests_total", &[("filter", "headers")]), Some(2.0));
        assert_eq!(metric(&reg, "wasmesh_wasm_vms", &[("plugin", "headers")]), Some(1.0));
        let mem = metric(&reg, "wasmesh_wasm_memory_bytes", &[("plugin", "headers")]).unwrap();
        assert!((65536.0..=64.0 * 1024.0 * 1024.0).contains(&mem), "{mem}");
        assert_eq!(host.access_log.borrow().len(), 2, "drop runs on_log");
        drop((_w, chain));
        assert_eq!(metric(&reg, "wasmesh_wasm_vms", &[("plugin", "headers")]), Some(0.0));
        assert_eq!(metric(&reg, "wasmesh_wasm_memory_bytes", &[("plugin", "headers")]), Some(0.0));
    });
}

#[test]
fn on_configure_false_is_a_load_error_naming_the_plugin() {
    let (rt, _) = runtime();
    let mut f = filter("headers");
    f.name = "my-headers".into();
    f.config = Some(serde_yaml_ng::Value::String("reject".into()));
    let err = Plugin::load(&rt, &f, &test_filter("headers")).unwrap_err().to_string();
    assert!(err.contains("my-headers") && err.contains("on_configure"), "{err}");
}

#[test]
fn pause_resumes_from_tick_and_buffers_bodies() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "pause", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[]);
        let t = Instant::now();
        let v = tokio::time::timeout(Duration::from_secs(2), s.request_headers(&mut head, false)).await;
        assert!(matches!(v, Ok(Verdict::Continue)), "paused stream never resumed");
        assert!(t.elapsed() >= Duration::from_millis(10), "resumed before the tick");
        assert_eq!(hv(&head.headers, "x-resumed-by"), "tick");

        assert!(matches!(s.request_body(Bytes::from_static(b"abc"), false).await, BodyVerdict::Hold));
        let b = forward(s.request_body(Bytes::from_static(b"def"), true).await);
        assert_eq!(b, "ABCDEF");
        assert_eq!(s.property("test.body_size").unwrap(), "6");

        let mut resp = response(200, &[]);
        assert!(matches!(s.response_headers(&mut resp, false).await, Verdict::Continue));
        assert!(matches!(s.response_body(Bytes::from_static(b"x"), false).await, BodyVerdict::Hold));
        assert_eq!(forward(s.response_body(Bytes::from_static(b"y"), true).await), "xy!");
    });
}

#[test]
fn buffered_body_over_the_limit_is_413() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "pause", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1000));
        let mut head = request("/", &[("x-no-pause", "1")]);
        assert!(matches!(s.request_headers(&mut head, false).await, Verdict::Continue));
        assert!(matches!(s.request_body(Bytes::from(vec![b'a'; 600]), false).await, BodyVerdict::Hold));
        match s.request_body(Bytes::from(vec![b'a'; 600]), false).await {
            BodyVerdict::LocalReply(r) => {
                assert_eq!(r.status, 413);
                assert!(r.flags.contains(ResponseFlags::DOWNSTREAM_BUFFER_LIMIT));
            }
            other => panic!("expected 413, got {other:?}"),
        }
    });
}

#[test]
fn local_reply_and_close_stream() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "local_reply", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);

        let mut s = chain.stream(info(1024));
        let r = reply(s.request_headers(&mut request("/deny/me", &[]), true).await);
        assert_eq!(r.status, 403);
        assert_eq!(r.body, "denied");
        assert!(r.headers.contains(&("x-denied".into(), "1".into())));

        let mut s = chain.stream(info(1024));
        let r = reply(s.request_headers(&mut request("/close", &[]), true).await);
        assert!(r.flags.contains(ResponseFlags::LOCAL_RESET));
        assert_eq!(r.details, "wasm_close_stream");

        let mut s = chain.stream(info(1024));
        assert!(matches!(s.request_headers(&mut request("/ok", &[]), true).await, Verdict::Continue));
        let r = reply(s.response_headers(&mut response(200, &[("x-replace-response", "1")]), true).await);
        assert_eq!(r.status, 502);
    });
}

#[test]
fn http_call_through_host_services() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "callout", |_| {});
        let auth = auth_server().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let host = TestHost {
            clusters: HashMap::from([("auth".to_owned(), auth), ("dead".to_owned(), dead)]),
            ..Default::default()
        };
        let (_w, chain, _spec) = worker(&rt, Rc::new(host), vec![p]);

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-token", "good")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-auth-status"), "200");
        assert_eq!(hv(&head.headers, "x-auth-body"), "ok");

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-token", "bad")]);
        let r = reply(within(s.request_headers(&mut head, true)).await);
        assert_eq!((r.status, r.body.as_ref()), (403, &b"nope"[..]));

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-cluster", "nope")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-auth-status"), "dispatch-error-BadArgument");

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-cluster", "dead")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-auth-status"), "failed");

        // A stream dropped while its call is in flight: the call is cancelled, the VM
        // stays healthy (the SDK would panic on a response for an unknown context).
        {
            let mut s = chain.stream(info(1024));
            let mut head = request("/", &[("x-token", "good")]);
            let fut = s.request_headers(&mut head, true);
            let _ = tokio::time::timeout(Duration::from_millis(5), fut).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-token", "good")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-auth-status"), "200");
    });
}

#[test]
fn trap_fails_closed_then_the_vm_is_rebuilt() {
    run(async {
        let (rt, reg) = runtime();
        let p = load(&rt, "trap", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);

        let mut s = chain.stream(info(1024));
        let r = reply(s.request_headers(&mut request("/", &[("x-trap", "panic")]), true).await);
        assert_eq!(r.status, 503);
        assert_eq!(r.details, "wasm_fail_stream");
        assert!(r.flags.contains(ResponseFlags::WASM_FAILURE));
        assert_eq!(metric(&reg, "wasmesh_wasm_failures_total", &[("plugin", "trap"), ("kind", "trap")]), Some(1.0));
        drop(s);

        // Within the backoff the VM is not rebuilt: fail closed without calling it.
        let mut s = chain.stream(info(1024));
        assert_eq!(reply(s.request_headers(&mut request("/", &[]), true).await).status, 503);
        drop(s);

        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-trap-ok"), "1");
        assert_eq!(metric(&reg, "wasmesh_wasm_vm_starts_total", &[("plugin", "trap"), ("result", "ok")]), Some(2.0));
    });
}

#[test]
fn failure_open_skips_the_filter() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "trap", |f| f.failure = FailurePolicy::Open);
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-trap", "panic")]);
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        assert!(head.headers.get("x-trap-ok").is_none());
        assert!(matches!(s.response_headers(&mut response(200, &[]), true).await, Verdict::Continue));
    });
}

#[test]
fn sdk_loop_alloc_and_exit_are_failures_of_their_kind() {
    run(async {
        let (rt, reg) = runtime();
        let p = load(&rt, "trap", |f| f.limits.memory_mb = 16);
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        for (how, kind) in [("loop", "deadline"), ("alloc", "memory_limit"), ("exit", "proc_exit")] {
            // Each case needs a fresh VM: wait out the backoff.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut s = chain.stream(info(1024));
            let t = Instant::now();
            let r = reply(s.request_headers(&mut request("/", &[("x-trap", how)]), true).await);
            assert_eq!(r.status, 503, "{how}");
            if how == "loop" {
                assert!(t.elapsed() < Duration::from_millis(400), "deadline took {:?}", t.elapsed());
            }
            let n = metric(&reg, "wasmesh_wasm_failures_total", &[("plugin", "trap"), ("kind", kind)]);
            assert_eq!(n, Some(1.0), "{how} → {kind}");
        }
    });
}

#[test]
fn properties_filter_state_and_a_shared_vm() {
    run(async {
        let (rt, reg) = runtime();
        let a = load(&rt, "headers", |f| f.config = Some(serde_yaml_ng::Value::String("one".into())));
        let b = load(&rt, "headers", |f| {
            f.name = "headers-2".into();
            f.config = Some(serde_yaml_ng::Value::String("two".into()));
        });
        let (mut w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![a, b]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/p/q?x=1", &[]);
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        let h = &head.headers;
        assert_eq!(h.get_all("x-wasm-added").iter().count(), 2);
        assert_eq!(hv(h, "x-config"), "two");
        assert_eq!(hv(h, "x-plugin"), "headers-2");
        assert_eq!(hv(h, "x-prop-url-path"), "/p/q");
        assert_eq!(hv(h, "x-prop-method"), "GET");
        assert_eq!(hv(h, "x-prop-node"), "node-1");
        assert_eq!(hv(h, "x-prop-app"), "demo");
        assert_eq!(hv(h, "x-prop-listener"), "inbound");
        assert_eq!(hv(h, "x-prop-connection-id"), "7");
        // The second filter reads what the first one set.
        assert_eq!(hv(h, "x-prop-from-earlier"), "one");
        // Same module and vm_id: one VM, one shared-data namespace.
        assert_eq!(hv(h, "x-count"), "2");
        assert_eq!(metric(&reg, "wasmesh_wasm_vm_starts_total", &[("result", "ok")]), Some(1.0));
        drop(s);

        // A reload: a new spec with a new plugin of the same module and vm_id reuses the
        // VM and configures a new root context.
        let c = load(&rt, "headers", |f| f.config = Some(serde_yaml_ng::Value::String("three".into())));
        let spec2 = Arc::new(ChainSpec { plugins: vec![c] });
        let chain2 = w.chain(&spec2);
        assert!(Rc::ptr_eq(&chain2, &w.chain(&spec2)), "chains are cached per spec");
        let mut s = chain2.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-config"), "three");
        assert_eq!(hv(&head.headers, "x-count"), "3");
        assert_eq!(metric(&reg, "wasmesh_wasm_vm_starts_total", &[("result", "ok")]), Some(1.0));
    });
}

#[test]
fn shared_queue_wakes_the_registering_root_context() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "queue", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-job", "job-42")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert!(head.headers.get("x-resolve").is_none());
        assert_eq!(hv(&head.headers, "x-dequeued"), "job-42");
    });
}

#[test]
fn trailers_release_a_held_body() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "pause", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-no-pause", "1")]);
        assert!(matches!(s.request_headers(&mut head, false).await, Verdict::Continue));
        assert!(matches!(s.request_body(Bytes::from_static(b"ab"), false).await, BodyVerdict::Hold));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        assert!(matches!(s.request_trailers(&mut trailers).await, Verdict::Continue));
        assert_eq!(s.take_body_tail(false).unwrap(), "ab");
        assert_eq!(hv(&trailers, "x-t"), "1");
        assert!(s.take_body_tail(false).is_none());
    });
}

#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("wasmesh-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = || RuntimeOptions { cache_dir: Some(dir.clone()), node: NodeInfo::default() };
    let bytes = test_filter("local_reply");
    {
        let reg = prometheus::Registry::new();
        let rt = WasmRuntime::new(opts(), &reg).unwrap();
        Plugin::load(&rt, &filter("a"), &bytes).unwrap();
        Plugin::load(&rt, &filter("b"), &bytes).unwrap();
        assert_eq!(metric(&reg, "wasmesh_wasm_modules_total", &[("source", "compiled")]), Some(1.0));
        assert_eq!(metric(&reg, "wasmesh_wasm_modules_total", &[("source", "memory")]), Some(1.0));
    }
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    {
        let reg = prometheus::Registry::new();
        let rt = WasmRuntime::new(opts(), &reg).unwrap();
        Plugin::load(&rt, &filter("a"), &bytes).unwrap();
        assert_eq!(metric(&reg, "wasmesh_wasm_modules_total", &[("source", "disk")]), Some(1.0));
    }
    // A corrupt entry is ignored and recompiled.
    std::fs::write(&files[0], b"garbage that is long enough to have a checksum at its end").unwrap();
    {
        let reg = prometheus::Registry::new();
        let rt = WasmRuntime::new(opts(), &reg).unwrap();
        Plugin::load(&rt, &filter("a"), &bytes).unwrap();
        assert_eq!(metric(&reg, "wasmesh_wasm_modules_total", &[("source", "compiled")]), Some(1.0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_utf8_header_values_do_not_crash_sdk_filters() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "headers", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[]);
        head.headers.insert("x-in", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert!(matches!(s.request_headers(&mut head, true).await, Verdict::Continue));
        assert_eq!(head.headers["x-echo"].as_bytes(), "caf\u{fffd}".as_bytes());
    });
}

#[test]
fn a_reload_keeps_the_old_root_context_until_its_streams_finish() {
    run(async {
        let (rt, _) = runtime();
        let host = Rc::new(TestHost::default());
        let mut w = WorkerWasm::new(rt.clone(), host);
        let old = Arc::new(ChainSpec { plugins: vec![load(&rt, "pause", |_| {})] });
        let chain = w.chain(&old);
        let mut s = chain.stream(info(1024));
        drop((chain, old));
        // The old chain is gone; a new plugin of the same module and vm_id takes over and
        // the old root context is retired — but the paused stream still needs its tick.
        let new = Arc::new(ChainSpec { plugins: vec![load(&rt, "pause", |_| {})] });
        let chain2 = w.chain(&new);
        let mut head = request("/", &[]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-resumed-by"), "tick");
        s.finish();
        let mut s2 = chain2.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(within(s2.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-resumed-by"), "tick");
    });
}

#[test]
fn filters_before_a_buffering_filter_see_every_chunk() {
    // `plus` appends "+" to each chunk it sees; `pause` (after it) buffers to the end and
    // upper-cases: "ab" + "cd" must become "AB+CD+".
    let plus = r#"(module
      (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "+")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
        (drop (call $set (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 16) (i32.const 1)))
        i32.const 0))"#;
    run(async {
        let (rt, _) = runtime();
        let a = Plugin::load(&rt, &filter("plus"), plus.as_bytes()).unwrap();
        let b = load(&rt, "pause", |_| {});
        let (_w, chain, _spec) = worker(&rt, Rc::new(TestHost::default()), vec![a, b]);
        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-no-pause", "1")]);
        assert!(matches!(s.request_headers(&mut head, false).await, Verdict::Continue));
        assert!(matches!(s.request_body(Bytes::from_static(b"ab"), false).await, BodyVerdict::Hold));
        assert_eq!(forward(s.request_body(Bytes::from_static(b"cd"), true).await), "AB+CD+");
    });
}

#[test]
fn unary_grpc_call_through_host_services() {
    run(async {
        let (rt, _) = runtime();
        let p = load(&rt, "grpc", |_| {});
        let server = grpc_server().await;
        let host =
            TestHost { clusters: HashMap::from([("grpc".to_owned(), server)]), grpc: true, ..Default::default() };
        let (_w, chain, _spec) = worker(&rt, Rc::new(host), vec![p.clone()]);

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-msg", "hello")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-grpc-reply"), "olleh|1");

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-msg", "fail")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-grpc-status"), "7");
        assert_eq!(hv(&head.headers, "x-grpc-message"), "denied");

        let mut s = chain.stream(info(1024));
        let mut head = request("/", &[("x-cluster", "nope")]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-grpc-dispatch"), "parse-failure");

        // A host without gRPC: the dispatch fails, the filter carries on.
        let (_w2, chain2, _spec2) = worker(&rt, Rc::new(TestHost::default()), vec![p]);
        let mut s = chain2.stream(info(1024));
        let mut head = request("/", &[]);
        assert!(matches!(within(s.request_headers(&mut head, true)).await, Verdict::Continue));
        assert_eq!(hv(&head.headers, "x-grpc-dispatch"), "InternalFailure");
    });
}
