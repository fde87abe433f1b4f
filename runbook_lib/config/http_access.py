"""How the runbooks reach each HTTP API of the target: the CA that signed it, a client certificate, credentials.

Why a registry keyed by origin: every HTTP call names a URL (a Patroni member, an etcd endpoint, Prometheus),
and the clients should not thread an access object through every call. Loading the parameters registers each
API's access under its URLs' origins (scheme, host, port); the HTTP client looks it up per request. Nothing is
resolved here: the password stays a reference until a request needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runbook_lib.config.secrets import SecretRef


@dataclass(frozen=True)
class Access:
    """One API's TLS trust, client certificate and credentials, paths absolute."""

    api: str  # the parameters' key path, for errors
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretRef | None = None
    timeout: float = 5.0
    retries: int = 2
    # how username and password are sent: HTTP basic auth, or etcd's login (a token from /v3/auth/authenticate:
    # etcd's JSON gateway knows no basic auth, and ignores a client certificate's name as the user)
    login: str = "basic"


_REGISTRY: dict[str, Access] = {}


def origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def register(urls: list[str], access: Access) -> None:
    for url in urls:
        _REGISTRY[origin(url)] = access


def lookup(url: str) -> Access | None:
    return _REGISTRY.get(origin(url))
