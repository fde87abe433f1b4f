"""`runbook check readiness`: the readiness engine from the terminal, exit code as the verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runbook_lib.config.params import ParamsError, load_params
from runbook_lib.readiness import engine, report, scoring
from runbook_lib.readiness.model import ItemResult
from runbook_lib.run import runinfo

EXIT_CANNOT_CHECK = 3
STYLE = {"pass": "green", "fail": "red", "error": "red", "warn": "yellow", "missing": "magenta", "waived": "blue",
         "n/a": "dim"}


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="live checks against a target").add_subparsers(dest="check_cmd",
                                                                                         required=True)
    readiness = check.add_parser("readiness", help="the 77-item production readiness checklist",
                                 description="Exit 0 ready, 1 a blocker fails, 2 warnings remain or the score is "
                                             "below the gate, 3 the check could not run (bad parameters).")
    readiness.add_argument("-f", "--params", required=True)
    readiness.add_argument("-p", action="append", default=[], metavar="KEY.PATH=VALUE")
    readiness.add_argument("--only", help="comma-separated item ids")
    readiness.add_argument("--campaign", help="campaign that keeps the readiness record")
    readiness.add_argument("--outputs", help="archive root (default outputs/)")
    readiness.add_argument("--no-record", action="store_true", help="do not save the readiness record")
    readiness.add_argument("--all", action="store_true", help="list passing items too")
    readiness.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        params = load_params(args.params, args.p)
        only = [x.strip().upper() for x in args.only.split(",")] if args.only else None
        root = Path(args.outputs) if args.outputs else runinfo.outputs_root()
        campaign_dir = root / (args.campaign or params.campaign)
        with console.status("deciding readiness items ...") as status:
            done: list[ItemResult] = []

            def decided(r: ItemResult) -> None:
                done.append(r)
                status.update(f"{len(done)} items decided (last {r.id}: {r.outcome})")

            results = engine.run(params, only=only, campaign_dir=campaign_dir, on_done=decided)
    except (ParamsError, ValueError) as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]", highlight=False)
        return EXIT_CANNOT_CHECK
    gate = params.policy.readiness_gate
    verdict = scoring.verdict(results, gate.min_score, gate.blockers_allowed)
    table = Table("id", "sev", "outcome", "title", "observed / reason", show_lines=False)
    for r in results:
        if r.outcome == "pass" and not args.all:
            continue
        detail = r.reason or report._short(r.observed, 120)
        table.add_row(r.id, r.severity, f"[{STYLE[r.outcome]}]{r.outcome}[/]", r.title[:60], detail)
    console.print(table)
    console.print(" ".join(f"{k}={v}" for k, v in verdict.counts.items()))
    colour = {0: "green", 1: "red", 2: "yellow"}[verdict.exit_code]
    console.print(f"[{colour}]{report.summary(verdict, results)}[/{colour}]", highlight=False)
    if not args.no_record and only is None:
        record = report.save_record(campaign_dir, results, verdict, None, params.target.name)
        console.print(f"record {campaign_dir / 'records' / 'readiness.json'} sha256 {record['sha256'][:16]}")
    return verdict.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace()))
