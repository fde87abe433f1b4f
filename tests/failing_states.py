"""Which readiness items the suite showed failing, and how: on a real state of a target (the sandbox, a local
PostgreSQL, a campaign's records), by parameters that misdescribe the target, or not at all (each explained).

A pytest plugin: every `engine.run(..., only=[...])` a passing test makes is watched, and an item that came out
fail, warn or missing there (its checked outcome under a waiver) counts as shown failing by that test. A test
marked `by_parameters` made it fail through its parameters; any other through the target's state. The table is
printed at the end of a session that showed any, and kept as JSON in outputs/tests/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.readiness import engine
from runbook_lib.readiness.model import checklist

FAILING = ("fail", "warn", "missing")  # decided against the item; "error" is undecided, not a failing state
REPORT = Path(__file__).resolve().parents[1] / "outputs" / "tests" / "readiness-failing-states.json"

# Automated items no test can drive to a failing state on one machine, and why; each is decided on recorded
# answers by a unit test of its decision instead (tests/unit/test_readiness_logic.py).
NOT_SHOWN = {
    "INF-01": "every engine on one machine is the same packaged dockerd (20.10 or newer); an older one cannot run "
              "beside it. decide_engine_versions fails on recorded versions",
    "INF-12": "containers share the host's clock: skewing one member skews the operator's clock too. decide_clock "
              "fails on recorded offsets",
    "DB-01": "every member runs one image's PostgreSQL; an older major cannot join the Patroni cluster. "
             "decide_versions fails on recorded versions",
    "DB-07": "wal_level is set at start and the sandbox's logical migration needs it; the free slots and WAL "
             "senders are Patroni's (it drops slots it does not manage)",
    "PERF-04": "memory above 80% at peak on a shared 24 GiB machine would starve the suite itself",
    "PERF-08": "a cache hit ratio below 90% needs a working set larger than shared_buffers read cold, minutes of "
               "I/O on a shared machine",
    "PERF-10": "device utilisation above 70% for an hour on the machine the suite runs on",
    "SEC-10": "every sandbox service is deployed with log rotation; removing it redeploys the database tasks",
}


def coverage(shown: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """One row per automated item: how it was shown failing (real state first), by which tests, or why not."""
    rows = []
    for item in checklist():
        if not item.automated:
            continue
        by = shown.get(item.id, {})
        how = "real state" if by.get("state") else "changed parameters" if by.get("parameters") else "not at all"
        rows.append({"item": item.id, "shown": how, "tests": sorted(by.get("state") or by.get("parameters") or []),
                     "why_not": NOT_SHOWN.get(item.id, "UNEXPLAINED") if how == "not at all" else ""})
    return rows


AUTOMATED = frozenset(i.id for i in checklist() if i.automated)
_SHOWN: dict[str, dict[str, list[str]]] = {}
_SEEN = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture(autouse=True)
def _watch_readiness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    seen: list[tuple[str, str]] = []
    real = engine.run

    def run(params: Any, *, only: list[str] | None = None, **kw: Any) -> list[Any]:
        results = real(params, only=only, **kw)
        if only is not None:  # a test asking for these items, not a whole checklist run
            seen.extend((r.id, r.checked_outcome if r.outcome == "waived" else r.outcome) for r in results
                        if r.id in AUTOMATED)
        return results

    monkeypatch.setattr(engine, "run", run)
    request.node.stash[_SEEN] = seen
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.passed:
        return
    how = "parameters" if item.get_closest_marker("by_parameters") else "state"
    for item_id, result in item.stash.get(_SEEN, []):
        if result in FAILING:
            tests = _SHOWN.setdefault(item_id, {}).setdefault(how, [])
            if item.nodeid not in tests:
                tests.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SHOWN:
        return
    rows = coverage(_SHOWN)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(rows, indent=1) + "\n")
    write = terminalreporter.write_line
    terminalreporter.section("readiness items shown failing (by the tests this session ran)")
    for how in ("real state", "changed parameters", "not at all"):
        these = [r for r in rows if r["shown"] == how]
        write(f"{how}: {len(these)}")
        for r in these:
            write(f"  {r['item']:8} {r['why_not'] or ', '.join(t.rsplit('::', 1)[-1] for t in r['tests'])}")
    write(f"(kept in {REPORT})")
