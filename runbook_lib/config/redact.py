"""Redaction applied to everything shown, logged, journaled or archived.

Two rules: any secret value resolved in this process is replaced (a secret URL's token parts
too), and credential-shaped text (a password inside a DSN or URL, `token=`, `api_key=`, a
Bearer or Basic credential) is masked even if it was never resolved.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
_values: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>\S+)(?P<post>@[^@\s]*)")
_KV_PASSWORD = re.compile(r"(?P<pre>\b(?:password|passwd|pwd|token|api[_-]?key|secret|access[_-]?key)\s*=\s*)"
                          r"(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# a credential after Bearer/Basic has a digit or a base64 character in it: "Basic information" is prose
_AUTH_HEADER = re.compile(r"(?P<pre>\b(?:Bearer|Basic)\s+)(?P<pw>(?=[A-Za-z._~-]*[0-9+/=])[A-Za-z0-9._~+/=-]{8,})")
# a secret URL (a webhook) carries its secret in its path or query: those parts are secrets on their own
_URL_PART_MIN = 16


def register(value: str) -> None:
    """Remember a secret value so it is masked wherever it might appear."""
    if value and len(value) >= 4:
        _values.add(value)
        _values.add(json.dumps(value)[1:-1])
        for part in _url_secret_parts(value):
            _values.add(part)


def _url_secret_parts(value: str) -> list[str]:
    """The path segments and query values of a secret URL long enough to be its token (a Slack-style
    webhook's last segments): an error that quotes only part of the URL must not carry them."""
    parsed = urlsplit(value)
    if not (parsed.scheme and parsed.netloc):
        return []
    parts = [seg for seg in parsed.path.split("/") if len(seg) >= _URL_PART_MIN]
    if len(parsed.path) >= _URL_PART_MIN:
        parts.append(parsed.path)  # an error quoting the path masks it whole, its ids with it
    parts += [v for _, v in parse_qsl(parsed.query) if len(v) >= 8]
    if parsed.password:
        parts.append(parsed.password)
    return parts


def known_values() -> set[str]:
    return set(_values)


def text(value: str) -> str:
    """Mask registered secret values and DSN passwords in a string."""
    for secret in sorted(_values, key=len, reverse=True):
        if secret in value:
            value = value.replace(secret, MASK)
    value = _URL_PASSWORD.sub(lambda m: m["pre"] + MASK + m["post"], value)  # up to the last @ of the URL
    value = _KV_PASSWORD.sub(lambda m: m["pre"] + MASK, value)
    return _AUTH_HEADER.sub(lambda m: m["pre"] + MASK, value)


def obj(value: Any) -> Any:
    """Redact strings anywhere inside a JSON-like structure."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {obj(k): obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [obj(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = text(record.getMessage())
        record.args = ()
        return True


def install_logging_filter(logger: logging.Logger | None = None) -> None:
    """Attach the redacting filter to every handler of the given (root) logger."""
    target = logger or logging.getLogger()
    for handler in target.handlers or []:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
