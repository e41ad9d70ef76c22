#!/usr/bin/env python3
"""User-space instructions per request of each wasmesh case, counted by callgrind.

CPU time per request on a shared 2-core VM moves by 10-30% between sittings; the
number of instructions the proxy executes per request does not (run to run within
~1–2%). This runs each wasmesh case of bench.py under `valgrind --tool=callgrind`,
warms it up, zeroes the counters, sends N sequential keep-alive requests and reads the
instruction total, so two builds (or two filter versions) compare exactly. Kernel work
(the TCP stack) is not counted: it is the same for every case with the same traffic.

    python3 bench/instructions.py                       # every wasmesh case, 2000 requests
    python3 bench/instructions.py --bin /tmp/old/wasmesh --cases wasmesh,wasmesh-telemetry

Wasm frames: with WASMESH_PERFMAP=1 in the environment the proxy writes
/tmp/perf-<pid>.map; `callgrind_annotate` output names JIT code `???:0x…`, and those
addresses resolve against that map (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the case table and the upstream live there)

#: Most seconds a proxy under valgrind may take to start listening.
START_TIMEOUT = 180.0
#: Requests before the counters are zeroed (VM start, first-use caches, pool fill).
WARMUP = 300
#: Keep-alive connections the requests rotate over.
CONNECTIONS = 4


def ensure_valgrind(no_install: bool) -> None:
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    if no_install:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    bench.log("installing valgrind (Debian package)")
    subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def send(port: int, n: int, headers: dict[str, str]) -> None:
    """`n` sequential GET /small over a few keep-alive connections; every answer must be 200."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(CONNECTIONS)]
    try:
        for i in range(n):
            c = conns[i % CONNECTIONS]
            c.request("GET", "/small", headers=headers)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"GET /small on port {port} answered {r.status}")
    finally:
        for c in conns:
            c.close()


def read_total(path: Path, timeout: float = 30.0) -> int:
    """The `summary:` instruction count of a callgrind dump (waits for the file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump at {path}")


def count(case: bench.Case, tmp: Path, up: bench.Server, n: int, keep: Path | None) -> int:
    """Instructions per request of `case`'s proxy (user space, all threads); with `keep`,
    the callgrind dump stays there as `<case>.callgrind` (for `callgrind_annotate`)."""
    spec = case.make(tmp, up)
    out = tmp / f"cg-{case.name}.out"
    cmd = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}", *spec.cmd]
    log_path = tmp / f"{case.name}.vg.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        bench.wait_port(spec.h1_port, proc, timeout=START_TIMEOUT)
        headers = dict(h.split(": ", 1) for h in (case.headers() if case.headers else []))
        send(spec.h1_port, WARMUP, headers)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        send(spec.h1_port, n, headers)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total = read_total(Path(f"{out}.1"))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{out}.1", keep / f"{case.name}.callgrind")
            bench.log(f"{case.name}: dump in {keep / (case.name + '.callgrind')} (proxy pid {proc.pid})")
        return total // n
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=bench.WASMESH_BIN, help="wasmesh binary (default: release build)")
    ap.add_argument("--cases", default="", help="comma-separated wasmesh cases (default: all plaintext ones)")
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per case")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install valgrind")
    ap.add_argument("--keep", type=Path, help="keep each case's callgrind dump in this directory")
    args = ap.parse_args(argv)
    ensure_valgrind(args.no_install)
    default_bin = bench.WASMESH_BIN
    bench.WASMESH_BIN = args.bin.resolve()
    wanted = [c for c in args.cases.split(",") if c]
    cases = [c for c in bench.CASES if c.name.startswith("wasmesh") and not c.only_scenarios]
    if wanted:
        unknown = set(wanted) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name in wanted]
    with tempfile.TemporaryDirectory(prefix="wasmesh-instr-") as t:
        tmp = Path(t)
        for why in bench.make_assets(tmp):
            bench.log(why)
        up = bench.start_upstream(tmp, bench.LOADGEN_CPU)
        try:
            bench.wait_port(up.h1_port, up.proc)
            rows = []
            for case in cases:
                if any(not Path(r).exists() for r in case.requires if r not in (default_bin, bench.WASMESH_BIN)):
                    bench.log(f"{case.name}: skipped (missing {', '.join(map(str, case.requires))})")
                    continue
                if any(a not in bench.ASSETS for a in case.needs):
                    bench.log(f"{case.name}: skipped (no {', '.join(case.needs)})")
                    continue
                ir = count(case, tmp, up, args.requests, args.keep)
                rows.append((case.name, ir))
                bench.log(f"{case.name}: {ir:,} instructions per request")
        finally:
            up.stop()
    base = dict(rows).get("wasmesh")
    print(f"\nbinary: {bench.WASMESH_BIN}  ·  {args.requests} requests per case (GET /small, keep-alive)")
    print("| case | instructions / request | over the empty chain |")
    print("|---|---|---|")
    for name, ir in rows:
        over = f"+{ir - base:,}" if base is not None and name != "wasmesh" else "–"
        print(f"| {name} | {ir:,} | {over} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
