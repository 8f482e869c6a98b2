"""Dramatiq: messages sent by the real dramatiq library (RedisBroker) and drained by the real
`dramatiq` worker CLI. The references are Dramatiq's own: the broker's keys as its dispatch
script keeps them (no public count API: `broker.client.llen("dramatiq:<q>")` is the waiting count),
`RedisBroker.do_qsize` (what `broker.join` waits on), and each message's own `message_timestamp`
(`Message.decode`)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from helpers.collect import by_queue, collect, make_collector
from helpers.dramatiq_actors import declare
from helpers.process import queue_metrics
from helpers.workers import HELPERS, queue_figures, wait_for, worker_process
from queue_metrics.errors import PayloadError
from queue_metrics.systems.dramatiq import DramatiqSettings, message_created, split_messages_key

PAYLOADS = os.path.join(os.path.dirname(__file__), "payloads")


@pytest.fixture
def broker(redis_url):
    producer = RedisBroker(url=redis_url)
    yield producer
    producer.client.close()


@pytest.fixture
def actors(broker):
    return declare(broker)


def dramatiq_worker(url: str, namespace: str = "dramatiq"):
    """The real worker CLI: one process, one thread (it prefetches 2 messages, and up to 1000
    delayed ones)."""
    command = [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "dramatiq_actors"]
    command += ["--processes", "1", "--threads", "1", "--path", HELPERS]
    return worker_process(command, {"DRAMATIQ_REDIS_URL": url, "DRAMATIQ_NAMESPACE": namespace})


def waiting_ids(client, queue: str, namespace: str = "dramatiq") -> list:
    return client.lrange(f"{namespace}:{queue}", 0, -1)


def held(client, queue: str) -> int:
    """Messages workers fetched and have not acknowledged: the sizes of their ack sets."""
    return sum(client.scard(key) for key in client.scan_iter(f"dramatiq:__acks__.*.{queue}"))


def created(client, queue: str, message_id: bytes, namespace: str = "dramatiq") -> float:
    """The message's creation time, epoch seconds, as Dramatiq decodes it."""
    return Message.decode(client.hget(f"{namespace}:{queue}.msgs", message_id)).message_timestamp / 1000


def test_size_is_the_waiting_list_and_latency_the_first_sent(redis_url, client, broker, actors):
    first = actors.nap.send(0.1)
    time.sleep(1.0)
    actors.nap.send(0.2)
    actors.nap.send(0.3)
    actors.quick.send()
    actors.quick.send_with_options(delay=600_000)
    report = collect(redis_url)
    now = time.time()
    samples = by_queue(report, "dramatiq")
    assert report.backends == ("dramatiq",) and report.errors == ()
    assert {name: sample.size for name, sample in samples.items()} == {
        queue: broker.client.llen(f"dramatiq:{queue}") for queue in ("default", "low")
    }
    assert samples["default"].size == 3
    # The list's index 0 is the first message sent (dispatch.lua: RPUSH, workers LPOP).
    assert waiting_ids(client, "default")[0].decode() == first.options["redis_message_id"]
    expected = now - first.message_timestamp / 1000
    assert expected >= 1.0
    assert samples["default"].latency == pytest.approx(expected, abs=0.5)
    assert samples["low"].latency == pytest.approx(0.0, abs=0.5)
    # Dramatiq's own count (do_qsize, for a broker that fetched nothing) is every message of the
    # queue and its delay queue: waiting + unacked + delayed.
    for queue in ("default", "low"):
        figures = queue_figures(report, "dramatiq", queue)
        assert samples[queue].size + figures["unacked"] + figures["delayed"] == broker.do_qsize(queue)
    assert queue_figures(report, "dramatiq", "low") == {"unacked": 0, "delayed": 1, "dead": 0}


def test_a_steady_head_is_read_once_then_known_by_its_id(redis_url, client, actors):
    actors.nap.send(0.1)
    time.sleep(1.0)
    actors.nap.send(0.1)
    collector = make_collector(redis_url)
    ticks = []
    for _ in range(3):
        report = collector.tick()
        ticks.append((report.round_trips, by_queue(report)["default"].latency, time.time()))
    # Tick 1: walk, the queue is new (2), its head message (3); then the head is known (1).
    assert [rounds for rounds, _, _ in ticks] == [3, 1, 1]
    head = waiting_ids(client, "default")[0]
    for _, latency, now in ticks:
        assert latency == pytest.approx(now - created(client, "default", head), abs=0.5)
    client.lpop("dramatiq:default")  # what a worker's fetch does: the next message is the head
    report = collector.tick()
    assert report.round_trips == 2
    head = waiting_ids(client, "default")[0]
    assert by_queue(report)["default"].latency == pytest.approx(time.time() - created(client, "default", head), abs=0.5)


def test_a_real_worker_draining_a_backlog_gives_dramatiqs_figures_at_every_step(redis_url, client, actors):
    collector = make_collector(redis_url)
    with dramatiq_worker(redis_url):
        actors.nap.send(3)
        wait_for(lambda: held(client, "default") == 1, "the worker to fetch the first message", 60)
        for _ in range(4):
            actors.nap.send(0.8)
            time.sleep(0.3)
        time.sleep(1.0)
        checked = []
        deadline = time.monotonic() + 90
        while 0 not in checked:
            assert time.monotonic() < deadline, f"the backlog did not drain: {checked}"
            before = (waiting_ids(client, "default"), held(client, "default"))
            report = collector.tick()
            now = time.time()
            after = (waiting_ids(client, "default"), held(client, "default"))
            ids, unacked = before
            if after != before or (checked and checked[-1] == len(ids)):
                time.sleep(0.05)  # the worker moved meanwhile, or this step is checked: look again
                continue
            sample = by_queue(report)["default"]
            assert report.errors == ()
            assert sample.size == len(ids) == client.llen("dramatiq:default")
            expected = now - created(client, "default", ids[0]) if ids else 0.0
            assert sample.latency == pytest.approx(expected, abs=0.5), f"{len(ids)} messages waiting"
            assert queue_figures(report, "dramatiq", "default")["unacked"] == unacked
            checked.append(len(ids))
        # The drained queue's keys are gone; it is still reported, empty.
        wait_for(lambda: not client.exists("dramatiq:default.msgs"), "the last message to be acknowledged")
        sample = by_queue(collector.tick())["default"]
        assert (sample.size, sample.latency) == (0, 0.0)
    assert len(checked) >= 3 and checked[0] >= 2, checked


def test_delayed_and_dead_letters_with_a_real_worker(redis_url, client, broker, actors):
    with dramatiq_worker(redis_url):
        actors.fail.send()
        wait_for(lambda: client.exists("dramatiq:default.XQ"), "the failed message to be dead-lettered", 60)
        actors.nap.send_with_options(args=(0,), delay=600_000)
        actors.nap.send_with_options(args=(0,), delay=600_000)
        # The worker fetches delayed messages at once and holds them until their eta.
        wait_for(lambda: held(client, "default.DQ") == 2, "the worker to hold the delayed messages")
        report = collect(redis_url)
    assert report.errors == ()
    assert client.type("dramatiq:default.XQ") == b"zset"
    assert client.llen("dramatiq:default.DQ") == 0
    assert queue_figures(report, "dramatiq", "default") == {
        "unacked": 0,
        "delayed": client.hlen("dramatiq:default.DQ.msgs"),
        "dead": client.zcard("dramatiq:default.XQ"),
    }
    assert queue_figures(report, "dramatiq", "default")["delayed"] == 2
    assert queue_figures(report, "dramatiq", "default")["dead"] == 1
    assert by_queue(report)["default"].size == 0


def test_due_delayed_messages_without_a_worker_count_as_delayed(redis_url, client, broker, actors):
    """Only a worker moves a due delayed message to its queue: with none running, it stays in
    `<q>.DQ` (its eta is inside the message only) and counts in `delayed`, not in `size`."""
    actors.quick.send_with_options(delay=1)
    actors.quick.send_with_options(delay=600_000)
    time.sleep(0.1)
    report = collect(redis_url)
    assert client.llen("dramatiq:low.DQ") == 2
    assert (by_queue(report)["low"].size, queue_figures(report, "dramatiq", "low")["delayed"]) == (0, 2)


def test_namespaces_detected_or_set(redis_url, client, actors):
    shop = RedisBroker(url=redis_url, namespace="shop")
    shop_actors = declare(shop)
    shop_actors.nap.send(0.1)
    shop_actors.nap.send(0.1)
    actors.nap.send(0.1)
    # Another program's `.msgs` hash, in a namespace Dramatiq never wrote __heartbeats__ to.
    client.hset("chat:room.msgs", "1", "hello")
    client.rpush("chat:room", "1")
    report = collect(redis_url)
    assert report.errors == ()
    assert {name: sample.size for name, sample in by_queue(report).items()} == {"default": 1, "shop:default": 2}
    only_shop = collect(redis_url, QUEUE_METRICS_DRAMATIQ_NAMESPACE="shop")
    assert {name: sample.size for name, sample in by_queue(only_shop).items()} == {"default": 2}
    assert only_shop.errors == ()
    shop.client.close()


def test_named_queues_are_read_without_messages_and_idle_queues_stay(redis_url, client, actors):
    samples = by_queue(collect(redis_url, QUEUE_METRICS_DRAMATIQ_QUEUES="default,reports"))
    assert {name: (sample.size, sample.latency) for name, sample in samples.items()} == {
        "default": (0, 0.0),
        "reports": (0, 0.0),
    }
    collector = make_collector(redis_url)
    message = actors.quick.send()
    assert by_queue(collector.tick())["low"].size == 1
    client.lrem("dramatiq:low", 1, message.options["redis_message_id"])
    client.hdel("dramatiq:low.msgs", message.options["redis_message_id"])
    assert not client.exists("dramatiq:low", "dramatiq:low.msgs")
    for _ in range(2):  # a whole walk pass finds nothing of it now
        collector.walk(time.monotonic() + 0.5)
        sample = by_queue(collector.tick())["low"]
        assert (sample.size, sample.latency) == (0, 0.0)


def test_bad_input_is_one_line_and_spares_the_other_queues(redis_url, client, broker, actors):
    def send(queue: str):
        return broker.enqueue(Message(queue_name=queue, actor_name="nap", args=(0,), kwargs={}, options={}))

    def message_key(message) -> tuple:
        return f"dramatiq:{message.queue_name}.msgs", message.options["redis_message_id"]

    good = actors.nap.send(0.1)
    missing = send("missing")
    send("missing")
    client.hdel(*message_key(missing))  # the head message deleted from the hash, still listed
    pickled = send("pickled")
    client.hset(*message_key(pickled), b"\x80\x04\x95pickled")
    wrong_time = send("wrong_time")
    payload = json.loads(client.hget(*message_key(wrong_time)))
    payload["message_timestamp"] = "yesterday"
    client.hset(*message_key(wrong_time), json.dumps(payload))
    send("wrong_type")
    client.delete("dramatiq:wrong_type")
    client.set("dramatiq:wrong_type", "not a list")
    send("dead_wrong")
    client.rpush("dramatiq:dead_wrong.XQ", "x")
    odd = ["my queue", "{tag}", "naïve"]
    for name in odd:
        send(name)
    report = collect(redis_url)
    samples = by_queue(report)
    assert samples["default"].size == 1 and samples["default"].latency is not None
    assert good.options["redis_message_id"].encode() == waiting_ids(client, "default")[0]
    for name in odd:
        assert (samples[name].size, samples[name].latency is not None) == (1, True), name
    assert (samples["missing"].size, samples["missing"].latency) == (2, None)
    assert (samples["pickled"].size, samples["pickled"].latency) == (1, None)
    assert (samples["wrong_time"].size, samples["wrong_time"].latency) == (1, None)
    assert "wrong_type" not in samples
    assert (samples["dead_wrong"].size, "dead" in queue_figures(report, "dramatiq", "dead_wrong")) == (1, False)
    errors = sorted(report.errors)
    assert len(errors) == 5, errors
    assert all(error.startswith('dramatiq queue "') and "\n" not in error for error in errors)
    by_name = {error.split('"')[1]: error for error in errors}
    assert "is not in its queue's .msgs hash" in by_name["missing"]
    assert "not JSON" in by_name["pickled"]
    assert "message_timestamp is not a number: 'yesterday'" in by_name["wrong_time"]
    assert "wrong type" in by_name["wrong_type"]
    assert "dead unknown" in by_name["dead_wrong"] and "sorted set" in by_name["dead_wrong"]


@pytest.mark.parametrize(
    "name",
    ["dramatiq_message.json", "dramatiq_delayed_message.json", "dramatiq_nested_timestamp_message.json"],
)
def test_message_created_is_the_messages_own_timestamp(name):
    with open(os.path.join(PAYLOADS, name), "rb") as captured:
        payload = captured.read()
    expected = json.loads(payload)["message_timestamp"] / 1000
    assert message_created(payload) == expected
    # Any JSON layout gives the same (a custom encoder, spaces, another field order).
    spaced = json.dumps(dict(reversed(list(json.loads(payload).items()))), indent=1).encode()
    assert message_created(spaced) == expected


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\x80\x04\x95pickled", "message is not JSON"),
        (b"[1, 2]", "message is JSON but not an object"),
        (b'{"message_id": "x"}', "message_timestamp is missing, not a timestamp"),
        (b'{"message_timestamp": true}', "message_timestamp is a boolean, not a timestamp"),
        (b'{"message_timestamp": 12}', "message_timestamp is before the year 2000"),
        (b'{"a": {"message_timestamp":1796613194619}}', "message_timestamp is missing"),
    ],
)
def test_message_created_refuses_what_is_not_a_time(payload, reason):
    with pytest.raises(PayloadError, match=reason):
        message_created(payload)


def test_keys_of_messages_name_their_namespace_and_queue():
    assert split_messages_key("dramatiq:default.msgs") == ("dramatiq", "default")
    assert split_messages_key("dramatiq:default.DQ.msgs") == ("dramatiq", "default")
    assert split_messages_key("dramatiq:default.XQ.msgs") == ("dramatiq", "default")
    assert split_messages_key("app:eu:my queue.msgs") == ("app:eu", "my queue")
    for other in ("dramatiq:default", "plain.msgs", "dramatiq:.msgs", "dramatiq:.DQ.msgs"):
        assert split_messages_key(other) is None, other


def test_settings():
    assert DramatiqSettings.from_env({}) == DramatiqSettings((), None)
    settings = DramatiqSettings.from_env(
        {"QUEUE_METRICS_DRAMATIQ_NAMESPACE": " shop ", "QUEUE_METRICS_DRAMATIQ_QUEUES": "a, b,a"}
    )
    assert settings == DramatiqSettings(("a", "b"), "shop")


def test_once_and_doctor_show_dramatiq(redis_url, actors):
    actors.nap.send(0.1)
    env = {"REDIS_URL": redis_url}
    once = queue_metrics("once", "--format", "json", env=env)
    assert once.returncode == 0, once.stderr
    document = json.loads(once.stdout)
    assert "dramatiq" in json.dumps(document) and '"default"' in once.stdout
    doctor = queue_metrics("doctor", env=env)
    assert "dramatiq: in use: 1 queue(s) found in namespace(s) 'dramatiq'" in doctor.stdout, doctor.stdout
    lines = queue_metrics("once", env=env)
    assert "sample#queue.dramatiq.default.size=1 " in lines.stdout, lines.stdout
    assert "sample#queue.dramatiq.default.delayed=0" in lines.stdout, lines.stdout


def test_without_extras_only_size_and_latency_are_read(redis_url, actors):
    actors.nap.send(0.1)
    actors.nap.send_with_options(args=(0,), delay=600_000)
    report = collect(redis_url, QUEUE_METRICS_EXTRAS="false")
    (sample,) = report.samples
    assert (sample.size, sample.figures, report.errors) == (1, (), ())
    assert sample.latency is not None
