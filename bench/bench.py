#!/usr/bin/env python3
"""wasmesh benchmark harness: wasmesh vs nginx vs HAProxy vs direct, same run, same tools.

Driven by `cargo xtask bench [--smoke] [options]` (or run this file directly).
See bench/README.md for what each figure means. Python 3.11 stdlib only.

Method (shared/reference/performance.md sections 3-5):
- upstream: nginx, 1 worker, 100 B (`/small`) and 64 KiB (`/large`) bodies, keep-alive;
- every proxy runs one worker with upstream keep-alive;
- layout B (efficiency): load generator on CPU 0, upstream + proxy on CPU 1;
  layout A (latency): load generator + upstream on CPU 0, proxy alone on CPU 1;
- per scenario: one discarded warm-up run per case, then `reps` rounds, each round runs
  every case once (round-robin, start rotated each round); medians with min-max;
- proxy CPU per request from /proc/<pid>/stat utime+stime deltas of every process of
  the proxy, divided by the requests the load generator completed;
- a run with any non-2xx, socket error, timeout or missed request is flagged; any
  flagged run makes the harness exit non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
WASMESH_BIN = ROOT / "target" / "release" / "wasmesh"
WASMESH_DEBUG_BIN = ROOT / "target" / "debug" / "wasmesh"  # --smoke falls back to it
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMALL_BODY = (b"wasmesh-bench " * 8)[:99] + b"\n"  # exactly 100 bytes
LARGE_SIZE = 64 * 1024
NOISY_PCT = 15.0  # other processes' CPU during a run, in % of one core, above which it is noisy
LOADGEN_CPU = 0
PRIORITY = {"nice": 0}  # set from --nice; applied by `prioritize` in every child
SUT_CPU = 1

# Debian packages that provide each tool the harness runs.
TOOLS = {
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "taskset": "util-linux",
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- tools


def ensure_tools(no_install: bool) -> None:
    """Installs the Debian packages of any missing tool (apt-get update once if needed)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if no_install:
        sys.exit(f"missing packages {missing} and --no-install given")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        log("apt-get install failed; running apt-get update once and retrying")
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    still = [t for t in TOOLS if shutil.which(t) is None]
    if still:
        sys.exit(f"tools still missing after install: {still}")


def build_openloop() -> Path:
    """Compiles bench/openloop.rs (std only) with rustc when the binary is out of date."""
    src = BENCH / "openloop.rs"
    exe = OUT / "openloop"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        log("compiling bench/openloop.rs")
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["rustc", "--edition", "2021", "-O", "-o", str(exe), str(src)], check=True, cwd=ROOT
        )
    return exe


def tool_versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"

    return {
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "rustc": first_line(["rustc", "--version"]),
    }


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    hyper = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Hypervisor vendor:"):
                hyper = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "hypervisor": hyper or "none",
        "kernel": platform.release(),
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
    }


def git_commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return p.stdout.strip() or "?"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx master + workers)."""
    out, todo = [], [pid]
    while todo and len(out) < 256:
        p = todo.pop()
        out.append(p)
        todo.extend(children_of(p))
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


def sched_ns(pids: list[int]) -> int:
    """On-CPU nanoseconds (CFS sum_exec_runtime) of every thread of `pids`: a precise
    cross-check of the tick-sampled utime+stime."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def status_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pin(pids: list[int], cpu: int) -> None:
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass


def system_ticks() -> tuple[int, int, int]:
    """(user+nice+system, steal, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2]
    steal = v[7] if len(v) > 7 else 0
    return busy, steal, sum(v[:8])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on 127.0.0.1:{port} after {timeout:.0f}s")


def http_get(port: int, path: str, headers: Optional[list[str]] = None, tls: bool = False,
             client_cert: bool = False) -> tuple[int, int, dict[str, str]]:
    """One HTTP/1.1 GET (HTTPS with `tls`, not verifying the server, presenting the bench
    client certificate with `client_cert`); returns (status, body length, lower-cased
    response headers)."""
    import http.client
    import ssl

    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if client_cert:
            ctx.load_cert_chain(str(ASSETS["pki"]["client_cert"]), str(ASSETS["pki"]["client_key"]))
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=dict(h.split(": ", 1) for h in headers or []))
        r = c.getresponse()
        body = r.read()
        return r.status, len(body), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


@dataclass
class Server:
    """A running server process (upstream or proxy) started by the harness."""

    name: str
    proc: subprocess.Popen
    cmd: list[str]
    log_path: Path
    h1_port: int
    h2_port: Optional[int]
    config_text: str = ""
    rss_idle_kib: int = 0
    tls_port: Optional[int] = None  # HTTPS listener (same server certificate for every proxy)
    admin_port: Optional[int] = None  # wasmesh admin (/metrics)

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4) -> str:
        try:
            text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def prioritize() -> None:
    """preexec_fn of every measured process: its own session, hence its own scheduler
    autogroup (with autogroups, a plain nice value only counts inside the session), at
    the --nice value, both for the task and for the autogroup."""
    nice = PRIORITY["nice"]
    os.setsid()
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass  # no autogroups here (or no CAP_SYS_NICE): the task nice still applies


def start_tls_shim(tmp: Path, targets: list, names: set) -> Optional[Server]:
    """The `mtls` scenario's client side: HAProxy in tcp mode on the load generator's CPU,
    one plaintext port per TLS-capable wasmesh target, each wrk connection becoming one TLS
    connection presenting the bench client certificate (wrk and h2load cannot)."""
    pki = ASSETS.get("pki")
    todo = [t for t in targets if t.server and t.server.tls_port and t.case.name in names]
    if not pki or not todo:
        return None
    conf = "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n" \
           "  timeout client 60s\n  timeout server 60s\n"
    for t in todo:
        port = free_port()
        SHIM_PORTS[t.case.name] = port
        conf += (f"\nlisten shim-{t.case.name}\n  bind 127.0.0.1:{port}\n"
                 f"  server s 127.0.0.1:{t.server.tls_port} ssl verify none crt {pki['client_haproxy_pem']}\n")
    path = tmp / "tls-shim.cfg"
    path.write_text(conf)
    proc, lp, full = spawn("tls-shim", ["haproxy", "-db", "-f", str(path)], tmp, LOADGEN_CPU)
    return Server("tls-shim", proc, full, lp, next(iter(SHIM_PORTS.values())), None, conf)


def spawn(name: str, cmd: list[str], tmp: Path, cpu: int) -> tuple[subprocess.Popen, Path, list[str]]:
    log_path = tmp / f"{name}.log"
    full = ["taskset", "-c", str(cpu), *cmd]
    f = open(log_path, "wb")
    proc = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=prioritize)
    f.close()
    return proc, log_path, full


# --------------------------------------------------------------------------- TLS and JWT material

# Generated once per run into the temp dir (see `make_assets`); cases and scenarios that
# need an entry are skipped, not failed, when it could not be made.
ASSETS: dict = {}
JWT_ISSUER = "https://bench.wasmesh.local"
JWT_SUBJECT = "bench-user"
JWT_AUDIENCE = "bench"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(tmp: Path) -> dict:
    """A self-signed ECDSA P-256 server certificate (nginx, HAProxy and wasmesh all serve
    it), plus a bench CA and a client certificate it signed (for mutual TLS). openssl CLI."""
    d = tmp / "pki"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "server.key", "-out", "server.pem", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=wasmesh bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=bench-client", cwd=d)
    (d / "client.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "subjectAltName=URI:spiffe://cluster.local/ns/bench/sa/client\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.pem", "-days", "2", "-extfile", "client.ext", cwd=d)
    # HAProxy wants certificate and key in one file.
    (d / "server-haproxy.pem").write_bytes((d / "server.pem").read_bytes() + (d / "server.key").read_bytes())
    (d / "client-haproxy.pem").write_bytes((d / "client.pem").read_bytes() + (d / "client.key").read_bytes())
    for f in d.iterdir():
        os.chmod(f, 0o644)  # nginx reads the key as root, but keep the worker's view simple
    return {k: d / f for k, f in (("cert", "server.pem"), ("key", "server.key"), ("haproxy_pem", "server-haproxy.pem"),
                                  ("ca", "ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key"),
                                  ("client_haproxy_pem", "client-haproxy.pem"))}


def b64url(b: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def der_ecdsa_to_raw(der: bytes) -> bytes:
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) -> r || s, 32 bytes each (JWS ES256)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\x00").rjust(32, b"\x00")
        i += 2 + n
    return out


def make_jwt(tmp: Path) -> dict:
    """An ES256 key pair, its JWKS (inline in the authn config) and one token signed with it
    (exp in 1 day). Python `cryptography` if importable, else the openssl CLI."""
    header = {"alg": "ES256", "typ": "JWT", "kid": "bench"}
    now = int(time.time())
    claims = {"iss": JWT_ISSUER, "sub": JWT_SUBJECT, "aud": JWT_AUDIENCE, "iat": now, "exp": now + 86400,
              "groups": ["bench"]}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode())).encode()
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = ec.generate_private_key(ec.SECP256R1())
        nums = key.public_key().public_numbers()
        x, y = nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")
        r, s_ = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
        how = "python cryptography"
    except ImportError:
        d = tmp / "jwt"
        d.mkdir()
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "jwt.key", cwd=d)
        openssl("ec", "-in", "jwt.key", "-pubout", "-outform", "DER", "-out", "jwt.pub.der", cwd=d)
        pub = (d / "jwt.pub.der").read_bytes()[-65:]  # 0x04 || X || Y
        x, y = pub[1:33], pub[33:65]
        (d / "input").write_bytes(signing_input)
        openssl("dgst", "-sha256", "-sign", "jwt.key", "-out", "sig.der", "input", cwd=d)
        sig = der_ecdsa_to_raw((d / "sig.der").read_bytes())
        how = "openssl CLI"
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "bench",
                      "x": b64url(x), "y": b64url(y)}]}
    return {"jwks": json.dumps(jwks, separators=(",", ":")), "token": signing_input.decode() + "." + b64url(sig),
            "how": how}


def make_assets(tmp: Path) -> list[str]:
    """Fills ASSETS; returns why an asset could not be made (its cases are then skipped)."""
    why = []
    if shutil.which("openssl") is None:
        why.append("openssl CLI not found: TLS scenarios, wasmesh-mtls skipped")
    else:
        try:
            ASSETS["pki"] = make_pki(tmp)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            err = getattr(e, "stderr", b"") or b""
            why.append(f"certificate generation failed ({e}: {err.decode(errors='replace')[-200:]})")
    try:
        ASSETS["jwt"] = make_jwt(tmp)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        why.append(f"JWT key generation failed ({e}): wasmesh-authn-authz skipped")
    return why


# --------------------------------------------------------------------------- upstream and proxies


NGINX_COMMON = """daemon off;
master_process on;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 8192; }}
"""

NGINX_HTTP_COMMON = """  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/{name}-body;
  proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fastcgi;
  uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
"""


def nginx_cmd(tmp: Path, name: str, conf: str) -> list[str]:
    path = tmp / f"{name}.conf"
    path.write_text(conf)
    return ["nginx", "-p", str(tmp), "-c", str(path), "-e", str(tmp / f"{name}.error.log")]


def start_upstream(tmp: Path, cpu: int) -> Server:
    (tmp / "small.txt").write_bytes(SMALL_BODY)
    (tmp / "large.bin").write_bytes(bytes(i % 251 for i in range(LARGE_SIZE)))
    for p in ("small.txt", "large.bin"):
        os.chmod(tmp / p, 0o644)
    h1, h2 = free_port(), free_port()
    name = "upstream"
    conf = NGINX_COMMON.format(tmp=tmp, name=name) + (
        "http {\n"
        + NGINX_HTTP_COMMON.format(tmp=tmp, name=name)
        + f"""  server {{
    listen 127.0.0.1:{h1};
    listen 127.0.0.1:{h2} http2;
    location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.decode().rstrip()}\\n"; }}
    location = /large {{ default_type application/octet-stream; alias {tmp}/large.bin; }}
    location = /v1/traces {{ return 200; }}  # OTLP/HTTP sink for wasmesh-telemetry's spans
  }}
}}
"""
    )
    cmd = nginx_cmd(tmp, name, conf)
    proc, lp, full = spawn(name, cmd, tmp, cpu)
    return Server(name, proc, full, lp, h1, h2, conf)


@dataclass
class ProxySpec:
    """What a case needs to start its proxy: a command (config files written to tmp)."""

    cmd: list[str]
    config_text: str
    h1_port: int
    h2_port: Optional[int]
    tls_port: Optional[int] = None
    admin_port: Optional[int] = None


def nginx_proxy(tmp: Path, up: Server) -> ProxySpec:
    h1, h2 = free_port(), free_port()
    name = "nginx-proxy"
    pki = ASSETS.get("pki")
    tls = free_port() if pki else None
    tls_conf = (f"""    listen 127.0.0.1:{tls} ssl;
    ssl_certificate {pki['cert']};
    ssl_certificate_key {pki['key']};
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx 1.22's default lacks TLSv1.3
    ssl_session_cache shared:bench:10m;
""" if pki else "")
    conf = NGINX_COMMON.format(tmp=tmp, name=name) + (
        "http {\n"
        + NGINX_HTTP_COMMON.format(tmp=tmp, name=name)
        + f"""  upstream up {{
    server 127.0.0.1:{up.h1_port};
    keepalive 256;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{h1};
    listen 127.0.0.1:{h2} http2;
{tls_conf}    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_max_temp_file_size 0;
    }}
  }}
}}
"""
    )
    return ProxySpec(nginx_cmd(tmp, name, conf), conf, h1, h2, tls_port=tls)


def haproxy_proxy(tmp: Path, up: Server) -> ProxySpec:
    h1, h2 = free_port(), free_port()
    pki = ASSETS.get("pki")
    tls = free_port() if pki else None
    tls_bind = f"  bind 127.0.0.1:{tls} ssl crt {pki['haproxy_pem']}\n" if pki else ""
    conf = f"""global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always

frontend fe
  bind 127.0.0.1:{h1}
  bind 127.0.0.1:{h2} proto h2
{tls_bind}  default_backend be

backend be
  server up 127.0.0.1:{up.h1_port}
"""
    path = tmp / "haproxy.cfg"
    path.write_text(conf)
    return ProxySpec(["haproxy", "-db", "-f", str(path)], conf, h1, h2, tls_port=tls)


def wasmesh_proxy(filters_yaml="[]", tls_mode: str = "simple") -> Callable[[Path, Server], ProxySpec]:
    """A wasmesh case; `filters_yaml` is the listener's filter chain as YAML (or a function
    returning it, called at start: the JWKS is generated per run). With certificates, a
    second listener serves the same chain over TLS (`tls_mode` simple or mutual)."""

    def make(tmp: Path, up: Server) -> ProxySpec:
        port, admin = free_port(), free_port()
        chain = filters_yaml() if callable(filters_yaml) else filters_yaml
        pki = ASSETS.get("pki")
        tls = free_port() if pki else None
        tls_listener = ""
        if pki:
            tls_listener = f"""  - name: bench-tls
    address: 127.0.0.1:{tls}
    default_cluster: upstream
    tls:
      cert: {pki['cert']}
      key: {pki['key']}
      mode: {tls_mode}
""" + (f"      client_ca: {pki['ca']}\n" if tls_mode == "mutual" else "") + f"""    filters: {chain}
"""
        conf = f"""# generated by bench/bench.py
admin:
  address: 127.0.0.1:{admin}
workers: 1
listeners:
  - name: bench
    address: 127.0.0.1:{port}
    default_cluster: upstream
    filters: {chain}
{tls_listener}clusters:
  - name: upstream
    endpoints:
      - address: 127.0.0.1:{up.h1_port}
  - name: otel  # wasmesh-telemetry's span export (the upstream answers POST /v1/traces)
    endpoints:
      - address: 127.0.0.1:{up.h1_port}
"""
        # One file per instance: wasmesh watches its config file and hot-reloads it.
        path = tmp / f"wasmesh-{port}.yaml"
        path.write_text(conf)
        cmd = [str(WASMESH_BIN), "run", "--config", str(path), "--workers", "1"]
        return ProxySpec(cmd, conf, port, port, tls_port=tls, admin_port=admin)

    return make


@dataclass
class Case:
    """One row of every table: something the load generator talks to."""

    name: str
    make: Optional[Callable[[Path, Server], ProxySpec]]  # None: straight to the upstream
    requires: tuple[Path, ...] = ()  # skipped (not failed) when one of these files is missing
    h2: bool = True
    expect_header: Optional[tuple[str, str]] = None  # response header proving the case is what it claims
    needs: tuple[str, ...] = ()  # ASSETS entries ("pki", "jwt"); skipped (not failed) without them
    headers: Optional[Callable[[], list[str]]] = None  # request headers the load generator sends
    denied_without_headers: bool = False  # sanity: without `headers`, GET /small must be refused (401/403)
    client_cert: bool = False  # its TLS listener wants a client certificate (mutual TLS)
    only_scenarios: tuple[str, ...] = ()  # run only in these scenarios (empty: all)
    expect_metric: Optional[str] = None  # sanity: the admin /metrics must show this after a request


FILTERS = ROOT / "target" / "filters" / "wasm32-wasip1" / "release"  # built by `cargo xtask filters`
HEADER_REWRITE = FILTERS / "header_rewrite.wasm"

# The table of cases. Adding one is a line: a name and how to start it.
CASES: list[Case] = [
    Case("direct", None),
    Case("nginx", nginx_proxy),
    Case("haproxy", haproxy_proxy),
    Case("wasmesh", wasmesh_proxy("[]"), requires=(WASMESH_BIN,)),
    # One custom filter written against the SDK (examples/header-rewrite): sets a request
    # and a response header, bumps a counter.
    Case("wasmesh-sdk-filter", wasmesh_proxy(
        f"[{{name: rewrite, module: '{HEADER_REWRITE}', "
        "config: {request_set: {x-bench: '1'}, response_set: {x-served-by: wasmesh}}}]"),
        requires=(WASMESH_BIN, HEADER_REWRITE), expect_header=("x-served-by", "wasmesh")),
    # Istio's traffic chain from the built-in filters (issue 4): fault (no rule matches),
    # router (one route, sets a response header), retry (default policy), circuit-breaker
    # (pool limits far above the load).
    Case("wasmesh-traffic-chain", wasmesh_proxy(
        "[{name: fault, module: 'builtin:fault', config: {rules: [{match: [{uri: {prefix: /never}}], "
        "abort: {httpStatus: 503, percentage: {value: 100}}}]}}, "
        "{name: router, module: 'builtin:router', config: {routes: [{name: all, route: [{destination: "
        "{host: upstream}}], headers: {response: {set: {x-chain: full}}}}]}}, "
        "{name: retry, module: 'builtin:retry', config: {attempts: 2}}, "
        "{name: circuit-breaker, module: 'builtin:circuit-breaker', config: {clusters: {upstream: "
        "{connectionPool: {http: {http2MaxRequests: 1000000}}}}}}]"),
        requires=(WASMESH_BIN,), expect_header=("x-chain", "full")),
    # Mutual TLS (issue 6/7): the same empty chain, its TLS listener in mode mutual (Istio
    # PeerAuthentication STRICT, client certificate from the bench CA). Only the TLS
    # scenarios: its plaintext listener is the `wasmesh` case again.
    Case("wasmesh-mtls", wasmesh_proxy("[]", tls_mode="mutual"), requires=(WASMESH_BIN,), needs=("pki",),
         client_cert=True, only_scenarios=("mtls", "tls-handshake-full", "tls-handshake-resumed")),
    # Istio's security chain (issue 7): authn (an ES256 JWT checked against an inline JWKS;
    # the load generator sends it as a bearer token) + authz (one ALLOW policy of 20 rules,
    # only the last matches). Without the token the request gets 403.
    Case("wasmesh-authn-authz", wasmesh_proxy(lambda: security_chain_yaml()), requires=(WASMESH_BIN,),
         needs=("jwt",), headers=lambda: [f"Authorization: Bearer {ASSETS['jwt']['token']}"],
         denied_without_headers=True),
    # Istio's telemetry (issue 8): standard metrics on, tracing sampled at 1% (spans exported
    # to the upstream's /v1/traces), no access log.
    Case("wasmesh-telemetry", wasmesh_proxy(
        "[{name: telemetry, module: 'builtin:telemetry', config: {tracing: {cluster: otel, sampling: 1.0}}}]"),
        requires=(WASMESH_BIN,), expect_metric="istio_requests_total"),
]


def security_chain_yaml() -> str:
    """authn + authz for wasmesh-authn-authz: 19 ALLOW rules that do not match the bench's
    request, then the one that does (request principal from the JWT, method and path)."""
    rules = [{"from": [{"source": {"requestPrincipals": [f"{JWT_ISSUER}/other-{i}"]}}],
              "to": [{"operation": {"methods": ["GET", "POST"], "paths": [f"/service-{i}/*"]}}]}
             for i in range(19)]
    rules.append({"from": [{"source": {"requestPrincipals": [f"{JWT_ISSUER}/{JWT_SUBJECT}"]}}],
                  "to": [{"operation": {"methods": ["GET"], "paths": ["/small", "/large"]}}]})
    chain = [
        {"name": "authn", "module": "builtin:authn", "config": {"jwtRules": [
            {"issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE], "jwks": ASSETS["jwt"]["jwks"]}]}},
        {"name": "authz", "module": "builtin:authz", "config": {"policies": [
            {"name": "bench-allow", "action": "ALLOW", "rules": rules}]}},
    ]
    return json.dumps(chain)  # JSON is YAML


@dataclass
class Scenario:
    """One table: a load shape, a protocol and a body size."""

    name: str
    layout: str  # "B" efficiency (upstream shares the proxy's CPU), "A" latency
    tool: str  # wrk | h2load | openloop
    proto: str  # h1 | h2
    path: str  # /small | /large
    title: str
    rate: int = 0  # open loop only
    only: tuple[str, ...] = ()  # cases run in this scenario (empty: every case)
    needs: tuple[str, ...] = ()  # ASSETS entries; skipped (not failed) without them


SCENARIOS: list[Scenario] = [
    Scenario("h1-100B", "B", "wrk", "h1", "/small", "HTTP/1.1, 100 B body, saturation (wrk, 64 connections)"),
    Scenario("h1-64KiB", "B", "wrk", "h1", "/large", "HTTP/1.1, 64 KiB body, saturation (wrk, 64 connections)"),
    Scenario("h2-100B", "B", "h2load", "h2", "/small", "HTTP/2 h2c, 100 B body, saturation (h2load, 16 connections x 4 streams)"),
    Scenario("h2-64KiB", "B", "h2load", "h2", "/large", "HTTP/2 h2c, 64 KiB body, saturation (h2load, 16 connections x 4 streams)"),
    Scenario("h1-100B-open", "A", "openloop", "h1", "/small", "HTTP/1.1, 100 B body, open loop at {rate} req/s (32 connections)", rate=5000),
    # TLS on the listener (issues 6/7): the same server certificate (self-signed ECDSA
    # P-256) on nginx, HAProxy and wasmesh; the upstream hop stays plaintext.
    Scenario("h1-100B-tls", "B", "wrk", "tls", "/small",
             "HTTPS (TLS 1.3, ECDSA P-256 certificate), keep-alive, 100 B body, saturation (wrk, 64 connections)",
             needs=("pki",)),
    # wrk and h2load cannot present a client certificate: wrk talks plaintext to a HAProxy in
    # tcp mode on the load generator's CPU, which opens one TLS connection per wrk connection
    # with the bench client certificate (`tls-shim` below). TLS only vs mutual TLS.
    Scenario("mtls", "B", "wrk-shim", "tls", "/small",
             "mutual TLS vs TLS only, keep-alive, 100 B body, saturation (wrk, 64 connections, TLS from a HAProxy tcp-mode shim on CPU 0)",
             only=("wasmesh", "wasmesh-mtls"), needs=("pki",)),
    # Handshake rate (issue 7): one `openssl s_time` on CPU 0, a new connection per handshake
    # carrying one HTTP/1.0 request; -reuse resumes the first connection's session.
    Scenario("tls-handshake-full", "B", "s_time-new", "tls", "",
             "full TLS handshakes (openssl s_time -new -www /small: connect, TLS 1.3 handshake, one HTTP/1.0 GET, close)",
             only=("nginx", "haproxy", "wasmesh", "wasmesh-mtls"), needs=("pki",)),
    Scenario("tls-handshake-resumed", "B", "s_time-reuse", "tls", "",
             "resumed TLS handshakes (openssl s_time -reuse -www /small: TLS 1.3 resumption, one HTTP/1.0 GET, close)",
             only=("nginx", "haproxy", "wasmesh", "wasmesh-mtls"), needs=("pki",)),
]

# The TLS-originating shim of the `mtls` scenario: case name -> its plaintext port.
SHIM_PORTS: dict[str, int] = {}


# --------------------------------------------------------------------------- load generators


def loadgen_cmd(sc: Scenario, port: int, duration: int, openloop: Path, case: Optional[Case] = None) -> list[str]:
    scheme = "https" if sc.proto == "tls" and sc.tool == "wrk" else "http"
    url = f"{scheme}://127.0.0.1:{port}{sc.path}"
    headers = case.headers() if case and case.headers else []
    if sc.tool in ("wrk", "wrk-shim"):
        return ["wrk", "-t1", "-c64", f"-d{duration}s", "--timeout", "5s", "-s", str(BENCH / "wrk_report.lua"),
                *(a for h in headers for a in ("-H", h)), url]
    if sc.tool == "h2load":
        return ["h2load", "-t1", "-c16", "-m4", "-D", str(duration), *(a for h in headers for a in ("-H", h)), url]
    if sc.tool == "openloop":
        return [str(openloop), "--addr", f"127.0.0.1:{port}", "--path", sc.path, "--rate", str(sc.rate), "--conns", "32",
                "--duration", str(duration), *(a for h in headers for a in ("--header", h))]
    if sc.tool in ("s_time-new", "s_time-reuse"):
        # -www: one HTTP/1.0 GET per connection. Without reading a response s_time never
        # sees a TLS 1.3 session ticket (they follow the handshake), so -reuse could not resume.
        cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-" + sc.tool.split("-")[1], "-time", str(duration),
               "-www", "/small"]
        if case and case.client_cert:
            pki = ASSETS["pki"]
            cmd += ["-cert", str(pki["client_cert"]), "-key", str(pki["client_key"])]
        return cmd
    raise ValueError(sc.tool)


def parse_wrk(out: str) -> dict:
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if not m:
        raise ValueError("no WRKJSON line in wrk output")
    j = json.loads(m.group(1))
    errors = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"]
    secs = j["duration_us"] / 1e6
    return {
        "requests": j["requests"],
        "rps": j["requests"] / secs if secs > 0 else 0.0,
        "non_2xx": j["err_status"],
        "errors": errors,
        "p50_us": j["p50_us"],
        "p90_us": j["p90_us"],
        "p99_us": j["p99_us"],
    }


def parse_h2load(out: str) -> dict:
    fin = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (fin and req and codes):
        raise ValueError("unrecognised h2load output")
    _total, _started, done, _ok, failed, errored, timeout = (int(x) for x in req.groups())
    return {
        "requests": done,
        "rps": float(fin.group(1)),
        "non_2xx": sum(int(x) for x in codes.groups()[1:]),
        "errors": failed + errored + timeout,
    }


def parse_openloop(out: str) -> dict:
    j = json.loads(out.strip().splitlines()[-1])
    return {
        "requests": j["requests"],
        "rps": j["rate_achieved"],
        "non_2xx": j["non_2xx"],
        "errors": j["errors"] + j["missed"],
        "corrected": j["corrected"],
        **{k: j[k] for k in ("mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")},
    }


def parse_s_time(out: str) -> dict:
    """openssl s_time: one `*` per full and one `r` per resumed handshake, then a count line.
    Its req/s is set from the measured wall time (s_time rounds its real seconds)."""
    m = re.search(r"^(\d+) connections in [\d.]+s; [\d.]+ connections/user sec", out, re.M)
    if not m:
        raise ValueError("unrecognised openssl s_time output")
    marks = "".join(re.findall(r"^[*r]+$", out, re.M))
    n = int(m.group(1))
    return {"requests": n, "rps": 0.0, "non_2xx": 0, "errors": 0,
            "resumed_pct": round(100 * marks.count("r") / n, 1) if n else 0.0}


PARSERS = {"wrk": parse_wrk, "wrk-shim": parse_wrk, "h2load": parse_h2load, "openloop": parse_openloop,
           "s_time-new": parse_s_time, "s_time-reuse": parse_s_time}


# --------------------------------------------------------------------------- one run


@dataclass
class Target:
    case: Case
    server: Optional[Server]  # None for direct

    def port(self, proto: str, up: Server) -> Optional[int]:
        s = self.server or up
        if proto == "tls":
            return self.server.tls_port if self.server else None
        return s.h1_port if proto == "h1" else (s.h2_port if self.case.h2 else None)

    def port_for(self, sc: Scenario, up: Server) -> Optional[int]:
        """The port the scenario's load generator talks to; None: the case sits this one out."""
        if sc.only and self.case.name not in sc.only:
            return None
        if self.case.only_scenarios and sc.name not in self.case.only_scenarios:
            return None
        if sc.proto == "tls" and sc.tool == "wrk-shim":
            return SHIM_PORTS.get(self.case.name)
        if sc.proto == "tls" and self.case.client_cert and not sc.tool.startswith("s_time"):
            return None  # wrk cannot present a client certificate
        return self.port(sc.proto, up)


def run_once(sc: Scenario, tgt: Target, up: Server, duration: int, openloop: Path, rep: int,
             shim: Optional[Server] = None) -> dict:
    port = tgt.port_for(sc, up)
    assert port is not None
    cmd = ["taskset", "-c", str(LOADGEN_CPU), *loadgen_cmd(sc, port, duration, openloop, tgt.case)]
    proxy_pids = tgt.server.pids() if tgt.server else []
    up_pids = up.pids()
    shim_pids = shim.pids() if (shim and sc.tool == "wrk-shim") else []
    h0 = cpu_ticks(shim_pids)
    p0, u0 = cpu_ticks(proxy_pids), cpu_ticks(up_pids)
    q0 = sched_ns(proxy_pids)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = system_ticks()
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, preexec_fn=prioritize)
    except subprocess.TimeoutExpired as e:  # the generator hung: killed by run(); flag, go on
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        p = subprocess.CompletedProcess(cmd, -9, out, f"timed out after {duration + 60}s")
    wall = time.monotonic() - t0
    s1 = system_ticks()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p1, u1 = cpu_ticks(proxy_pids), cpu_ticks(up_pids)
    q1 = sched_ns(proxy_pids)
    lg_ticks = ((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)) * CLK_TCK
    shim_ticks = cpu_ticks(shim_pids) - h0  # the mTLS shim is part of the load generator
    lg_ticks += shim_ticks
    row: dict = {
        "scenario": sc.name,
        "case": tgt.case.name,
        "rep": rep,
        "cmd": " ".join(cmd),
        "wall_s": round(wall, 3),
        "exit_code": p.returncode,
    }
    problems = []
    try:
        row.update(PARSERS[sc.tool](p.stdout))
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        problems.append(f"unparsable load-generator output ({e}): {(p.stdout + p.stderr)[-300:]!r}")
        row.update({"requests": 0, "rps": 0.0, "non_2xx": 0, "errors": 0})
    n = row["requests"]
    if sc.tool.startswith("s_time") and wall > 0:
        row["rps"] = n / wall  # handshakes per second
    us = 1e6 / CLK_TCK
    if shim_pids:
        row["shim_cpu_us_per_req"] = shim_ticks * us / n if n else None
    row["proxy_cpu_us_per_req"] = (p1 - p0) * us / n if (n and tgt.server) else None
    row["proxy_sched_us_per_req"] = (q1 - q0) / 1000 / n if (n and tgt.server) else None
    row["upstream_cpu_us_per_req"] = (u1 - u0) * us / n if n else None
    ours = (p1 - p0) + (u1 - u0) + lg_ticks
    row["other_cpu_pct"] = round(max(0.0, (s1[0] - s0[0]) - ours) / CLK_TCK / wall * 100, 1)
    row["steal_pct"] = round((s1[1] - s0[1]) / max(1, s1[2] - s0[2]) * 100, 2)
    row["loadgen_cpu_pct"] = round(lg_ticks / CLK_TCK / wall * 100, 1)
    if p.returncode != 0:
        problems.append(f"load generator exited {p.returncode}: {p.stderr.strip()[-300:]}")
    if n == 0:
        problems.append("no request completed")
    if row["non_2xx"]:
        problems.append(f"{row['non_2xx']} non-2xx responses")
    if row["errors"]:
        problems.append(f"{row['errors']} socket errors/timeouts/missed")
    if sc.tool == "s_time-reuse" and row.get("resumed_pct", 100) < 90:
        problems.append(f"only {row['resumed_pct']}% of the handshakes were resumed")
    if shim_pids and not shim.alive():
        problems.append(f"the TLS shim died: {shim.log_tail()}")
    if tgt.server and not tgt.server.alive():
        problems.append(f"{tgt.case.name} died: {tgt.server.log_tail()}")
    if not up.alive():
        problems.append("upstream died")
    row["problems"] = problems
    return row


# --------------------------------------------------------------------------- summary


def med(xs: list) -> Optional[tuple[float, float, float]]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)


def summarize(rows: list[dict], targets: list[Target], scenarios: list[Scenario]) -> dict:
    summary: dict = {}
    for sc in scenarios:
        per_case = {}
        for t in targets:
            rs = [r for r in rows if r["scenario"] == sc.name and r["case"] == t.case.name and r["rep"] >= 0]
            if not rs:
                continue
            keys = ["rps", "proxy_cpu_us_per_req", "upstream_cpu_us_per_req", "p50_us", "p90_us", "p99_us", "p999_us",
                    "other_cpu_pct", "resumed_pct", "shim_cpu_us_per_req"]
            per_case[t.case.name] = {
                "runs": len(rs),
                "failed_runs": sum(1 for r in rs if r["problems"]),
                "noisy_runs": sum(1 for r in rs if r.get("noisy")),
                **{k: med([r.get(k) for r in rs]) for k in keys},
            }
        summary[sc.name] = per_case
    return summary


def fmt_num(x: Optional[float], digits: int = 1) -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def fmt_med(m: Optional[tuple], digits: int = 1, scale: float = 1.0) -> str:
    if m is None:
        return "–"
    a, lo, hi = (v * scale for v in m)
    return f"{fmt_num(a, digits)} ({fmt_num(lo, digits)}–{fmt_num(hi, digits)})"


def ratio(a: Optional[tuple], b: Optional[tuple]) -> str:
    if not a or not b or not b[0]:
        return "–"
    return f"{a[0] / b[0]:.2f}"


def diff_ms(a: Optional[tuple], b: Optional[tuple]) -> str:
    if not a or not b:
        return "–"
    return f"{(a[0] - b[0]) / 1000:+.3f}"


READING_START = "<!-- reading:start -->"
READING_END = "<!-- reading:end -->"
# Hand-written sections (results of other runs) kept verbatim at the end across re-runs.
KEPT_START = "<!-- kept:start -->"
KEPT_END = "<!-- kept:end -->"


def render_markdown(meta: dict, summary: dict, scenarios: list[Scenario], targets: list[Target],
                    rows: list[dict], servers: dict, skipped: list[str], old_text: str) -> str:
    L: list[str] = []
    L.append("# wasmesh benchmark results\n")
    L.append("Generated by `cargo xtask bench` (`bench/bench.py`); see `bench/README.md` for the method "
             "and what each figure means. Medians over the repetitions, (min–max) in brackets; "
             "ratios are ratios of medians from this same run.\n")
    L.append(f"- Date: {meta['date']}  ·  git `{meta['commit']}`  ·  mode: {meta['mode']}")
    m = meta["machine"]
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu']}, hypervisor {m['hypervisor']}), {m['memory']}, kernel {m['kernel']}")
    L.append(f"- Load average before / after: {meta['loadavg_before']} / {meta['loadavg_after']}; "
             f"max other-process CPU in a run: {meta['max_other_cpu_pct']}% of one core; max steal: {meta['max_steal_pct']}%")
    L.append("- Tools: " + "; ".join(f"{v}" for v in meta["tools"].values()))
    L.append(f"- Runs: {meta['reps']} repetitions × {meta['duration_s']} s per case and scenario, " +
             (f"one {meta['warmup_s']} s warm-up per case and scenario discarded; " if meta['warmup_s'] else "no warm-up; ") +
             "cases interleaved round-robin, start rotated each round; "
             f"load generator, upstream and proxies each in its own session at nice {meta['nice']} "
             "(task and scheduler autogroup). "
             f"Total wall time {meta['wall_min']:.1f} min.")
    if meta.get("wasmesh_binary"):
        L.append(f"- wasmesh binary: `target/release/wasmesh`, built {meta['wasmesh_binary']}")
    for name, what in meta.get("tls", {}).items():
        L.append(f"- TLS negotiated by `openssl s_client` with {name}: {what}")
    if meta.get("jwt"):
        L.append(f"- JWT: {meta['jwt']}")
    for s in skipped:
        L.append(f"- **Skipped:** {s}")
    failed = [r for r in rows if r["problems"]]
    if failed:
        L.append(f"- **{len(failed)} run(s) flagged** (non-2xx, errors or a dead process): see the table's last column and the raw JSON.")
    else:
        L.append("- Every run: 100% 2xx, no socket error, no timeout.")
    L.append("")
    names = [t.case.name for t in targets]
    for sc in scenarios:
        per = summary.get(sc.name, {})
        if not per:
            continue
        layout = "layout B: load generator on CPU 0; upstream + proxy on CPU 1" if sc.layout == "B" else \
            "layout A: load generator + upstream on CPU 0; proxy alone on CPU 1"
        L.append(f"## {sc.name}: {sc.title.format(rate=f'{sc.rate:,}')}\n")
        L.append(f"_{layout}._\n")
        d, n, h = per.get("direct"), per.get("nginx"), per.get("haproxy")
        if sc.tool.startswith("s_time"):
            L.append("| case | handshakes/s | ÷ nginx | ÷ HAProxy | proxy CPU µs/handshake | ÷ nginx | ÷ HAProxy | resumed | flagged / noisy runs |")
            L.append("|---|---|---|---|---|---|---|---|---|")
            for name in names:
                c = per.get(name)
                if not c:
                    continue
                L.append(
                    f"| {name} | {fmt_med(c['rps'], 0)} | {ratio(c['rps'], n and n['rps'])} | {ratio(c['rps'], h and h['rps'])} | "
                    f"{fmt_med(c['proxy_cpu_us_per_req'])} | "
                    f"{ratio(c['proxy_cpu_us_per_req'], n and n['proxy_cpu_us_per_req'])} | "
                    f"{ratio(c['proxy_cpu_us_per_req'], h and h['proxy_cpu_us_per_req'])} | "
                    f"{fmt_num(c['resumed_pct'][0] if c['resumed_pct'] else None, 1)}% | "
                    f"{c['failed_runs']} / {c['noisy_runs']} of {c['runs']} |"
                )
        elif sc.tool != "openloop":
            L.append("| case | req/s | ÷ direct | ÷ nginx | ÷ HAProxy | proxy CPU µs/req | ÷ nginx | ÷ HAProxy | upstream CPU µs/req | flagged / noisy runs |")
            L.append("|---|---|---|---|---|---|---|---|---|---|")
            for name in names:
                c = per.get(name)
                if not c:
                    continue
                L.append(
                    f"| {name} | {fmt_med(c['rps'], 0)} | {ratio(c['rps'], d and d['rps'])} | "
                    f"{ratio(c['rps'], n and n['rps'])} | {ratio(c['rps'], h and h['rps'])} | "
                    f"{fmt_med(c['proxy_cpu_us_per_req'])} | "
                    f"{ratio(c['proxy_cpu_us_per_req'], n and n['proxy_cpu_us_per_req'])} | "
                    f"{ratio(c['proxy_cpu_us_per_req'], h and h['proxy_cpu_us_per_req'])} | "
                    f"{fmt_med(c['upstream_cpu_us_per_req'])} | {c['failed_runs']} / {c['noisy_runs']} of {c['runs']} |"
                )
            shim_cpu = [f"{nm} {fmt_med(per[nm]['shim_cpu_us_per_req'])}" for nm in names
                        if per.get(nm) and per[nm].get("shim_cpu_us_per_req")]
            if shim_cpu:
                L.append(f"\n_TLS shim (load-generator side) CPU µs/req: {'; '.join(shim_cpu)}._")
        else:
            L.append("| case | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 / p90 / p99 ms vs direct | proxy CPU µs/req at this rate | ÷ nginx | flagged / noisy runs |")
            L.append("|---|---|---|---|---|---|---|---|---|")
            for name in names:
                c = per.get(name)
                if not c:
                    continue
                added = "–" if name == "direct" or not d else " / ".join(
                    diff_ms(c[k], d[k]) for k in ("p50_us", "p90_us", "p99_us"))
                L.append(
                    f"| {name} | {fmt_med(c['p50_us'], 3, 1e-3)} | {fmt_med(c['p90_us'], 3, 1e-3)} | "
                    f"{fmt_med(c['p99_us'], 3, 1e-3)} | {fmt_med(c['p999_us'], 3, 1e-3)} | {added} | "
                    f"{fmt_med(c['proxy_cpu_us_per_req'])} | "
                    f"{ratio(c['proxy_cpu_us_per_req'], n and n['proxy_cpu_us_per_req'])} | {c['failed_runs']} / {c['noisy_runs']} of {c['runs']} |"
                )
        L.append("")
    chains = [nm for nm in names if nm.startswith("wasmesh-")]
    if "wasmesh" in names and chains:
        L.append("## Filter cost (vs the empty chain)\n")
        L.append("Proxy CPU µs/req of the case minus that of `wasmesh` (empty chain), and its req/s ÷ "
                 "`wasmesh` req/s, same run (shared/reference/performance.md G5).\n")
        L.append("| case | " + " | ".join(sc.name for sc in scenarios) + " |")
        L.append("|---|" + "---|" * len(scenarios))
        for nm in chains:
            cells = []
            for sc in scenarios:
                per = summary.get(sc.name, {})
                c, e = per.get(nm), per.get("wasmesh")
                if not c or not e or not c["proxy_cpu_us_per_req"] or not e["proxy_cpu_us_per_req"]:
                    cells.append("–")
                    continue
                dcpu = c["proxy_cpu_us_per_req"][0] - e["proxy_cpu_us_per_req"][0]
                cell = f"{dcpu:+.1f} µs"
                if sc.tool != "openloop":
                    cell += f", ×{ratio(c['rps'], e['rps'])} req/s"
                cells.append(cell)
            L.append(f"| {nm} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("## Memory\n")
    L.append("Sum over the proxy's processes (nginx: master + worker). Idle: VmRSS right after start. "
             "Peak: VmHWM after every run above.\n")
    L.append("| case | RSS idle | peak RSS (VmHWM) |")
    L.append("|---|---|---|")
    for name in names:
        s = servers.get(name)
        if s:
            L.append(f"| {name} | {s['rss_idle_kib'] / 1024:.1f} MiB | {s['hwm_kib'] / 1024:.1f} MiB |")
    L.append("")
    L.append("## Exact commands\n")
    L.append("`$TMP` is the run's temp dir (copies of the generated configs are in `bench/out/<run>/`); "
             "`PORT` is the case's listener (random free port; HTTP/2 cases use a second, h2c-only port "
             "on nginx and HAProxy).\n")
    L.append("```")
    tmpdir = meta.get("tmp", "")
    for name, s in servers.items():
        L.append(f"# {name}\n{s['cmd'].replace(tmpdir, '$TMP') if tmpdir else s['cmd']}")
    seen = set()
    for r in rows:
        if r["scenario"] not in seen:
            seen.add(r["scenario"])
            cmd = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", r["cmd"]).replace(str(ROOT) + "/", "")
            L.append(f"# scenario {r['scenario']}\n{cmd}")
    L.append("```\n")
    if failed:
        L.append("## Flagged runs\n")
        for r in failed:
            L.append(f"- {r['scenario']} / {r['case']} rep {r['rep']}: {'; '.join(r['problems'])}")
        L.append("")
    reading = "_No reading yet._"
    if READING_START in old_text and READING_END in old_text:
        reading = old_text.split(READING_START, 1)[1].split(READING_END, 1)[0].strip()
    L.append("## Reading\n")
    L.append(READING_START)
    L.append(reading)
    L.append(READING_END)
    L.append("")
    rest = old_text
    while KEPT_START in rest and KEPT_END in rest.split(KEPT_START, 1)[1]:
        block, rest = rest.split(KEPT_START, 1)[1].split(KEPT_END, 1)
        L.append(KEPT_START + block + KEPT_END)
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- main


def wait_idle(max_wait: int) -> None:
    """Waits (up to max_wait s) for a 3 s window in which the box used < 30% of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_ticks()[0]
        time.sleep(3)
        used = (system_ticks()[0] - b0) / CLK_TCK / 3 * 100
        if used < 30:
            log(f"box idle ({used:.0f}% of a core busy over 3 s): starting")
            return
        if time.monotonic() >= deadline:
            log(f"box still busy ({used:.0f}% of a core) after {max_wait}s: starting anyway")
            return
        log(f"box busy ({used:.0f}% of a core over 3 s): waiting for it to calm down")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str]) -> int:
    global WASMESH_BIN
    ap = argparse.ArgumentParser(prog="cargo xtask bench", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1 s runs, 1 repetition, no warm-up; exits non-zero if a run failed")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per case and scenario (default 5)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per run (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of the discarded warm-up run (default 2, 0 = none)")
    ap.add_argument("--cases", default="", help="comma-separated subset of: " + ",".join(c.name for c in CASES))
    ap.add_argument("--scenarios", default="", help="comma-separated subset of: " + ",".join(s.name for s in SCENARIOS))
    ap.add_argument("--results", default="", help="markdown output (default bench/RESULTS.md; bench/out/smoke.md with --smoke)")
    ap.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing missing tools")
    ap.add_argument("--wasmesh", default="", help="wasmesh binary to bench (default target/release/wasmesh)")
    ap.add_argument("--noisy-retries", type=int, default=1,
                    help="re-run a run up to N times while other processes used > 15%% of a core during it "
                         "(default 1; at most 1 retry per 4 runs overall; 0 in --smoke)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="nice value of the load generator, upstream and proxies, so a build running "
                         "beside the bench disturbs it less (default -10; 0 = leave alone)")
    ap.add_argument("--wait-idle", type=int, default=0, metavar="SECS",
                    help="before starting, wait up to SECS for a quiet 3 s window (default 0: start at once)")
    ap.add_argument("--build", action="store_true", help="cargo build --release -p wasmesh first (nice -n 10)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.reps, args.duration, args.warmup, args.noisy_retries = 1, 1, 0, 0
        # Smoke checks correctness, not speed: a debug build must keep up with the open loop.
        for sc in SCENARIOS:
            if sc.rate:
                sc.rate = min(sc.rate, 1000)
        if not args.wasmesh and not WASMESH_BIN.exists() and WASMESH_DEBUG_BIN.exists():
            log(f"smoke: {WASMESH_BIN.relative_to(ROOT)} missing, using {WASMESH_DEBUG_BIN.relative_to(ROOT)} "
                "(debug build: checks that it proxies correctly; its figures mean nothing)")
            args.wasmesh = str(WASMESH_DEBUG_BIN)
    PRIORITY["nice"] = args.nice
    if args.wasmesh:
        WASMESH_BIN = Path(args.wasmesh).resolve()  # noqa: PLW0603
        for c in CASES:
            c.requires = tuple(WASMESH_BIN if r.name == "wasmesh" else r for r in c.requires)

    cases = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios.split(",")]
    if not cases or not scenarios:
        ap.error("no case or scenario selected")
    if "direct" not in [c.name for c in cases]:
        log("note: 'direct' not selected, so no ratio to direct and no added latency")

    ensure_tools(args.no_install)
    if args.build:
        log("building target/release/wasmesh (nice -n 10)")
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "-p", "wasmesh"], cwd=ROOT, check=True)
    openloop = build_openloop()
    if args.wait_idle:
        wait_idle(args.wait_idle)
    if os.cpu_count() and os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs; pinning layouts A and B collapse onto one core")

    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    run_dir = OUT / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="wasmesh-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody and must read the body file
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine_info(),
        "tools": tool_versions(),
        "reps": args.reps,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "loadavg_before": loadavg(),
        "tmp": str(tmp),
        "nice": args.nice,
    }
    log(f"load average {meta['loadavg_before']} (1/5/15 min); a busy box makes noisy numbers")
    n_cases = sum(1 for c in cases if all(r.exists() for r in c.requires))
    est = len(scenarios) * n_cases * (args.reps * (args.duration + 0.4) + (args.warmup + 0.4 if args.warmup else 0))
    log(f"{n_cases} cases × {len(scenarios)} scenarios × {args.reps} reps of {args.duration}s: "
        f"about {est / 60:.1f} min (more if noisy runs are re-run)")

    t_start = time.monotonic()
    up: Optional[Server] = None
    targets: list[Target] = []
    started: list[Server] = []  # every proxy started, stopped in `finally`
    skipped: list[str] = []
    startup_failures: list[str] = []
    rows: list[dict] = []
    try:
        for why in make_assets(tmp):
            log("SKIP " + why)
            skipped.append(why)
        if "jwt" in ASSETS:
            meta["jwt"] = f"ES256, key and token made with {ASSETS['jwt']['how']}"
        for sc in list(scenarios):
            lacking = [n for n in sc.needs if n not in ASSETS]
            if lacking:
                msg = f"scenario {sc.name}: no {', '.join(lacking)} material"
                log("SKIP " + msg)
                skipped.append(msg)
                scenarios.remove(sc)
        up = start_upstream(tmp, SUT_CPU)
        wait_port(up.h1_port, up.proc)
        wait_port(up.h2_port or up.h1_port, up.proc)
        for c in cases:
            lacking = [n for n in c.needs if n not in ASSETS]
            if lacking:
                msg = f"{c.name}: no {', '.join(lacking)} material (see above)"
                log("SKIP " + msg)
                skipped.append(msg)
                continue
            if c.only_scenarios and not any(sc.name in c.only_scenarios for sc in scenarios):
                log(f"{c.name}: none of its scenarios ({', '.join(c.only_scenarios)}) selected; not started")
                continue
            missing = [r for r in c.requires if not r.exists()]
            if missing:
                how = "cargo build --release -p wasmesh" if missing[0].name == "wasmesh" else "cargo xtask filters"
                shown = missing[0].relative_to(ROOT) if missing[0].is_relative_to(ROOT) else missing[0]
                msg = f"{c.name}: {shown} not found (build it: {how})"
                log("SKIP " + msg)
                skipped.append(msg)
                continue
            if c.make is None:
                targets.append(Target(c, None))
                continue
            spec = c.make(tmp, up)
            proc, lp, full = spawn(c.name, spec.cmd, tmp, SUT_CPU)
            srv = Server(c.name, proc, full, lp, spec.h1_port, spec.h2_port, spec.config_text,
                         tls_port=spec.tls_port, admin_port=spec.admin_port)
            started.append(srv)
            targets.append(Target(c, srv))
            try:
                wait_port(srv.h1_port, proc)
                if srv.tls_port:
                    wait_port(srv.tls_port, proc)
            except RuntimeError as e:
                startup_failures.append(f"{c.name} did not start: {e}\n{srv.log_tail()}")
                targets.pop()
                srv.stop()
        # Sanity: every target serves both bodies correctly before any load.
        for t in list(targets):
            port = t.port("h1", up)
            hdrs = t.case.headers() if t.case.headers else []
            for path, size in (("/small", len(SMALL_BODY)), ("/large", LARGE_SIZE)):
                try:
                    status, n, headers = http_get(port, path, hdrs)
                except OSError as e:
                    status, n, headers = 0, f"error {e}", {}
                if status != 200 or n != size:
                    startup_failures.append(f"{t.case.name}: GET {path} gave status {status}, {n} bytes (want 200, {size})")
                want = t.case.expect_header
                if want and status == 200 and headers.get(want[0]) != want[1]:
                    startup_failures.append(f"{t.case.name}: GET {path} lacks response header {want[0]}: {want[1]}")
            if t.case.denied_without_headers:
                try:
                    status = http_get(port, "/small")[0]
                except OSError as e:
                    status = f"error {e}"
                if status not in (401, 403):
                    startup_failures.append(f"{t.case.name}: GET /small without its headers gave {status} (want 401/403)")
            if t.server and t.server.tls_port:
                try:
                    status, n, _ = http_get(t.server.tls_port, "/small", hdrs, tls=True, client_cert=t.case.client_cert)
                except OSError as e:
                    status, n = 0, f"error {e}"
                if status != 200 or n != len(SMALL_BODY):
                    startup_failures.append(f"{t.case.name}: HTTPS GET /small gave status {status}, {n} bytes")
                if t.case.client_cert:
                    try:
                        status = http_get(t.server.tls_port, "/small", hdrs, tls=True)[0]
                    except OSError:
                        status = "refused"  # what mutual TLS must do
                    if status != "refused":
                        startup_failures.append(f"{t.case.name}: HTTPS without a client certificate gave {status}")
            if t.case.expect_metric and t.server and t.server.admin_port:
                body = ""
                for _ in range(20):
                    try:
                        import urllib.request
                        body = urllib.request.urlopen(f"http://127.0.0.1:{t.server.admin_port}/metrics", timeout=5).read().decode()
                    except OSError:
                        body = ""
                    if t.case.expect_metric in body:
                        break
                    time.sleep(0.1)
                if t.case.expect_metric not in body:
                    startup_failures.append(f"{t.case.name}: admin /metrics lacks {t.case.expect_metric}")
            h2p = t.port("h2", up)
            if h2p is not None:
                p = subprocess.run(["h2load", "-n2", "-c1", *(a for h in hdrs for a in ("-H", h)),
                                    f"http://127.0.0.1:{h2p}/small"], capture_output=True, text=True, timeout=30)
                if "2 succeeded" not in p.stdout:
                    why = " / ".join(l for l in p.stdout.splitlines() if l.startswith(("requests:", "status codes:")))
                    startup_failures.append(f"{t.case.name}: h2c prior-knowledge check failed: {why or p.stderr[-200:]}")
        for f in startup_failures:
            log("FAIL " + f)
        bad = {f.split(":", 1)[0].split(" ", 1)[0] for f in startup_failures}
        targets = [t for t in targets if t.case.name not in bad]
        for t in targets:
            if t.server:
                t.server.rss_idle_kib = status_kib(t.server.pids(), "VmRSS")
                (run_dir / f"{t.case.name}.conf").write_text(t.server.config_text)
        (run_dir / "upstream.conf").write_text(up.config_text)
        shim = None
        if any(sc.tool == "wrk-shim" for sc in scenarios):
            shim = start_tls_shim(tmp, targets, {n for sc in scenarios if sc.tool == "wrk-shim" for n in sc.only})
            if shim:
                started.append(shim)
                try:
                    for name, port in SHIM_PORTS.items():
                        wait_port(port, shim.proc)
                        status = http_get(port, "/small")[0]
                        if status != 200:
                            raise RuntimeError(f"GET /small through the shim to {name} gave {status}")
                except (RuntimeError, OSError) as e:
                    startup_failures.append(f"tls-shim: {e} {shim.log_tail()}")
                    SHIM_PORTS.clear()
                (run_dir / "tls-shim.cfg").write_text(shim.config_text)
        # Which TLS version and cipher each TLS listener negotiates (wrk's OpenSSL defaults).
        for t in targets:
            if t.server and t.server.tls_port and shutil.which("openssl"):
                cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{t.server.tls_port}", "-brief"]
                if t.case.client_cert:
                    cmd += ["-cert", str(ASSETS["pki"]["client_cert"]), "-key", str(ASSETS["pki"]["client_key"])]
                p = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=10)
                got = re.findall(r"^(Protocol version|Ciphersuite|Peer signature type|Server Temp Key|Negotiated TLS1.3 group): (.*)$",
                                 p.stderr + p.stdout, re.M)
                meta.setdefault("tls", {})[t.case.name] = ", ".join(v for _, v in got) or "?"

        retry_budget = len(scenarios) * len(targets) * args.reps // 4
        for sc in scenarios:
            up_cpu = SUT_CPU if sc.layout == "B" else LOADGEN_CPU
            pin(up.pids(), up_cpu)
            for t in targets:
                if t.server:
                    pin(t.server.pids(), SUT_CPU)
            runnable = [t for t in targets if t.port_for(sc, up) is not None]
            for t in targets:
                if t not in runnable and not (sc.only and t.case.name not in sc.only) and \
                        not (t.case.only_scenarios and sc.name not in t.case.only_scenarios):
                    log(f"{sc.name}: {t.case.name} does not speak {sc.proto} (or needs a client certificate); skipped")
            if args.warmup:
                for t in runnable:
                    run_once(sc, t, up, args.warmup, openloop, rep=-1, shim=shim)
            for rep in range(args.reps):
                order = runnable[rep % len(runnable):] + runnable[:rep % len(runnable)] if runnable else []
                for t in order:
                    row = run_once(sc, t, up, args.duration, openloop, rep, shim=shim)
                    retries = 0
                    while (row["other_cpu_pct"] > NOISY_PCT and retries < args.noisy_retries
                           and retry_budget > 0):
                        retries += 1
                        retry_budget -= 1
                        log(f"{sc.name} rep {rep} {t.case.name}: other processes used {row['other_cpu_pct']}% of a core; "
                            f"re-running ({retries}/{args.noisy_retries})")
                        time.sleep(2)
                        row = run_once(sc, t, up, args.duration, openloop, rep, shim=shim)
                    row["retries"] = retries
                    row["noisy"] = row["other_cpu_pct"] > NOISY_PCT
                    rows.append(row)
                    shown = f"{row['rps']:,.0f} req/s"
                    if row.get("p99_us") is not None and sc.tool == "openloop":
                        shown += f", p50 {row['p50_us'] / 1000:.3f} ms, p99 {row['p99_us'] / 1000:.3f} ms"
                    if row["proxy_cpu_us_per_req"] is not None:
                        shown += f", proxy {row['proxy_cpu_us_per_req']:.1f} µs/req"
                    flag = "  FLAGGED: " + "; ".join(row["problems"]) if row["problems"] else ""
                    log(f"{sc.name} rep {rep} {t.case.name}: {shown}, other CPU {row['other_cpu_pct']}%{flag}")
        servers = {}
        for t in targets:
            if t.server:
                servers[t.case.name] = {
                    "cmd": " ".join(t.server.cmd),
                    "rss_idle_kib": t.server.rss_idle_kib,
                    "hwm_kib": status_kib(t.server.pids(), "VmHWM"),
                }
        servers = {"upstream": {"cmd": " ".join(up.cmd), "rss_idle_kib": 0, "hwm_kib": 0}, **servers}
        if shim:
            servers["tls-shim"] = {"cmd": " ".join(shim.cmd), "rss_idle_kib": 0, "hwm_kib": 0}
    finally:
        for srv in started:
            srv.stop()
        if up:
            up.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    meta["loadavg_after"] = loadavg()
    meta["wall_min"] = (time.monotonic() - t_start) / 60
    meta["max_other_cpu_pct"] = max((r["other_cpu_pct"] for r in rows), default=0)
    meta["max_steal_pct"] = max((r["steal_pct"] for r in rows), default=0)
    if WASMESH_BIN.exists():
        meta["wasmesh_binary"] = dt.datetime.fromtimestamp(WASMESH_BIN.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = summarize(rows, targets, scenarios)
    raw = {"meta": meta, "skipped": skipped, "startup_failures": startup_failures, "servers": servers,
           "summary": summary, "runs": rows}
    (run_dir / "raw.json").write_text(json.dumps(raw, indent=1))
    (OUT / ("latest-smoke.json" if args.smoke else "latest.json")).write_text(json.dumps(raw, indent=1))
    results = Path(args.results) if args.results else (OUT / "smoke.md" if args.smoke else BENCH / "RESULTS.md")
    old = results.read_text() if results.exists() else ""
    md = render_markdown(meta, summary, scenarios, targets, rows, servers, skipped, old)
    if startup_failures:
        md += "\n## Start-up failures\n\n" + "\n".join(f"- {f}" for f in startup_failures) + "\n"
    results.write_text(md)
    failed = [r for r in rows if r["problems"]]
    log(f"wrote {results.relative_to(ROOT) if results.is_relative_to(ROOT) else results} and {run_dir.relative_to(ROOT)}/raw.json "
        f"in {meta['wall_min']:.1f} min")
    if failed or startup_failures:
        log(f"FAILED: {len(failed)} flagged run(s), {len(startup_failures)} start-up failure(s)")
        return 1
    log(f"OK: {len(rows)} runs, all 100% 2xx" + (f"; skipped: {', '.join(s.split(':')[0] for s in skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
