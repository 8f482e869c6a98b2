"""The alerts really fire, end to end, with nothing simulated: a real `queue-metrics run` serving
`/metrics` (the prometheus output) for a private redis holding a real RQ queue, a real Prometheus
scraping it every second and evaluating the rules `queue-metrics alerts --for prometheus` prints,
a real Alertmanager delivering to a webhook receiver in this process, and real `rq worker`s.

Thresholds are short (latency 3 s for 2 s, absent 10 s) so the whole story takes well under a
minute; every wait is generous (a loaded 2-core CI machine) and none is an assertion on speed."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timezone
from typing import Dict, List, Tuple

import pytest
from rq import Queue

from helpers.alertmanager import Notified, alertmanager_server
from helpers.process import queue_metrics, start
from helpers.prometheus import instant, prometheus_server, targets_up
from helpers.servers import free_port
from helpers.watch import Watcher, collector_line
from helpers.workers import HELPERS, wait_for, worker_process

LATENCY_S = 3
LATENCY_FOR = "2s"
LATENCY_FOR_S = 2
ABSENT = "10s"
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


def scraped(url: str, expr: str) -> Dict[Tuple[str, str], float]:
    """{(system, queue): value} of an instant query."""
    return {
        (item["metric"].get("system", ""), item["metric"].get("queue", "")): float(item["value"][1])
        for item in instant(url, expr)
    }


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
                wait_for(lambda: targets_up(prometheus), "Prometheus to scrape the collector", STEP_TIMEOUT_S)
                wait_for(lambda: empty.count == 0, "the worker to empty its queue", STEP_TIMEOUT_S)
                for _ in range(BACKLOG_JOBS):
                    backlog.enqueue("rq_jobs.nap", 0.1)
                enqueued = oldest_enqueued_at(backlog)
                webhook = alertmanager.webhook
                labels = {"system": "rq", "queue": BACKLOG, "datastore": DATASTORE}

                # (a) The backlog waits: its latency passes 3 s, stays over it 2 s, and the alert
                # reaches the webhook. It cannot have fired before the real wait allowed it.
                firing = webhook.wait_for(is_alert(LATENCY_ALERT, "firing", **labels), "latency firing", STEP_TIMEOUT_S)
                assert time.time() - enqueued >= LATENCY_S + LATENCY_FOR_S
                assert backlog.count == BACKLOG_JOBS  # nothing drained it meanwhile
                compare_with_once(prometheus, redis_url)

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
                absent = webhook.wait_for(is_alert(ABSENT_ALERT, "firing"), "absence firing", STEP_TIMEOUT_S)
                assert absent.received > stopped

                # The queue a worker kept empty never alerted; nothing fired before the collector
                # stopped but the backlog's latency.
                notified: List[Notified] = webhook.notified()
                assert not [a for a in notified if a.labels.get("queue") == EMPTY], notified
                early = {a.labels["alertname"] for a in notified if a.received < stopped}
                assert early == {LATENCY_ALERT}, notified
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.wait()
            print(watcher.all_text()[-3000:])


def compare_with_once(prometheus: str, redis_url: str) -> None:
    """What Prometheus scraped from the endpoint equals `queue-metrics once --format json` on the
    same redis: sizes exactly (nothing moves: the backlog has no worker yet, the other queue is
    empty), latencies once the time between the two ticks is accounted for."""
    tick_time = scraped(prometheus, "queue_collector_last_tick_timestamp_seconds")[("", "")]
    sizes = scraped(prometheus, "queue_size")
    latencies = scraped(prometheus, "queue_latency_seconds")
    result = queue_metrics("once", "--format", "json", env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    once = json.loads(result.stdout)
    assert {(q["backend"], q["queue"]): q["size"] for q in once["queues"]} == sizes
    elapsed = once["time"] - tick_time
    for q in once["queues"]:
        expected = q["latency"] - elapsed if q["latency"] else 0.0
        assert latencies[(q["backend"], q["queue"])] == pytest.approx(expected, abs=0.5), q
