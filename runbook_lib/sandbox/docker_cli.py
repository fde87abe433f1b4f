"""Thin wrapper over the docker CLI: the CLI negotiates the API version with old engines (20.10)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from runbook_lib.sandbox.context import SandboxError

_ENV: dict[str, str] | None = None


def set_env(env: dict[str, str]) -> None:
    """Use this environment (DOCKER_HOST) for every later call."""
    global _ENV
    _ENV = env


def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS`; on failure raise SandboxError with the command and its stderr."""
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=_ENV,
                              input=input, timeout=timeout)
    except FileNotFoundError:
        raise SandboxError("the docker CLI is not installed; install docker.io (apt-get install -y docker.io)") from None
    if check and proc.returncode != 0:
        raise SandboxError(f"docker {' '.join(args[:3])} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def lines(*args: str) -> list[str]:
    return [line for line in run(*args).stdout.splitlines() if line.strip()]


def json_lines(*args: str) -> list[dict[str, Any]]:
    """Output of `docker ... --format '{{json .}}'` as dicts."""
    return [json.loads(line) for line in lines(*args, "--format", "{{json .}}")]


def inspect(kind: str, *names: str) -> list[dict[str, Any]]:
    if not names:
        return []
    args = ("inspect", "--type", kind) if kind == "task" else (kind, "inspect")
    proc = run(*args, *names, check=False)
    if proc.returncode != 0 and not proc.stdout.strip():
        return []
    return json.loads(proc.stdout or "[]")
