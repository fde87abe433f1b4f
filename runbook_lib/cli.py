"""The `runbook` command."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

# jsonschema (via nbformat) would build the rfc3987-syntax grammar at import, ~1 s on every command;
# no URI format check is needed here, so the optional module is marked absent.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from rich.console import Console  # noqa: E402
from rich.table import Column, Table  # noqa: E402

from runbook_lib import __version__  # noqa: E402
from runbook_lib.config import signing  # noqa: E402
from runbook_lib.config.params import Params, ParamsError, load_params  # noqa: E402
from runbook_lib.config.policy import default_policy, format_duration, parse_duration  # noqa: E402
from runbook_lib.config.secrets import SecretError  # noqa: E402
from runbook_lib.errors import RunbookError  # noqa: E402
from runbook_lib.run import archive, history, runinfo, runner, schedule  # noqa: E402

console = Console(stderr=True, soft_wrap=True)


def _notify_failure(args: argparse.Namespace, report: runner.RunReport) -> None:
    """A failed mutating or scheduled run tells the configured channels (and the campaign's outbox): nobody
    watches a timer at 3 a.m., and a failed change must not wait for someone to look."""
    from runbook_lib.ops import notify

    if report.exit_code == runner.EXIT_OK:
        return
    if not (args.every or args.notify_on_failure):  # unscheduled: mutating runs that failed or died only
        if report.exit_code == runner.EXIT_BAD_INPUT or args.plan or \
                not runinfo.runbook_meta(args.name).get("mutating"):
            return
    try:
        params = load_params(args.params, args.p)
    except ParamsError:
        return  # the run was refused for its parameters: the terminal said so, no channel can be read
    campaign_dir = report.run_dir.parent if report.run_dir else \
        (Path(args.outputs) if args.outputs else runinfo.outputs_root()) / (args.campaign or params.campaign)
    subject = f"runbook {args.name} {report.outcome or 'refused'} on {params.target.name} (exit {report.exit_code})"
    body = [report.message or "(no message)"]
    if report.run_id:
        body += [f"run: {report.run_id}", f"folder: {report.run_dir}",
                 "resume: " + shlex.join(["runbook", "run", args.name, "--params", args.params, "--campaign",
                                          campaign_dir.name, "--resume", report.run_id])]
    deliveries = notify.send(params.notifications, params.base_dir, campaign_dir, subject,
                             "\n".join(body))
    console.print(f"failure notice {notify.summary(deliveries)}", highlight=False)
    _reseal_campaign(campaign_dir, params)


def _reseal_campaign(campaign_dir: Path, params: Params) -> None:
    """After a write to the campaign outside a run: the index and the campaign's seal, signed when a key is set."""
    try:
        signer = signing.signer_for(params)
    except (signing.SigningError, SecretError) as exc:
        console.print(f"[yellow]campaign seal not signed: {exc}[/yellow]", highlight=False)
        signer = None
    archive.refresh(campaign_dir, signer)


def _cmd_run(args: argparse.Namespace) -> int:
    def show(report: runner.RunReport) -> None:
        style = "green" if report.exit_code == 0 else "red"
        console.print(f"[{style}]{runner.summary_line(report)}[/{style}]", highlight=False)
        if args.json:
            print(json.dumps(runner.as_json(report)), flush=True)
        _notify_failure(args, report)

    kw = dict(campaign=args.campaign, overrides=args.p, plan=args.plan, resume=args.resume,
              outputs_dir=Path(args.outputs) if args.outputs else None)
    if args.every is None and args.until is None:
        report = runner.run(args.name, args.params, **kw)
        show(report)
        return report.exit_code
    try:
        if args.every is None or args.until is None or args.resume:
            raise ValueError("--every and --until go together (a schedule), and not with --resume")
        every, until = parse_duration(args.every), parse_duration(args.until)
        if every <= 0:
            raise ValueError("--every must be positive")
    except ValueError as exc:
        console.print(f"[red]--every/--until: {exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    console.print(f"running {args.name} every {format_duration(every)} for {format_duration(until)}",
                  highlight=False)
    reports = schedule.repeat(args.name, args.params, every, until, on_report=show, **kw)
    return reports[-1].exit_code


def _cmd_rehearse(args: argparse.Namespace) -> int:
    """The whole rollout in the policy's order, one archived run per leg; ends with the summary and the page."""
    from runbook_lib import rehearse

    try:
        done = rehearse.rehearse(args.params, campaign=args.campaign, strategy=args.strategy,
                                 with_rollback=args.with_rollback, overrides=args.p,
                                 outputs_dir=Path(args.outputs) if args.outputs else None, console=console)
    except RunbookError as exc:  # bad parameters, or a key or keys file that cannot be read
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    console.print(rehearse.summary(done), highlight=False)
    problems = _verify(done.campaign_dir, load_params(args.params, args.p)) if done.campaign_dir.exists() else []
    for problem in problems:
        console.print(f"[red]archive: {problem}[/red]", highlight=False)
    page = done.campaign_dir / archive.INDEX
    outcome = "[green]complete[/green]" if done.ok else "[red]stopped[/red]"
    console.print(f"rehearsal {outcome} (exit {done.exit_code}); campaign page: {page}", highlight=False)
    if not done.ok:
        console.print(f"resume with: {done.resume}", highlight=False)
    return done.exit_code or (1 if problems else 0)


def _cluster_table(view: dict) -> Table:
    table = Table("member", "role", "state", "TL", "lag", "pending restart", "address",
                  title=f"{view['target']} at {view['at'][:19]}Z")
    for m in view["members"]:
        ok = m["state"] in ("running", "streaming") and not m["pending_restart"]
        table.add_row(m["name"], m["role"], f"[{'green' if ok else 'red'}]{m['state']}[/]", str(m["timeline"] or ""),
                      "" if m["lag"] in (None, "") else str(m["lag"]), "yes" if m["pending_restart"] else "",
                      f"{m['host']}:{m['port']}")
    w, b = view["write_endpoint"], view["pgbouncer"]
    if w:
        table.caption = f"write endpoint {w['endpoint']} -> {w['member'] or w['lands_on_port']}"
    if b:
        table.caption = (table.caption or "") + f"; PgBouncer {b['database']} -> {b['points_at']} ({b['host']}:{b['port']})"
    return table


def _cmd_cluster(args: argparse.Namespace) -> int:
    """Members, roles, timeline, lag, pending restarts, the write endpoint and PgBouncer's backend; --watch
    refreshes it during the window. Exit 0 when nothing is wrong, 1 otherwise."""
    import time

    from rich.console import Group
    from rich.live import Live

    from runbook_lib.ops import cluster_view

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT

    def render(view: dict) -> Group:
        problems = [f"[red]problem: {p}[/red]" for p in view["problems"]] or ["[green]no problem found[/green]"]
        return Group(_cluster_table(view), *problems)

    if args.watch is None:
        view = cluster_view.snapshot(params)
        if args.o == "json":
            print(json.dumps(view, default=str))
        else:
            Console().print(render(view))
        return 1 if view["problems"] else 0
    if args.watch <= 0:
        console.print("[red]--watch takes a positive number of seconds[/red]")
        return runner.EXIT_BAD_INPUT
    view = cluster_view.snapshot(params)
    try:
        with Live(render(view), console=Console(), refresh_per_second=1) as live:
            while True:
                time.sleep(args.watch)
                view = cluster_view.snapshot(params)
                live.update(render(view))
    except KeyboardInterrupt:
        return 1 if view["problems"] else 0


def _cmd_params_check(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.file, args.p)
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    if args.full:
        print(json.dumps(params.redacted(), indent=2, sort_keys=True))
    else:
        t = params.target
        services = [name for name in ("patroni", "etcd", "haproxy", "pgbouncer", "prometheus", "alertmanager",
                                      "pushgateway", "swarm", "app", "workload") if getattr(t, name) is not None]
        print(f"target      {t.name} ({t.environment})\ncampaign    {params.campaign}\n"
              f"databases   {', '.join(t.databases)}\nservices    {', '.join(services) or 'none'}\n"
              f"migration   {params.migration.strategy if params.migration else 'not set'}\n"
              f"window      {f'{params.window.start} .. {params.window.end}' if params.window else 'not set'}\n"
              f"waivers     {', '.join(w.item for w in params.waivers) or 'none'}\n"
              f"(--full prints every value, redacted)")
    missing_sections = _sections_for(args.for_runbook, params) if args.for_runbook else []
    unresolved = params.unresolved() if args.resolve else []
    for problem in unresolved:
        console.print(f"[red]does not resolve: {problem}[/red]", highlight=False)
    if args.resolve and not unresolved:
        console.print(f"all {len(params.secret_refs())} secret references resolve (values not shown)")
    for change in params.policy_changes:
        kind = "LOOSENED (recorded)" if change.looser else "tightened"
        shown = change.key if change.key.startswith("readiness.") else f"policy.{change.key}"
        console.print(f"{shown}: {change.default} -> {change.value} {kind}", highlight=False)
    if unresolved or missing_sections:
        return runner.EXIT_BAD_INPUT
    console.print(f"[green]{args.file}: valid[/green] (target {params.target.name}, "
                  f"{len(params.secret_refs())} secret references, "
                  f"{'all resolved' if args.resolve else 'none resolved'})", highlight=False)
    return 0


def _sections_for(name: str, params: Params) -> list[str]:
    """Print what the runbook reads and whether the parameters hold it; return the missing needed ones."""
    from runbook_lib import books
    from runbook_lib.run.book import sections_check

    if name not in books.BOOKS:
        console.print(f"[red]--for {name}: no such runbook; one of {', '.join(books.BOOKS)}[/red]", highlight=False)
        return [name]
    rows = sections_check(books.load(name), params)
    table = Table("section", f"what {name} finds", title=f"sections {name} reads")
    for section, state, missing in rows:
        table.add_row(section, f"[red]{state}[/red]" if missing else state)
    Console(stderr=True).print(table)
    return [section for section, _, missing in rows if missing]


def _campaign_dir(args: argparse.Namespace) -> Path:
    root = Path(args.outputs) if args.outputs else runinfo.outputs_root()
    return root / args.campaign


def _verify(campaign_dir: Path, params: Params | None, keys: str | None = None,
            anchor_repo: str | None = None) -> list[str]:
    """archive.verify with the team's keys and the anchor from the parameters (or given outright)."""
    try:
        trusted = signing.TrustedKeys.read(Path(keys)) if keys else (signing.trusted_for(params) if params else None)
    except signing.SigningError as exc:
        return [str(exc)]
    repo = Path(anchor_repo) if anchor_repo else (signing.anchor_for(params) if params else None)
    return archive.verify(campaign_dir, trusted, repo)


def _cmd_archive_verify(args: argparse.Namespace) -> int:
    campaign_dir = _campaign_dir(args)
    if not campaign_dir.exists():
        console.print(f"[red]no campaign at {campaign_dir}[/red]")
        return runner.EXIT_BAD_INPUT
    try:
        params = load_params(args.params) if args.params else None
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    problems = _verify(campaign_dir, params, args.keys, args.anchor)
    for problem in problems:
        console.print(f"[red]FAIL[/red] {problem}", highlight=False)
    keys = args.keys or (params.signing.trusted_keys if params else None)
    anchor_repo = args.anchor or (params.signing.anchor_repo if params else None)
    console.print(f"signatures: {f'checked against {keys}' if keys else 'not checked (no --keys, no signing.trusted_keys)'}"
                  f"; anchor: {f'checked against {anchor_repo}' if anchor_repo else 'not checked (no --anchor, no signing.anchor_repo)'}",
                  highlight=False)
    if problems:
        return 1
    console.print(f"[green]OK[/green] {campaign_dir}: {len(archive.chain_entries(campaign_dir))} sealed runs verify",
                  highlight=False)
    return 0


def _cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        private, line = signing.init(args.name, Path(args.dir) if args.dir else None)
    except signing.SigningError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    console.print(f"private key: {private} (0600; never share it, never put it in the archive)\n"
                  "add this line to the team's keys file (signing.trusted_keys):", highlight=False)
    print(line)
    return 0


def _cmd_monitoring_export(args: argparse.Namespace) -> int:
    from runbook_lib.promql import export

    try:
        policy = load_params(args.params, args.p).policy if args.params else default_policy()
        written = export.export(policy, Path(args.dir))
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    except OSError as exc:
        console.print(f"[red]cannot write to {args.dir}: {exc.strerror}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print("check them with: promtool check rules " + str(written[0]), highlight=False)
    return 0


def _cmd_archive_index(args: argparse.Namespace) -> int:
    campaign_dir = _campaign_dir(args)
    if not campaign_dir.exists():
        console.print(f"[red]no campaign at {campaign_dir}[/red]")
        return runner.EXIT_BAD_INPUT
    try:
        params = load_params(args.params) if args.params else None
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    if params is None:
        if archive.signed_campaign(campaign_dir):
            console.print("[red]this campaign's files are sealed with a key: a new index.html would break the seal; "
                          "give -f FILE so the operator's key re-seals it[/red]", highlight=False)
            return runner.EXIT_BAD_INPUT
        console.print(f"wrote {archive.write_index(campaign_dir)} (the campaign's seal is left as it was: give "
                      "-f FILE to re-seal it)")
        return 0
    _reseal_campaign(campaign_dir, params)
    console.print(f"wrote {campaign_dir / archive.INDEX} and re-sealed the campaign's own files")
    return 0


def _cmd_archive_add(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params) if args.params else None
        sealed, run_dir = archive.add(Path(args.notebook), Path(args.outputs) if args.outputs else None, params)
    except (archive.ArchiveError, OSError, json.JSONDecodeError, ParamsError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    if sealed.secret_hits:
        console.print(f"[red]secret scan: values found and masked in {', '.join(sealed.secret_hits)}[/red]")
        return 1
    console.print(f"[green]sealed[/green] {run_dir} ({sealed.manifest['status']})", highlight=False)
    return 0


def _cmd_runs_list(args: argparse.Namespace) -> int:
    try:
        found = history.rows(_campaign_dir(args))
    except history.NoSuchRun as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    if args.o == "json":
        print(json.dumps(found, indent=2))
        return 0
    table = Table(Column("run id", no_wrap=True), "runbook", "status", "started (UTC)", "s",
                  "figures, or why it failed")
    for row in found:
        style = "green" if row["status"] == "succeeded" else "red" if row["status"] != "planned" else ""
        table.add_row(row["run_id"], row["runbook"], f"[{style}]{row['status']}[/{style}]" if style else row["status"],
                      row["started"].replace("T", " "), f"{row['seconds']:.0f}" if row["seconds"] else "",
                      row["figures"][:160])
    Console().print(table)
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    root = Path(args.outputs) if args.outputs else runinfo.outputs_root()
    try:
        run = history.detail(history.find(root, args.run_id, args.campaign))
    except history.NoSuchRun as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    if args.o == "json":
        print(json.dumps(run, indent=2))
        return 0
    out = Console()
    out.print(f"{run['runbook']} {run['run_id']} in {run['campaign']}: {run['status']} "
              f"({run['seconds'] or 0:.0f} s, by {run['operator']})", highlight=False)
    if run["message"] and run["status"] != "succeeded":
        out.print(f"[red]{run['message']}[/red]", highlight=False)
    if run["figures"]:
        out.print(archive.figures_text(run["figures"]), highlight=False)
    table = Table("step", "status", "s", "summary")
    for step in run["steps"]:
        table.add_row(step["name"], step["status"] or "", f"{step['seconds']:.1f}" if step["seconds"] else "",
                      step["summary"][:200])
    out.print(table)
    return 0


def _cmd_signoff(args: argparse.Namespace) -> int:
    """Record an approval bound to the current readiness and phase 1 records, or list what is present."""
    from runbook_lib.campaign import signoffs

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    campaign_dir = _campaign_dir(args)
    if not args.status:
        if not (args.role and args.name):
            console.print("[red]--role and --name are required (or --status)[/red]")
            return runner.EXIT_BAD_INPUT
        try:
            trusted = signing.trusted_for(params)
            key = Path(args.key) if args.key else signing.keys_dir() / f"{args.name}.key"
            signer = signing.Signer.from_pem(key.read_text(), str(key)) if args.key or key.exists() else None
            entry = signoffs.record(campaign_dir, params.policy, args.role, args.name, args.note or "",
                                    signer=signer, trusted=trusted)
        except (signoffs.SignoffError, signing.SigningError) as exc:
            console.print(f"[red]{exc}[/red]", highlight=False)
            return runner.EXIT_BAD_INPUT
        except OSError as exc:
            console.print(f"[red]--key {args.key}: cannot read it ({exc.strerror})[/red]", highlight=False)
            return runner.EXIT_BAD_INPUT
        archive.refresh(campaign_dir, signer)
        console.print(f"[green]recorded[/green] {entry['role']}: {entry['name']} (readiness "
                      f"{entry['readiness_sha256'][:12]}, phase 1 {entry['phase1_sha256'][:12]})", highlight=False)
    table = Table("role", "approved", "by", "at", "stale approvals")
    try:
        trusted = signing.trusted_for(params)
    except signing.SigningError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    rows = signoffs.status(campaign_dir, params.policy, accept_rehearsal=params.target.environment == "sandbox",
                           trusted=trusted)
    for row in rows:
        approved = ("[yellow]rehearsal[/yellow]" if row.rehearsal else "[green]yes[/green]") if row.present \
            else "[red]missing[/red]"
        table.add_row(row.role, approved, row.name or "", (row.at or "")[:19], str(len(row.stale or [])))
    Console().print(table)
    return 0 if not args.status or all(r.present for r in rows) else 1


LAB_QUIET = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


def _cmd_lab(args: argparse.Namespace) -> int:
    """JupyterLab in the runbooks folder, using this environment's kernel; it stops when `runbook lab` stops.

    No news or update prompt on the first screen (the announcements plugin is disabled in this environment
    only); extra arguments go to JupyterLab as they are.
    """
    subprocess.run([sys.executable, "-m", "jupyter", "labextension", "disable", "--level=sys_prefix",
                    "@jupyterlab/apputils-extension:announcements"], capture_output=True, check=False)
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={args.notebook_dir or runinfo.runbooks_dir()}",
           f"--ServerApp.ip={args.ip}", f"--ServerApp.port={args.port}", "--no-browser", *LAB_QUIET]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    lab = subprocess.Popen(cmd + args.extra)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return lab.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: JupyterLab is stopped too, not left serving
        lab.terminate()
        try:
            return lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            return lab.wait()


def _cmd_list(args: argparse.Namespace) -> int:
    table = Table("runbook", "mutating", "title")
    for path in sorted(runinfo.runbooks_dir().glob("*.ipynb")):
        meta = runinfo.runbook_meta(str(path))
        table.add_row(path.stem, "yes" if meta.get("mutating") else "no", meta.get("title", ""))
    Console().print(table)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    """A runbook's parameters, steps and what each changes, without running it (papermill's --help-notebook)."""
    from runbook_lib import books
    from runbook_lib.run.book import describe

    if args.name not in books.BOOKS:
        console.print(f"[red]no runbook {args.name!r}: one of {', '.join(books.BOOKS)}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    about = describe(books.load(args.name))
    if args.o == "json":
        print(json.dumps(about, indent=2))
        return 0
    out = Console()
    out.print(f"[bold]{about['name']}[/bold]: {about['title']} ({'changes the target' if about['mutating'] else 'reads only'})",
              highlight=False)
    out.print(about["about"], highlight=False)
    out.print(f"parameters read: {', '.join(about['parameters']) or '(none beyond the target)'}", highlight=False)
    table = Table("step", "title", "changes", "needs first")
    for step in about["steps"]:
        table.add_row(step["name"], step["title"], "yes" if step["changes"] else ("gate" if step["gate"] else ""),
                      "; ".join(step["needs"]))
    out.print(table)
    return 0


def _cmd_notebooks(args: argparse.Namespace) -> int:
    """Write each runbook's notebook from its book (steps, titles, docstrings); --check only compares."""
    from runbook_lib import books
    from runbook_lib.run.book import render

    folder = runinfo.runbooks_dir()
    if args.check:
        stale = [n for n in books.BOOKS if not (folder / f"{n}.ipynb").exists()
                 or (folder / f"{n}.ipynb").read_text() != render(books.load(n))]
        for name in stale:
            console.print(f"[red]{folder / name}.ipynb differs from runbook_lib/books/{name}.py[/red]", highlight=False)
        return 1 if stale else 0
    for path in books.write_notebooks(folder):
        console.print(f"wrote {path}", highlight=False)
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    """Timer (systemd) or cron entries for the week-one calendar or a repeated run; printed, or written (--install)."""
    from datetime import UTC, datetime

    try:
        params = load_params(args.params)
        start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC).replace(second=0, microsecond=0)
        if start.tzinfo is None:
            raise ValueError("--start needs a time zone, e.g. 2026-12-07T10:00:00Z")
        campaign = args.campaign or params.campaign
        runbook = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "runbook" else "runbook"
        if args.kind == "week-one":
            entries = schedule.week_one(params, args.params, campaign, start, runbook)
        else:
            if not (args.name and args.every and args.until):
                raise ValueError("schedule every needs NAME, --every and --until")
            every, until = parse_duration(args.every), parse_duration(args.until)
            if every <= 0 or until < 0:
                raise ValueError("--every must be positive and --until not negative")
            entries = [schedule.every(args.name, args.params, campaign, start, every, until, runbook)]
    except (ParamsError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    files: dict[str, str] = {}
    for entry in entries:
        if not entry.argv:
            console.print(f"manual, not scheduled: {entry.note}", highlight=False)
        elif args.format == "systemd":
            files.update(schedule.systemd_units(entry))
        else:
            files[f"{entry.name}.cron"] = "\n".join(schedule.cron_lines(entry)) + "\n"
    if not args.install:
        for name, text in files.items():
            print(f"# ---- {name}\n{text}")
        return 0
    folder = Path(args.install)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    timers = " ".join(n for n in files if n.endswith(".timer"))
    then = f"systemctl daemon-reload && systemctl enable --now {timers}" if timers else \
        f"cat {folder}/*.cron | crontab -   (or append them to the crontab you keep)"
    console.print(f"wrote {len(files)} files to {folder}; then: {then}", highlight=False)
    return 0


def _cmd_autorollback(args: argparse.Namespace) -> int:
    """Receive Alertmanager's action=rollback alerts and start the rollback when the policy says so."""
    from runbook_lib import autorollback

    try:
        receiver = autorollback.Receiver(args.params, args.campaign, Path(args.outputs) if args.outputs else None)
    except ParamsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return runner.EXIT_BAD_INPUT
    server = autorollback.serve(receiver, args.host, args.port)
    state = "on" if receiver.params.rollback.automatic else "off (alerts are recorded, nothing is started)"
    console.print(f"listening on http://{args.host}:{args.port}/ for Alertmanager; campaign {receiver.campaign}; "
                  f"rollback.automatic {state}", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _cmd_localpg(args: argparse.Namespace) -> int:
    """The docker-free target of parameters/local.yaml."""
    from runbook_lib.sandbox.localpg import LocalPostgres, LocalPostgresError

    pg = LocalPostgres(runinfo.project_root() / ".localpg", port=args.port)
    try:
        if args.action == "up":
            console.print(f"starting PostgreSQL on 127.0.0.1:{args.port} (data in {pg.data}) ...")
            pg.start()
            console.print("[green]up[/green]: try `runbook run status --params parameters/local.yaml`")
        elif args.action == "down":
            pg.stop()
            console.print("stopped (data kept; `runbook localpg reset` removes it)")
        else:
            pg.destroy()
            console.print("removed")
    except LocalPostgresError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook", description="Runbooks for rolling out a distributed "
                                     "PostgreSQL cluster: run, archive, verify.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"runbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute a runbook with papermill and archive it")
    run.add_argument("name", help="runbook name (runbooks/NAME.ipynb) or a notebook path")
    run.add_argument("-f", "--params", required=True, help="parameters file (YAML)")
    run.add_argument("--campaign", help="campaign folder under outputs/ (default: the parameters' campaign)")
    run.add_argument("-p", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a parameter (also -p KEY.PATH VALUE)")
    run.add_argument("--plan", action="store_true", help="mutating steps report what they would change, and stop")
    run.add_argument("--resume", metavar="RUN_ID", help="re-execute, skipping steps that run completed")
    run.add_argument("--outputs", help="archive root (default outputs/)")
    run.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    run.add_argument("--every", metavar="DURATION", help="repeat the run on this schedule, e.g. 6h (with --until)")
    run.add_argument("--until", metavar="DURATION", help="how long the schedule lasts from the first run, e.g. 72h")
    run.add_argument("--notify-on-failure", action="store_true",
                     help="send a notice through parameters.notifications when the run does not succeed (always "
                          "on for mutating runbooks and --every; `runbook schedule` entries set it)")
    run.set_defaults(func=_cmd_run)

    rh = sub.add_parser("rehearse", help="rehearse the whole rollout in the policy's order, one archived run per "
                        "leg; resumes a campaign where it stopped")
    rh.add_argument("-f", "--params", required=True, help="parameters file (YAML)")
    rh.add_argument("--campaign", help="campaign folder under outputs/ (default: the parameters' campaign)")
    rh.add_argument("--strategy", choices=("logical", "dump-restore"), help="phase 2's migration strategy")
    rh.add_argument("--with-rollback", action="store_true", help="end with a rollback drill")
    rh.add_argument("-p", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a parameter in every leg")
    rh.add_argument("--outputs", help="archive root (default outputs/)")
    rh.set_defaults(func=_cmd_rehearse)

    cl = sub.add_parser("cluster", help="members, role, timeline, lag, pending restart, the write endpoint's target "
                        "and PgBouncer's backend (patronictl list for the window)")
    cl.add_argument("-f", "--params", required=True, help="parameters file (YAML)")
    cl.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    cl.add_argument("-o", choices=("table", "json"), default="table", help="output format (json: one snapshot)")
    cl.set_defaults(func=_cmd_cluster)

    params = sub.add_parser("params", help="parameters files").add_subparsers(dest="params_cmd", required=True)
    check = params.add_parser("check", help="validate a parameters file and summarise it (--full: print it redacted)")
    check.add_argument("file", help="parameters file (YAML)")
    check.add_argument("-p", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a parameter")
    check.add_argument("--full", action="store_true", help="print every value (secrets as references, redacted)")
    check.add_argument("--for", dest="for_runbook", metavar="RUNBOOK", help="also list the sections this runbook "
                       "reads and whether each is set (exit 2 when one its steps need is missing)")
    check.add_argument("--resolve", action="store_true", help="also check that every secret reference resolves "
                                                             "now (env var set, file readable), printing no value")
    check.set_defaults(func=_cmd_params_check)

    arch = sub.add_parser("archive", help="the audit archive").add_subparsers(dest="archive_cmd", required=True)
    for name, func, helptext in (("verify", _cmd_archive_verify, "check every sealed byte of a campaign"),
                                 ("index", _cmd_archive_index, "write the campaign's index.html")):
        cmd = arch.add_parser(name, help=helptext)
        cmd.add_argument("campaign")
        cmd.add_argument("--outputs", help="archive root (default outputs/)")
        cmd.add_argument("-f", "--params", help="parameters file: its signing section gives the operator's key, the "
                                                "team's keys and the anchor repository")
        cmd.set_defaults(func=func)
        if name == "verify":
            cmd.add_argument("--keys", help="the team's public keys file (instead of the parameters' trusted_keys)")
            cmd.add_argument("--anchor", help="the anchor git repository (instead of the parameters' anchor_repo)")
    mon = sub.add_parser("monitoring", help="what a production Prometheus and Grafana load").add_subparsers(
        dest="monitoring_cmd", required=True)
    mon_export = mon.add_parser("export", help="write the alert rules (monitoring matrix, rollback triggers) and the "
                                               "Grafana dashboard built from the same metric definitions")
    mon_export.add_argument("dir", help="folder to write prometheus/ and grafana/ into")
    mon_export.add_argument("-f", "--params", help="parameters file whose policy (with its changes) to export "
                                                   "(default: the built-in policy)")
    mon_export.add_argument("-p", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    mon_export.set_defaults(func=_cmd_monitoring_export)
    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys_cmd", required=True)
    keys_init = keys.add_parser("init", help="make an Ed25519 key pair for signing runs and approvals")
    keys_init.add_argument("name", help="your name as the team's keys file will list it")
    keys_init.add_argument("--dir", help="where to keep it (default $RUNBOOK_KEYS_DIR or ~/.config/runbook/keys)")
    keys_init.set_defaults(func=_cmd_keys_init)
    add = arch.add_parser("add", help="seal an interactively executed, saved notebook into its run folder")
    add.add_argument("notebook")
    add.add_argument("--outputs", help="archive root (default outputs/)")
    add.add_argument("-f", "--params", help="parameters file whose signing section signs and anchors the run")
    add.set_defaults(func=_cmd_archive_add)

    runs = sub.add_parser("runs", help="a campaign's runs in the terminal").add_subparsers(dest="runs_cmd",
                                                                                         required=True)
    runs_list = runs.add_parser("list", help="every sealed run of a campaign: status, figures or why it failed")
    runs_list.add_argument("campaign", help="campaign folder under the archive root")
    runs_show = runs.add_parser("show", help="one run: outcome, why, and each step's status and summary")
    runs_show.add_argument("run_id", help="the run id (runbook runs list shows them)")
    runs_show.add_argument("--campaign", help="look in this campaign only (default: every campaign)")
    for cmd, func in ((runs_list, _cmd_runs_list), (runs_show, _cmd_runs_show)):
        cmd.add_argument("--outputs", help="archive root (default outputs/)")
        cmd.add_argument("-o", choices=("table", "json"), default="table", help="output format")
        cmd.set_defaults(func=func)

    lab = sub.add_parser("lab", help="open the runbooks in JupyterLab")
    lab.add_argument("--ip", default="127.0.0.1")
    lab.add_argument("--port", default="8888")
    lab.add_argument("--notebook-dir", help="the folder to serve (default: the runbooks; a copy of them, say, "
                                            "for a rehearsal whose edits must not touch the originals)")
    lab.add_argument("extra", nargs=argparse.REMAINDER, help="passed to JupyterLab as they are (e.g. "
                                                            "--ServerApp.token=...), after `--` or not")
    lab.set_defaults(func=_cmd_lab)

    sub.add_parser("list", help="list the runbooks").set_defaults(func=_cmd_list)
    desc = sub.add_parser("describe", help="a runbook's parameter sections, steps and what each changes")
    desc.add_argument("name", help="runbook name (runbook list shows them)")
    desc.add_argument("-o", choices=("table", "json"), default="table", help="output format")
    desc.set_defaults(func=_cmd_describe)
    notebooks = sub.add_parser("notebooks", help="write runbooks/*.ipynb from runbook_lib/books (or --check them)")
    notebooks.add_argument("--check", action="store_true", help="exit 1 when a notebook differs from its book")
    notebooks.set_defaults(func=_cmd_notebooks)

    signoff = sub.add_parser("signoff", help="record a sign-off for the migration, or list them (--status)")
    signoff.add_argument("--campaign", required=True)
    signoff.add_argument("--role", help="one of the policy's sign-off roles")
    signoff.add_argument("--name", help="who approves")
    signoff.add_argument("--note")
    signoff.add_argument("--key", help="the approver's private key (default: <keys dir>/<name>.key when it exists)")
    signoff.add_argument("--status", action="store_true", help="list present and missing sign-offs (exit 1 if any "
                                                               "is missing)")
    signoff.add_argument("-f", "--params", default="parameters/sandbox.yaml", help="for the policy's roles")
    signoff.add_argument("--outputs", help="archive root (default outputs/)")
    signoff.set_defaults(func=_cmd_signoff)

    sched = sub.add_parser("schedule", help="timer or cron entries: the policy's week-one calendar, or a runbook "
                                           "repeated (so no 72-hour foreground process is needed)")
    sched.add_argument("kind", choices=["week-one", "every"], help="week-one: the policy's calendar; every: one "
                                                                    "runbook repeated")
    sched.add_argument("name", nargs="?", help="with every: the runbook to repeat (e.g. validation)")
    sched.add_argument("-f", "--params", required=True, help="parameters file (YAML)")
    sched.add_argument("--campaign", help="campaign the runs land in (default: the parameters' campaign)")
    sched.add_argument("--start", help="first run, ISO time with a zone (default: now)")
    sched.add_argument("--every", metavar="DURATION", help="with every: e.g. 6h")
    sched.add_argument("--until", metavar="DURATION", help="with every: how long from the first run, e.g. 72h")
    sched.add_argument("--format", choices=["systemd", "cron"], default="systemd", help="timer units or crontab lines")
    sched.add_argument("--install", metavar="DIR", help="write the files there (e.g. /etc/systemd/system) instead "
                                                       "of printing them")
    sched.set_defaults(func=_cmd_schedule)

    auto = sub.add_parser("autorollback", help="receive action=rollback alerts from Alertmanager and start the "
                                               "rollback when rollback.automatic is set, inside the campaign's window")
    auto.add_argument("-f", "--params", required=True, help="parameters file (YAML)")
    auto.add_argument("--campaign", help="campaign (default: the parameters' campaign)")
    auto.add_argument("--outputs", help="archive root (default outputs/)")
    auto.add_argument("--host", default="127.0.0.1", help="address to listen on")
    auto.add_argument("--port", type=int, default=25095, help="port to listen on")
    auto.set_defaults(func=_cmd_autorollback)

    localpg = sub.add_parser("localpg", help="a local PostgreSQL for parameters/local.yaml (no Docker needed)")
    localpg.add_argument("action", choices=["up", "down", "reset"])
    localpg.add_argument("--port", type=int, default=55432)
    localpg.set_defaults(func=_cmd_localpg)

    from runbook_lib.readiness import command as readiness_cli

    readiness_cli.register(sub)
    from runbook_lib.sandbox import command as sandbox_cli

    sandbox_cli.register(sub)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """`--param` must not silently mean `--params` (or anything else) on any command."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def papermill_habits(argv: list[str]) -> list[str]:
    """papermill's `-p KEY VALUE` accepted beside `-p KEY=VALUE` (and `-f FILE` is `--params FILE` on every
    command). Everything after `--` is passed on untouched."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg == "-p" and i + 2 < len(argv) and "=" not in argv[i + 1] and not argv[i + 2].startswith("--"):
            out += ["-p", f"{argv[i + 1]}={argv[i + 2]}"]
            i += 3
            continue
        else:
            out.append(arg)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _no_abbreviations(parser)
    argv = papermill_habits(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["lab"]:  # everything `runbook lab` does not know goes to JupyterLab, with or without `--`
        args, unknown = parser.parse_known_args(argv)
        args.extra = [a for a in [*args.extra, *unknown] if a != "--"]
    else:
        args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
