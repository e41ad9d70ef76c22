#!/usr/bin/env python3
"""Hot-swap benchmark: time from a config write to the new behaviour, failed requests
and latency while a filter's config is swapped repeatedly under steady load.

Usage: python3 bench/reload_swap.py [--binary target/release/wasmesh] [--swaps 100]
Needs target/filters/wasm32-wasip1/release/header_rewrite.wasm (cargo xtask filters).
Stdlib only; everything on 127.0.0.1; every loop bounded.
"""

import argparse
import http.client
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def config(listen, admin, upstream, module, version):
    return f"""admin: {{ address: "127.0.0.1:{admin}" }}
listeners:
  - name: main
    address: "127.0.0.1:{listen}"
    default_cluster: web
    filters:
      - name: rewrite
        module: "{module}"
        config: {{ response_set: {{ x-version: "{version}" }} }}
clusters:
  - name: web
    endpoints: [ {{ address: "127.0.0.1:{upstream}" }} ]
"""


def write_atomic(path, text):
    tmp = path + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def get(conn_holder, port):
    """One GET on a kept-alive connection; returns (ok, version, seconds)."""
    started = time.perf_counter()
    try:
        if conn_holder[0] is None:
            conn_holder[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c = conn_holder[0]
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        return r.status == 200, r.getheader("x-version"), time.perf_counter() - started
    except Exception:
        conn_holder[0] = None
        return False, None, time.perf_counter() - started


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/wasmesh"))
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    module = os.path.join(ROOT, "target/filters/wasm32-wasip1/release/header_rewrite.wasm")
    if not os.path.exists(args.binary) or not os.path.exists(module):
        sys.exit(f"need {args.binary} and {module}")

    up_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    listen, admin = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="wasmesh-swap-")
    path = os.path.join(tmp, "wasmesh.yaml")
    write_atomic(path, config(listen, admin, up_port, module, "v0"))
    proc = subprocess.Popen([args.binary, "run", "--workers", "1", "--config", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        holder = [None]
        while time.time() < deadline and get(holder, listen)[1] != "v0":
            time.sleep(0.05)

        stop = threading.Event()
        swapping = threading.Event()
        results = {"ok": 0, "failed": 0, "steady": [], "during": []}
        lock = threading.Lock()

        def load():
            h = [None]
            for _ in range(10_000_000):
                if stop.is_set():
                    return
                ok, _, dt = get(h, listen)
                with lock:
                    results["ok" if ok else "failed"] += 1
                    results["during" if swapping.is_set() else "steady"].append(dt)
                time.sleep(0.002)  # ~500 req/s per client: steady, not saturating

        threads = [threading.Thread(target=load, daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2)
        latencies = []
        probe = [None]
        for n in range(1, args.swaps + 1):
            version = f"v{n}"
            swapping.set()
            started = time.perf_counter()
            write_atomic(path, config(listen, admin, up_port, module, version))
            seen = False
            while time.perf_counter() - started < 10:
                if get(probe, listen)[1] == version:
                    seen = True
                    break
                time.sleep(0.001)
            latencies.append(time.perf_counter() - started if seen else float("inf"))
            swapping.clear()
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        ms = [x * 1000 for x in latencies if x != float("inf")]
        print(f"swaps: {args.swaps}, applied: {len(ms)}")
        print(f"write -> new behaviour: p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms")
        print(f"requests: {results['ok']} ok, {results['failed']} failed")
        s = [x * 1000 for x in results["steady"]]
        d = [x * 1000 for x in results["during"]]
        print(f"latency p99 steady {pct(s, 99):.2f} ms ({len(s)} req), during swaps {pct(d, 99):.2f} ms ({len(d)} req)")
        rss = 0
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        print(f"proxy RSS after the swaps: {rss / 1024:.1f} MiB")
        return 0 if results["failed"] == 0 and len(ms) == args.swaps else 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
