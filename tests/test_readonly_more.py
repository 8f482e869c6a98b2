"""Read-only for the systems added after Sidekiq, RQ and Celery: real Resque (node-resque), BullMQ
and Dramatiq producers fill a Redis; a user allowed only read commands reads them all, is never
denied, and every key is byte-for-byte the same after the ticks."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from helpers.bullmq import BullDriver
from helpers.collect import make_collector
from helpers.dramatiq_actors import declare
from test_readonly import READER_PASSWORD, snapshot
from test_resque import active_job, enqueue


def test_a_read_only_user_reads_resque_bullmq_and_dramatiq_and_changes_no_key(redis_url, client):
    enqueue(redis_url, [active_job("default", "a"), {"queue": "default", "class": "Nap", "args": ["b", 0]}])
    with BullDriver("bullmq", redis_url) as driver:
        driver.call("add", queue="mail", count=2)
        driver.call("add", queue="mail", opts={"priority": 3})
        driver.call("add", queue="mail", opts={"delay": 1})  # due, with no worker to promote it
    broker = RedisBroker(url=redis_url)
    try:
        actors = declare(broker)
        actors.nap.send(0.1)
        actors.quick.send_with_options(delay=600_000)
    finally:
        broker.client.close()
    client.execute_command(
        "ACL", "SETUSER", "reader", "on", f">{READER_PASSWORD}", "~*", "-@all", "+@read", "-@dangerous"
    )
    port = client.connection_pool.connection_kwargs["port"]
    reader_url = f"redis://reader:{READER_PASSWORD}@127.0.0.1:{port}/0"
    client.acl_log_reset()
    before = snapshot(client)
    collector = make_collector(
        reader_url,
        QUEUE_METRICS_BACKENDS="resque,bullmq,dramatiq",
        QUEUE_METRICS_BULLMQ_QUEUES="mail",
        QUEUE_METRICS_DRAMATIQ_QUEUES="default,low",
    )
    for _ in range(200):
        report = collector.tick()
        assert report.errors == (), report.errors
    sizes = {(sample.backend, sample.queue): sample.size for sample in report.samples}
    assert sizes == {
        ("resque", "default"): 2,
        ("bullmq", "mail"): 4,
        ("dramatiq", "default"): 1,
        ("dramatiq", "low"): 0,
    }
    assert snapshot(client) == before
    assert client.acl_log() == []
