"""The certificate a PostgreSQL server presents, read with the protocol's own SSLRequest."""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@dataclass
class ServerCertificate:
    subject: str
    issuer: str
    not_after: datetime
    verified: bool
    verify_error: str = ""

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    @property
    def days_left(self) -> float:
        return (self.not_after - datetime.now(UTC)).total_seconds() / 86400


def postgres_certificate(host: str, port: int, cafile: str | None, timeout: float = 5) -> ServerCertificate:
    """Handshake twice: once verifying against the CA (did the chain verify?), once to read the leaf."""
    verified, error = False, ""
    if cafile:
        try:
            _handshake(host, port, ssl.create_default_context(cafile=cafile), timeout)
            verified = True
        except ssl.SSLError as exc:
            error = exc.reason or str(exc)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    cert = x509.load_der_x509_certificate(_handshake(host, port, ctx, timeout))
    return ServerCertificate(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                             not_after=cert.not_valid_after_utc, verified=verified, verify_error=error)


def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> bytes:
    ctx.check_hostname = False
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(SSL_REQUEST)
        if raw.recv(1) != b"S":
            raise ssl.SSLError("the server does not offer TLS")
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the server presented no certificate")
    return der
