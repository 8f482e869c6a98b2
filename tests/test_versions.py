"""The supported versions, as README states them: the oldest and newest rq and Celery release of
each range, each in its own virtual environment (tests/helpers/versions.py; the first run builds
them), enqueue with their own producers, a real worker of that release drains a queue, and the
collector's figures equal what that release itself reports."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Dict, Optional

import pytest

from helpers.collect import by_queue, make_collector
from helpers.versions import HELPERS, drive, driver_env, release_venv
from helpers.workers import queue_figures, system_figures, wait_for, worker_process

PAUSE = 1.5
# default: old jobs, then one at_front job; urgent: at_front jobs only, the oldest at the tail;
# drained: what a real worker takes.
RQ_PLAN = {"jobs": {"default": 3, "drained": 5}, "at_front": {"default": [1], "urgent": [1, 2]}, "pause": PAUSE}


def rq_collected(url: str, release: str, app_env: Optional[Dict[str, str]] = None, **settings: str):
    """Our tick (with `settings`) and the release's own figures (in the app's environment), read
    right after it, with the tick's time."""
    collector = make_collector(url, **settings)
    collector.tick()  # the first tick reads new queues a round trip later; the second is steady
    report = collector.tick()
    at = time.time()
    return report, at, drive(release, "rq-figures", url, {}, **(app_env or {}))


def check_rq(report, at: float, theirs: dict) -> None:
    samples = by_queue(report, "rq")
    assert set(samples) == set(theirs["queues"]) == {"default", "drained", "urgent"}
    for name, queue in theirs["queues"].items():
        sample = samples[name]
        assert sample.size == queue["count"] == len(queue["enqueued_at"]), name
        expected = at - min(queue["enqueued_at"]) if queue["enqueued_at"] else 0.0
        assert sample.latency == pytest.approx(expected, abs=0.5), name
        # The registries' sizes (issue 27's running, due and consumers are checked elsewhere).
        figures = queue_figures(report, "rq", name)
        assert {figure: figures[figure] for figure in queue["registries"]} == queue["registries"], name
    assert system_figures(report, "rq")["workers"].value == theirs["workers"]
    assert report.errors == ()


def rq_burst_worker(release: str, url: str, queue: str, **env: str) -> None:
    """The release's own `rq worker --burst`: it works `queue` until it is empty, then exits."""
    rq = os.path.join(release_venv(release), "rq")
    result = subprocess.run(
        [rq, "worker", "--burst", "--url", url, "--path", HELPERS, queue],
        capture_output=True,
        text=True,
        timeout=120,
        env=driver_env(**env),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("release", ["rq-1.15.1", "rq-3.0.0"])
def test_rq_release_sizes_latencies_and_registries_equal_its_own(redis_url, client, release):
    drive(release, "rq-enqueue", redis_url, RQ_PLAN)
    rq_burst_worker(release, redis_url, "drained")
    report, at, theirs = rq_collected(redis_url, release)
    assert theirs["queues_key"] == "rq:queues"
    assert theirs["queues"]["drained"]["registries"]["finished"] == 5  # the worker did drain it
    assert at - min(theirs["queues"]["default"]["enqueued_at"]) >= PAUSE  # older than the at_front job
    check_rq(report, at, theirs)


@pytest.mark.parametrize("setting", ["RQ_KEY_PREFIX", "QUEUE_METRICS_RQ_KEY_PREFIX"])
def test_rq_3_key_prefix_is_read_from_the_apps_variable_or_the_setting(redis_url, client, setting):
    """rq 3 reads RQ_KEY_PREFIX from its environment: every key starts with it instead of `rq`."""
    app_env = {"RQ_KEY_PREFIX": "shop.{eu}"}
    drive("rq-3.0.0", "rq-enqueue", redis_url, RQ_PLAN, **app_env)
    rq_burst_worker("rq-3.0.0", redis_url, "drained", **app_env)
    assert client.exists("shop.{eu}:queues") and not client.keys("rq:*")
    report, at, theirs = rq_collected(redis_url, "rq-3.0.0", app_env, **{setting: "shop.{eu}"})
    assert theirs["queues"]["default"]["key"] == "shop.{eu}:queue:default"
    check_rq(report, at, theirs)
    assert make_collector(redis_url).tick().samples == ()  # without it: nothing of rq's is found


def test_rq_3_key_prefix_workers_are_counted(redis_url, client):
    app_env = {"RQ_KEY_PREFIX": "shop"}
    drive("rq-3.0.0", "rq-enqueue", redis_url, {"jobs": {"default": 1}}, **app_env)
    rq = os.path.join(release_venv("rq-3.0.0"), "rq")
    with worker_process([rq, "worker", "--url", redis_url, "--path", HELPERS, "idle"], driver_env(**app_env)):
        wait_for(lambda: client.scard("shop:workers") == 1, "the worker to register", 60)
        report = make_collector(redis_url, RQ_KEY_PREFIX="shop").tick()
        theirs = drive("rq-3.0.0", "rq-figures", redis_url, {}, **app_env)
    assert system_figures(report, "rq")["workers"].value == theirs["workers"] == 1
    assert by_queue(report, "rq")["default"].size == theirs["queues"]["default"]["count"] == 1


CELERY_PLAN = {"tasks": {"celery": [[None, 3]], "high": [[0, 2], [9, 1]], "drained": [[None, 6]]}}


@pytest.mark.parametrize("release", ["celery-5.2.7", "celery-5.7.0"])
def test_celery_release_sizes_and_latencies_equal_its_own(redis_url, client, release):
    sent = drive(release, "celery-send", redis_url, CELERY_PLAN)["first_sent"]
    celery = os.path.join(release_venv(release), "celery")
    worker = [celery, "-A", "celery_worker_app", "worker", "--pool", "solo", "-Q", "drained", "--loglevel", "WARNING"]
    worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with worker_process(worker, driver_env(CELERY_BROKER_URL=redis_url)):
        wait_for(lambda: client.llen("drained") == 0 and client.hlen("unacked") == 0, "the worker to drain", 90)
    collector = make_collector(redis_url)
    collector.tick()
    report = collector.tick()
    at = time.time()
    counts = drive(release, "celery-figures", redis_url, {"queues": list(CELERY_PLAN["tasks"])})["counts"]
    samples = by_queue(report, "celery")
    assert counts == {"celery": 3, "high": 3, "drained": 0}
    assert {name: samples[name].size for name in counts} == counts
    for name in ("celery", "high"):
        assert samples[name].latency == pytest.approx(at - sent[name], abs=0.5), name
    assert samples["drained"].latency == 0.0
    assert queue_figures(report, "celery", "drained")["unacked"] == 0
    assert report.errors == ()
