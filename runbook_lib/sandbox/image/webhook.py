#!/usr/bin/python3
"""Alertmanager receivers of the sandbox, run INSIDE the image: a webhook and a real SMTP server.

Why: the runbooks must be able to prove that an alert reached a receiver of any kind (MON-04). POST
/alert stores a webhook notification; GET /alerts returns the last 500 as JSON (?since=<unix time>
filters); DELETE /alerts clears them. The SMTP server (aiosmtpd, on SMTP_PORT) stores each mail;
GET /mail lists them (?since= too); PUT /mail?refuse=1 makes it refuse every mail (550) and
?refuse=0 accepts again, so a test can break the email receiver without touching Alertmanager.
With WEBHOOK_TLS_CERT/WEBHOOK_TLS_KEY it serves HTTPS; with WEBHOOK_USER/WEBHOOK_PASSWORD_FILE every request
but GET /healthz wants that basic auth (401 otherwise): a receiver that takes alerts from anyone, or hands
them to anyone, is a hole.

usage: webhook.py HOST PORT [SMTP_PORT]
"""

import base64
import hmac
import json
import os
import ssl
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_LOCK = threading.Lock()
_RECEIVED = deque(maxlen=500)
_MAIL = deque(maxlen=500)
_REFUSE = threading.Event()


class MailSink:
    """aiosmtpd handler: keep every accepted mail, or refuse all while _REFUSE is set."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if _REFUSE.is_set():
            return "550 5.7.1 refused by the sandbox (PUT /mail?refuse=0 to accept again)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with _LOCK:
            _MAIL.append({"received_at": time.time(), "from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "message": envelope.content.decode("utf-8", "replace")})
        return "250 Message accepted for delivery"


def _expected_auth():
    user, path = os.environ.get("WEBHOOK_USER"), os.environ.get("WEBHOOK_PASSWORD_FILE")
    if not (user and path):
        return None
    with open(path) as fh:
        return "Basic " + base64.b64encode(f"{user}:{fh.read().strip()}".encode()).decode()


_AUTH = None


class Handler(BaseHTTPRequestHandler):
    def _refused(self):
        """True (and a 401 sent) when credentials are required and these are not them."""
        if not _AUTH or hmac.compare_digest(self.headers.get("Authorization", ""), _AUTH):
            return False
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="webhook"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self._refused():
            return
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
        if url.path == "/healthz":  # the container's health check, without credentials
            return self._send(200, {"ok": True})
        if self._refused():
            return
        if url.path not in ("/alerts", "/mail"):
            return self._send(404, {"error": "GET /alerts, /mail or /healthz"})
        since = float(parse_qs(url.query).get("since", ["0"])[0])
        with _LOCK:
            items = [r for r in (_RECEIVED if url.path == "/alerts" else _MAIL) if r["received_at"] >= since]
        self._send(200, {"count": len(items), "notifications": items, "refusing": _REFUSE.is_set()})

    def do_PUT(self):
        if self._refused():
            return
        url = urlparse(self.path)
        if url.path != "/mail":
            return self._send(404, {"error": "PUT /mail?refuse=1|0"})
        refuse = parse_qs(url.query).get("refuse", ["0"])[0] == "1"
        _REFUSE.set() if refuse else _REFUSE.clear()
        self._send(200, {"refusing": refuse})

    def do_DELETE(self):
        if self._refused():
            return
        with _LOCK:
            _RECEIVED.clear()
        self._send(200, {"ok": True})

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    if len(sys.argv) > 3:
        from aiosmtpd.controller import Controller

        Controller(MailSink(), hostname=sys.argv[1], port=int(sys.argv[3])).start()
    _AUTH = _expected_auth()
    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
    if os.environ.get("WEBHOOK_TLS_CERT"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ["WEBHOOK_TLS_CERT"], os.environ["WEBHOOK_TLS_KEY"])
        # the handshake in the request's own thread (on its first read), not in the accepting one
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()
