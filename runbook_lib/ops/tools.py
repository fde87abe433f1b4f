"""PostgreSQL client programs (pg_dump, psql, pg_basebackup, ...) run against the target's endpoints.

One small interface, two places to run: `HostTools` uses the operator host's binaries, and
`ContainerTools` runs each program in a throwaway container of an image whose binaries match the
servers (`tools: image`, the default). Programs get argument lists only, never a shell line built
from parameter values. Passwords reach them through a 0600 pgpass file that is removed afterwards,
never through the environment or the command line. Folders and CA files keep their host paths
inside the container (bind-mounted where they are), so a path means the same thing in both.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from runbook_lib.clients import swarm
from runbook_lib.config import redact
from runbook_lib.config.endpoints import PgSpec
from runbook_lib.config.params import Params, local_engine
from runbook_lib.errors import RunbookError


class ToolError(RunbookError):
    pass


def dsn(spec: PgSpec, dbname: str | None = None) -> str:
    """The libpq connection string a client program gets: TLS settings included, no password."""
    return spec.with_dbname(dbname).conninfo() if dbname else spec.conninfo()


class Tools(ABC):
    """Runs client programs with passwords for the endpoints they connect to."""

    def __init__(self, image: str | None, docker: Callable[[], Any]) -> None:
        self.image = image
        self._docker = docker

    @property
    def docker(self) -> Any:
        """The Docker engine the tools (and scratch servers, such as the restore test) run on."""
        return self._docker()

    def need_image(self) -> str:
        if not self.image:
            raise ToolError("tools.image is not set: name an image with the servers' PostgreSQL binaries")
        return self.image

    @property
    @abstractmethod
    def ids(self) -> tuple[int, int]:
        """uid and gid that files written by the tools belong to."""

    @abstractmethod
    def _execute(self, argv: list[str], env: dict[str, str], mounts: list[Path], timeout: float) -> str:
        """Run argv with env; mounts are host paths the program must see (same path inside)."""

    def run(self, argv: Sequence[str], *, endpoints: Sequence[PgSpec] = (), folders: Sequence[Path] = (),
            timeout: float = 3600) -> str:
        """Run one client program with passwords for `endpoints`; `folders` are host folders it reads or writes."""
        with self._pgpass(endpoints) as passfile:
            env = {"PGPASSFILE": str(passfile)}
            mounts = [passfile, *{e.sslrootcert for e in endpoints if e.sslrootcert}, *folders]
            return self._execute(list(argv), env, mounts, timeout)

    def pipe(self, producer: Sequence[str], consumer: Sequence[str], *, endpoints: Sequence[PgSpec] = (),
             timeout: float = 3600) -> str:
        """`producer | consumer`, failing when either fails (pipefail), argv lists quoted, never spliced."""
        line = f"{shlex.join(self._argv(producer))} | {shlex.join(self._argv(consumer))}"
        return self.run(["bash", "-o", "pipefail", "-c", line], endpoints=endpoints, timeout=timeout)

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    @contextmanager
    def _pgpass(self, endpoints: Sequence[PgSpec]) -> Iterator[Path]:
        uid, gid = self.ids
        folder = Path(tempfile.mkdtemp(prefix="runbook-pgpass-"))
        path = folder / "pgpass"
        try:
            lines = []
            for spec in endpoints:
                secret = spec.password.resolve().reveal() if spec.password else ""
                escaped = secret.replace("\\", "\\\\").replace(":", "\\:")
                lines.append(f"{spec.host}:{spec.port}:*:{spec.user}:{escaped}")
            path.write_text("\n".join(lines) + "\n")
            os.chmod(path, 0o600)
            os.chown(path, uid, gid)
            os.chmod(folder, 0o711)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class HostTools(Tools):
    """The operator host's own client binaries (the newest installed PostgreSQL's)."""

    @property
    def ids(self) -> tuple[int, int]:
        return os.getuid(), os.getgid()

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return [_host_bin(argv[0]), *argv[1:]]

    def _execute(self, argv: list[str], env: dict[str, str], mounts: list[Path], timeout: float) -> str:
        command = argv if argv[0] == "bash" else self._argv(argv)
        try:
            result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env},
                                    timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError(redact.text(f"{argv[0]}: {exc}")) from None
        if result.returncode != 0:
            raise ToolError(redact.text(f"{_program(argv)} failed: {result.stderr.strip()[-800:]}"))
        return result.stdout


class ContainerTools(Tools):
    """A throwaway container of the servers' image per program, on the host network."""

    @cached_property
    def ids(self) -> tuple[int, int]:
        """Asked of the image once per run (a detached container whose output is read after it exits)."""
        out = self._container(["sh", "-c", "id -u postgres; id -g postgres"], user="0", env={}, volumes={},
                              timeout=120)
        try:
            uid, gid = (int(x) for x in out.split())
        except ValueError:
            raise ToolError(f"image {self.image}: no postgres user (id printed {out.strip()!r})") from None
        return uid, gid

    def _execute(self, argv: list[str], env: dict[str, str], mounts: list[Path], timeout: float) -> str:
        volumes = {str(p): {"bind": str(p), "mode": "rw"} for p in mounts}
        return self._container(argv, user=str(self.ids[0]), env=env, volumes=volumes, timeout=timeout)

    def _container(self, argv: list[str], *, user: str, env: dict[str, str], volumes: dict[str, Any],
                   timeout: float) -> str:
        import docker.errors

        image = self.need_image()
        try:
            container = self.docker.containers.run(image, argv, user=user, network_mode="host", volumes=volumes,
                                                   environment=env, detach=True, labels={"runbook": "tools"})
        except docker.errors.ImageNotFound:
            raise ToolError(f"image {image} not found: `runbook sandbox build`, or set tools.image") from None
        try:
            try:
                code = container.wait(timeout=timeout).get("StatusCode", 1)
            except Exception as exc:  # the engine's wait timed out or the connection broke
                raise ToolError(f"{_program(argv)} did not finish within {timeout:g} s ({type(exc).__name__})") \
                    from None
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if code != 0:
                err = container.logs(stdout=False, stderr=True).decode(errors="replace")
                raise ToolError(redact.text(f"{_program(argv)} failed: {err.strip()[-800:]}"))
            return out
        finally:
            container.remove(force=True)


def _program(argv: Sequence[str]) -> str:
    if argv[0] == "bash" and len(argv) > 3:  # a pipe: name the programs in it
        return " | ".join(part.split()[0] for part in argv[-1].split(" | "))
    return argv[0]


def _host_bin(program: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda p: int(Path(p).parts[4]))
    return found[-1] if found else (shutil.which(program) or program)


def for_params(params: Params) -> Tools:
    """The tools a run uses: in the servers' image (default) or on the host, per `tools.mode`."""
    image = params.tools.image or (params.sandbox.image_tag() if params.sandbox else None)
    docker = lambda: _operator_engine(params)  # noqa: E731 - the engine is reached only when needed
    return ContainerTools(image, docker) if params.tools.mode == "image" else HostTools(image, docker)


def _operator_engine(params: Params) -> Any:
    """The operator's own engine, not the Swarm's manager: the tools bind the operator's folders, and an
    engine on another node would bind that node's disk (backups written there, restore tests of nothing).
    tools.docker_host, else the Swarm's engine when it is this host's (the sandbox's), else DOCKER_HOST or
    the local socket; an engine elsewhere is refused here, where it is used."""
    import docker.errors

    managed = params.target.swarm.docker_host if params.target.swarm else None
    chosen = params.tools.docker_host or (managed if managed and local_engine(managed) else None)
    effective = chosen or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not local_engine(effective):
        raise ToolError(f"the tools' Docker engine {redact.text(effective)} is not on this host (DOCKER_HOST): they "
                        "bind the operator's folders; set tools.docker_host to a local engine or tools.mode: host")
    try:
        return swarm.client(chosen)
    except docker.errors.DockerException as exc:
        raise ToolError(f"no Docker engine answers at {redact.text(effective)} for the tools (tools.docker_host, "
                        f"DOCKER_HOST); start one or set tools.mode: host ({type(exc).__name__})") from None


def of_run(run: Any) -> Tools:
    """The tools of a run (made once, kept as the run's resource)."""
    return run.resource("tools", lambda: for_params(run.params))
