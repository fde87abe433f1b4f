"""`runbook monitoring export DIR`: the rule files and the dashboard a production Prometheus and Grafana load.

Why a command: the sandbox's Prometheus gets its rules when the sandbox is built, a production one only from
files its owners provision; both must come from the same policy, so both are written by the same code.
"""

from __future__ import annotations

from pathlib import Path

from runbook_lib.config.policy import Policy
from runbook_lib.promql import dashboard, rules

RULES_FILE = Path("prometheus") / "rollout-rules.yml"
DASHBOARD_FILE = Path("grafana") / f"{dashboard.UID}.json"


def export(policy: Policy, folder: Path) -> list[Path]:
    """Write the rule file and the dashboard under `folder` (made if missing); returns the files written."""
    written = []
    for relative, text in ((RULES_FILE, rules.render(policy)), (DASHBOARD_FILE, dashboard.render(policy))):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
