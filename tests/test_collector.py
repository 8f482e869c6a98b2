"""The tick as a whole, against a real redis-server: detection, round trips, read-only, errors."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue

from helpers.collect import by_queue, collect, make_collector, sidekiq
from helpers.workers import add_workers, queue_figures, system_figures
from queue_metrics.outputs.format import json_document, librato_lines
from queue_metrics.systems.celery import HELD_SCAN_COUNT

READ_COMMANDS = {
    "smembers",
    "hgetall",
    "zrangebyscore",
    "llen",
    "lindex",
    "lrange",
    "zrange",
    "zcount",
    "lpos",
    "hget",
    "exists",
    "scan",
    "dbsize",
    "ping",
    "select",
    "auth",
    "info",
    "zcard",
    "get",
    "hmget",
    "hlen",
    "hscan",
    "strlen",
}


def command_counts(client) -> dict:
    return {name[len("cmdstat_") :]: stats["calls"] for name, stats in client.info("commandstats").items()}


def fill_all_three(client, url):
    sidekiq(url, {"enqueue": {"default": 2, "mailers": 1}})
    Queue("default", connection=client).enqueue("builtins.len", "abc")
    client.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
    client.lpush("celery", json.dumps({"headers": {}, "properties": {"published_at": time.time()}}))


def test_three_backends_at_once_with_backend_in_names(redis_url, client):
    fill_all_three(client, redis_url)
    collector = make_collector(redis_url)
    report = collector.tick()
    assert report.backends == ("sidekiq", "rq", "celery")
    assert {(s.backend, s.queue, s.size) for s in report.samples} == {
        ("sidekiq", "default", 2),
        ("sidekiq", "mailers", 1),
        ("rq", "default", 1),
        ("celery", "celery", 1),
    }
    # A step of each keyspace walk (Celery's bindings, BullMQ's job counters, Dramatiq's messages).
    assert (report.round_trips, report.scan_round_trips) == (3, len(collector.walks))


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
    add_workers(client)
    collector = make_collector(redis_url)
    first = collector.tick()
    # The first tick: a keyspace walk (SCAN ... COUNT 1000, one step a round trip, apart from the
    # tick's reads), then the registries and system figures, every queue and the workers' hashes,
    # RQ's job hashes.
    assert first.round_trips == 3
    walks = len(collector.walks)
    assert walks <= first.scan_round_trips <= walks * (client.dbsize() // 1000 + 2)
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
    assert [len(system.figures) for system in grown.systems] == [9, 2, 1]
    sidekiq_only = make_collector(redis_url, QUEUE_METRICS_BACKENDS="sidekiq")
    sidekiq_only.tick()
    assert sidekiq_only.tick().round_trips == 1
    # A process that starts has its hash read in a follow-up once; the next ticks read it at once.
    add_workers(client, "2")
    assert [sidekiq_only.tick().round_trips for _ in range(2)] == [2, 1]


def test_only_read_commands_are_sent(redis_url, client):
    fill_all_three(client, redis_url)
    add_workers(client)
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
    # Auto mode: a string named `queues` is some other program's key, not a broken Sidekiq.
    report = collect(redis_url)
    assert by_queue(report, "rq")["default"].size == 1
    assert report.errors == () and report.backends == ("rq",)
    # Sidekiq pinned: then it is Sidekiq's registry, and its error is said.
    pinned = collect(redis_url, QUEUE_METRICS_BACKENDS="sidekiq,rq")
    assert by_queue(pinned, "rq")["default"].size == 1
    assert any("sidekiq registry" in error and "wrong type" in error for error in pinned.errors)


def test_a_binding_separator_that_does_not_match_is_one_line_per_key(redis_url, client):
    client.sadd("_kombu.binding.celery", *[f"q{index}::q{index}" for index in range(50)])  # an app with sep=":"
    report = collect(redis_url)
    assert report.backends == ("celery",)
    (error,) = report.errors
    assert "ignoring 50 binding(s)" in error and "QUEUE_METRICS_CELERY_SEP" in error
    assert {s.queue for s in collect(redis_url, QUEUE_METRICS_CELERY_SEP=":").samples} == {
        f"q{index}" for index in range(50)
    }


def test_unreachable_redis_is_one_clear_error_and_no_samples(make_server):
    server = make_server()
    server.stop()
    report = collect(f"redis://:hunter2secret@127.0.0.1:{server.port}/0")
    assert report.redis_ok is False and report.samples == ()
    assert report.errors == (
        f"cannot connect to Redis at redis://127.0.0.1:{server.port}/0: connection refused (is it running?)",
    )


def test_a_queue_that_leaves_its_registry_is_dropped_without_a_word(redis_url, client):
    client.sadd("queues", "a", "gone")
    client.lpush("queue:a", json.dumps({"enqueued_at": time.time()}))
    client.lpush("queue:gone", "not json")
    collector = make_collector(redis_url)
    assert len(collector.tick().errors) == 1
    client.srem("queues", "gone")  # read early this tick, but no longer listed
    report = collector.tick()
    assert [s.queue for s in report.samples] == ["a"] and report.errors == ()


EXTRA_READS = {"zcard", "get", "hmget", "hlen", "hscan"}


def test_extras_off_reads_and_reports_size_and_latency_only(redis_url, client):
    fill_all_three(client, redis_url)
    add_workers(client)
    client.config_resetstat()
    plain = make_collector(redis_url, QUEUE_METRICS_EXTRAS="off")
    reports = [plain.tick() for _ in range(2)]
    assert reports[-1].systems == () and all(sample.figures == () for sample in reports[-1].samples)
    assert not EXTRA_READS & set(command_counts(client))
    assert reports[-1].round_trips == 2  # the same as before extras existed (RQ's job hashes)

    full = make_collector(redis_url, QUEUE_METRICS_EXTRAS="on")
    report = [full.tick() for _ in range(2)][-1]
    assert report.round_trips == 2 and report.errors == ()
    assert [system.backend for system in report.systems] == ["sidekiq", "rq", "celery"]
    assert {(s.backend, s.queue): len(s.figures) for s in report.samples} == {
        ("sidekiq", "default"): 3,  # running, due, consumers
        ("sidekiq", "mailers"): 3,
        ("rq", "default"): 9,  # the six registries, running, due, consumers
        ("celery", "celery"): 1,
    }
    assert EXTRA_READS <= set(command_counts(client))


def test_a_queue_named_like_a_system_figure_stays_distinct(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"retry": 1, "dead": 3}, "jobs": [{"class": "X", "in": 600}]})
    client.zadd("retry", {"job-a": 1, "job-b": 2})
    report = collect(redis_url)
    pairs = [pair for line in librato_lines(report) for pair in line.split()]
    names = [pair.split("=")[0] for pair in pairs]
    assert len(names) == len(set(names))
    assert {
        "sample#queue.sidekiq.retry.size=1",
        "sample#queue.sidekiq.retry=2",
        "sample#queue.sidekiq.dead.size=3",
        "sample#queue.sidekiq.dead=0",
        "sample#queue.sidekiq.scheduled=1",
    } <= set(pairs)
    document = json_document(report)
    assert {queue["queue"]: queue["size"] for queue in document["queues"]} == {"retry": 1, "dead": 3}
    assert document["systems"][0]["retry"] == 2


def test_extras_of_the_wrong_type_or_unreadable_lose_only_that_figure(redis_url, client):
    fill_all_three(client, redis_url)
    add_workers(client)
    client.set("retry", "oops")
    client.hset("web.1:1:0123456789ab", "info", "not json")
    client.hset("rq:wip:default", "oops", "1")
    client.hset("unacked", "tag-garbage", "not json")
    report = collect(redis_url)
    sidekiq_figures = system_figures(report, "sidekiq")
    assert "retry" not in sidekiq_figures and sidekiq_figures["dead"].value == 0
    assert (sidekiq_figures["processes"].value, sidekiq_figures["busy"].value) == (1, 2)
    assert "concurrency" not in sidekiq_figures and "utilization" not in sidekiq_figures
    assert "started" not in queue_figures(report, "rq", "default")
    assert queue_figures(report, "rq", "default")["failed"] == 0
    assert system_figures(report, "celery")["unacked"].value == 2
    assert queue_figures(report, "celery", "celery") == {"unacked": 1}
    assert len(report.errors) == 4, report.errors
    assert any('sidekiq retry set "retry"' in error and "wrong type" in error for error in report.errors)
    assert any("sidekiq process" in error and "not JSON" in error for error in report.errors)
    assert any('rq queue "default": started registry' in error for error in report.errors)
    assert any("celery held messages" in error and "1 not JSON" in error for error in report.errors)


@pytest.mark.parametrize("held, per_queue", [(HELD_SCAN_COUNT - 1, True), (HELD_SCAN_COUNT * 3, False)])
def test_held_messages_per_queue_only_when_the_hash_is_small(redis_url, client, held, per_queue):
    fill_all_three(client, redis_url)
    client.sadd("_kombu.binding.celery", "reports\x06\x16\x06\x16reports")  # exchange celery, key reports
    routes = [("celery", "reports") if index % 3 == 0 else ("", "celery") for index in range(held)]
    entries = {f"tag-{index}": json.dumps([{"body": "x" * 100}, *route]) for index, route in enumerate(routes)}
    client.hset("unacked", mapping=entries)
    report = collect(redis_url)
    assert system_figures(report, "celery")["unacked"].value == held
    expected = {"celery": sum(1 for index in range(held) if index % 3), "reports": (held + 2) // 3}
    for queue, count in expected.items():
        assert queue_figures(report, "celery", queue) == ({"unacked": count} if per_queue else {})
    assert report.errors == ()


def test_a_head_that_changes_between_ticks_gives_its_own_latency(redis_url, client):
    # The oldest job of each queue is parsed once and remembered; a new oldest job must be read
    # afresh, and one that stays must keep ageing.
    now = time.time()
    client.sadd("queues", "default")
    client.lpush("queue:default", json.dumps({"jid": "a", "class": "W", "args": [], "enqueued_at": now - 100}))
    client.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
    client.lpush("celery", json.dumps({"headers": {}, "properties": {"published_at": now - 100}}))
    queue = Queue("rqdefault", connection=client)
    first_job = queue.enqueue("builtins.len", "abc")
    client.hset(f"rq:job:{first_job.id}", "enqueued_at", "2000-01-02T00:00:00.000000Z")
    collector = make_collector(redis_url)

    before = {(s.backend, s.queue): s.latency for s in collector.tick().samples}
    assert before[("sidekiq", "default")] >= 100 and before[("celery", "celery")] >= 100
    assert before[("rq", "rqdefault")] > 365 * 86400
    again = {(s.backend, s.queue): s.latency for s in collector.tick().samples}
    assert again[("sidekiq", "default")] >= before[("sidekiq", "default")]

    client.rpop("queue:default")
    client.lpush("queue:default", json.dumps({"jid": "b", "class": "W", "args": [], "enqueued_at": now - 5}))
    client.rpop("celery")
    client.lpush("celery", json.dumps({"headers": {}, "properties": {"published_at": now - 5}}))
    client.lpop("rq:queue:rqdefault")
    queue.enqueue("builtins.len", "def")
    after = {(s.backend, s.queue): s.latency for s in collector.tick().samples}
    assert 5 <= after[("sidekiq", "default")] < 100
    assert 5 <= after[("celery", "celery")] < 100
    assert after[("rq", "rqdefault")] < 60
