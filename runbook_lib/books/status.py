"""A read-only look at every database endpoint of the target: server version, role (primary or replica), key
settings, database sizes and connections by state.

Run it before and after any change to see where you stand. It changes nothing, so it needs no lock and no
sign-off.

**Interactive use:** run the cells top to bottom. The run is journaled as it goes under `outputs/<campaign>/<run-id>/`; when done, save the notebook and seal it into the archive with `runbook archive add runbooks/status.ipynb`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.express as px

from runbook_lib.clients import postgres
from runbook_lib.run.book import Book
from runbook_lib.run.session import Session
from runbook_lib.run.step import Outcome, step

KEY_SETTINGS = ("max_connections", "shared_buffers", "effective_cache_size", "work_mem", "wal_level",
                "archive_mode", "synchronous_commit", "synchronous_standby_names", "max_wal_senders",
                "ssl", "password_encryption", "log_connections")
EXPECTED_RECOVERY = {"primary": False, "legacy": False, "replica": True}


def _each_reachable(session: Session, desc: str, probe: Callable[[Any], list[dict]]) -> list[dict]:
    """Run `probe` on every endpoint that answered the reachability step, tagging rows with the endpoint."""
    rows: list[dict] = []
    names = session.state.get("reachable", list(session.target.databases))
    for name in session.progress(names, total=len(names), desc=desc):
        with postgres.connect(session.endpoints.db(name)) as conn:
            rows += [{"endpoint": name, **row} for row in probe(conn)]
    return rows


def _reachability(session: Session) -> Outcome:
    """Connects to each endpoint and asks `pg_is_in_recovery()`. An endpoint that does not answer is listed
    with the reason; the verdict at the end fails on it.
    """
    rows = []
    databases = session.target.databases
    for name in session.progress(databases, total=len(databases), desc="connecting"):
        db = session.endpoints.db(name)
        row: dict[str, Any] = {"endpoint": name, "expected role": db.role, "conninfo": db.conninfo()}
        try:
            with postgres.connect(session.endpoints.db(name)) as conn:
                facts = postgres.query(conn, "SELECT current_setting('server_version') AS version, "
                                             "pg_is_in_recovery() AS in_recovery, "
                                             "coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),"
                                             " false) AS tls, current_database() AS database")[0]
            actual = "replica" if facts["in_recovery"] else "primary"
            expected = EXPECTED_RECOVERY.get(db.role)
            row.update(reachable=True, version=facts["version"], role=actual, tls=facts["tls"],
                       database=facts["database"],
                       role_ok=expected is None or expected == facts["in_recovery"], error="")
        except Exception as exc:  # an unreachable endpoint is a finding, not a crash
            row.update(reachable=False, version=None, role=None, tls=None, database=None, role_ok=False,
                       error=str(exc).strip().splitlines()[0])
        rows.append(row)
    frame = pd.DataFrame(rows)
    reachable = [r["endpoint"] for r in rows if r["reachable"]]
    return Outcome(summary=f"{len(reachable)} of {len(rows)} endpoints answered",
                   evidence=frame, metrics={"endpoints": len(rows), "reachable": len(reachable)},
                   state={"reachable": reachable,
                          "unreachable": [r["endpoint"] for r in rows if not r["reachable"]],
                          "role_mismatch": [r["endpoint"] for r in rows if r["reachable"] and not r["role_ok"]]})


def _settings(session: Session) -> Outcome:
    """The settings that matter for a rollout, side by side for every endpoint."""
    rows = _each_reachable(session, "settings", lambda conn: postgres.query(
        conn, "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name", [list(KEY_SETTINGS)]))
    if not rows:
        return Outcome(summary="no endpoint answered", failed=True)
    frame = pd.DataFrame(rows)
    frame["value"] = frame["setting"] + frame["unit"].fillna("").map(lambda u: f" ({u})" if u else "")
    table = frame.pivot(index="name", columns="endpoint", values="value").reset_index()
    return Outcome(summary=f"{len(KEY_SETTINGS)} key settings on {frame['endpoint'].nunique()} endpoints",
                   evidence=table)


def _sizes(session: Session) -> Outcome:
    """The size of every database on every endpoint that answered, to compare legacy with the new cluster."""
    rows = _each_reachable(session, "database sizes", lambda conn: postgres.query(
        conn, "SELECT datname AS database, pg_database_size(oid) AS bytes FROM pg_database "
              "WHERE datallowconn ORDER BY datname"))
    frame = pd.DataFrame(rows, columns=["endpoint", "database", "bytes"])
    frame["size_mb"] = (frame["bytes"] / 1e6).round(2)
    fig = px.bar(frame, x="endpoint", y="size_mb", color="database", barmode="group",
                 title="Database sizes by endpoint (MB)")
    return Outcome(summary=f"{len(frame)} databases, {frame['bytes'].sum() / 1e6:.1f} MB in total",
                   evidence=frame, figures=[fig],
                   metrics={"databases": len(frame), "total_mb": round(float(frame["bytes"].sum()) / 1e6, 2)})


def _connections(session: Session) -> Outcome:
    """Idle-in-transaction sessions and a crowd of active ones are what to look for."""
    rows = _each_reachable(session, "connections", lambda conn: postgres.query(
        conn, "SELECT coalesce(datname, '-') AS database, coalesce(state, 'background') AS state, count(*) AS n "
              "FROM pg_stat_activity GROUP BY 1, 2 ORDER BY 1, 2"))
    frame = pd.DataFrame(rows, columns=["endpoint", "database", "state", "n"])
    fig = px.bar(frame, x="endpoint", y="n", color="state", title="Connections by state")
    totals = frame.groupby("state")["n"].sum().to_dict()
    return Outcome(summary=", ".join(f"{n} {s}" for s, n in totals.items()) or "no connections",
                   evidence=frame, figures=[fig], metrics={f"connections_{k}": int(v) for k, v in totals.items()})


def _verdict(session: Session) -> Outcome:
    """Fails if any endpoint did not answer or answered in an unexpected role."""
    unreachable = session.state.get("unreachable", [])
    mismatched = session.state.get("role_mismatch", [])
    problems = [f"unreachable: {', '.join(unreachable)}"] if unreachable else []
    problems += [f"role not as expected: {', '.join(mismatched)}"] if mismatched else []
    return Outcome(summary="; ".join(problems) or "every endpoint answered in its expected role",
                   failed=bool(problems))


reachability = step("reachability", "Connect to every database endpoint")(_reachability)
settings = step("settings", "Key server settings")(_settings)
database_sizes = step("database_sizes", "Database sizes")(_sizes)
connections = step("connections", "Connections by state")(_connections)
verdict = step("verdict", "Status verdict")(_verdict)


BOOK = Book("status", "Target status", mutating=False, steps=(
    reachability, settings, database_sizes, connections, verdict,
))
