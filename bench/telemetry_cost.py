#!/usr/bin/env python3
"""Telemetry cardinality cost (issue 8): memory per 10k label sets and /metrics scrape time.

    python3 bench/telemetry_cost.py [--series 10000] [--scrapes 20] [--wasmesh PATH] [--smoke]

What makes a new series. The telemetry filter labels each request with Istio's 25 labels.
Request paths, methods and most headers do not feed any label; the cheap per-request inputs
that do are `response_code` (a handful of values), `destination_service` (the upstream
cluster name; from `:authority` only when no cluster is set, which `default_cluster` always
does) and the remote side's workload labels. With `metadata_exchange: true` on an inbound
listener the remote side comes from the request's `x-envoy-peer-metadata` header (Istio's
base64 `google.protobuf.Struct`), exactly as an Istio sidecar receives it from its callers.
So this script sends request i with a peer header naming workload `bench-client-<i>`
(`source_workload`, and `source_canonical_service`, which falls back to it): each distinct
header is one new label set, i.e. one `istio_requests_total` series plus three histograms
(`istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`)
with their buckets. That is the realistic way cardinality grows in a mesh: many distinct
callers. (10k distinct listeners or clusters would measure config size, not telemetry.)

Method: upstream nginx and wasmesh (1 worker) as in bench.py; 2,000 warm-up requests with
one peer; VmRSS; 10,000 requests with distinct peers (one HTTP/1.1 keep-alive connection,
sequential); VmRSS; the same 10,000 peers again (no new series: shows what is allocator
noise); VmRSS; then GET /metrics on the admin port `--scrapes` times (median, min-max,
bytes, sample lines). Results print as JSON and go to bench/out/telemetry_cost.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_harness", HERE / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_harness"] = bench
_spec.loader.exec_module(bench)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, b: bytes) -> bytes:
    return bytes([tag]) + _varint(len(b)) + b


def _entry(key: str, value: bytes) -> bytes:
    """One google.protobuf.Struct `fields` map entry: {key = 1, value = 2}."""
    return _ld(0x0A, _ld(0x0A, key.encode()) + _ld(0x12, value))


def _string_value(s: str) -> bytes:
    return _ld(0x1A, s.encode())  # Value.string_value = 3


def peer_header(workload: str, namespace: str = "bench", app: str = "bench-client", version: str = "v1") -> str:
    """x-envoy-peer-metadata as Istio encodes it: flat NAMESPACE/WORKLOAD_NAME/CLUSTER_ID
    plus a LABELS struct (app, version)."""
    labels = _entry("app", _string_value(app)) + _entry("version", _string_value(version))
    top = (_entry("NAMESPACE", _string_value(namespace)) + _entry("WORKLOAD_NAME", _string_value(workload))
           + _entry("CLUSTER_ID", _string_value("Kubernetes")) + _entry("LABELS", _ld(0x2A, labels)))
    return base64.b64encode(top).decode()


def rss_kib(srv) -> int:
    return bench.status_kib(srv.pids(), "VmRSS")


def drive(port: int, peers, path: str = "/small") -> int:
    """Sequential keep-alive GETs, one per peer header; returns the count of 200s."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = 0
    for p in peers:
        c.request("GET", path, headers={"x-envoy-peer-metadata": p, "x-envoy-peer-metadata-id": "bench"})
        r = c.getresponse()
        r.read()
        ok += r.status == 200
    c.close()
    return ok


def scrape(admin: int) -> tuple[float, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
    t0 = time.perf_counter()
    c.request("GET", "/metrics")
    body = c.getresponse().read()
    ms = (time.perf_counter() - t0) * 1000
    c.close()
    return ms, body


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=10_000, help="distinct peers = label sets (default 10000; "
                    "the host keeps at most 50,000 filter metrics, i.e. 12,500 label sets of 4 metrics)")
    ap.add_argument("--scrapes", type=int, default=20, help="GET /metrics repetitions (default 20)")
    ap.add_argument("--wasmesh", default=str(bench.WASMESH_BIN), help="wasmesh binary (default target/release/wasmesh)")
    ap.add_argument("--smoke", action="store_true", help="200 series, 3 scrapes: checks that it works")
    ap.add_argument("--out", default=str(bench.OUT / "telemetry_cost.json"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.series, args.scrapes = 200, 3
    wasmesh = Path(args.wasmesh)
    if not wasmesh.exists():
        print(f"SKIP: {wasmesh} not found (cargo build --release -p wasmesh)")
        return 0
    if shutil.which("nginx") is None:
        print("SKIP: nginx (the upstream) not found")
        return 0
    bench.PRIORITY["nice"] = 0
    tmp = Path(tempfile.mkdtemp(prefix="wasmesh-telemetry-"))
    tmp.chmod(0o755)
    up = srv = None
    try:
        up = bench.start_upstream(tmp, bench.SUT_CPU)
        bench.wait_port(up.h1_port, up.proc)
        port, admin = bench.free_port(), bench.free_port()
        conf = f"""# generated by bench/telemetry_cost.py
node:
  metadata: {{WORKLOAD_NAME: bench-server-v1, NAMESPACE: bench, app: bench-server, version: v1, CLUSTER_ID: Kubernetes}}
admin:
  address: 127.0.0.1:{admin}
workers: 1
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    direction: inbound
    default_cluster: upstream
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{metadata_exchange: true}}
clusters:
  - name: upstream
    endpoints:
      - address: 127.0.0.1:{up.h1_port}
"""
        cfg = tmp / "wasmesh.yaml"
        cfg.write_text(conf)
        proc, lp, full = bench.spawn("wasmesh", [str(wasmesh), "run", "--config", str(cfg), "--workers", "1"], tmp,
                                     bench.SUT_CPU)
        srv = bench.Server("wasmesh", proc, full, lp, port, None, conf, admin_port=admin)
        bench.wait_port(port, proc)
        one = peer_header("bench-client-warm")
        t0 = time.perf_counter()
        warm_ok = drive(port, [one] * 2000)
        warm_s = time.perf_counter() - t0
        time.sleep(1)
        rss0 = rss_kib(srv)
        base_ms, base_body = scrape(admin)
        peers = [peer_header(f"bench-client-{i}") for i in range(args.series)]
        t0 = time.perf_counter()
        new_ok = drive(port, peers)
        new_s = time.perf_counter() - t0
        time.sleep(1)
        rss1 = rss_kib(srv)
        t0 = time.perf_counter()
        again_ok = drive(port, peers)
        again_s = time.perf_counter() - t0
        time.sleep(1)
        rss2 = rss_kib(srv)
        times, body = [], b""
        for _ in range(args.scrapes):
            ms, body = scrape(admin)
            times.append(ms)
        rss3 = rss_kib(srv)
        text = body.decode(errors="replace")
        samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        label_sets = sum(1 for line in text.splitlines() if line.startswith("istio_requests_total{"))
        per_10k = (rss1 - rss0) / args.series * 10_000 / 1024
        res = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wasmesh": str(wasmesh),
            "series_driven": args.series,
            "ok": {"warm": warm_ok, "new": new_ok, "again": again_ok},
            "istio_requests_total_series": label_sets,
            "samples_in_scrape": samples,
            "rss_kib": {"after_warmup": rss0, "after_new_series": rss1, "after_same_series_again": rss2,
                        "after_scrapes": rss3},
            "rss_growth_mib_per_10k_label_sets": round(per_10k, 1),
            "rss_growth_same_series_again_mib": round((rss2 - rss1) / 1024, 1),
            "rss_growth_after_scrapes_mib": round((rss3 - rss2) / 1024, 1),
            "req_per_s": {"one_series": round(2000 / warm_s), "new_series": round(args.series / new_s),
                          "existing_series": round(args.series / again_s)},
            "scrape_baseline": {"ms": round(base_ms, 1), "bytes": len(base_body)},
            "scrape_ms": {"median": round(statistics.median(times), 1), "min": round(min(times), 1),
                          "max": round(max(times), 1), "n": len(times)},
            "scrape_bytes": len(body),
            "config": conf,
        }
        print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        problems = []
        if warm_ok != 2000 or new_ok != args.series or again_ok != args.series:
            problems.append("some requests did not get 200")
        if label_sets < args.series:
            problems.append(f"only {label_sets} istio_requests_total series for {args.series} peers")
        if not srv.alive():
            problems.append("wasmesh died")
        for p in problems:
            print("FAIL: " + p)
        return 1 if problems else 0
    finally:
        for s in (srv, up):
            if s:
                s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
