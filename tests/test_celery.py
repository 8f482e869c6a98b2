"""Celery on Redis: tasks sent by a real Celery app; kombu's passive queue_declare is the
reference for size, the stamp hook (or another tool's stamp) for latency."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Tuple

import pytest
from celery import Celery
from kombu import pools

import queue_metrics.celery as celery_hook
from helpers.celery_worker_app import make_app
from helpers.collect import by_queue, collect, make_collector
from helpers.process import queue_metrics
from helpers.workers import HELPERS, queue_figures, system_figures, wait_for, worker_process


@pytest.fixture
def app(redis_url):
    application = Celery("shop", broker=redis_url)
    application.conf.task_create_missing_queues = True
    yield application
    celery_hook.uninstall()
    application.close()
    # kombu pools producers per broker URL, process-wide, with the bindings they declared: a
    # fresh pool per test, as a fresh process would have, since every test empties Redis.
    pools.reset()


@pytest.fixture
def stamped(app):
    celery_hook.install(app)
    return app


def kombu_size(app, queue: str) -> int:
    with app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count


def send(app, queue: str, count: int = 1, **options) -> None:
    for index in range(count):
        app.send_task("shop.tasks.ship", args=[index], queue=queue, **options)


def test_sizes_with_priorities_equal_kombu(stamped):
    app = stamped
    send(app, "celery", 3)
    send(app, "high", 2, priority=0)
    send(app, "high", 2, priority=5)
    send(app, "high", 1, priority=9)
    send(app, "reports", 4, priority=3)
    report = collect(app.conf.broker_url)
    samples = by_queue(report, "celery")
    assert report.backends == ("celery",)
    assert set(samples) == {"celery", "high", "reports"}
    for name in samples:
        assert samples[name].size == kombu_size(app, name)
    assert samples["high"].size == 5
    assert report.errors == ()


def test_priority_sub_lists_really_exist(stamped, client):
    send(stamped, "high", 1, priority=0)
    send(stamped, "high", 1, priority=9)
    keys = {key for key in client.keys("high*")}
    assert len(keys) == 2, keys  # the base list and one sub-list: the test covers both


def test_latency_from_the_oldest_message_across_priority_lists(stamped):
    send(stamped, "high", 1, priority=9)  # oldest, in a sub-list
    time.sleep(1.0)
    send(stamped, "high", 2, priority=0)
    sample = by_queue(collect(stamped.conf.broker_url))["high"]
    assert sample.size == 3
    assert sample.latency == pytest.approx(1.0, abs=0.4)


def test_without_a_stamp_size_only(app):
    send(app, "celery", 2)
    report = collect(app.conf.broker_url)
    sample = by_queue(report)["celery"]
    assert sample.size == 2 == kombu_size(app, "celery")
    assert sample.latency is None
    assert report.errors == ()  # not stamping is a choice, not an error


def test_hook_stamps_published_at(stamped, client):
    before = time.time()
    send(stamped, "celery", 1)
    import json

    message = json.loads(client.lindex("celery", -1))
    assert before <= message["properties"]["published_at"] <= time.time()


@pytest.mark.parametrize(
    "options",
    [
        {"eta": datetime.now(timezone.utc) + timedelta(minutes=10)},
        {"countdown": 600},
    ],
)
def test_an_eta_message_at_the_head_waits_from_its_publish_stamp(stamped, options):
    """No worker runs: the ETA message at the head is waiting for one, however far its ETA."""
    send(stamped, "celery", 1, **options)
    time.sleep(1.0)
    send(stamped, "celery", 1)
    sample = by_queue(collect(stamped.conf.broker_url))["celery"]
    assert sample.size == 2 == kombu_size(stamped, "celery")
    assert sample.latency == pytest.approx(1.0, abs=0.4)


def test_other_tools_stamps(app, client):
    """Stamps added by hirefire (headers.run_at) and sentry-sdk (sentry-task-enqueued-time)."""
    now = time.time()
    run_at = datetime.fromtimestamp(now - 3, timezone.utc).isoformat()
    app.send_task("shop.tasks.ship", queue="hirefire", headers={"run_at": run_at})
    app.send_task("shop.tasks.ship", queue="sentry", headers={"sentry-task-enqueued-time": now - 5})
    samples = by_queue(collect(app.conf.broker_url))
    assert samples["hirefire"].latency == pytest.approx(3.0, abs=0.5)
    assert samples["sentry"].latency == pytest.approx(5.0, abs=0.5)


def test_worker_control_queues_are_not_task_queues(stamped, client):
    send(stamped, "celery", 1)
    # What a running worker's remote control and events add:
    client.sadd("_kombu.binding.celery.pidbox", "\x06\x16\x06\x16abc@host.celery.pidbox")
    client.sadd("_kombu.binding.reply.celery.pidbox", "x\x06\x16\x06\x16x.reply.celery.pidbox")
    client.sadd("_kombu.binding.celeryev", "worker.#\x06\x16\x06\x16celeryev.123")
    assert set(by_queue(collect(stamped.conf.broker_url))) == {"celery"}


def test_an_exchange_that_appears_later_is_found_by_the_walk(stamped, redis_url):
    collector = make_collector(redis_url, QUEUE_METRICS_BACKENDS="celery")  # Celery's walk alone
    first = collector.tick()
    assert first.samples == () and first.scan_round_trips == 1
    send(stamped, "late", 1)  # a new exchange, and no `_kombu.binding.celery` at all
    assert "late" not in by_queue(collector.tick())
    # The walk goes on between ticks (here: until its next pass is due and done).
    steps = collector.walk(time.monotonic() + 20, sleep=time.sleep)
    assert steps >= 1
    report = collector.tick()
    assert by_queue(report)["late"].size == 1 and report.round_trips <= 3 and report.errors == ()


def test_custom_separator_and_key_prefix(redis_url):
    application = Celery("shop", broker=redis_url)
    application.conf.task_create_missing_queues = True
    application.conf.broker_transport_options = {
        "sep": ":",
        "priority_steps": list(range(10)),
        "global_keyprefix": "shop:",
    }
    celery_hook.install(application)
    try:
        send(application, "bulk", 2, priority=4)
        send(application, "bulk", 1, priority=0)
        # kombu's passive queue_declare ignores global_keyprefix (its EXISTS is not prefixed),
        # so ask the channel for the count that queue_declare reports when it works.
        with application.connection_for_write() as connection:
            expected = connection.default_channel._size("bulk")
        samples = by_queue(
            collect(
                redis_url,
                QUEUE_METRICS_CELERY_SEP=":",
                QUEUE_METRICS_CELERY_PRIORITY_STEPS="0,1,2,3,4,5,6,7,8,9",
                QUEUE_METRICS_CELERY_KEYPREFIX="shop:",
            )
        )
        assert samples["bulk"].size == expected == 3
        assert samples["bulk"].latency is not None
    finally:
        celery_hook.uninstall()
        application.close()
        pools.reset()


# ---- extras: a real Celery worker holding messages, with kombu's `unacked` hash as the reference


def kombu_held(app) -> Tuple[int, Counter]:
    """The held messages as kombu's Redis transport sees them: the `unacked` hash's size, and the
    queues each entry goes back to when restored (the channel's own `_lookup`)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client  # prefixes the keys of these commands with global_keyprefix
        per_queue: Counter = Counter()
        for tag in client.zrange(channel.unacked_index_key, 0, -1):
            _message, exchange, routing_key = json.loads(client.hget(channel.unacked_key, tag))
            per_queue.update(channel._lookup(exchange, routing_key))
        return client.hlen(channel.unacked_key), per_queue


@pytest.mark.parametrize("keyprefix", ["", "shop:"])
def test_held_messages_equal_kombus_unacked_hash(redis_url, client, keyprefix):
    app = make_app(redis_url, keyprefix)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_worker_app",
        "worker",
        "-P",
        "solo",
        "-c",
        "1",
        "-Q",
        "celery,high",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
    ]
    env = {"CELERY_BROKER_URL": redis_url, "CELERY_KEYPREFIX": keyprefix, "PYTHONPATH": HELPERS}
    unacked = f"{keyprefix}unacked"
    try:
        with worker_process(command, env):
            wait_for(lambda: client.exists(f"{keyprefix}_kombu.binding.high"), "the worker to bind its queues")
            # ETA tasks: the worker takes them at once and holds them until due.
            for queue in ("high", "high", "celery"):
                app.send_task("shop.nap", args=[0], queue=queue, countdown=3600)
            wait_for(lambda: client.hlen(unacked) == 3, "the worker to hold the ETA tasks")
            # One long task keeps the (solo) worker busy; of the others it prefetches what its
            # prefetch limit allows, and the rest wait in the list.
            for seconds in (120, 0, 0, 0, 0, 0, 0):
                app.send_task("shop.nap", args=[seconds], queue="celery")
            wait_for(lambda: client.hlen(unacked) > 3, "the worker to take more than the ETA tasks")
            time.sleep(1.0)  # until it has taken all it will

            before = kombu_held(app)
            report = make_collector(redis_url).tick()
            theirs = kombu_held(app)
        assert theirs == before, "the messages were still moving: the comparison would prove nothing"
    finally:
        app.close()
        pools.reset()

    total, per_queue = theirs
    assert report.errors == ()
    assert total > 3 and per_queue["high"] == 2 and per_queue["celery"] > 1  # ETA tasks, and more
    assert system_figures(report, "celery")["unacked"].value == total
    assert sum(per_queue.values()) == total
    for queue in ("celery", "high"):
        assert queue_figures(report, "celery", keyprefix + queue) == {"unacked": per_queue[queue]}
    # And in no queue's size: the list holds the others only.
    assert by_queue(report)[keyprefix + "celery"].size == client.llen(f"{keyprefix}celery") == 10 - total


# ---- doctor, as a real `queue-metrics doctor` process


def celery_detail_lines(stdout: str) -> list:
    """The indented lines doctor prints under `celery: ...`."""
    lines = stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("celery: "))
    return list(itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1 :]))


def test_doctor_passes_an_app_without_publish_stamps_and_says_how_its_latency_is_observed(app, redis_url):
    """The "no change to your app" path: `run` observes the latency, so it is a note, not a
    problem, and the note says what `run` reports and what the stamp hook adds."""
    send(app, "plain", 2)
    send(app, "ranked", 1, priority=9)
    result = queue_metrics("doctor", env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Problem:" not in result.stdout and "No problems found." in result.stdout
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    assert "2 Celery queue(s)" in note and "no publish stamp" in note
    assert "`run` observes" in note and "within one interval" in note
    assert "queue_metrics.celery.install(app)" in note and "millisecond" in note


def test_doctor_without_lpos_says_unstamped_latency_cannot_be_observed(app, make_server):
    """Without LPOS (Redis before 6.0.6: here, renamed away) nothing is observed: a problem."""
    server = make_server(extra=["--rename-command", "LPOS", ""])
    app.conf.broker_url = server.url
    send(app, "plain", 1)
    result = queue_metrics("doctor", env={"REDIS_URL": server.url})
    assert result.returncode == 1
    assert not [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    (problem,) = [line for line in result.stdout.splitlines() if "Celery queue(s)" in line]
    assert problem.startswith("Problem: ") and "LPOS" in problem and "install(app)" in problem
    # The server lacks the command: no ACL is to blame, and none is to be changed.
    assert "+@read" not in result.stdout and "may not run" not in result.stdout, result.stdout
    assert "not allowed for this user" not in problem, problem
    (lacking,) = [line for line in result.stdout.splitlines() if "lacks" in line and "LPOS" in line]
    assert not lacking.startswith("Problem: ") and "Celery" in lacking, lacking


def test_doctors_celery_note_counts_only_the_queues_whose_latency_is_observed(app, redis_url, client):
    """A queue whose head cannot be read (a malformed message) has an error, not a missing stamp."""
    send(app, "plain", 2)
    client.sadd("_kombu.binding.celery", "broken\x06\x16\x06\x16broken")
    client.lpush("broken", b'{"properties": {"published_at": nope')
    result = queue_metrics("doctor", env={"REDIS_URL": redis_url})
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    assert note.startswith("Note: 1 Celery queue(s) show no latency"), note
    assert [line for line in result.stdout.splitlines() if line.startswith('Problem: celery queue "broken"')]


def test_doctor_prints_celery_lines_only_when_celery_is_in_use_and_in_one_shot_words(app, redis_url, client):
    client.sadd("queues", "default")
    client.lpush("queue:default", json.dumps({"class": "Job", "jid": "1", "enqueued_at": time.time()}))
    alone = queue_metrics("doctor", env={"REDIS_URL": redis_url})
    # The one problem: the Sidekiq job waits and no Sidekiq process runs.
    (problem,) = [line for line in alone.stdout.splitlines() if line.startswith("Problem: ")]
    assert "no Sidekiq process is running" in problem, alone.stdout
    assert "celery: not detected" in alone.stdout and celery_detail_lines(alone.stdout) == []
    pinned = queue_metrics("doctor", env={"REDIS_URL": redis_url, "QUEUE_METRICS_BACKENDS": "sidekiq,celery"})
    lines = celery_detail_lines(pinned.stdout)
    assert "celery: pinned by QUEUE_METRICS_BACKENDS" in pinned.stdout
    assert any("global_keyprefix" in line and "none" in line for line in lines), lines
    send(app, "plain", 1)
    detected = queue_metrics("doctor", env={"REDIS_URL": redis_url})
    lines = celery_detail_lines(detected.stdout)
    assert any("global_keyprefix detected from the binding keys: ''" in line for line in lines), lines
    # doctor walks the whole keyspace before it reports: nothing is "not found yet".
    for result in (alone, pinned, detected):
        assert " yet" not in result.stdout, result.stdout
