"""The tick as a whole, against a real redis-server: detection, round trips, read-only, errors."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue

from helpers.collect import by_queue, collect, make_collector, sidekiq

READ_COMMANDS = {"smembers", "llen", "lindex", "hget", "exists", "scan", "dbsize", "ping", "select", "auth", "info",
                 "zcard", "get", "hmget", "hlen", "hscan"}


def command_counts(client) -> dict:
    return {name[len("cmdstat_"):]: stats["calls"]
            for name, stats in client.info("commandstats").items()}


def fill_all_three(client, url):
    sidekiq(url, {"enqueue": {"default": 2, "mailers": 1}})
    Queue("default", connection=client).enqueue("builtins.len", "abc")
    client.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
    client.lpush("celery", json.dumps({"headers": {}, "properties": {"published_at": time.time()}}))


def test_three_backends_at_once_with_backend_in_names(redis_url, client):
    fill_all_three(client, redis_url)
    report = collect(redis_url)
    assert report.backends == ("sidekiq", "rq", "celery")
    assert {(s.backend, s.queue, s.size) for s in report.samples} == {
        ("sidekiq", "default", 2), ("sidekiq", "mailers", 1), ("rq", "default", 1), ("celery", "celery", 1)}
    assert (report.round_trips, report.scan_round_trips) == (3, 1)  # a walk step, then three


def test_pinned_backends_read_only_those(redis_url, client):
    fill_all_three(client, redis_url)
    report = collect(redis_url, QUEUE_METRICS_BACKENDS="rq")
    assert report.backends == ("rq",)
    assert {s.backend for s in report.samples} == {"rq"}
    assert report.round_trips == 3


def test_nothing_there_reports_nothing_and_no_error(redis_url):
    report = collect(redis_url)
    assert (report.samples, report.errors, report.backends, report.redis_ok) == ((), (), (), True)


@pytest.mark.parametrize("queues", [10, 10000])
def test_round_trips_do_not_grow_with_queues(redis_url, client, queues):
    pipe = client.pipeline(transaction=False)
    for index in range(queues):
        pipe.sadd("queues", f"q{index}")
        pipe.lpush(f"queue:q{index}", json.dumps({"enqueued_at": time.time()}))
        pipe.sadd("rq:queues", f"rq:queue:r{index}")
        pipe.rpush(f"rq:queue:r{index}", f"job{index}")
        pipe.hset(f"rq:job:job{index}", "enqueued_at", "2026-11-23T00:00:00.000000Z")
        pipe.sadd("_kombu.binding.celery", f"c{index}\x06\x16\x06\x16c{index}")
        pipe.lpush(f"c{index}", "{}")
    pipe.execute()
    collector = make_collector(redis_url)
    first = collector.tick()
    # The first tick: a keyspace walk (SCAN ... COUNT 1000, one step a round trip, apart from the
    # tick's reads), then the registries, every queue, RQ's job hashes.
    assert first.round_trips == 3
    assert 1 <= first.scan_round_trips <= client.dbsize() // 1000 + 2
    # Then the known queues ride along with the registries: only RQ's job hashes need a second.
    steady = collector.tick()
    assert steady.round_trips == 2
    assert len(steady.samples) == 3 * queues and steady.errors == ()
    assert {s.queue: s.size for s in steady.samples} == {s.queue: s.size for s in first.samples}
    # New queues of every kind: read once the registry names them, never more than three trips.
    client.sadd("queues", "new"), client.lpush("queue:new", json.dumps({"enqueued_at": time.time()}))
    client.sadd("rq:queues", "rq:queue:new"), client.rpush("rq:queue:new", "jobnew")
    client.hset("rq:job:jobnew", "enqueued_at", "2026-11-23T00:00:00.000000Z")
    client.sadd("_kombu.binding.celery", "cnew\x06\x16\x06\x16cnew"), client.lpush("cnew\x06\x169", "{}")
    grown = collector.tick()
    assert grown.round_trips == 3
    assert len(grown.samples) == 3 * queues + 3 and grown.errors == ()
    sidekiq_only = make_collector(redis_url, QUEUE_METRICS_BACKENDS="sidekiq")
    sidekiq_only.tick()
    assert sidekiq_only.tick().round_trips == 1


def test_only_read_commands_are_sent(redis_url, client):
    fill_all_three(client, redis_url)
    client.config_resetstat()
    collector = make_collector(redis_url)
    for _ in range(5):
        collector.tick()
    used = set(command_counts(client)) - {"config|resetstat", "info"}
    assert used, "the tick sent no command at all"
    assert used <= READ_COMMANDS, used - READ_COMMANDS


def test_wrong_types_and_missing_queues_lose_only_that_queue(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"good": 1}})
    client.sadd("queues", "hash", "missing", "garbage")
    client.hset("queue:hash", "a", "b")  # a hash where a list should be
    client.lpush("queue:garbage", b"\x00\xffnot json")
    report = collect(redis_url)
    samples = by_queue(report)
    assert "hash" not in samples  # size unknown: no made-up zero
    assert (samples["missing"].size, samples["missing"].latency) == (0, 0.0)
    assert (samples["garbage"].size, samples["garbage"].latency) == (1, None)
    assert samples["good"].latency is not None
    assert len(report.errors) == 2
    assert any('"hash"' in error and "wrong type" in error for error in report.errors)
    assert any('"garbage"' in error and "not JSON" in error for error in report.errors)


def test_registry_of_the_wrong_type_does_not_silence_other_backends(redis_url, client):
    client.set("queues", "oops")
    Queue("default", connection=client).enqueue("builtins.len", "abc")
    report = collect(redis_url)
    assert by_queue(report, "rq")["default"].size == 1
    assert any("sidekiq registry" in error for error in report.errors)


def test_unreachable_redis_is_one_clear_error_and_no_samples(make_server):
    server = make_server()
    server.stop()
    report = collect(f"redis://:hunter2secret@127.0.0.1:{server.port}/0")
    assert report.redis_ok is False and report.samples == ()
    assert report.errors == (f"cannot connect to Redis at redis://127.0.0.1:{server.port}/0: "
                             "connection refused (is it running?)",)


def test_a_queue_that_leaves_its_registry_is_dropped_without_a_word(redis_url, client):
    client.sadd("queues", "a", "gone")
    client.lpush("queue:a", json.dumps({"enqueued_at": time.time()}))
    client.lpush("queue:gone", "not json")
    collector = make_collector(redis_url)
    assert len(collector.tick().errors) == 1
    client.srem("queues", "gone")  # read early this tick, but no longer listed
    report = collector.tick()
    assert [s.queue for s in report.samples] == ["a"] and report.errors == ()
