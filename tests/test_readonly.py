"""Read-only, and nothing lost: a user allowed only read commands reads everything, and every
key is byte-for-byte the same after 1,000 ticks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis
from celery import Celery
from kombu import pools
from rq import Queue

import queue_metrics.celery as celery_hook
from helpers.collect import by_queue, make_collector, sidekiq
from helpers.process import queue_metrics
from helpers.workers import add_workers

READER_PASSWORD = "reader-Pa55word"


@pytest.fixture
def all_three(redis_url, client):
    """Real jobs of all three systems, with priorities, schedules and an ETA."""
    sidekiq(redis_url, {"enqueue": {"default": 3, "mailers": 2}})
    queue = Queue("default", connection=client)
    for index in range(3):
        queue.enqueue("builtins.len", "x" * index)
    queue.enqueue_in(timedelta(minutes=5), "builtins.len", "later")
    Queue("reports", connection=client).enqueue("builtins.len", "r")
    app = Celery("shop", broker=redis_url)
    app.conf.task_create_missing_queues = True
    celery_hook.install(app)
    try:
        app.send_task("shop.ship", queue="celery")
        app.send_task("shop.ship", queue="high", priority=9)
        app.send_task("shop.ship", queue="high", eta=datetime.now(timezone.utc) + timedelta(hours=1))
    finally:
        celery_hook.uninstall()
        app.close()
        pools.reset()
    add_workers(client)  # a Sidekiq process, an rq worker, a held Celery message
    return redis_url


def snapshot(client) -> dict:
    return {key: (client.type(key), client.dump(key), client.ttl(key) > 0) for key in client.scan_iter(count=1000)}


def test_a_read_only_acl_user_reads_everything_and_is_never_denied(all_three, client):
    client.execute_command(
        "ACL", "SETUSER", "reader", "on", f">{READER_PASSWORD}", "~*", "-@all", "+@read", "-@dangerous"
    )
    port = client.connection_pool.connection_kwargs["port"]
    reader_url = f"redis://reader:{READER_PASSWORD}@127.0.0.1:{port}/0"

    # The ACL is real: a write by this user is denied and logged.
    reader = redis.Redis.from_url(reader_url, protocol=2)
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("x", "1")
    assert len(client.acl_log()) == 1
    client.acl_log_reset()

    collector = make_collector(reader_url)
    for _ in range(50):
        report = collector.tick()
        assert report.errors == ()
    samples = {(s.backend, s.queue): s.size for s in report.samples}
    assert samples == {
        ("sidekiq", "default"): 3,
        ("sidekiq", "mailers"): 2,
        ("rq", "default"): 3,
        ("rq", "reports"): 1,
        ("celery", "celery"): 1,
        ("celery", "high"): 2,
    }
    assert by_queue(report, "celery")["high"].latency is not None
    result = queue_metrics("once", env={"REDIS_URL": reader_url})
    assert result.returncode == 0 and result.stderr == ""
    assert client.acl_log() == []


def test_every_key_is_unchanged_after_1000_ticks(all_three, client):
    before = snapshot(client)
    assert len(before) > 15
    collector = make_collector(all_three)
    for _ in range(1000):
        report = collector.tick()
    assert snapshot(client) == before
    # Dead workers are skipped, and stay in their sets: no clean-up, as rq and Sidekiq would do.
    assert [
        (system.backend, figure.name, figure.value)
        for system in report.systems
        for figure in system.figures
        if figure.name in ("processes", "workers")
    ] == [("sidekiq", "processes", 1), ("rq", "workers", 1)]
    assert client.scard("processes") == client.scard("rq:workers") == 2


def test_a_user_denied_scan_gets_one_clear_line_and_once_and_doctor_still_finish(all_three, client):
    """An ACL, a proxy or a renamed command refusing SCAN: Celery's exchanges cannot be looked
    for. The walk must not retry flat out (once and doctor would never finish), and say why."""
    client.execute_command(
        "ACL", "SETUSER", "noscan", "on", f">{READER_PASSWORD}", "~*", "-@all", "+@read", "-@dangerous", "-scan"
    )
    port = client.connection_pool.connection_kwargs["port"]
    url = f"redis://noscan:{READER_PASSWORD}@127.0.0.1:{port}/0"
    once = queue_metrics("once", env={"REDIS_URL": url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery"}, timeout=30)
    assert once.returncode == 1, once.stderr  # it finishes, and its status says the reading had an error
    assert "sample#queue.sidekiq.default.size=" in once.stdout  # the rest is read as ever
    (line,) = [line for line in once.stderr.splitlines() if "SCAN" in line]
    assert line.startswith("queue-metrics: error: cannot look for queues in the keyspace (SCAN): ")
    doctor = queue_metrics("doctor", env={"REDIS_URL": url}, timeout=30)
    assert doctor.returncode == 1 and "SCAN" in doctor.stdout
