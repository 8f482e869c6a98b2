"""Usage: .venv/bin/python tests/benchmarks/prometheus_screenshot.py [--out docs/prometheus-queue-draining.png]

Makes the README's picture from a real run, so anyone can make it again: a private redis-server
holding a backlog of real RQ jobs in three queues, `queue-metrics run --interval 1` serving it with
the prometheus output, a private Prometheus scraping that every second; once the backlog is in
(20 s of a producer), one real `rq worker` drains the queues in its priority order in about a
minute; then headless Chromium takes a screenshot of Prometheus's own graph page (`queue_size`
above, `queue_latency_seconds` below) covering the whole run.

Needs what tests/run installs (redis-server, prometheus, the rq package) and Chromium
(`apt-get install -y chromium`). Not part of the test suite: CI has no Chromium, and the picture
is looked at, not asserted. Takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Dict, Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402
from rq import Queue  # noqa: E402

from helpers.prometheus import prometheus_server, targets  # noqa: E402
from helpers.servers import RedisServer, free_port  # noqa: E402
from helpers.workers import HELPERS, wait_for, worker_process  # noqa: E402

# Queue -> jobs in its backlog: unequal, so the curves are told apart; the worker takes them in
# this order (rq's queue priority), so one drains while the others still wait.
# Multiples of FILL_S: each one-second batch is the same.
BACKLOG: Dict[str, int] = {"mailers": 160, "default": 100, "reports": 40}
# Seconds each job sleeps; with rq's fork per job (a few hundredths of a second more) the 300
# take a bit more than a minute on one worker.
JOB_SECONDS = 0.2
# The backlog arrives over this long (a producer, one batch a second) before the worker starts;
# then the empty queues are shown this long after it is done.
FILL_S = 20
AFTER_S = 15
# Both graphs with their legends, one above the other.
WINDOW = "1200,1620"
# Chromium's virtual time for Prometheus's JavaScript UI to fetch the series and draw the graphs.
RENDER_BUDGET_MS = 15000
STEP_TIMEOUT_S = 600


def graph_url(prometheus: str, expressions: Sequence[str], seconds: int) -> str:
    """Prometheus's graph page with one graph per expression over the last `seconds`."""
    params = {}
    for index, expr in enumerate(expressions):
        params.update(
            {
                f"g{index}.expr": expr,
                f"g{index}.tab": "0",
                f"g{index}.stacked": "0",
                f"g{index}.range_input": f"{seconds}s",
            }
        )
    return f"{prometheus}/graph?{urllib.parse.urlencode(params)}"


def screenshot(url: str, out: Path) -> None:
    chromium = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
            f"--screenshot={out}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if chromium.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({chromium.returncode}): {chromium.stderr[-2000:]}")


def fill(client: redis.Redis, started: float) -> None:
    """Enqueues BACKLOG in FILL_S one-second batches: the jobs' ages spread, as a real
    producer's do, so a queue's latency falls as the worker reaches its younger jobs."""
    queues = {name: Queue(name, connection=client) for name in BACKLOG}
    for second in range(FILL_S):
        for name, count in BACKLOG.items():
            for _ in range(count // FILL_S):
                queues[name].enqueue("rq_jobs.nap", JOB_SECONDS)
        time.sleep(max(0.0, started + second + 1 - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "prometheus-queue-draining.png"))
    arguments = parser.parse_args()
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    address = f"127.0.0.1:{free_port()}"
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("QUEUE_METRICS_")},
        "PYTHONPATH": str(ROOT / "lib"),
        "REDIS_URL": server.url,
        "QUEUE_METRICS_OUTPUTS": "logs,prometheus",
        "QUEUE_METRICS_PROMETHEUS_ADDRESS": address,
    }
    log = tempfile.TemporaryFile()
    collector = subprocess.Popen(
        [sys.executable, "-m", "queue_metrics", "run", "--interval", "1"], env=env, stdout=log, stderr=log
    )
    try:
        with (
            tempfile.TemporaryDirectory(prefix="qm-screenshot-") as tmpdir,
            prometheus_server(tmpdir, [address]) as prometheus,
        ):
            wait_for(
                lambda: [t["health"] for t in targets(prometheus)] == ["up"],
                "Prometheus to scrape the collector",
                STEP_TIMEOUT_S,
            )
            started = time.monotonic()
            fill(client, started)
            rq = os.path.join(os.path.dirname(sys.executable), "rq")
            command = [rq, "worker", "--url", server.url, "--path", HELPERS, *BACKLOG]
            with worker_process(command, {}):
                queues = [Queue(name, connection=client) for name in BACKLOG]
                wait_for(lambda: not any(q.count for q in queues), "the worker to drain the queues", STEP_TIMEOUT_S)
                drained = time.monotonic()
            time.sleep(AFTER_S)
            seconds = int(time.monotonic() - started) + 5
            url = graph_url(prometheus, ["queue_size", "queue_latency_seconds"], seconds)
            screenshot(url, out)
            print(f"{out}: {out.stat().st_size} bytes; drained in {drained - started - FILL_S:.0f} s; {url}")
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        log.seek(0)
        errors = [line for line in log.read().decode(errors="replace").splitlines() if "queue-metrics: error" in line]
        if errors:
            print("\n".join(errors[-10:]), file=sys.stderr)
        log.close()
        client.close()
        server.close()


if __name__ == "__main__":
    main()
