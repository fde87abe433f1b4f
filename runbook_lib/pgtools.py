"""PostgreSQL client programs (pg_dump, psql, pg_basebackup, ...) run against the target's endpoints.

They run either from the operator host's binaries or in a throwaway container of an image
whose binaries match the servers (`tools: image`, the default where a sandbox image exists).
Passwords reach them through a 0600 pgpass file that is removed afterwards, never through
the environment or the command line.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from docker.errors import ContainerError, ImageNotFound

from runbook_lib import redact
from runbook_lib.clients import swarm
from runbook_lib.params import Params

CONTAINER_PGPASS = "/run/pgpass"
CONTAINER_CA = "/run/ca.crt"


class ToolError(Exception):
    pass


def image(params: Params) -> str:
    """The image carrying the servers' PostgreSQL binaries."""
    if params.tools.image:
        return params.tools.image
    if params.sandbox is not None:
        from runbook_lib.sandbox import image as sandbox_image
        from runbook_lib.sandbox.context import Sandbox

        return sandbox_image.tag(Sandbox(params, params.sandbox))
    raise ToolError("tools.image is not set: name an image with the servers' PostgreSQL client binaries")


def in_container(params: Params) -> bool:
    return params.tools.mode == "image"


def postgres_ids(params: Params) -> tuple[int, int]:
    """uid/gid that files written by the tools must belong to."""
    if not in_container(params):
        return os.getuid(), os.getgid()
    out = swarm.for_target(params.target.swarm).containers.run(
        image(params), ["sh", "-c", "id -u postgres; id -g postgres"], remove=True)
    uid, gid = (int(x) for x in out.decode().split())
    return uid, gid


@contextmanager
def pgpass(params: Params, endpoints: list[str]) -> Iterator[Path]:
    uid, gid = postgres_ids(params) if in_container(params) else (os.getuid(), os.getgid())
    folder = Path(tempfile.mkdtemp(prefix="runbook-pgpass-"))
    path = folder / "pgpass"
    try:
        lines = []
        for name in endpoints:
            db = params.target.databases[name]
            secret = params.resolve(db.password).reveal() if db.password else ""
            escaped = secret.replace("\\", "\\\\").replace(":", "\\:")
            lines.append(f"{db.host}:{db.port}:*:{db.user}:{escaped}")
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        os.chown(path, uid, gid)
        os.chmod(folder, 0o711)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _host_bin(program: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda p: int(Path(p).parts[4]))
    return found[-1] if found else (shutil.which(program) or program)


def run(params: Params, argv: list[str], *, endpoints: list[str], mounts: dict[str, str] | None = None,
        shell: bool = False, timeout: float = 3600) -> str:
    """Run a client program (or a shell pipeline of them) with passwords for `endpoints`."""
    cafile = next((params.path(params.target.databases[e].sslrootcert) for e in endpoints
                   if params.target.databases[e].sslrootcert), None)
    sslmode = params.target.databases[endpoints[0]].sslmode if endpoints else "prefer"
    with pgpass(params, endpoints) as passfile:
        if not in_container(params):
            env = {**os.environ, "PGPASSFILE": str(passfile), "PGSSLMODE": sslmode}
            if cafile:
                env["PGSSLROOTCERT"] = str(cafile)
            command = ["sh", "-c", argv[0]] if shell else [_host_bin(argv[0]), *argv[1:]]
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
            if result.returncode != 0:
                raise ToolError(redact.text(f"{argv[0].split()[0]} failed: {result.stderr.strip()[-800:]}"))
            return result.stdout
        env = {"PGPASSFILE": CONTAINER_PGPASS, "PGSSLMODE": sslmode}
        volumes = {str(passfile): {"bind": CONTAINER_PGPASS, "mode": "ro"}}
        if cafile:
            volumes[str(cafile)] = {"bind": CONTAINER_CA, "mode": "ro"}
            env["PGSSLROOTCERT"] = CONTAINER_CA
        for host, inside in (mounts or {}).items():
            volumes[host] = {"bind": inside, "mode": "rw"}
        uid, _ = postgres_ids(params)
        try:
            out = swarm.for_target(params.target.swarm).containers.run(
                image(params), ["sh", "-c", argv[0]] if shell else argv, user=str(uid), network_mode="host",
                volumes=volumes, environment=env, remove=True, stderr=True)
        except ContainerError as exc:
            raise ToolError(redact.text(f"{argv[0].split()[0]} failed: "
                                        f"{(exc.stderr or b'').decode(errors='replace')[-800:]}")) from None
        except ImageNotFound:
            raise ToolError(f"image {image(params)} not found: `runbook sandbox build`, or set tools.image") from None
        return out.decode(errors="replace")


def conn_args(params: Params, endpoint: str, dbname: str | None = None) -> list[str]:
    db = params.target.databases[endpoint]
    return ["-h", db.host, "-p", str(db.port), "-U", db.user, "-d", dbname or db.dbname]
