"""Issue 27's figures for Sidekiq and RQ, with real workers: jobs running (and for how long), due
jobs no poller moved into their queue, and queues no worker listens to. The systems' own APIs
(Sidekiq::Workers, its sets; rq's job `started_at`, its scheduled registry) are the reference."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timedelta

import pytest
from rq import Queue

from helpers.collect import by_queue, make_collector, sidekiq
from helpers.workers import HELPERS, queue_figures, wait_for, worker_process
from queue_metrics.doctor import unlistened_queues
from queue_metrics.runner import UnlistenedWarnings
from queue_metrics.sample import QueueSample, TickReport
from queue_metrics.systems.contract import activity_figures


def sidekiq_process(url: str, *queues: str, poll: str = ""):
    """A real `sidekiq` process (2 threads) taking `queues`; `poll`: its poller's interval."""
    command = ["sidekiq", "-r", os.path.join(HELPERS, "sidekiq_jobs.rb"), "-c", "2", "-t", "1"]
    for queue in queues:
        command += ["-q", queue]
    return worker_process(command, {"REDIS_URL": url, "SIDEKIQ_POLL_INTERVAL": poll})


def rq_worker(url: str, *queues: str, scheduler: bool = False):
    options = ["--with-scheduler"] if scheduler else []
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    return worker_process([rq, "worker", "--url", url, "--path", HELPERS, *options, *queues], {})


def figures_of(collector, backend: str, queue: str):
    report = collector.tick()
    return report, queue_figures(report, backend, queue)


def test_sidekiq_running_age_grows_and_matches_the_threads_start(redis_url):
    with sidekiq_process(redis_url, "default"):
        sidekiq(redis_url, {"jobs": [{"class": "SleepyJob", "args": [60]}]})
        # Sidekiq writes what its threads run at each heartbeat (every 5 s).
        wait_for(lambda: sidekiq(redis_url, {})["work"], "Sidekiq::Workers to show the job", 30)
        (work,) = sidekiq(redis_url, {})["work"]
        collector = make_collector(redis_url)
        ages = []
        for _ in range(3):
            report, ours = figures_of(collector, "sidekiq", "default")
            now = time.time()
            assert report.errors == () and ours["running"] == 1 and ours["consumers"] == 1
            assert abs((now - ours["running_age"]) - work["run_at"]) <= 1.0
            ages.append(ours["running_age"])
            time.sleep(1.1)
        assert ages[0] < ages[1] < ages[2]
        assert (ours["due"], "due_age" in ours) == (0, False)


def test_sidekiq_due_jobs_pile_up_without_a_process_then_enter_the_queue(redis_url):
    sidekiq(redis_url, {"jobs": [{"class": "QuickJob", "in": 1}, {"class": "QuickJob", "in": 1}]})
    sidekiq(redis_url, {"jobs": [{"class": "QuickJob", "queue": "mailers", "in": 1}]})
    sidekiq(redis_url, {"jobs": [{"class": "QuickJob", "in": 3600}]})  # not due for an hour
    assert sidekiq(redis_url, {"sleep": 1.5})["due"] == {"default": 2, "mailers": 1}
    # No job was ever pushed to the queues themselves, so the `queues` set does not name them yet.
    collector = make_collector(redis_url, QUEUE_METRICS_SIDEKIQ_QUEUES="default,mailers")
    due_ages = []
    for _ in range(3):
        report, ours = figures_of(collector, "sidekiq", "default")
        assert report.errors == ()
        assert (ours["due"], queue_figures(report, "sidekiq", "mailers")["due"]) == (2, 1)
        assert ours["consumers"] == 0 and by_queue(report)["default"].size == 0
        due_ages.append(ours["due_age"])
        time.sleep(1.1)
    assert 0.5 <= due_ages[0] < due_ages[1] < due_ages[2]
    with sidekiq_process(redis_url, "default", "mailers", poll="1"):

        def enqueued() -> bool:
            report = collector.tick()
            return [queue_figures(report, "sidekiq", queue)["due"] for queue in ("default", "mailers")] == [0, 0]

        wait_for(enqueued, "a Sidekiq process to move the due jobs into their queues", 60)
    report = collector.tick()
    assert "due_age" not in queue_figures(report, "sidekiq", "default")
    assert sidekiq(redis_url, {})["due"] == {}


def test_sidekiq_queue_nobody_listens_to_is_said_then_a_process_takes_it(redis_url):
    sidekiq(redis_url, {"enqueue": {"mailers": 12}})
    with sidekiq_process(redis_url, "default"):
        wait_for(lambda: sidekiq(redis_url, {})["stats"]["processes"] == 1, "the process's heartbeat", 30)
        collector = make_collector(redis_url)
        report = collector.tick()
        assert queue_figures(report, "sidekiq", "mailers")["consumers"] == 0
        assert unlistened_queues(report) == ['sidekiq: queue "mailers" has 12 jobs and no worker listens to it']
        with sidekiq_process(redis_url, "mailers") as process:
            wait_for(lambda: sidekiq(redis_url, {})["stats"]["processes"] == 2, "the second heartbeat", 30)
            # The new process's hash is read in a follow-up; the queue's read waits for it.
            report = collector.tick()
            assert report.round_trips == 2
            assert queue_figures(report, "sidekiq", "mailers")["consumers"] == 1
            assert not [line for line in unlistened_queues(report) if "mailers" in line]
            # Quieted (TSTP: it takes no more jobs), it no longer listens; still a live process.
            process.send_signal(signal.SIGTSTP)
            wait_for(
                lambda: queue_figures(collector.tick(), "sidekiq", "mailers")["consumers"] == 0,
                "the quiet heartbeat",
                30,
            )


def test_rq_running_age_grows_and_matches_the_jobs_started_at(redis_url, client):
    queue = Queue("default", connection=client)
    queue.enqueue("rq_jobs.quick")
    collector = make_collector(redis_url)
    assert queue_figures(collector.tick(), "rq", "default")["running"] == 0  # no registry holds a job
    with rq_worker(redis_url, "default"):
        job = queue.enqueue("rq_jobs.nap", 60)
        wait_for(lambda: job.refresh() or job.started_at is not None, "the job to start", 30)
        started_at = job.started_at.timestamp()
        # The registries appeared since the last tick: counted, then the job's start, in one tick.
        report = collector.tick()
        assert report.round_trips == 3 and queue_figures(report, "rq", "default")["running"] == 1
        ages = []
        for _ in range(3):
            report, ours = figures_of(collector, "rq", "default")
            now = time.time()
            assert report.errors == () and ours["running"] == 1 and ours["consumers"] == 1
            assert abs((now - ours["running_age"]) - started_at) <= 1.0
            ages.append(ours["running_age"])
            time.sleep(1.1)
        assert ages[0] < ages[1] < ages[2]


def test_rq_due_jobs_wait_for_a_worker_with_the_scheduler(redis_url, client):
    queue = Queue("default", connection=client)
    with rq_worker(redis_url, "default"):  # no --with-scheduler: nothing moves them
        jobs = [queue.enqueue_in(timedelta(seconds=1), "rq_jobs.quick") for _ in range(2)]
        queue.enqueue_in(timedelta(hours=1), "rq_jobs.quick")
        collector = make_collector(redis_url)
        report, ours = figures_of(collector, "rq", "default")
        assert (ours["due"], ours["scheduled"], "due_age" in ours) == (0, 3, False)
        time.sleep(1.5)
        due_ages = []
        for _ in range(3):
            report, ours = figures_of(collector, "rq", "default")
            registry = queue.scheduled_job_registry
            theirs = len(registry.get_jobs_to_schedule(int(time.time())))
            assert report.errors == () and ours["due"] == theirs == 2
            earliest = min(registry.get_scheduled_time(job).timestamp() for job in jobs)
            assert abs((time.time() - ours["due_age"]) - earliest) <= 1.0
            due_ages.append(ours["due_age"])
            time.sleep(1.1)
        assert due_ages[0] < due_ages[1] < due_ages[2]
        with rq_worker(redis_url, "default", scheduler=True):
            wait_for(lambda: figures_of(collector, "rq", "default")[1]["due"] == 0, "the scheduler to enqueue", 60)
    report, ours = figures_of(collector, "rq", "default")
    assert (ours["scheduled"], "due_age" in ours) == (1, False)


def test_rq_queue_nobody_listens_to_is_said_then_a_worker_takes_it(redis_url, client):
    Queue("mailers", connection=client).enqueue("rq_jobs.quick")
    with rq_worker(redis_url, "default", "low"):
        wait_for(lambda: client.scard("rq:workers") == 1, "the worker to register", 30)
        report = make_collector(redis_url).tick()
        assert queue_figures(report, "rq", "mailers")["consumers"] == 0
        assert unlistened_queues(report) == ['rq: queue "mailers" has 1 job and no worker listens to it']
        with rq_worker(redis_url, "mailers"):
            wait_for(lambda: client.llen("rq:queue:mailers") == 0, "the new worker to take the job", 30)
            report = make_collector(redis_url).tick()
            assert queue_figures(report, "rq", "mailers")["consumers"] == 1
            assert unlistened_queues(report) == []


def test_extras_off_reads_none_of_it(redis_url, client):
    Queue("default", connection=client).enqueue_in(timedelta(seconds=-5), "rq_jobs.quick")
    sidekiq(redis_url, {"enqueue": {"default": 1}, "jobs": [{"class": "QuickJob", "in": -5}]})
    report = make_collector(redis_url, QUEUE_METRICS_EXTRAS="false").tick()
    assert all(sample.figures == () for sample in report.samples) and report.systems == ()
    on = make_collector(redis_url).tick()
    assert queue_figures(on, "rq", "default")["due"] == 1
    assert queue_figures(on, "sidekiq", "default")["due"] == 1


# Bad input: the figure of that queue is left out with one line, the rest unchanged.


def fake_process(client, identity: str, queues, work) -> None:
    """A Sidekiq process's heartbeat hash and work hash, as Sidekiq 6.4.1 writes them."""
    info = {"hostname": "web", "pid": 1, "concurrency": 5, "identity": identity, "queues": queues}
    if queues is None:
        del info["queues"]
    client.sadd("processes", identity)
    client.hset(identity, mapping={"info": json.dumps(info), "busy": len(work), "quiet": "false"})
    if work:
        client.hset(f"{identity}:workers", mapping=work)


def test_sidekiq_bad_entries_lose_only_their_figures(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 1, "mailers": 1}})
    started = int(time.time()) - 30
    fake_process(
        client,
        "web:1:abc",
        ["default", "mailers"],
        {
            "t1": json.dumps({"queue": "default", "payload": "{}", "run_at": started}),
            "t2": json.dumps({"queue": "mailers", "payload": "{}"}),  # no run_at
        },
    )
    report = make_collector(redis_url).tick()
    default, mailers = (queue_figures(report, "sidekiq", queue) for queue in ("default", "mailers"))
    assert default["running"] == 1 and 29 <= default["running_age"] <= 32
    assert mailers["running"] == 1 and "running_age" not in mailers
    assert report.errors == ("sidekiq queue \"mailers\": running_age unknown: a work entry has no 'run_at'",)
    # A work entry that is not JSON: where it runs is unknown, so no queue's running is given.
    client.hset("web:1:abc:workers", "t3", "not json")
    # A retry entry without a queue: where it goes is unknown, so no queue's due is given.
    client.zadd("retry", {json.dumps({"class": "X", "jid": "1"}): time.time() - 10})
    report = make_collector(redis_url).tick()
    for queue in ("default", "mailers"):
        assert set(queue_figures(report, "sidekiq", queue)) == {"consumers"}
        assert by_queue(report)[queue].size == 1
    assert len(report.errors) == 2, report.errors
    assert 'sidekiq process "web:1:abc" thread "t3": work entry is not JSON' in report.errors[0]
    assert report.errors[1] == "sidekiq \"retry\": a due job has no 'queue': due jobs per queue unknown"
    # A process whose info has no `queues`: who listens is unknown.
    client.delete("retry", "web:1:abc:workers")
    fake_process(client, "web:2:def", None, {})
    report = make_collector(redis_url).tick()
    assert "consumers" not in queue_figures(report, "sidekiq", "default")
    assert report.errors == (
        "sidekiq process \"web:2:def\": process info has no list of names 'queues': consumers per queue unknown",
    )


def test_rq_job_being_started_counts_as_running_for_zero_seconds(redis_url, client):
    """rq registers the execution a few ms before it writes the job's `started_at` (empty until
    then; seen with a real worker): that job is starting, not bad input."""
    job = Queue("default", connection=client).enqueue("rq_jobs.quick")
    assert client.hget(f"rq:job:{job.id}", "started_at") == b""
    client.zadd("rq:wip:default", {f"{job.id}:exec1": time.time() + 600})
    report = make_collector(redis_url).tick()
    ours = queue_figures(report, "rq", "default")
    assert report.errors == ()
    assert ours["running"] == 1 and ours["running_age"] == pytest.approx(0.0, abs=0.5)


def test_rq_bad_entries_lose_only_their_figures(redis_url, client):
    default, low = Queue("default", connection=client), Queue("low", connection=client)
    default.enqueue("rq_jobs.quick")
    low.enqueue("rq_jobs.quick")
    # A started execution whose job hash expired, in default's started registry.
    client.zadd("rq:wip:default", {"gone:exec1": time.time() + 600})
    client.sadd("rq:workers", "rq:worker:w1")
    client.hset("rq:worker:w1", mapping={"state": "busy", "queues": "default,low"})
    report = make_collector(redis_url).tick()
    ours = queue_figures(report, "rq", "default")
    assert ours["running"] == 1 and "running_age" not in ours and ours["consumers"] == 1
    assert report.errors == (
        'rq queue "default": running_age unknown: job "gone": has no started_at (its hash expired or was deleted)',
    )
    assert queue_figures(report, "rq", "low")["running"] == 0
    # A worker hash without `queues`: who listens is unknown.
    client.hdel("rq:worker:w1", "queues")
    report = make_collector(redis_url).tick()
    assert "consumers" not in queue_figures(report, "rq", "low")
    assert 'rq worker "rq:worker:w1" has no queues: consumers per queue unknown' in report.errors


def test_run_says_a_queue_nobody_listens_to_once_until_it_changes():
    def report(size: int, consumers: int) -> TickReport:
        figures = activity_figures(0.0, consumers=consumers)
        return TickReport((QueueSample("rq", "mailers", size, 0.0, figures),), (), ("rq",), 0.0, True)

    warnings = UnlistenedWarnings()
    said = [
        warnings.new(report(size, consumers)) for size, consumers in ((12, 0), (13, 0), (0, 0), (2, 0), (2, 1), (3, 0))
    ]
    line = 'rq: queue "mailers" has {} and no worker listens to it'
    assert said == [[line.format("12 jobs")], [], [], [line.format("2 jobs")], [], [line.format("3 jobs")]]


def test_run_says_a_few_unlistened_queues_by_name_and_counts_the_rest():
    """Workers scaled to zero leave every queue unlistened: five lines, not one per queue."""
    unlistened = activity_figures(0.0, consumers=0)
    samples = tuple(QueueSample("rq", f"q{index:02d}", 1, 0.0, unlistened) for index in range(12))
    report = TickReport(samples, (), ("rq",), 0.0, True)
    warnings = UnlistenedWarnings()
    said = warnings.new(report)
    assert said[:4] == [f'rq: queue "q{index:02d}" has 1 job and no worker listens to it' for index in range(4)]
    assert said[4] == "and 8 more queues have jobs and no worker listens to them (queue-metrics doctor lists them)"
    assert warnings.new(report) == []  # said once
