"""HTTP calls with timeouts, bounded retries, TLS trust, client certificates and credentials per API.

One `requests.Session` per API origin (scheme, host, port): its CA bundle, client certificate and basic auth
come from the parameters' `access` of that API (config.http_access); its retries are urllib3's `Retry`
(a refused connection, and a GET whose answer did not come, are tried again a bounded number of times).
Errors name the method and the endpoint, never a credential.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from runbook_lib.config import http_access, redact
from runbook_lib.errors import RunbookError

_DEFAULT = http_access.Access(api="an API without access settings")
_SESSIONS: dict[tuple[str, http_access.Access], requests.Session] = {}
_MAKING = threading.Lock()  # the drills poll from threads: one session per API, made once


ANY_STATUS = tuple(range(100, 600))  # ok_codes for a caller that reads the answer's status itself


class HttpError(RunbookError):
    pass


def _session(url: str, anonymous: bool = False, login: bool = True) -> tuple[requests.Session, http_access.Access]:
    access = http_access.lookup(url) or _DEFAULT
    if anonymous:  # the API's CA and bounds, without its client certificate or credentials
        access = dataclasses.replace(access, cert_file=None, key_file=None, username=None, password=None)
    elif not login:  # the client certificate, no credentials
        access = dataclasses.replace(access, username=None, password=None)
    key = (http_access.origin(url), access)
    with _MAKING:
        if key not in _SESSIONS:
            _SESSIONS[key] = _new_session(key[0], access)
    return _SESSIONS[key], access


def _new_session(origin: str, access: http_access.Access) -> requests.Session:
    session = requests.Session()
    # only what cannot have reached the API is retried for every method (a refused connection); a GET's lost
    # answer once; never an error after a request was sent (other=0): a POST /switchover is not sent twice
    retry = Retry(total=access.retries, connect=access.retries, read=min(access.retries, 1), status=0, other=0,
                  backoff_factor=0.1, allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False)
    session.mount(origin.split(":")[0] + "://", HTTPAdapter(max_retries=retry))
    if access.cert_file and access.key_file:
        session.cert = (str(access.cert_file), str(access.key_file))
    if access.username and access.password:
        session.auth = (EtcdToken(origin, access) if access.login == "etcd"
                        else (access.username, access.password.resolve().reveal()))
    return session


class EtcdToken(requests.auth.AuthBase):
    """etcd's login on its JSON gateway: a token from /v3/auth/authenticate in the Authorization header, fetched
    once and again when etcd refuses the token (401: expired) or its absence (auth was turned on since): a request
    refused for its token was not carried out, so it is sent once more with the new one."""

    def __init__(self, origin: str, access: http_access.Access) -> None:
        self.origin, self.access = origin, access
        self.token: str | None = None
        self._lock = threading.Lock()

    def _login(self) -> str:
        a = self.access
        assert a.username and a.password
        reply = requests.post(f"{self.origin}/v3/auth/authenticate", timeout=a.timeout,
                              json={"name": a.username, "password": a.password.resolve().reveal()},
                              verify=str(a.ca_file) if a.ca_file else True,
                              cert=(str(a.cert_file), str(a.key_file)) if a.cert_file and a.key_file else None)
        if reply.status_code != 200 and "authentication is not enabled" in reply.text:
            return ""  # auth off: requests go without a token (a 401 once it is on logs in then)
        if reply.status_code != 200:
            raise HttpError(f"etcd login as {a.username} at {self.origin}: HTTP {reply.status_code} "
                            f"{redact.text(reply.text[:160])}; check {a.api}.access (username and password)")
        return str(reply.json()["token"])

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            if self.token is None:
                self.token = self._login()
            if self.token:
                request.headers["Authorization"] = self.token
        request.register_hook("response", self._again_when_expired)  # type: ignore[no-untyped-call]
        return request

    def _again_when_expired(self, response: requests.Response, **kw: Any) -> requests.Response:
        # 401: the token expired or is unknown; 400 "user name is empty": auth was turned on after the login
        wants_login = response.status_code == 401 or (response.status_code == 400 and "user name is empty" in response.text)
        if not wants_login or response.request.headers.get("X-Relogin"):
            return response
        with self._lock:
            self.token = self._login()
        again = response.request.copy()
        again.headers["Authorization"], again.headers["X-Relogin"] = self.token, "1"
        response.content  # noqa: B018 - read the refused answer so its connection can be reused
        return response.connection.send(again, **kw)


def call(method: str, url: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
         timeout: float | None = None, expect_json: bool = True, ok_codes: tuple[int, ...] = (200,),
         data: bytes | None = None, headers: dict[str, str] | None = None, anonymous: bool = False,
         login: bool = True) -> Any:
    """One request. `anonymous` sends it as a stranger would (readiness asks whether the API refuses one);
    `login=False` keeps the client certificate but sends no credentials (a login of its own)."""
    where = f"{method} {redact.text(url)}"
    try:
        session, access = _session(url, anonymous, login)
        # verify per request: a session's own CA would lose to REQUESTS_CA_BUNDLE in the environment
        response = session.request(method, url, json=json_body, params=params, data=data, headers=headers,
                                   timeout=timeout or access.timeout,
                                   verify=str(access.ca_file) if access.ca_file else True)
    except requests.exceptions.SSLError as exc:
        reason = _reason(exc)
        hint = (f"does the API want a client certificate ({_api(url)}.access.cert_file and key_file)?"
                if "certificate required" in reason.lower() or "bad certificate" in reason.lower() else
                f"is {_api(url)}.access.ca_file the CA that signed its certificate?")
        raise HttpError(f"{where}: TLS failed ({reason}); {hint}") from None
    except requests.RequestException as exc:
        raise HttpError(f"{where}: {type(exc).__name__}: {redact.text(str(exc))}") from None
    except OSError as exc:  # requests reads the CA and the client certificate only when it sends
        raise HttpError(f"{where}: cannot read {exc.filename or 'a file'} named in {_api(url)}.access "
                        f"({exc.strerror or exc})") from None
    except RunbookError as exc:  # a credential reference that does not resolve
        raise HttpError(f"{where}: {exc}") from None
    if response.status_code in (401, 403) and response.status_code not in ok_codes:
        raise HttpError(f"{where}: HTTP {response.status_code}: the API refuses these credentials; set "
                        f"{_api(url)}.access (username and password, or a client certificate)")
    if response.status_code not in ok_codes:
        raise HttpError(f"{where}: HTTP {response.status_code} {redact.text(response.text[:200])}")
    return response.json() if expect_json else response


def _api(url: str) -> str:
    access = http_access.lookup(url)
    return access.api if access else "the API"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "WRONG_VERSION_NUMBER", "CERTIFICATE_REQUIRED",
                   "alert"):
        if marker in text:
            return text[text.index(marker):][:120]
    return text[:160]


def get(url: str, **kw: Any) -> Any:
    return call("GET", url, **kw)


def post(url: str, body: Any = None, **kw: Any) -> Any:
    return call("POST", url, json_body=body if body is not None else {}, **kw)


def status(url: str) -> int | None:
    """The answer's status code, None when nothing answers (health checks that read the code only)."""
    try:
        return int(call("GET", url, expect_json=False, ok_codes=ANY_STATUS).status_code)
    except HttpError:
        return None


def first_answer(urls: list[str], what: str, call: Any) -> Any:
    """`call(url)` on each URL until one answers; the error names every one that did not."""
    errors = []
    for url in urls:
        try:
            return call(url)
        except HttpError as exc:
            errors.append(str(exc))
    raise HttpError(f"no endpoint answered {what}: " + "; ".join(errors))


def push_handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                 data: bytes) -> Callable[[], None]:
    """prometheus_client's push handler, through this module's sessions (the Pushgateway's TLS and credentials)."""
    def handle() -> None:
        call(method, url, data=data, headers=dict(headers), timeout=timeout, expect_json=False, ok_codes=(200, 202))
    return handle
