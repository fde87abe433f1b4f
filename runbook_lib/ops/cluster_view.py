"""The cluster at one moment, as the window needs it: Patroni's members (role, state, timeline, lag, pending
restart), where the write endpoint lands and where PgBouncer sends the application. What `patronictl list`
shows, plus the two routes the runbooks change; the problems found are named, never guessed."""

from __future__ import annotations

from typing import Any

from runbook_lib.clients import patroni, pgbouncer, postgres
from runbook_lib.config.params import Params
from runbook_lib.values import now

HEALTHY_STATES = {"running", "streaming"}


def snapshot(params: Params) -> dict[str, Any]:
    """Members, write endpoint and PgBouncer backend, each read independently (one failing does not hide the
    others), with the problems found."""
    t, endpoints = params.target, params.endpoints
    view: dict[str, Any] = {"at": now().isoformat(), "target": t.name, "members": [], "write_endpoint": None,
                            "pgbouncer": None, "problems": []}
    problems: list[str] = view["problems"]
    by_address = {(spec.host, spec.port): name for name, spec in endpoints.databases.items()}
    if t.patroni is None:
        problems.append("target.patroni is not set: no member list")
    else:
        try:
            view["members"] = [{k: m.get(k) for k in ("name", "role", "state", "timeline", "lag", "host", "port")}
                               | {"pending_restart": bool(m.get("pending_restart"))}
                               for m in patroni.members(t.patroni)]
        except Exception as exc:  # noqa: BLE001 - unreachable Patroni is a finding of the view
            problems.append(f"Patroni: {type(exc).__name__}: {exc}")
        leaders = [m for m in view["members"] if m["role"] in ("leader", "standby_leader")]
        if view["members"] and len(leaders) != 1:
            problems.append(f"{len(leaders)} leaders")
        problems += [f"member {m['name']} is {m['state']}" for m in view["members"]
                     if m["state"] not in HEALTHY_STATES]
        problems += [f"member {m['name']} needs a restart (pending_restart)" for m in view["members"]
                     if m["pending_restart"]]
    primaries = endpoints.by_role("primary")
    if primaries:
        spec = primaries[0]
        try:
            with postgres.connect(spec) as conn:
                row = postgres.query(conn, "SELECT host(inet_server_addr()) AS addr, inet_server_port() AS port, "
                                           "pg_is_in_recovery() AS in_recovery")[0]
            member = _member_at(view["members"], row["addr"], row["port"])
            view["write_endpoint"] = {"endpoint": spec.name, "lands_on_port": row["port"], "member": member,
                                      "in_recovery": row["in_recovery"]}
            leader = next((m["name"] for m in view["members"] if m["role"] == "leader"), None)
            if row["in_recovery"] or (member is not None and member != leader):
                problems.append(f"the write endpoint {spec.name} lands on {member or row['port']}, not the leader "
                                f"{leader}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"write endpoint {spec.name}: {type(exc).__name__}: {str(exc).strip()[:200]}")
    if t.pgbouncer is not None and params.migration is not None:
        database = params.migration.pooler_database
        try:
            host, port = pgbouncer.backend(endpoints.admin(), database)
            view["pgbouncer"] = {"database": database, "host": host, "port": port,
                                 "points_at": by_address.get((host, port), "unknown")}
        except Exception as exc:  # noqa: BLE001
            problems.append(f"PgBouncer: {type(exc).__name__}: {str(exc).strip()[:200]}")
    return view


def _member_at(members: list[dict[str, Any]], addr: str | None, port: int) -> str | None:
    """The member a connection landed on: by port when only one member listens on it (the sandbox), else by
    address and port; None when that cannot tell (then only in_recovery is judged)."""
    on_port = [m for m in members if m.get("port") == port]
    if len(on_port) == 1:
        return str(on_port[0]["name"])
    exact = [m for m in on_port if addr and m.get("host") == addr]
    return str(exact[0]["name"]) if len(exact) == 1 else None
