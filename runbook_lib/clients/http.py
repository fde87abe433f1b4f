"""HTTP JSON calls with timeouts and errors that say which endpoint failed."""

from __future__ import annotations

from typing import Any

import requests

from runbook_lib.config import redact
from runbook_lib.errors import RunbookError

TIMEOUT = 5.0


class HttpError(RunbookError):
    pass


def call(method: str, url: str, *, json_body: Any = None, params: dict[str, Any] | None = None, timeout: float = TIMEOUT,
         expect_json: bool = True, ok_codes: tuple[int, ...] = (200,)) -> Any:
    try:
        response = requests.request(method, url, json=json_body, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise HttpError(f"{method} {redact.text(url)}: {type(exc).__name__}: {exc}") from None
    if response.status_code not in ok_codes:
        raise HttpError(f"{method} {redact.text(url)}: HTTP {response.status_code} {response.text[:200]}")
    return response.json() if expect_json else response


def get(url: str, **kw: Any) -> Any:
    return call("GET", url, **kw)


def post(url: str, body: Any = None, **kw: Any) -> Any:
    return call("POST", url, json_body=body if body is not None else {}, **kw)


def first_answer(urls: list[str], what: str, call: Any) -> Any:
    """`call(url)` on each URL until one answers; the error names every one that did not."""
    errors = []
    for url in urls:
        try:
            return call(url)
        except HttpError as exc:
            errors.append(str(exc))
    raise HttpError(f"no endpoint answered {what}: " + "; ".join(errors))
