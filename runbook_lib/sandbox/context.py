"""Where one sandbox lives: its parameters, its state directory and the Docker engine it uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runbook_lib.config.params import Params, load_params
from runbook_lib.config.sandbox_spec import SandboxSpec
from runbook_lib.errors import RunbookError

PACKAGE_DIR = Path(__file__).resolve().parent
IMAGE_DIR = PACKAGE_DIR / "image"  # what runs inside the image: programs, templates, packages
DEFAULT_PARAMS = Path("parameters/sandbox.yaml")
STACKS = ("legacy", "dpg", "edge", "monitoring", "app")


class SandboxError(RunbookError):
    """A problem the operator can act on; the message says what is wrong and what to do."""


@dataclass
class Sandbox:
    """A loaded sandbox: parameters plus derived paths (secrets, TLS, build, rendered stacks)."""

    params: Params
    spec: SandboxSpec

    @property
    def state_dir(self) -> Path:
        return self.params.path(self.spec.state_dir)

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def build_dir(self) -> Path:
        return self.state_dir / "build"

    @property
    def rendered_dir(self) -> Path:
        return self.state_dir / "stacks"

    def stack_name(self, short: str) -> str:
        return f"{self.spec.stack_prefix}{short}"

    @property
    def multi_node(self) -> bool:
        return self.spec.nodes > 1

    def docker_env(self) -> dict[str, str]:
        """Environment for docker CLI calls about the Swarm: on several nodes the manager the runbooks talk to
        (target.swarm.docker_host), else the configured engine, DOCKER_HOST or the socket."""
        swarm = self.params.target.swarm.docker_host if self.params.target.swarm else None
        if self.multi_node:
            return self._env(swarm)
        return self._env(self.spec.docker_host or swarm)

    def host_env(self) -> dict[str, str]:
        """Environment for this machine's own engine, which builds the image (the same as docker_env on one)."""
        return self._env(self.spec.docker_host) if self.multi_node else self.docker_env()

    def node_engines(self) -> dict[str, str]:
        """Each node's engine (target.swarm.node_engines): a task's container is reached on its node."""
        return dict(self.params.target.swarm.node_engines) if self.params.target.swarm else {}

    @staticmethod
    def _env(host: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if host:
            env["DOCKER_HOST"] = host
        return env


def load(params_path: str | Path | None = None) -> Sandbox:
    """Load the parameters file and make sure it carries a sandbox section."""
    path = Path(params_path) if params_path else _default_params()
    params = load_params(path)
    if params.sandbox is None:
        raise SandboxError(f"{path}: no 'sandbox:' section; the sandbox commands need parameters/sandbox.yaml")
    return Sandbox(params=params, spec=params.sandbox)


def _default_params() -> Path:
    """parameters/sandbox.yaml of the working tree, else the one next to the package (editable install)."""
    if DEFAULT_PARAMS.exists():
        return DEFAULT_PARAMS
    repo = PACKAGE_DIR.parent.parent / DEFAULT_PARAMS
    if repo.exists():
        return repo
    raise SandboxError("parameters/sandbox.yaml not found; run from the project root or pass --params FILE")
