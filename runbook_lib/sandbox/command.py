"""`runbook sandbox build | up | status | down | reset`; registered by runbook_lib.cli."""

from __future__ import annotations

import argparse
import sys

from runbook_lib.sandbox import progress
from runbook_lib.sandbox.context import SandboxError, load


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command and its subcommands; each sets `func` returning an exit code."""
    p = subparsers.add_parser("sandbox", help="the local Docker Swarm sandbox (the default target)")
    sub = p.add_subparsers(dest="sandbox_command", metavar="{engine,build,up,status,down,reset}")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-f", "--params", default=None, help="parameters file (default parameters/sandbox.yaml)")

    e = sub.add_parser("engine", help="make sure a Docker engine answers (start dockerd as root) and a Swarm exists")
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


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m runbook_lib.sandbox.cli up`) until the lead's CLI wires it in."""
    parser = argparse.ArgumentParser(prog="runbook")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
