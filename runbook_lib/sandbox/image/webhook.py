#!/usr/bin/python3
"""Alertmanager webhook receiver of the sandbox, run INSIDE the image (stdlib only).

Why: the runbooks must be able to prove that an alert reached a receiver (MON-04). POST /alert
stores the notification; GET /alerts returns the last 500 as JSON (?since=<unix time> filters);
DELETE /alerts clears them.

usage: webhook.py HOST PORT
"""

import json
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_LOCK = threading.Lock()
_RECEIVED = deque(maxlen=500)


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"error": "body is not JSON"})
        with _LOCK:
            _RECEIVED.append({"received_at": time.time(), "path": self.path, "payload": payload})
        self._send(200, {"ok": True})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self._send(200, {"ok": True})
        if url.path != "/alerts":
            return self._send(404, {"error": "GET /alerts or /healthz"})
        since = float(parse_qs(url.query).get("since", ["0"])[0])
        with _LOCK:
            items = [r for r in _RECEIVED if r["received_at"] >= since]
        self._send(200, {"count": len(items), "notifications": items})

    def do_DELETE(self):
        with _LOCK:
            _RECEIVED.clear()
        self._send(200, {"ok": True})

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
