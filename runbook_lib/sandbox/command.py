"""`runbook sandbox build | up | status | down | reset`; registered by runbook_lib.cli."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from runbook_lib.sandbox import progress
from runbook_lib.sandbox.context import SandboxError, load

if TYPE_CHECKING:
    from runbook_lib.sandbox.nodes import Node


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command and its subcommands; each sets `func` returning an exit code."""
    p = subparsers.add_parser("sandbox", help="the local Docker Swarm sandbox (the default target)")
    sub = p.add_subparsers(dest="sandbox_command", metavar="{engine,build,up,status,down,reset}")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-f", "--params", default=None, help="parameters file (default parameters/sandbox.yaml)")

    e = sub.add_parser("engine", help="make sure a Docker engine answers (start dockerd as root) and, on one "
                                         "engine, a Swarm exists")
    common(e)
    e.set_defaults(func=_engine)
    b = sub.add_parser("build", help="build the image (mmdebstrap + docker import) if missing")
    common(b)
    b.add_argument("--force", action="store_true", help="rebuild even if the tagged image exists")
    b.set_defaults(func=_build)
    u = sub.add_parser("up", help="start the engine/swarm if needed and deploy every stack")
    common(u)
    u.add_argument("--scale", type=int, default=None, help="seed size multiplier (first seed only)")
    u.add_argument("--app", choices=("notes", "ledger"), default=None,
                   help="the application profile to seed and run (default: the parameters' sandbox.profile); the "
                        "runbooks take the parameters of the same profile, e.g. parameters/sandbox-ledger.yaml")
    u.set_defaults(func=_up)
    s = sub.add_parser("status", help="services, health, Patroni, etcd, PgBouncer, Prometheus targets")
    common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_status)
    d = sub.add_parser("down", help="remove the stacks, keep the volumes")
    common(d)
    d.set_defaults(func=_down)
    r = sub.add_parser("reset", help="remove the stacks and their volumes")
    common(r)
    r.set_defaults(func=_reset)
    n = sub.add_parser("nodes", help="a Swarm of several Docker engines on this machine, one network namespace "
                                     "each (a multi-node rehearsal)")
    nsub = n.add_subparsers(dest="nodes_command", metavar="{up,status,stop,start,down,params}")
    nsub.required = True
    nu = nsub.add_parser("up", help="namespaces, engines, the image and a Swarm of managers (idempotent)")
    common(nu)
    nu.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3: a quorum that survives one)")
    nu.set_defaults(func=_nodes_up)
    ns = nsub.add_parser("status", help="each node's address, engine and Swarm state; node_engines to use")
    ns.set_defaults(func=_nodes_status)
    for verb, what in (("stop", "stop a node's engine and its tasks (the loss of a whole node)"),
                       ("start", "start it again")):
        sp = nsub.add_parser(verb, help=what)
        sp.add_argument("node", help="the node's name, e.g. rbk-n2")
        if verb == "stop":
            sp.add_argument("--abrupt", action="store_true",
                            help="a power cut: SIGKILL every process of the node, nothing shut down cleanly")
        sp.set_defaults(func=_nodes_engine, verb=verb)
    nd = nsub.add_parser("down", help="stop every node's engine, remove the namespaces and the bridge")
    nd.add_argument("--purge", action="store_true", help="also remove each engine's data (images, volumes)")
    nd.set_defaults(func=_nodes_down)
    npar = nsub.add_parser("params", help="write parameters/sandbox-nodes.yaml from parameters/sandbox.yaml: the "
                                          "same sandbox across the nodes (sandbox up -f that file)")
    npar.add_argument("--nodes", type=int, default=3, help="how many nodes (3 or more)")
    npar.set_defaults(func=_nodes_params)


def _guard(fn):  # type: ignore[no-untyped-def]
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except SandboxError as exc:
            progress.console.print(f"[red]error:[/red] {exc}")
            return 2
        except KeyboardInterrupt:
            progress.console.print("[red]interrupted[/red]; run the same command again to finish or repair")
            return 130
    return wrapper


@_guard
def _engine(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import lifecycle
    lifecycle.prepare_engine(load(args.params))
    return 0


@_guard
def _build(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import lifecycle
    lifecycle.build(load(args.params), force=args.force)
    return 0


@_guard
def _up(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import lifecycle
    lifecycle.up(load(args.params), scale=args.scale, profile=args.app)
    return 0


@_guard
def _status(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import overview
    return overview.show(load(args.params), as_json=args.json)


@_guard
def _down(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import lifecycle
    lifecycle.down(load(args.params), volumes=False)
    return 0


@_guard
def _reset(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import lifecycle
    lifecycle.down(load(args.params), volumes=True)
    return 0


@_guard
def _nodes_up(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import build, lifecycle, nodes
    sb = load(args.params)
    lifecycle.build(sb)
    result = nodes.up(args.nodes, build.tag(sb), source_env=sb.host_env())
    _print_nodes(nodes.plan(args.nodes))
    progress.info(f"stages (s): {result['seconds']}")
    return 0


@_guard
def _nodes_params(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runbook_lib.sandbox import nodes_params
    root = Path.cwd()
    if not (root / nodes_params.SOURCE).exists():
        raise SandboxError(f"{nodes_params.SOURCE} not found here: run from the project's root")
    progress.info(f"wrote {nodes_params.write(root, args.nodes)}")
    return 0


@_guard
def _nodes_status(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import nodes
    present = nodes.existing()
    if not present:
        progress.info("no node of a multi-node sandbox exists (runbook sandbox nodes up)")
        return 1
    return 0 if _print_nodes(present) else 1


@_guard
def _nodes_engine(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import nodes
    node = next((n for n in nodes.existing() if n.name == args.node), None)
    if node is None:
        raise SandboxError(f"no node {args.node!r}; nodes: {[n.name for n in nodes.existing()] or 'none'}")
    abrupt = getattr(args, "abrupt", False)
    with progress.step(f"{args.verb} the engine of {node.name}" + (" (abrupt: SIGKILL)" if abrupt else "")):
        if args.verb == "start":
            nodes.start_engine(node)
        elif abrupt:
            progress.info(f"{nodes.power_off(node)} processes killed")
        else:
            nodes.stop_engine(node)
    return 0


@_guard
def _nodes_down(args: argparse.Namespace) -> int:
    from runbook_lib.sandbox import nodes
    with progress.step("remove the nodes" + (" and their data" if args.purge else "")):
        nodes.down(purge=args.purge)
    return 0


def _print_nodes(present: list[Node]) -> bool:
    """A table of the nodes and the node_engines entries that reach them; True when all are ready."""
    from rich.table import Table

    from runbook_lib.sandbox import nodes
    rows = nodes.status(present)
    table = Table("node", "address", "engine", "swarm", "manager")
    for row in rows:
        table.add_row(row["node"], row["address"], row["engine"], row["state"], row["manager"])
    progress.console.print(table)
    progress.info("target.swarm.node_engines for these nodes (docker_host: the first one's):")
    for name, endpoint in nodes.engines(present).items():
        progress.info(f"  {name}: {endpoint}")
    return all(row["state"] == "ready" for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m runbook_lib.sandbox.cli up`) until the lead's CLI wires it in."""
    parser = argparse.ArgumentParser(prog="runbook")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
