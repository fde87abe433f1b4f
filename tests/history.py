"""72 hours of monitoring history shaped like the sandbox application's, for the 72-hour validation.

The validation's verdict can only be shown on a whole window of series: this writes one as OpenMetrics
(the application's request, error and latency-histogram counters, replication lag, Patroni timelines,
WAL archiving, `up` of every scrape job and the Watchdog alert), turns it into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, and serves them from a scratch Prometheus (the sandbox
image's, host network, its own loopback port) that scrapes nothing. A `History` names what goes wrong and
when: an error spike held for a while, a lag excursion, a gap in which nothing was scraped, a promotion.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import free_port

STEP_S = 30  # one sample per series every 30 s, as a 30 s scrape interval would give
RPS = 20.0  # the application's requests per second
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HEALTHY_LATENCY = (0.60, 0.90, 0.97, 0.995, 0.999, 1.0)  # cumulative share under each bound: p95 ~ 0.2 s
SLOW_LATENCY = (0.05, 0.20, 0.50, 0.80, 0.93, 0.99)  # p95 ~ 1.4 s
JOBS = ("postgres", "patroni", "pgbouncer", "etcd", "app")
MEMBERS = ("pg1", "pg2", "pg3")


@dataclass(frozen=True)
class Spell:
    """Something that holds from `at_h` hours after the history's start for `hours`."""

    at_h: float
    hours: float

    def holds(self, t_h: float) -> bool:
        return self.at_h <= t_h < self.at_h + self.hours


@dataclass
class History:
    hours: float = 73.0
    error_ratio: float = 0.001
    error_spike: tuple[Spell, float] | None = None  # (when, ratio)
    slow: Spell | None = None  # latency shifted to SLOW_LATENCY
    lag_excursion: tuple[Spell, float] | None = None  # (when, seconds)
    gap: Spell | None = None  # nothing scraped at all (Prometheus down)
    promotion_at_h: float | None = None  # an unplanned failover: a new timeline from then on

    def openmetrics(self, end: float) -> str:
        """Every series from end - hours to end, sample by sample, in OpenMetrics text."""
        start = end - self.hours * 3600
        steps = int(self.hours * 3600 // STEP_S)
        lines: dict[str, list[str]] = {}
        requests_n = errors_n = 0.0
        buckets_n = [0.0] * (len(BUCKETS) + 1)
        for i in range(steps + 1):
            ts = start + i * STEP_S
            t_h = i * STEP_S / 3600
            ratio = self.error_spike[1] if self.error_spike and self.error_spike[0].holds(t_h) else self.error_ratio
            shares = SLOW_LATENCY if self.slow and self.slow.holds(t_h) else HEALTHY_LATENCY
            served = RPS * STEP_S
            requests_n += served
            errors_n += served * ratio
            for b, share in enumerate((*shares, 1.0)):
                buckets_n[b] += served * share
            if self.gap and self.gap.holds(t_h):
                continue  # the counters kept counting; nobody scraped them
            lag = self.lag_excursion[1] if self.lag_excursion and self.lag_excursion[0].holds(t_h) else 0.01
            promoted = self.promotion_at_h is not None and t_h >= self.promotion_at_h
            sample = {
                'app_requests_total{job="app",instance="app"}': requests_n,
                'app_errors_total{job="app",instance="app"}': errors_n,
                **{f'app_request_duration_seconds_bucket{{job="app",instance="app",le="{le}"}}': buckets_n[b]
                   for b, le in enumerate((*map(str, BUCKETS), "+Inf"))},
                **{f'pg_replication_lag_seconds{{job="postgres",instance="{m}"}}': lag for m in MEMBERS[1:]},
                **{f'patroni_postgres_timeline{{job="patroni",instance="{m}"}}': 2 if promoted else 1
                   for m in MEMBERS},
                'pg_stat_archiver_failed_count{job="postgres",instance="pg1"}': 0,
                'pg_stat_archiver_last_archive_age{job="postgres",instance="pg1"}': (i * STEP_S) % 300,
                **{f'up{{job="{job}",instance="{job}"}}': 1 for job in JOBS},
                'ALERTS{alertname="Watchdog",alertstate="firing",severity="none"}': 1,
            }
            for series, value in sample.items():
                lines.setdefault(series, []).append(f"{series} {value:.15g} {ts:.3f}")
        by_family: dict[str, list[str]] = {}
        for series, rows in lines.items():  # OpenMetrics wants each family's samples together
            by_family.setdefault(series.split("{")[0], []).extend(rows)
        return "".join("\n".join(rows) + "\n" for rows in by_family.values()) + "# EOF\n"


@contextmanager
def scratch_prometheus(sandbox, history: History, folder: Path) -> Iterator[tuple[str, float]]:  # noqa: ANN001
    """A Prometheus holding `history` ending now; yields (url, end timestamp). Removed afterwards."""
    end = time.time() - 60
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.om").write_text(history.openmetrics(end))
    (folder / "prometheus.yml").write_text("global: {scrape_interval: 30s}\nscrape_configs: []\n")
    env = sandbox.docker_env()
    image = sandbox.spec.image_tag()
    blocks = subprocess.run(["docker", "run", "--rm", "-v", f"{folder}:/h", "--entrypoint", "promtool", image,
                             "tsdb", "create-blocks-from", "openmetrics", "/h/history.om", "/h/data"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert blocks.returncode == 0, blocks.stderr[-2000:] + blocks.stdout[-2000:]
    port = free_port()
    name = f"runbook-history-{port}"
    started = subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "-v", f"{folder}:/h",
                              "--entrypoint", "prometheus", image, "--config.file=/h/prometheus.yml",
                              "--storage.tsdb.path=/h/data", "--storage.tsdb.retention.time=30d",
                              f"--web.listen-address=127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the scratch Prometheus did not become ready in 120 s"
            time.sleep(0.5)
        yield url, end
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120, env=env)
