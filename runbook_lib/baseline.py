"""Steps that measure the target under the application's own query mix and record the figures.

The load test record feeds readiness items PERF-01..03; the baseline record feeds MON-09
and is what phase 3 and the 72-hour validation compare against.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px

from runbook_lib import records, workload
from runbook_lib.clients import postgres
from runbook_lib.session import Session
from runbook_lib.steps import Outcome, step


def _measure(session: Session) -> Outcome:
    spec = session.target.workload
    if spec is None:
        return Outcome(summary="target.workload is not set: name the endpoint, concurrency and duration",
                       failed=True)
    with session.progress(None, total=int(spec.duration), desc=f"load x{spec.concurrency} (s)") as bar:
        result = workload.run(lambda: postgres.connect(session.params, spec.endpoint), concurrency=spec.concurrency,
                              duration_s=spec.duration, max_requests=spec.max_requests,
                              on_tick=lambda _: bar.update(0.5))
    figures = result.summary()
    figures["endpoint"] = spec.endpoint
    rows = [{"op": op, "latency_ms": v} for op, vs in result.latencies_ms.items() for v in vs[:: max(1, len(vs) // 2000)]]
    fig = px.box(pd.DataFrame(rows), x="op", y="latency_ms", points=False, log_y=True,
                 title=f"Latency by operation at concurrency {spec.concurrency} (ms, log scale)")
    per_op = pd.DataFrame([{"op": op, **v} for op, v in figures.pop("per_op").items()])
    return Outcome(summary=f"{figures['tps']} TPS, p95 {figures['p95_ms']} ms, vector p95 {figures['vector_p95_ms']} ms, "
                           f"{figures['errors']} errors of {figures['requests']}",
                   evidence=per_op, metrics=figures, figures=[fig], failed=figures["requests"] == 0,
                   state={"load_test": figures})


def _record(session: Session) -> Outcome:
    figures = session.state.get("load_test")
    if not figures:
        return Outcome(summary="no load test figures in this run", failed=True)
    campaign = session.run_dir.parent
    load = records.save(campaign, "load_test", figures, session.info.run_id)
    base = records.save(campaign, "baseline", {**figures, "recorded_on": session.target.name}, session.info.run_id)
    return Outcome(summary=f"records/load_test.json and records/baseline.json saved ({load['sha256'][:12]}, "
                           f"{base['sha256'][:12]})", metrics={"tps": figures["tps"]})


load_test = step("load_test", "Load test with the application's query mix")(_measure)
record = step("record_baseline", "Record the load test and the baseline in the campaign")(_record)
