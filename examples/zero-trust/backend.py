#!/usr/bin/env python3
"""The zero-trust example's app: answers every GET/POST/PUT/DELETE with a JSON echo of
what sidecar B forwarded (method, path, headers, body size). Standard library only.

    python3 examples/zero-trust/backend.py        # listens on 127.0.0.1:8081
"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size) if size else b""
        text = json.dumps(
            {
                "service": "api",
                "method": self.command,
                "path": self.path,
                "request_body_bytes": len(body),
                "headers": {k.lower(): v for k, v in self.headers.items()},
            },
            indent=2,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_DELETE = answer


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", 8081), Echo).serve_forever()
