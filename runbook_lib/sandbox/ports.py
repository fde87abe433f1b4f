"""Port-in-use check before anything is deployed: name the port, its role and the owning process.

Ports held by this sandbox's own containers (a re-run of `up`) are fine; anything else is a conflict.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from runbook_lib.sandbox import docker_cli
from runbook_lib.sandbox.context import STACKS, Sandbox, SandboxError


@dataclass
class Conflict:
    name: str
    port: int
    pid: int | None
    process: str

    def describe(self) -> str:
        who = f"{self.process} (pid {self.pid})" if self.pid else self.process
        return f"port {self.port} ({self.name}) is already in use by {who}"


def _busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _listen_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def owner(port: int) -> tuple[int | None, str]:
    """(pid, command line) of the process listening on the port, as far as /proc tells."""
    inodes = _listen_inodes(port)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    return int(pid_dir.name), cmd[:120] or pid_dir.name
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
    return None, "an unknown process (run `ss -ltnp` as root to see it)"


def _container_of(pid: int) -> str | None:
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    m = re.search(r"([0-9a-f]{64})", cgroup)
    return m.group(1) if m else None


def _is_ours(sb: Sandbox, pid: int | None) -> bool:
    if pid is None:
        return False
    cid = _container_of(pid)
    if not cid:
        return False
    try:
        info = docker_cli.inspect("container", cid)
    except SandboxError:
        return False
    labels = (info[0].get("Config", {}).get("Labels") or {}) if info else {}
    return labels.get("com.docker.stack.namespace") in {sb.stack_name(s) for s in STACKS}


def conflicts(sb: Sandbox) -> list[Conflict]:
    """Every configured port held by something other than this sandbox; duplicates in the spec too."""
    ports = sb.spec.ports.all_ports(sb.spec.app.replicas)
    out: list[Conflict] = []
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            out.append(Conflict(name, port, None, f"the sandbox itself: also configured as {seen[port]}"))
            continue
        seen[port] = name
        if not _busy(port):
            continue
        pid, cmd = owner(port)
        if not _is_ours(sb, pid):
            out.append(Conflict(name, port, pid, cmd))
    return out
