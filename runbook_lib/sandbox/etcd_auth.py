"""etcd's auth, on as production has it: every client shows a certificate (TLS) and logs in as a user.

Why after the deploy: etcd enables auth through its own API, once the cluster has a quorum. Patroni logs in as
`patroni` from its first request (before this step etcd lets anyone in), whose role reads and writes only
Patroni's namespace; `root` (the runbooks) keeps every right. Users log in with a password: etcd's JSON gateway,
which Patroni and the runbooks speak, ignores a certificate's name as the user.

Why etcdctl inside an etcd task: over gRPC the `root` client certificate is root whatever the passwords are, so a
volume whose users were made with another state directory's passwords is brought to this one's (as resync does
for PostgreSQL). Passwords go on stdin from the task's Docker secrets, never on a command line.
"""

from __future__ import annotations

from runbook_lib.clients import etcd as etcd_client
from runbook_lib.clients import http
from runbook_lib.sandbox import credentials, docker_cli
from runbook_lib.sandbox.context import Sandbox, SandboxError

PATRONI_PREFIX = "/service/"
USERS = ("root", "patroni")


def logs_in(url: str, user: str, password: str) -> bool:
    """A fresh login, no token kept: whether `password` is `user`'s now (a token taken before a password
    change can outlive it)."""
    reply = http.call("POST", f"{url}/v3/auth/authenticate", json_body={"name": user, "password": password},
                      login=False, expect_json=False, ok_codes=http.ANY_STATUS)
    return reply.status_code == 200 or "authentication is not enabled" in reply.text


def etcdctl(port: int) -> str:
    """etcdctl as root by its client certificate, inside an etcd task (the secrets are its files)."""
    return (f"etcdctl --endpoints=https://127.0.0.1:{port} --cacert=/run/secrets/tls_ca_crt "
            "--cert=/run/secrets/tls_client_root_crt --key=/run/secrets/tls_client_root_key")


def _script(port: int, users: list[str], enable: bool) -> str:
    ctl = etcdctl(port)
    lines = ["set -e"]
    for user in users:
        secret = f"/run/secrets/etcd_{user}_password"
        lines += [f"if {ctl} user get {user} >/dev/null 2>&1; then",
                  f"  {ctl} user passwd {user} --interactive=false < {secret} >/dev/null",
                  f"else {ctl} user add {user} --interactive=false < {secret} >/dev/null; fi"]
    if enable:
        end = PATRONI_PREFIX[:-1] + chr(ord(PATRONI_PREFIX[-1]) + 1)
        lines += [f"{ctl} role get patroni >/dev/null 2>&1 || {ctl} role add patroni >/dev/null",
                  f"{ctl} role grant-permission patroni readwrite {PATRONI_PREFIX} {end} >/dev/null",
                  f"{ctl} user grant-role patroni patroni >/dev/null 2>&1 || true",
                  f"{ctl} user grant-role root root >/dev/null 2>&1 || true",
                  f"{ctl} auth enable >/dev/null"]
    return "\n".join(lines) + "\n"


def enable(sb: Sandbox) -> str:
    """Users root and patroni with this state directory's passwords, the patroni role on Patroni's namespace,
    auth on. Returns what it did."""
    etcd = sb.params.target.etcd
    if etcd is None:
        raise SandboxError("target.etcd is not set: the sandbox's etcd cannot be secured")
    url = etcd.endpoints[0].rstrip("/")
    on = bool(etcd_client.auth_status(etcd).get("enabled"))  # no login: the passwords may be stale
    stale = [u for u in USERS if not logs_in(url, u, credentials.read(sb, f"etcd_{u}_password"))]
    if on and not stale:
        return "auth already on"
    port = int(url.rsplit(":", 1)[1])
    service = f"{sb.stack_name('dpg')}_etcd1"
    container, engine = docker_cli.task_container(service)
    proc = docker_cli.run("exec", "-i", container, "sh", "-s", host=engine,
                          input=_script(port, stale if on else list(USERS), enable=not on), check=False)
    if proc.returncode != 0:
        raise SandboxError(f"etcd auth in {service} failed: {proc.stderr.strip()[:300]}")
    return f"passwords of {', '.join(stale)} reset" if on else "auth turned on"
