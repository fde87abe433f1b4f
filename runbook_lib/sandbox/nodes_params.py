"""The parameters of the sandbox on several nodes, derived from the one-engine sandbox's file.

Why derived: the two must describe the same application, checks and policy, and differ only where the
nodes make them differ (each endpoint on the address of the node that serves it, the nodes' engines, a
state directory of its own, no waiver of the three nodes INF-03 asks for). Comments and layout are kept:
the file is transformed as text, then loaded to prove it valid.
"""

from __future__ import annotations

import re
from pathlib import Path

from runbook_lib.config.params import load_params
from runbook_lib.config.sandbox_spec import SandboxPorts
from runbook_lib.sandbox import nodes, placement
from runbook_lib.sandbox.context import SandboxError

SOURCE = Path("parameters/sandbox.yaml")
TARGET = Path("parameters/sandbox-nodes.yaml")
STATE = "../.sandbox-nodes"
HEADER = ("# GENERATED from sandbox.yaml by `runbook sandbox nodes params`: the same sandbox on a Swarm of {n}\n"
          "# nodes on this machine (`runbook sandbox up -f parameters/sandbox-nodes.yaml`). Edit sandbox.yaml and\n"
          "# regenerate. Every endpoint is on the address of the node that serves it; synchronous replication\n"
          "# (two synchronous standbys) so that losing the leader's node loses no acknowledged write.\n")


def render(source_text: str, ports: SandboxPorts, count: int = 3) -> str:
    """sandbox.yaml's text (whose sandbox.ports are `ports`) -> sandbox-nodes.yaml's text."""
    if count < 3:
        raise SandboxError(f"--nodes {count}: a Swarm that survives the loss of a node needs 3 managers or more")
    layout = placement.Layout(count)
    node_list = nodes.plan(count)
    text = source_text

    def address(match: re.Match[str]) -> str:
        port = int(match.group("port"))
        try:
            host = layout.host_for_port(ports, port)
        except KeyError:
            return match.group(0)  # not a sandbox service (the restore test's scratch server, say)
        return match.group(0).replace("127.0.0.1", host)

    text = re.sub(r"host: 127\.0\.0\.1, port: (?P<port>\d+)", address, text)
    text = re.sub(r"127\.0\.0\.1:(?P<port>\d+)", address, text)
    text = re.sub(r"\.\./\.sandbox(?=[/\s]|$)", STATE, text, flags=re.M)
    text = text.replace("campaign: sandbox\n", "campaign: sandbox-nodes\n", 1)
    text = text.replace("  name: sandbox\n", "  name: sandbox-nodes\n", 1)
    engines = ", ".join(f"{name}: \"{endpoint}\"" for name, endpoint in nodes.engines(node_list).items())
    text = _one(text, r"  swarm: \{docker_host: null, ",
                f"  swarm: {{docker_host: \"{node_list[0].endpoint}\", node_engines: {{{engines}}}, ")
    text = _one(text, r"(?m)^  suite: (\S+)\n", lambda m: f"{m.group(0)}  nodes: {count}\n")
    text = _one(text, r"(?m)^  synchronous_mode: false\n", "  synchronous_mode: true\n")
    text = _one(text, r"(?m)^  synchronous_node_count: 1\n", "  synchronous_node_count: 2\n")
    cidrs = f"[127.0.0.1/32, {layout.network()}]"
    text = _one(text, r"(?m)^  allowed_cidrs: \[127\.0\.0\.1/32\]", f"  allowed_cidrs: {cidrs}")
    text = _one(text, r"(?m)^  admin_cidrs: \[127\.0\.0\.1/32\]", f"  admin_cidrs: {cidrs}")
    text = _one(text, r"(?m)^  - \{item: INF-03,.*\n", "")
    return HEADER.format(n=count) + text


def _one(text: str, pattern: str, replacement: object) -> str:
    """re.subn that must match exactly once: sandbox.yaml changed shape if it does not."""
    out, n = re.subn(pattern, replacement, text, count=1)  # type: ignore[call-overload]
    if n != 1:
        raise SandboxError(f"{SOURCE}: no line matches {pattern!r}; update sandbox/nodes_params.py to its new shape")
    return out  # type: ignore[no-any-return]


def write(root: Path, count: int = 3) -> Path:
    """Write parameters/sandbox-nodes.yaml under `root` and load it (a broken result is not left behind)."""
    target = root / TARGET
    source = load_params(root / SOURCE)
    if source.sandbox is None:
        raise SandboxError(f"{root / SOURCE}: no sandbox section to derive the nodes' parameters from")
    text = render((root / SOURCE).read_text(), source.sandbox.ports, count)
    tmp = target.with_suffix(".tmp.yaml")
    tmp.write_text(text)
    try:
        params = load_params(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    if params.sandbox is None or params.sandbox.nodes != count:
        raise SandboxError(f"{target}: the derived file lost its sandbox section")
    target.write_text(text)
    return target
