"""Sidekiq: jobs enqueued by the real Sidekiq client (Ruby); Sidekiq's own API is the reference."""

from __future__ import annotations

import json
import os
import time

import pytest

from helpers.collect import by_queue, collect, make_collector, sidekiq
from helpers.workers import HELPERS, system_figures, wait_for, worker_process
from queue_metrics.sample import COUNTER


def test_size_and_latency_equal_sidekiq_api(redis_url):
    theirs = sidekiq(redis_url, {"enqueue": {"default": 5, "mailers": 2, "critical": 1}, "sleep": 1.0})
    ours = collect(redis_url)

    assert set(theirs["queues"]) == {"default", "mailers", "critical"}
    assert ours.backends == ("sidekiq",)
    samples = by_queue(ours, "sidekiq")
    assert set(samples) == set(theirs["queues"])
    for name, reference in theirs["queues"].items():
        assert samples[name].size == reference["size"]
        assert reference["latency"] >= 1.0
        assert samples[name].latency == pytest.approx(reference["latency"], abs=0.5)
    assert ours.errors == ()


def test_empty_queue_has_zero_latency_like_sidekiq(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 1}})
    client.delete("queue:default")  # drained by a worker; still registered in `queues`
    theirs = sidekiq(redis_url, {})
    ours = by_queue(collect(redis_url))
    assert theirs["queues"]["default"] == {"size": 0, "latency": 0}
    assert (ours["default"].size, ours["default"].latency) == (0, 0.0)


def test_namespaced_sidekiq(redis_url, client):
    theirs = sidekiq(redis_url, {"enqueue": {"default": 3}, "sleep": 0.3}, namespace="myapp")
    assert client.exists("myapp:queues")
    ours = collect(redis_url, QUEUE_METRICS_SIDEKIQ_NAMESPACE="myapp")
    assert by_queue(ours)["default"].size == theirs["queues"]["default"]["size"] == 3
    assert by_queue(ours)["default"].latency == pytest.approx(theirs["queues"]["default"]["latency"], abs=0.5)
    # Without the namespace nothing is found, and nothing is made up.
    assert collect(redis_url).samples == ()


def sidekiq8_job(queue: str, enqueued_ms: int) -> str:
    # Sidekiq 8 writes integer epoch milliseconds.
    return json.dumps(
        {
            "retry": True,
            "queue": queue,
            "class": "HardJob",
            "args": [1],
            "jid": "0123456789abcdef01234567",
            "created_at": enqueued_ms - 5,
            "enqueued_at": enqueued_ms,
        }
    )


def test_sidekiq8_millisecond_payloads(redis_url, client):
    now_ms = int(time.time() * 1000)
    client.sadd("queues", "default")
    client.lpush("queue:default", sidekiq8_job("default", now_ms - 7000))  # oldest
    client.lpush("queue:default", sidekiq8_job("default", now_ms - 1000))
    sample = by_queue(collect(redis_url))["default"]
    assert sample.size == 2
    assert sample.latency == pytest.approx(7.0, abs=0.5)


def test_queue_mixing_seconds_and_milliseconds(redis_url, client):
    """During an upgrade, Sidekiq 7 (seconds) and 8 (milliseconds) jobs share a queue."""
    sidekiq(redis_url, {"enqueue": {"default": 2}})  # real Sidekiq 6 jobs: float seconds, oldest
    time.sleep(0.2)
    client.lpush("queue:default", sidekiq8_job("default", int(time.time() * 1000)))
    theirs = sidekiq(redis_url, {"sleep": 1.0})
    sample = by_queue(collect(redis_url))["default"]
    assert sample.size == 3 == theirs["queues"]["default"]["size"]
    assert sample.latency == pytest.approx(theirs["queues"]["default"]["latency"], abs=0.5)

    # And with the millisecond job the oldest one:
    client.delete("queue:default")
    client.lpush("queue:default", sidekiq8_job("default", int(time.time() * 1000) - 9000))
    sidekiq(redis_url, {"enqueue": {"default": 1}})
    sample = by_queue(collect(redis_url))["default"]
    assert sample.latency == pytest.approx(9.0, abs=0.5)


def test_string_timestamps_and_a_job_without_enqueued_at_as_sidekiq_counts_it(redis_url, client):
    now = time.time()
    client.sadd("queues", "strings", "created")
    client.lpush("queue:strings", json.dumps({"class": "X", "args": [], "enqueued_at": f"{now - 4:.6f}"}))
    client.lpush("queue:created", json.dumps({"class": "X", "args": [], "created_at": now - 6}))
    samples = by_queue(collect(redis_url))
    assert samples["strings"].latency == pytest.approx(4.0, abs=0.5)
    # Sidekiq::Queue#latency reads enqueued_at only: a job without one counts 0, here as there.
    # (Sidekiq 6.4.1 itself raises on a string enqueued_at: that queue goes before asking it.)
    client.srem("queues", "strings")
    theirs = sidekiq(redis_url, {})["queues"]
    assert samples["created"].latency == theirs["created"]["latency"] == 0.0


# ---- extras: a real Sidekiq server process, with Sidekiq::Stats and ProcessSet as the reference

GAUGES = ("scheduled", "retry", "dead", "processes", "busy", "concurrency")


@pytest.fixture
def sidekiq_server(redis_url, request):
    """A real `sidekiq` process (3 threads) on the test server, with or without a namespace."""
    namespace = request.param
    command = ["sidekiq", "-r", os.path.join(HELPERS, "sidekiq_jobs.rb"), "-c", "3", "-q", "default", "-t", "1"]
    with worker_process(command, {"REDIS_URL": redis_url, "SIDEKIQ_NAMESPACE": namespace}):
        yield namespace


def reference_around(url: str, namespace: str, read):
    """Sidekiq's own figures just before and just after `read()`: they must not have moved."""
    before = sidekiq(url, {}, namespace)["stats"]
    ours = read()
    after = sidekiq(url, {}, namespace)["stats"]
    assert before == after, "the jobs were still moving: the comparison would prove nothing"
    return ours, after


@pytest.mark.parametrize("sidekiq_server", ["", "myapp"], indirect=True)
def test_sets_processes_and_throughput_equal_sidekiq_stats_and_process_set(sidekiq_server, redis_url, client):
    namespace = sidekiq_server
    prefix = f"{namespace}:" if namespace else ""
    wait_for(lambda: client.scard(f"{prefix}processes") == 1, "the Sidekiq process to beat")
    sidekiq(
        redis_url,
        {
            "jobs": [
                {"class": "SleepyJob", "args": [120]},
                {"class": "FailingJob"},
                {"class": "DoomedJob", "retry": 0},
                {"class": "QuickJob"},
                {"class": "QuickJob"},
                {"class": "QuickJob", "in": 3600},
            ]
        },
        namespace,
    )
    (identity,) = client.smembers(f"{prefix}processes")

    def settled(processed: int, dead: int) -> bool:
        (busy,) = client.hmget(prefix.encode() + identity, "busy")
        return (
            client.zcard(f"{prefix}retry") == 1
            and client.zcard(f"{prefix}dead") == dead
            and busy == b"1"
            and client.get(f"{prefix}stat:processed") == str(processed).encode()
        )

    wait_for(lambda: settled(4, 1), "the jobs to run and a heartbeat to report them")
    # A process that died without cleaning up: its identity stays in the set, its hash expired.
    # (Sidekiq's own scheduler prunes such members now and then; we skip them and never prune:
    # tests/test_readonly.py holds one through 1,000 ticks.)
    client.sadd(f"{prefix}processes", "ghost.example.com:1:0123456789ab")

    collector = make_collector(redis_url, QUEUE_METRICS_SIDEKIQ_NAMESPACE=namespace)
    report, theirs = reference_around(redis_url, namespace, collector.tick)
    assert report.errors == ()
    ours = system_figures(report, "sidekiq")
    assert theirs == {
        "scheduled": 1,
        "retry": 1,
        "dead": 1,
        "processed": 4,
        "failed": 2,
        "processes": 1,
        "busy": 1,
        "concurrency": 3,
    }
    assert {name: ours[name].value for name in GAUGES} == {name: theirs[name] for name in GAUGES}
    assert ours["utilization"].value == pytest.approx(theirs["busy"] / theirs["concurrency"])
    assert "processed" not in ours and "failed" not in ours  # the first tick has no interval

    more = [{"class": "QuickJob"}, {"class": "QuickJob"}, {"class": "DoomedJob", "retry": 0}]
    sidekiq(redis_url, {"jobs": more}, namespace)
    wait_for(lambda: settled(7, 2), "three more jobs to be reported")
    report, later = reference_around(redis_url, namespace, collector.tick)
    ours = system_figures(report, "sidekiq")
    assert (
        (ours["processed"].value, ours["failed"].value)
        == (later["processed"] - theirs["processed"], later["failed"] - theirs["failed"])
        == (3, 1)
    )
    assert (ours["processed"].kind, ours["failed"].kind) == (COUNTER, COUNTER)
    assert ours["dead"].value == later["dead"] == 2
    report, _ = reference_around(redis_url, namespace, collector.tick)
    quiet = system_figures(report, "sidekiq")
    assert (quiet["processed"].value, quiet["failed"].value) == (0, 0)


def test_processed_and_failed_count_per_tick_and_survive_a_reset(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 1}})
    collector = make_collector(redis_url)
    counts = []
    # What Sidekiq's heartbeats add (INCRBY), then Sidekiq::Stats#reset, then a missing key.
    for processed, failed in ((10, 1), (15, 1), (15, 4), (2, 0), (5, 0), (None, None)):
        for key, value in (("stat:processed", processed), ("stat:failed", failed)):
            client.delete(key) if value is None else client.set(key, value)
        ours = system_figures(collector.tick(), "sidekiq")
        counts.append(tuple(ours[name].value if name in ours else None for name in ("processed", "failed")))
    assert counts == [(None, None), (5, 0), (0, 3), (2, 0), (3, 0), (0, 0)]
