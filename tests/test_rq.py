"""RQ: jobs enqueued by the real rq library; `Queue.count` and each job's own `enqueued_at` are
the reference."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from rq import Queue, Worker
from rq.job import JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import WorkerStatus

from helpers.collect import by_queue, collect, make_collector, sidekiq
from helpers.process import queue_metrics
from helpers.workers import HELPERS, queue_figures, system_figures, wait_for, worker_process


def enqueue(client, queue_name: str, count: int, **options):
    queue = Queue(queue_name, connection=client)
    return [queue.enqueue("builtins.len", "x" * index, **options) for index in range(count)]


def test_size_equals_queue_count_and_latency_uses_oldest_job(redis_url, client):
    jobs = enqueue(client, "default", 4)
    enqueue(client, "high", 2)
    enqueue(client, "low", 1)
    time.sleep(1.0)

    report = collect(redis_url)
    now = time.time()
    samples = by_queue(report, "rq")
    assert report.backends == ("rq",)
    assert {queue.name: queue.count for queue in Queue.all(connection=client)} == {
        name: sample.size for name, sample in samples.items()
    }
    oldest = jobs[0]
    oldest.refresh()
    expected = now - oldest.enqueued_at.replace(tzinfo=timezone.utc).timestamp()
    assert expected >= 1.0
    assert samples["default"].latency == pytest.approx(expected, abs=0.5)
    assert report.errors == ()


def enqueued_at(job) -> float:
    """Epoch seconds of a job's enqueue, as rq stored it (rq 1.x reads it back naive, in UTC)."""
    job.refresh()
    return job.enqueued_at.replace(tzinfo=timezone.utc).timestamp()


def oldest_wait(queue: Queue, now: float) -> float:
    """rq's own figure: how long the oldest job in the queue has waited at `now`."""
    return now - min(enqueued_at(job) for job in queue.jobs)


def test_at_front_job_does_not_hide_the_older_jobs_behind_it(redis_url, client):
    """`at_front` LPUSHes: the newest job is next in line, and the old ones still wait."""
    queue = Queue("default", connection=client)
    enqueue(client, "default", 3)
    time.sleep(1.5)
    enqueue(client, "default", 1, at_front=True)
    collector = make_collector(redis_url)
    collector.tick()
    report = collector.tick()
    expected = oldest_wait(queue, time.time())
    assert expected >= 1.5
    assert by_queue(report)["default"].latency == pytest.approx(expected, abs=0.5)
    assert (report.round_trips, report.errors) == (2, ())  # the job hashes still ride one round trip


def test_only_at_front_jobs_the_oldest_is_at_the_tail(redis_url, client):
    queue = Queue("default", connection=client)
    enqueue(client, "default", 1, at_front=True)
    time.sleep(1.5)
    enqueue(client, "default", 2, at_front=True)
    expected = oldest_wait(queue, time.time())
    assert expected >= 1.5
    assert by_queue(collect(redis_url))["default"].latency == pytest.approx(expected, abs=0.5)


def test_at_front_jobs_before_a_spread_backlog_read_the_documented_rule(redis_url, client):
    """The limit README states: with at_front jobs in front of normal ones, the oldest job waits
    where the two kinds meet, inside the list; the figure is the older of the two ends' jobs:
    never less than the next job's wait, never more than the oldest's."""
    queue = Queue("default", connection=client)
    enqueue(client, "default", 1)
    time.sleep(2.0)
    enqueue(client, "default", 1)
    time.sleep(1.0)
    enqueue(client, "default", 1, at_front=True)
    sample = by_queue(collect(redis_url))["default"]
    now = time.time()
    jobs = queue.jobs
    ends = max(now - enqueued_at(jobs[0]), now - enqueued_at(jobs[-1]))
    assert now - enqueued_at(jobs[-1]) >= 1.0
    assert sample.latency == pytest.approx(ends, abs=0.5)
    assert now - enqueued_at(jobs[0]) - 0.5 <= sample.latency <= oldest_wait(queue, now) + 0.5


def test_empty_queue_and_explicit_queue(redis_url, client):
    jobs = enqueue(client, "default", 1)
    Queue("default", connection=client).remove(jobs[0])
    samples = by_queue(collect(redis_url, QUEUE_METRICS_RQ_QUEUES="default,unregistered"))
    assert (samples["default"].size, samples["default"].latency) == (0, 0.0)
    assert (samples["unregistered"].size, samples["unregistered"].latency) == (0, 0.0)


def test_scheduled_job_latency_starts_when_it_is_enqueued(redis_url, client):
    """A scheduled job's wait starts when the scheduler enqueues it (enqueued_at is rewritten)."""
    queue = Queue("default", connection=client)
    job = queue.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=60), "builtins.len", "abc")
    assert queue.count == 0
    samples = by_queue(collect(redis_url))
    assert samples["default"].size == 0
    # What the scheduler does when the time comes:
    queue.enqueue_job(job)
    time.sleep(0.5)
    sample = by_queue(collect(redis_url))["default"]
    assert sample.size == 1
    assert sample.latency == pytest.approx(0.5, abs=0.4)


def test_expired_job_hash_omits_latency_only(redis_url, client):
    jobs = enqueue(client, "default", 2)
    enqueue(client, "other", 1)
    client.delete(jobs[0].key)  # the head job's hash expired
    report = collect(redis_url)
    samples = by_queue(report)
    assert samples["default"].size == 2
    assert samples["default"].latency is None
    assert samples["other"].latency is not None
    assert len(report.errors) == 1 and "enqueued_at" in report.errors[0]


def test_unreadable_tail_job_omits_latency_with_the_reason(redis_url, client):
    jobs = enqueue(client, "default", 3)
    client.hset(jobs[-1].key, "enqueued_at", "yesterday")  # the newest job, at the tail
    report = collect(redis_url)
    assert (by_queue(report)["default"].size, by_queue(report)["default"].latency) == (3, None)
    assert len(report.errors) == 1 and "enqueued_at" in report.errors[0] and "yesterday" in report.errors[0]


# ---- extras: real `rq worker` processes, with rq's registries and Worker.all as the reference

REGISTRIES = {
    "started": StartedJobRegistry,
    "failed": FailedJobRegistry,
    "finished": FinishedJobRegistry,
    "deferred": DeferredJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "canceled": CanceledJobRegistry,
}


def registry_sizes(queue: Queue) -> dict:
    # get_job_count(cleanup=False) is rq's ZCARD of the registry, without rq's clean-up writes.
    return {name: registry(queue=queue).get_job_count(cleanup=False) for name, registry in REGISTRIES.items()}


def registry_figures(report, queue: str) -> dict:
    """Our figures of the queue's registries (besides them: running, due, consumers)."""
    return {name: value for name, value in queue_figures(report, "rq", queue).items() if name in REGISTRIES}


def rq_worker(url: str, *queues: str):
    return worker_process(
        [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--url", url, "--path", HELPERS, *queues], {}
    )


def test_worker_draining_an_at_front_queue_gives_rq_figures_at_every_step(redis_url, client):
    """A real `rq worker` takes the at_front job first, then the old ones; at every step our size is
    `Queue.count` and our latency the wait of the oldest job rq lists."""
    queue = Queue("default", connection=client)
    collector = make_collector(redis_url)
    with rq_worker(redis_url, "default"):
        blocker = queue.enqueue("rq_jobs.nap", 5)
        wait_for(lambda: blocker.get_status(refresh=True) == JobStatus.STARTED, "the first job to start", 60)
        for _ in range(3):
            queue.enqueue("rq_jobs.nap", 0.8)
        time.sleep(1.5)
        queue.enqueue("rq_jobs.nap", 0.8, at_front=True)
        checked = []
        while len(checked) < 5:
            before = queue.get_job_ids()
            report = collector.tick()
            now = time.time()
            if queue.get_job_ids() != before or (checked and checked[-1] == len(before)):
                time.sleep(0.05)  # the worker moved meanwhile, or this step is checked: look again
                continue
            sample = by_queue(report)["default"]
            assert sample.size == queue.count == len(before)
            expected = oldest_wait(queue, now) if before else 0.0
            assert sample.latency == pytest.approx(expected, abs=0.5), f"{len(before)} jobs waiting"
            assert report.errors == ()
            checked.append(len(before))
            if before:
                wait_for(lambda waiting=before: queue.get_job_ids() != waiting, "the worker to take the next job", 60)
    assert checked == [4, 3, 2, 1, 0]


def test_registries_and_workers_equal_rq_registries_and_worker_all(redis_url, client):
    default, low = Queue("default", connection=client), Queue("low", connection=client)
    with rq_worker(redis_url, "default"), rq_worker(redis_url, "low"):
        default.enqueue("rq_jobs.quick")
        default.enqueue("rq_jobs.fail")
        napping = default.enqueue("rq_jobs.nap", 120)
        wait_for(lambda: napping.get_status(refresh=True) == JobStatus.STARTED, "the long job to start")
        default.enqueue("rq_jobs.quick", depends_on=napping)  # deferred until the long job ends
        default.enqueue_in(timedelta(hours=1), "rq_jobs.quick")
        default.enqueue("rq_jobs.quick")  # waits behind the long job
        default.enqueue("rq_jobs.quick").cancel()
        low.enqueue_in(timedelta(hours=1), "rq_jobs.quick")
        wait_for(lambda: len(Worker.all_keys(connection=client)) == 2, "both workers to register")
        # A worker that died without cleaning up: listed, its hash expired.
        client.sadd("rq:workers", "rq:worker:ghost")

        before = {name: registry_sizes(queue) for name, queue in (("default", default), ("low", low))}
        report = make_collector(redis_url).tick()
        theirs = {name: registry_sizes(queue) for name, queue in (("default", default), ("low", low))}
        assert theirs == before, "the jobs were still moving: the comparison would prove nothing"
        workers = Worker.all(connection=client)  # after our read: it removes the dead worker's key

    assert report.errors == ()
    assert theirs["default"] == {"started": 1, "failed": 1, "finished": 1, "deferred": 1, "scheduled": 1, "canceled": 1}
    for name in ("default", "low"):
        assert registry_figures(report, name) == theirs[name]
    assert by_queue(report)["default"].size == default.count == 1
    ours = system_figures(report, "rq")
    assert len(workers) == 2
    assert (
        (ours["workers"].value, ours["busy"].value)
        == (len(workers), sum(worker.get_state() == WorkerStatus.BUSY for worker in workers))
        == (2, 1)
    )


def test_registries_that_appear_change_and_go_are_counted_every_tick(redis_url, client):
    """An idle queue's registries cost one EXISTS; once one has jobs they are counted at once."""
    queue = Queue("default", connection=client)
    queue.enqueue("builtins.len", "x")
    collector = make_collector(redis_url)
    ticks = []
    for step in ("none", "scheduled", "two scheduled", "one left", "none again", "none still"):
        if step == "scheduled":
            first = queue.enqueue_in(timedelta(hours=1), "builtins.len", "later")
        elif step == "two scheduled":
            queue.enqueue_in(timedelta(hours=2), "builtins.len", "later")
        elif step == "one left":
            queue.scheduled_job_registry.remove(first)
        elif step == "none again":
            client.delete(queue.scheduled_job_registry.key)
        report = collector.tick()
        assert registry_figures(report, "default") == registry_sizes(queue), step
        ticks.append((report.round_trips, queue_figures(report, "rq", "default")["scheduled"]))
    # Round trips: the first tick reads the queue after the registry, then the job hash; later the
    # job hash needs a second in any case, and a registry that appears rides along with it.
    assert ticks == [(3, 0), (2, 1), (2, 2), (2, 1), (2, 0), (2, 0)]


def test_key_prefix_setting_wins_over_rqs_own_variable_and_is_checked_as_rq_checks_it():
    from queue_metrics.errors import ConfigError
    from queue_metrics.systems.rq import RQ, RQSettings

    assert RQSettings.from_env({}).key_prefix == "rq" and RQ().describe() == []
    app = RQSettings.from_env({"RQ_KEY_PREFIX": "shop"})
    assert (app.key_prefix, app.key_prefix_var) == ("shop", "RQ_KEY_PREFIX")
    both = RQSettings.from_env({"RQ_KEY_PREFIX": "shop", "QUEUE_METRICS_RQ_KEY_PREFIX": " {eu}:shop "})
    assert (both.key_prefix, both.key_prefix_var) == ("{eu}:shop", "QUEUE_METRICS_RQ_KEY_PREFIX")
    assert RQ(both).describe() == ["keys read with the key prefix '{eu}:shop' (QUEUE_METRICS_RQ_KEY_PREFIX)"]
    with pytest.raises(ConfigError, match="^QUEUE_METRICS_RQ_KEY_PREFIX may hold only .* got 'my app'$"):
        RQSettings.from_env({"QUEUE_METRICS_RQ_KEY_PREFIX": "my app", "RQ_KEY_PREFIX": "shop"})
    # The app's own variable is no setting of ours: one that rq 3 would refuse is left unused.
    for foreign in ("my app", " shop "):
        ignored = RQSettings.from_env({"RQ_KEY_PREFIX": foreign})
        assert (ignored.key_prefix, ignored.key_prefix_var) == ("rq", None)
        assert ignored.key_prefix_problem is not None and repr(foreign) in ignored.key_prefix_problem


@pytest.mark.parametrize("foreign", ["my app", " shop "])
def test_a_foreign_rq_key_prefix_is_said_each_tick_and_stops_nothing(make_server, foreign):
    """RQ_KEY_PREFIX is the app's variable: one that rq 3 would refuse (rq before 3 ignores it) is
    no usage error of ours; rq's keys are read with its default prefix, and an rq line says why."""
    server = make_server()
    client = redis.Redis.from_url(server.url)
    sidekiq(server.url, {"enqueue": {"default": 1}})
    Queue("default", connection=client).enqueue("builtins.len", "a")
    client.close()
    env = {"REDIS_URL": server.url, "RQ_KEY_PREFIX": foreign}
    sidekiq_only = queue_metrics("once", env={**env, "QUEUE_METRICS_BACKENDS": "sidekiq"})
    assert sidekiq_only.returncode == 0 and sidekiq_only.stderr == "", sidekiq_only.stderr
    assert "sample#queue.sidekiq.default.size=1 " in sidekiq_only.stdout
    both = queue_metrics("once", env=env)
    assert both.returncode == 1
    assert "sample#queue.rq.default.size=1 " in both.stdout and "sample#queue.sidekiq.default.size=1 " in both.stdout
    (line,) = both.stderr.splitlines()
    assert line.startswith("queue-metrics: error: rq: RQ_KEY_PREFIX ") and repr(foreign) in line, line
    assert "rq 3 itself refuses it" in line and "'rq'" in line, line
    collector = make_collector(server.url, RQ_KEY_PREFIX=foreign)
    for _ in range(2):
        assert [error for error in collector.tick().errors if "RQ_KEY_PREFIX" in error] == [line.split("error: ", 1)[1]]
    doctor = queue_metrics("doctor", env=env)
    assert [row for row in doctor.stdout.splitlines() if row.startswith("  ") and "RQ_KEY_PREFIX" in row], doctor.stdout
    own = queue_metrics("once", env={**env, "QUEUE_METRICS_RQ_KEY_PREFIX": "my app"})
    assert own.returncode == 2 and "usage error: QUEUE_METRICS_RQ_KEY_PREFIX" in own.stderr
