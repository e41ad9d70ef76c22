"""Unit tests of the harness's parsers and summary maths (no load, no servers).

Run: python3 bench/test_bench.py   (the real end-to-end check is `cargo xtask bench --smoke`).
"""

import importlib.util
import sys
import unittest
from pathlib import Path

# Load bench/bench.py by path: from the repo root, `import bench` would find the folder.
_spec = importlib.util.spec_from_file_location("bench_harness", Path(__file__).resolve().parent / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_harness"] = bench  # dataclasses look their module up here
_spec.loader.exec_module(bench)

H2LOAD_OUT = """starting benchmark...
finished in 2.00s, 66835.50 req/s, 10.52MB/s
requests: 133671 total, 133735 started, 133671 done, 133670 succeeded, 1 failed, 0 errored, 0 timeout
status codes: 133660 2xx, 0 3xx, 10 4xx, 1 5xx
traffic: 10.52MB (11030000) total
"""

WRK_OUT = """Running 2s test @ http://127.0.0.1:1/small
WRKJSON {"requests":261010,"duration_us":2000000,"bytes":64208460,"err_connect":0,"err_read":2,"err_write":0,"err_status":3,"err_timeout":1,"p50_us":278,"p90_us":556,"p99_us":1964,"max_us":5000}
"""

OPENLOOP_OUT = (
    '{"requests":15000,"ok_2xx":14990,"non_2xx":10,"errors":1,"missed":2,"corrected":1,"bytes":1,'
    '"rate_target":5000,"conns":32,"duration_s":3.000,"rate_achieved":5000.0,"mean_us":87.6,'
    '"p50_us":72.6,"p90_us":98.8,"p99_us":437.0,"p999_us":1633.5,"max_us":6706.7}\n'
)


class Parsers(unittest.TestCase):
    def test_h2load_counts_failures_and_non_2xx(self):
        r = bench.parse_h2load(H2LOAD_OUT)
        self.assertEqual(r["requests"], 133671)
        self.assertAlmostEqual(r["rps"], 66835.5)
        self.assertEqual(r["non_2xx"], 11)
        self.assertEqual(r["errors"], 1)

    def test_h2load_rejects_garbage(self):
        with self.assertRaises(ValueError):
            bench.parse_h2load("connect failed")

    def test_wrk(self):
        r = bench.parse_wrk(WRK_OUT)
        self.assertEqual(r["requests"], 261010)
        self.assertAlmostEqual(r["rps"], 130505.0)
        self.assertEqual(r["non_2xx"], 3)
        self.assertEqual(r["errors"], 3)
        self.assertEqual(r["p99_us"], 1964)

    def test_wrk_without_report_line(self):
        with self.assertRaises(ValueError):
            bench.parse_wrk("unable to connect")

    def test_openloop_missed_counts_as_error(self):
        r = bench.parse_openloop(OPENLOOP_OUT)
        self.assertEqual(r["errors"], 3)
        self.assertEqual(r["non_2xx"], 10)
        self.assertEqual(r["p999_us"], 1633.5)


S_TIME_OUT = """Collecting connection statistics for 1 seconds
*rrrrrrrrr

10 connections in 0.01s; 1000.00 connections/user sec, bytes read 1230
10 connections in 1 real seconds, 123 bytes read per connection
"""


class NewScenarios(unittest.TestCase):
    def test_s_time_counts_resumed_handshakes(self):
        r = bench.parse_s_time(S_TIME_OUT)
        self.assertEqual(r["requests"], 10)
        self.assertEqual(r["resumed_pct"], 90.0)
        with self.assertRaises(ValueError):
            bench.parse_s_time("connect: Connection refused")

    def test_der_ecdsa_signature_to_jws(self):
        # SEQUENCE { INTEGER 0x00ff.. (33 bytes, sign pad), INTEGER 0x01 }
        der = bytes([0x30, 38, 0x02, 33, 0x00]) + b"\xff" * 32 + bytes([0x02, 1, 0x01])
        raw = bench.der_ecdsa_to_raw(der)
        self.assertEqual(raw, b"\xff" * 32 + b"\x00" * 31 + b"\x01")

    def test_security_chain_has_20_rules_last_one_matching(self):
        bench.ASSETS["jwt"] = {"jwks": "{}", "token": "t"}
        chain = __import__("json").loads(bench.security_chain_yaml())
        rules = chain[1]["config"]["policies"][0]["rules"]
        self.assertEqual(len(rules), 20)
        last = rules[-1]["from"][0]["source"]["requestPrincipals"][0]
        self.assertEqual(last, f"{bench.JWT_ISSUER}/{bench.JWT_SUBJECT}")
        self.assertTrue(all(f"{bench.JWT_ISSUER}/{bench.JWT_SUBJECT}" not in str(r) for r in rules[:-1]))

    def test_loadgen_sends_case_headers(self):
        case = bench.Case("x", None, headers=lambda: ["Authorization: Bearer t"])
        sc = next(s for s in bench.SCENARIOS if s.name == "h1-100B")
        cmd = bench.loadgen_cmd(sc, 1, 1, bench.Path("ol"), case)
        self.assertIn("Authorization: Bearer t", cmd)
        tls = next(s for s in bench.SCENARIOS if s.name == "h1-100B-tls")
        self.assertTrue(bench.loadgen_cmd(tls, 1, 1, bench.Path("ol"))[-1].startswith("https://"))


class Summary(unittest.TestCase):
    def test_median_ignores_missing_values(self):
        self.assertEqual(bench.med([3, None, 1, 2]), (2, 1, 3))
        self.assertIsNone(bench.med([None]))

    def test_ratio_and_added_latency(self):
        self.assertEqual(bench.ratio((30.0, 1, 1), (60.0, 1, 1)), "0.50")
        self.assertEqual(bench.ratio((30.0, 1, 1), None), "–")
        self.assertEqual(bench.diff_ms((250.0, 0, 0), (50.0, 0, 0)), "+0.200")

    def test_kept_sections_survive_a_rerun(self):
        old = "x\n<!-- kept:start -->\n## TLS\nfigures\n<!-- kept:end -->\n"
        meta = {"date": "d", "commit": "c", "mode": "smoke", "reps": 1, "duration_s": 1, "warmup_s": 0, "nice": 0,
                "wall_min": 0.1, "loadavg_before": "0", "loadavg_after": "0", "max_other_cpu_pct": 0,
                "max_steal_pct": 0, "tools": {}, "machine": {"nproc": "2", "cpu": "c", "hypervisor": "h",
                                                            "memory": "1 GiB", "kernel": "k"}}
        md = bench.render_markdown(meta, {}, [], [], [], {}, [], old)
        self.assertIn("<!-- kept:start -->\n## TLS\nfigures\n<!-- kept:end -->", md)

    def test_small_body_is_100_bytes(self):
        self.assertEqual(len(bench.SMALL_BODY), 100)
        self.assertNotIn(b'"', bench.SMALL_BODY)


if __name__ == "__main__":
    unittest.main()
