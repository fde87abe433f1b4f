"""Steps of the drill runbook that the runner tests execute; behaviour is steered by marker files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runbook_lib.clients import postgres
from runbook_lib.run.session import Session
from runbook_lib.run.step import Guard, Outcome, step

DIR = Path(os.environ.get("DRILL_DIR", "/nonexistent"))


def _bump(name: str) -> int:
    path = DIR / f"{name}.count"
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


@step("count_one", "Count and read the server")
def count_one(session: Session) -> Outcome:
    with postgres.connect(session.params.endpoints.db("main")) as conn:
        version = postgres.scalar(conn, "SHOW server_version")
    return Outcome(summary=f"server {version}", metrics={"runs": _bump("one")}, state={"version": version})


def _plan_mutate(session: Session) -> Outcome:
    return Outcome(summary=f"would bump mutate.count (now {(DIR / 'mutate.count').exists()})")


@step("mutate", "Change something", mutating=True, plan=_plan_mutate)
def mutate(session: Session) -> Outcome:
    return Outcome(summary="bumped", metrics={"runs": _bump("mutate")})


@step("pause", "Wait while the test acts")
def pause(session: Session) -> Outcome:
    if (DIR / "pause").exists():
        (DIR / "paused").write_text(str(os.getpid()))
        for _ in session.progress(range(600), total=600, desc="pausing"):
            if (DIR / "release").exists():
                break
            time.sleep(0.1)
    return Outcome(summary=f"state carried: {session.state.get('version')}")


@step("maybe_fail", "Fail when told to")
def maybe_fail(session: Session) -> Outcome:
    if (DIR / "fail").exists():
        raise RuntimeError("told to fail")
    return Outcome(summary="did not fail", metrics={"runs": _bump("maybe_fail")})


@step("leak", "Print a secret when told to")
def leak(session: Session) -> Outcome:
    if (DIR / "leak").exists():
        print("the password is", session.params.resolve(session.target.databases["main"].password).reveal())
        if os.environ.get("DRILL_LEAK_VALUE"):
            from IPython.display import HTML, display

            display(HTML(f"<p>{__import__('html').escape(os.environ['DRILL_LEAK_VALUE'])}</p>"))
    return Outcome(summary="done")


guarded = step("guarded", "Refuse without the go file",
               guards=(Guard("go file present", lambda s: None if (DIR / "go").exists() else "no go file"),))(
    lambda session: Outcome(summary="guard passed"))
