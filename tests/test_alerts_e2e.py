"""The alerts really fire, end to end, with nothing simulated: a real `queue-metrics run` serving
`/metrics` (the prometheus output) for a private redis holding a real RQ queue, a real Prometheus
scraping it every second and evaluating the rules `queue-metrics alerts --for prometheus` prints,
a real Alertmanager delivering to a webhook receiver in this process, and real `rq worker`s.

Thresholds are short (latency 3 s for 2 s, absent 10 s) so the whole story takes well under a
minute; every wait is generous (a loaded 2-core CI machine) and none is an assertion on speed."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timezone
from typing import List

from rq import Queue

from helpers.alertmanager import Notified, alertmanager_server
from helpers.process import queue_metrics, start
from helpers.prometheus import prometheus_server, query, targets
from helpers.servers import free_port
from helpers.watch import Watcher, collector_line
from helpers.workers import HELPERS, wait_for, worker_process

LATENCY_S = 3
LATENCY_FOR = "2s"
LATENCY_FOR_S = 2
ABSENT = "10s"
ABSENT_S = 10
# The names `alerts --for prometheus` gives its rules.
LATENCY_ALERT = "QueueLatencyHigh"
ABSENT_ALERT = "QueueMetricsAbsent"
# Each step waits this long at most: Prometheus, Alertmanager, the collector and rq workers share
# two cores with whatever else CI runs.
STEP_TIMEOUT_S = 60.0
BACKLOG = "mailers"
# A queue a worker keeps empty from the start: its latency never passes the threshold.
EMPTY = "spare"
BACKLOG_JOBS = 5
DATASTORE = "redis"


def rq_worker(url: str, *queues: str):
    """A real `rq worker` on `queues` (as tests/test_rq.py starts one)."""
    return worker_process(
        [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--url", url, "--path", HELPERS, *queues], {}
    )


def rules_file(tmp_path) -> str:
    """The rules exactly as a user gets them, with the test's short thresholds."""
    result = queue_metrics(
        "alerts",
        "--for",
        "prometheus",
        "--latency",
        str(LATENCY_S),
        "--latency-for",
        LATENCY_FOR,
        "--absent",
        ABSENT,
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "queue-metrics-rules.yml"
    path.write_text(result.stdout)
    return str(path)


def is_alert(name: str, status: str, **labels: str):
    def matches(alert: Notified) -> bool:
        return (
            alert.status == status
            and alert.labels.get("alertname") == name
            and all(alert.labels.get(key) == value for key, value in labels.items())
        )

    return matches


def oldest_enqueued_at(queue: Queue) -> float:
    """Unix time of the oldest waiting job's enqueue, as rq stored it (naive UTC)."""
    job = queue.fetch_job(queue.get_job_ids()[0])
    return job.enqueued_at.replace(tzinfo=timezone.utc).timestamp()


def test_latency_alert_fires_and_resolves_and_absence_alert_fires_when_the_collector_stops(redis_url, client, tmp_path):
    backlog, empty = Queue(BACKLOG, connection=client), Queue(EMPTY, connection=client)
    rules = rules_file(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    env = {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "logs,prometheus",
        "QUEUE_METRICS_PROMETHEUS_ADDRESS": address,
    }
    with rq_worker(redis_url, EMPTY), alertmanager_server(tmp_path) as alertmanager:
        for _ in range(3):
            empty.enqueue("rq_jobs.quick")
        collector = start("run", "--interval", "1", env=env)
        watcher = Watcher(collector)
        try:
            watcher.wait_for(collector_line, STEP_TIMEOUT_S)
            with prometheus_server(tmp_path, [address], [rules], alertmanager.url) as prometheus:
                wait_for(
                    lambda: [t["health"] for t in targets(prometheus)] == ["up"],
                    "Prometheus to scrape the collector",
                    STEP_TIMEOUT_S,
                )
                wait_for(lambda: empty.count == 0, "the worker to empty its queue", STEP_TIMEOUT_S)
                for _ in range(BACKLOG_JOBS):
                    backlog.enqueue("rq_jobs.nap", 0.1)
                enqueued = oldest_enqueued_at(backlog)
                webhook = alertmanager.webhook
                labels = {"system": "rq", "queue": BACKLOG, "datastore": DATASTORE}

                # (a) The backlog waits: its latency passes 3 s, stays over it 2 s, and the alert
                # reaches the webhook. It cannot have fired before the real wait allowed it.
                firing = webhook.wait_for(is_alert(LATENCY_ALERT, "firing", **labels), "latency firing", STEP_TIMEOUT_S)
                assert firing.starts_at - enqueued >= LATENCY_S + LATENCY_FOR_S, (firing, enqueued)
                assert backlog.count == BACKLOG_JOBS  # nothing drained it meanwhile

                # (b) A real worker drains it: the same alert arrives resolved.
                with rq_worker(redis_url, BACKLOG):
                    resolved = webhook.wait_for(
                        is_alert(LATENCY_ALERT, "resolved", **labels), "latency resolved", STEP_TIMEOUT_S
                    )
                    assert backlog.count == 0
                assert resolved.received > firing.received

                # (c) The collector stops (SIGTERM, as a dyno is stopped): the absence alert fires.
                stopped = time.monotonic()
                collector.send_signal(signal.SIGTERM)
                assert collector.wait(timeout=STEP_TIMEOUT_S) == 0
                absent = webhook.wait_for(
                    lambda alert: is_alert(ABSENT_ALERT, "firing")(alert) and alert.received > stopped,
                    "absence firing",
                    STEP_TIMEOUT_S,
                )
                # As the rule says: 10 s after the last sample Prometheus scraped, not before.
                (series,) = query(prometheus, "queue_collector_last_tick_timestamp_seconds[5m]")
                last_scrape = float(series["values"][-1][0])
                assert absent.starts_at >= last_scrape + ABSENT_S, (absent, last_scrape)

                notified: List[Notified] = webhook.notified()
                # The queue a worker kept empty never alerted; no queue alert but the backlog's
                # latency fired while the collector ran.
                assert not [a for a in notified if a.labels.get("queue") == EMPTY], notified
                early = [a for a in notified if a.received < stopped]
                assert {a.labels["alertname"] for a in early if "queue" in a.labels} == {LATENCY_ALERT}, notified
                # The absence alert never fired while the collector ran, not even on the fresh
                # Prometheus's first evaluation, before its first scrape (the rule's `for`).
                assert not [a for a in early if a.labels["alertname"] == ABSENT_ALERT], notified
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.wait()
            watcher.drain(0.5)
            print(watcher.all_text()[-3000:])
