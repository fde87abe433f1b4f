"""Several Docker engines on this one machine, each in a network namespace of its own, joined as one Swarm.

Why: production is a Swarm of three or more nodes. A task on another node is reached only through that
node's engine, and losing a whole node is a drill of its own; one engine cannot show either.

Each node is a network namespace (`ip netns`) with one veth on a bridge of ours and its own address, a
dockerd entered into that namespace only (`nsenter --net`: `ip netns exec` remounts /sys and dockerd then
finds no cgroups) and into a UTS namespace of its own (its hostname is the node's name), with its own data
root, exec root, pidfile and socket, and the image loaded into it. Measured on this machine: host
networking on a node's own address passes traffic between the nodes and from this machine; overlay
networks ("no route to host") and the ingress routing mesh (connection refused on every node) do not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from runbook_lib.sandbox import progress
from runbook_lib.sandbox.context import SandboxError
from runbook_lib.sandbox.dockerd import nofile_limit

BRIDGE = "rbk-nodes0"
PREFIX = "10.213.7"  # a /24 of our own bridge: the host is .1, node i is .(10 + i)
BRIDGE_ADDRESS = f"{PREFIX}.1"  # this machine, as the nodes reach it
LABEL = "runbook.node"  # node label for placement constraints: node.labels.runbook.node == rbk-n2
MAX_NODES = 9
RUN_ROOT = Path("/run/runbook-nodes")  # sockets and pidfiles: short paths (a unix socket path is < 108 bytes)
DATA_ROOT = Path("/var/lib/runbook-nodes")  # each engine's images, containers and volumes


@dataclass(frozen=True)
class Node:
    index: int

    @property
    def name(self) -> str:
        return f"rbk-n{self.index}"

    @property
    def address(self) -> str:
        return f"{PREFIX}.{10 + self.index}"

    @property
    def veth(self) -> str:
        return f"rbk-v{self.index}"

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def data_root(self) -> Path:
        return DATA_ROOT / self.name

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def log(self) -> Path:
        return DATA_ROOT / f"{self.name}.log"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    @contextmanager
    def client(self, timeout: int = 30) -> Iterator[docker.DockerClient]:
        engine = docker.DockerClient(base_url=self.endpoint, version="auto", timeout=timeout)
        try:
            yield engine
        finally:
            engine.close()


def plan(count: int) -> list[Node]:
    """The nodes of a rehearsal of `count` engines; 2 to MAX_NODES (3 gives Swarm and etcd a quorum)."""
    if not 2 <= count <= MAX_NODES:
        raise SandboxError(f"--nodes must be between 2 and {MAX_NODES} (3 for a quorum that survives a node), "
                           f"got {count}")
    return [Node(i) for i in range(1, count + 1)]


def existing() -> list[Node]:
    """The nodes present on this machine now (their namespaces), in order."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return [Node(i) for i in range(1, MAX_NODES + 1) if Node(i).name in names]


def engines(nodes: list[Node]) -> dict[str, str]:
    """target.swarm.node_engines for these nodes: each node's hostname -> its engine's socket."""
    return {node.name: node.endpoint for node in nodes}


def up(count: int, image: str, source_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Network, engines, image and a Swarm of `count` managers; idempotent (what exists is kept).
    Returns the seconds each stage took."""
    _require_root()
    nodes = plan(count)
    timings: dict[str, float] = {}

    def timed(title: str, fn: Callable[[], object]) -> None:
        start = time.monotonic()
        with progress.step(title):
            fn()
        timings[title] = round(time.monotonic() - start, 1)

    timed(f"network: bridge {BRIDGE} and {count} namespaces", lambda: network_up(nodes))
    timed(f"{count} Docker engines", lambda: start_engines(nodes))
    timed(f"image {image} on every engine", lambda: load_image(nodes, image, source_env))
    timed(f"Swarm of {count} managers", lambda: swarm_up(nodes))
    return {"nodes": [n.name for n in nodes], "seconds": timings}


def network_up(nodes: list[Node]) -> None:
    """Our bridge (the host's end at .1) and one namespace with a veth and an address per node. Bridged
    traffic crosses the host's FORWARD chain (br_netfilter), whose policy a Docker engine sets to DROP, so
    traffic within our bridge is accepted there."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
    if shutil.which("iptables") and _run(["iptables", "-C", *rule], check=False).returncode != 0:
        _run(["iptables", "-I", *rule])
    present = {n.name for n in existing()}
    for node in nodes:
        if node.name not in present:
            _run(["ip", "netns", "add", node.name])
        if not Path(f"/sys/class/net/{node.veth}").exists():
            _run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.name])
        _run(["ip", "link", "set", node.veth, "master", BRIDGE, "up"])
        addresses = _run(["ip", "-n", node.name, "-o", "addr", "show", "dev", "eth0"]).stdout
        if f"{node.address}/" not in addresses:
            _run(["ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", "eth0"])
        for link in ("eth0", "lo"):
            _run(["ip", "-n", node.name, "link", "set", link, "up"])


def answers(node: Node) -> bool:
    try:
        with node.client(timeout=5) as client:
            return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False


def start_engines(nodes: list[Node]) -> None:
    for node in nodes:
        start_engine(node)


# Inside the node's own mount namespace: its hostname, and an empty /run/containerd, so that dockerd starts
# a containerd of its own in the namespace even where the host runs a system containerd (dockerd uses one
# whose socket exists), whose tasks would run in the host's network namespace.
_NODE_SHELL = 'hostname "$0" && { [ ! -d /run/containerd ] || mount -t tmpfs -o size=1m tmpfs /run/containerd; } && exec "$@"'


def start_engine(node: Node, timeout: float = 60) -> None:
    """Start the node's dockerd inside its namespaces unless it answers; wait until it does. It reads a
    configuration of its own (empty), not the host's /etc/docker/daemon.json."""
    if answers(node):
        return
    _require_root()
    node.run_dir.mkdir(parents=True, exist_ok=True)
    node.data_root.mkdir(parents=True, exist_ok=True)
    node.pidfile.unlink(missing_ok=True)  # left by a power cut; its number may belong to another process now
    config = node.run_dir / "daemon.json"
    config.write_text("{}\n")
    nofile = nofile_limit()
    dockerd = ["dockerd", "--config-file", str(config), "--data-root", str(node.data_root),
               "--exec-root", str(node.run_dir / "exec"), "--pidfile", str(node.pidfile), "-H", node.endpoint,
               "--bridge", "none", "--default-ulimit", f"nofile={nofile}:{nofile}"]
    with open(node.log, "ab") as fh:
        subprocess.Popen(["nsenter", f"--net=/run/netns/{node.name}", "unshare", "--uts", "--mount", "sh", "-c",
                          _NODE_SHELL, node.name, *dockerd], stdout=fh, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    if not _wait(lambda: answers(node), timeout):
        raise SandboxError(f"the engine of node {node.name} does not answer after {timeout:.0f}s; see {node.log}")


def stop_engine(node: Node, timeout: float = 60) -> None:
    """Stop the node's dockerd (its containers stop with it): the loss of a whole node."""
    _require_root()
    pid = _pid(node)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait(lambda: not _alive(pid), timeout):
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _alive(pid), 10)


def power_off(node: Node, timeout: float = 30) -> int:
    """A node's abrupt loss, as a power cut: SIGKILL to every process in its network namespace (its engine,
    containerd, the shims and every task, which all use host networking there), nothing shut down cleanly.
    Returns how many processes were killed."""
    _require_root()
    killed: set[int] = set()

    def all_gone() -> bool:  # again until none is left: one may fork (dockerd restarting containerd)
        pids = {int(p) for p in _run(["ip", "netns", "pids", node.name], check=False).stdout.split()}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed.update(pids)
        return not any(_alive(pid) for pid in pids)

    if not _wait(all_gone, timeout, interval=0.2):
        raise SandboxError(f"processes of node {node.name} outlived SIGKILL for {timeout:.0f}s")
    node.pidfile.unlink(missing_ok=True)  # a power cut empties /run
    return len(killed)


def load_image(nodes: list[Node], image: str, source_env: dict[str, str] | None = None) -> None:
    """Copy the image from the engine that built it (DOCKER_HOST of source_env) into each engine lacking it:
    no registry is reachable, so `docker save` once and `docker load` into every node at the same time."""
    missing = [n for n in nodes if not _has_image(n, image)]
    if not missing:
        return
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=DATA_ROOT, suffix=".tar") as tar:
        saved = subprocess.run(["docker", "save", "-o", tar.name, image], env=source_env,
                               capture_output=True, text=True)
        if saved.returncode != 0:
            raise SandboxError(f"docker save {image} failed (build it first: runbook sandbox build): "
                               f"{saved.stderr.strip()}")
        with ThreadPoolExecutor(len(missing)) as pool:
            results = list(pool.map(lambda n: (n, subprocess.run(
                ["docker", "-H", n.endpoint, "load", "-q", "-i", tar.name], capture_output=True, text=True)),
                missing))
    failed = [f"{n.name}: {p.stderr.strip()}" for n, p in results if p.returncode != 0]
    if failed:
        raise SandboxError("docker load failed on " + "; ".join(failed))


def swarm_up(nodes: list[Node], timeout: float = 90) -> None:
    """The first node initialises the Swarm on its address, the others join as managers; each node is
    labelled with its name for placement constraints."""
    first = nodes[0]
    with first.client() as lead:
        if lead.info()["Swarm"]["LocalNodeState"] != "active":
            lead.swarm.init(advertise_addr=first.address, listen_addr=f"{first.address}:2377")
        token = lead.swarm.attrs["JoinTokens"]["Manager"]
        for node in nodes[1:]:
            with node.client() as engine:
                state = engine.info()["Swarm"]["LocalNodeState"]
                if state in ("pending", "error"):
                    engine.swarm.leave(force=True)
                if state != "active":
                    engine.swarm.join(remote_addrs=[f"{first.address}:2377"], join_token=token,
                                      advertise_addr=node.address, listen_addr=f"{node.address}:2377")
        for node in nodes:
            with node.client() as engine:
                node_id = engine.info()["Swarm"]["NodeID"]
            member = lead.nodes.get(node_id)
            spec = member.attrs["Spec"]
            if spec.get("Labels", {}).get(LABEL) != node.name:
                member.update({**spec, "Labels": {**spec.get("Labels", {}), LABEL: node.name}})

        def all_ready() -> bool:
            states = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"] for n in lead.nodes.list()}
            return all(states.get(node.name) == "ready" for node in nodes)

        if not _wait(all_ready, timeout):
            raise SandboxError(f"the Swarm's nodes are not all ready after {timeout:.0f}s: "
                               f"{[(n.attrs['Description']['Hostname'], n.attrs['Status']['State']) for n in lead.nodes.list()]}")


def status(nodes: list[Node]) -> list[dict[str, Any]]:
    """Per node: address, whether its engine answers, and its state as the Swarm's managers see it."""
    seen: dict[str, dict[str, Any]] = {}
    up = {node.name for node in nodes if answers(node)}
    for node in nodes:
        if node.name not in up:
            continue
        try:
            with node.client(timeout=10) as engine:
                for member in engine.nodes.list():
                    seen[member.attrs["Description"]["Hostname"]] = {
                        "state": member.attrs["Status"]["State"],
                        "manager": member.attrs.get("ManagerStatus", {}).get("Reachability", "worker")}
            break
        except docker.errors.APIError:  # not a manager with quorum: ask the next one
            continue
    return [{"node": n.name, "address": n.address, "engine": "answers" if n.name in up else "down",
             **seen.get(n.name, {"state": "unknown", "manager": "unknown"})} for n in nodes]


def down(nodes: list[Node] | None = None, purge: bool = False) -> None:
    """Stop every node's engine and remove its namespace, then our bridge and rule; with purge also each
    engine's data (images, volumes). What is already gone is skipped."""
    _require_root()
    nodes = existing() if nodes is None else nodes
    present = {n.name for n in existing()}
    for node in nodes:
        if node.name in present:
            stop_engine(node)  # its tasks stop cleanly, then whatever outlived it (shims of a killed engine)
            power_off(node)
            _run(["ip", "netns", "del", node.name], check=False)  # its veth goes with it
    if not existing():
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            _run(["ip", "link", "del", BRIDGE])
        rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
        while shutil.which("iptables") and _run(["iptables", "-D", *rule], check=False).returncode == 0:
            pass
    if purge:  # every node's leftovers, also of nodes whose namespaces are gone (a reboot empties /run/netns)
        still = {n.name for n in existing()}
        for node in plan(MAX_NODES):
            if node.name in still:
                continue
            _unmount_under(node.data_root)
            _unmount_under(node.run_dir)
            shutil.rmtree(node.data_root, ignore_errors=True)
            shutil.rmtree(node.run_dir, ignore_errors=True)
            node.log.unlink(missing_ok=True)


def _has_image(node: Node, image: str) -> bool:
    with node.client() as engine:
        try:
            engine.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False


def _unmount_under(root: Path) -> None:
    """Mounts an engine left under its roots (overlay layers, netns files) must go before its files can."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == str(root) or m.startswith(f"{root}/")), key=len, reverse=True):
        _run(["umount", "-l", mount], check=False)


def _pid(node: Node) -> int | None:
    """The node's dockerd, if its pidfile names a live process in the node's network namespace (a number
    reused by another process is not it)."""
    try:
        pid = int(node.pidfile.read_text().strip())
        same_net = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{node.name}").st_ino
    except (OSError, ValueError):
        return None
    return pid if same_net and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("a multi-node sandbox creates network namespaces and Docker engines: run it as root")
