"""Make sure a Docker engine answers and is a Swarm manager; start one where we may (root on Linux)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time

from runbook_lib.sandbox import docker_cli, progress
from runbook_lib.sandbox.context import Sandbox, SandboxError


def server_version() -> str | None:
    """The engine's version, or None when nothing answers."""
    proc = docker_cli.run("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def ensure_engine(sb: Sandbox) -> str:
    """Return the engine version; start dockerd (installing docker.io) when root on Linux and none answers."""
    env = sb.host_env()
    docker_cli.set_env(env)
    if shutil.which("docker", path=env.get("PATH")) is None and not _may_start():
        raise SandboxError("the docker CLI is missing; install Docker (Debian: apt-get install docker.io) and retry")
    version = server_version() if shutil.which("docker") else None
    if version:
        return version
    where = env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if env.get("DOCKER_HOST") and not env["DOCKER_HOST"].startswith("unix:///var/run/docker.sock"):
        raise SandboxError(f"no Docker engine answers at DOCKER_HOST={where}; start it or unset DOCKER_HOST")
    if not _may_start():
        raise SandboxError(
            f"no Docker engine answers at {where} and this user cannot start one (not root on Linux). "
            "Start Docker (e.g. `sudo systemctl start docker`), add yourself to the docker group, "
            "or set DOCKER_HOST to a running engine; then rerun `runbook sandbox up`."
        )
    if shutil.which("dockerd") is None:
        progress.info("no Docker engine installed: installing the docker.io package (apt-get)")
        _apt_install("docker.io")
    log = sb.state_dir / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress.info(f"no Docker engine answers at {where}: starting dockerd (log: {log})")
    with open(log, "ab") as fh:
        # open-file limit of every task: PostgreSQL wants >= 65536 (readiness INF-14), capped by ours
        nofile = nofile_limit()
        subprocess.Popen(["dockerd", "--default-ulimit", f"nofile={nofile}:{nofile}"], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        version = server_version()
        if version:
            return version
        time.sleep(1)
    raise SandboxError(f"dockerd was started but does not answer after 60 s; see {log}")


def ensure_swarm() -> str:
    """Initialise a single-node Swarm on 127.0.0.1 if the engine is not in one; return the node state."""
    state = docker_cli.run("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state == "active":
        manager = docker_cli.run("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip()
        if manager != "true":
            raise SandboxError("this engine is a Swarm worker; run the sandbox against a manager node")
        return "active (existing)"
    if state in ("pending", "error"):
        docker_cli.run("swarm", "leave", "--force", check=False)
    docker_cli.run("swarm", "init", "--advertise-addr", "127.0.0.1")
    return "initialised (single node, 127.0.0.1)"


def nofile_limit(wanted: int = 65536) -> int:
    """The open-file limit tasks can get: `wanted`, unless this process's hard limit is lower."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _may_start() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


def _apt_install(*packages: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise SandboxError(f"`{' '.join(cmd)}` failed; install {', '.join(packages)} by hand:\n{tail}")


def ensure_tool(binary: str, package: str) -> None:
    """Install a Debian package providing `binary` when missing and we are root (e.g. mmdebstrap)."""
    if shutil.which(binary):
        return
    if not _may_start():
        raise SandboxError(f"{binary} is missing; install it (Debian: apt-get install {package}) and retry")
    progress.info(f"{binary} missing: installing the {package} package (apt-get)")
    _apt_install(package)



