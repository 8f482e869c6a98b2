"""The RESP2 packing and parsing behind a tick's pipeline, on byte strings as Redis sends them,
and against a real redis-server with replies split across reads."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import List, Optional

import pytest

from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import RedisConnection, connect
from queue_metrics.datastores.redis.resp import CommandsTemplate, NameKey, ReplyParser, pack_commands, parse_replies
from queue_metrics.errors import RedisTimeout, RedisUnavailable, ReplyError
from queue_metrics.systems.contract import Batch


def test_pack_matches_the_protocol():
    assert pack_commands([("LLEN", b"queue:default"), ("LINDEX", "q\x06\x163", -1)]) == (
        b"*2\r\n$4\r\nLLEN\r\n$13\r\nqueue:default\r\n*3\r\n$6\r\nLINDEX\r\n$4\r\nq\x06\x163\r\n$2\r\n-1\r\n"
    )


def test_pack_keeps_undecodable_bytes_of_names():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert pack_commands([("LLEN", name)]) == b"*2\r\n$4\r\nLLEN\r\n$4\r\ncaf\xe9\r\n"


@pytest.mark.parametrize("name", [b"celery", b"caf\xe9 %d %s %%", b"", b"%b$3\r\n", b"x" * 70_000])
def test_a_template_filled_with_a_name_is_what_pack_commands_writes(name):
    # Fixed arguments of every kind, a % among them and in the keys' fixed parts, keys used twice.
    queue, step = NameKey(b"p%s:"), NameKey(b"p%s:", b"\x06\x163")
    commands = [
        ("LLEN", queue),
        ("EXISTS", step, NameKey(b"rq:wip:"), NameKey(b"", b"%d")),
        ("LINDEX", queue, -1),
        ("LPOS", step, "100%", b"%s\xff", 1, "MAXLEN", 10_000),
    ]
    template = CommandsTemplate(commands)
    concrete = [
        tuple(part.before + name + part.after if isinstance(part, NameKey) else part for part in command)
        for command in commands
    ]
    assert template.pack(name) == pack_commands(concrete)
    assert template.pack(name) == pack_commands(concrete)  # again, from the format kept for its length


def test_a_template_keeps_a_bounded_number_of_formats():
    template = CommandsTemplate([("LLEN", NameKey(b"queue:"))])
    for size in range(CommandsTemplate.MAX_FORMATS * 2):
        assert template.pack(b"q" * size) == pack_commands([("LLEN", b"queue:" + b"q" * size)])
    assert len(template._formats) <= CommandsTemplate.MAX_FORMATS


def test_each_system_packs_its_queue_batch_as_pack_commands_would():
    from queue_metrics.errors import ErrorLog
    from queue_metrics.systems.celery import Celery, CelerySettings
    from queue_metrics.systems.rq import RQ
    from queue_metrics.systems.sidekiq import Sidekiq, SidekiqSettings

    name = b"caf\xe9 %s".decode("utf-8", "surrogateescape")
    first = next(Sidekiq(SidekiqSettings(namespace="ns")).read_queue(name, ErrorLog()))
    key = b"ns:queue:caf\xe9 %s"
    assert first == (pack_commands([("LLEN", key), ("LINDEX", key, -1)]), 2)
    rq = RQ()
    first = next(rq.read_queue(name, ErrorLog()))
    registries = [f"rq:{kind}:{name}" for kind in ("wip", "failed", "finished", "deferred", "scheduled", "canceled")]
    key = b"rq:queue:caf\xe9 %s"
    head = [("LLEN", key), ("LINDEX", key, 0), ("LINDEX", key, -1)]
    # A queue new to the reader has its registries counted at once (issue 27's figures ride with
    # them: the started executions and the earliest scheduled job).
    counted = [("ZCARD", registry) for registry in registries]
    activity = [("ZRANGE", registries[0], 0, 99, "WITHSCORES"), ("ZRANGE", registries[4], 0, 0, "WITHSCORES")]
    assert first == (pack_commands([*head, *counted, *activity]), 11)
    first = next(Celery(CelerySettings(keyprefix="p:")).read_queue(name, ErrorLog()))
    base = b"p:caf\xe9 %s"
    lists = [base, *[base + b"\x06\x16%d" % step for step in (3, 6, 9)]]
    probed = [base + b"\x06\x16%d" % step for step in (1, 2, 4, 5, 7, 8)]
    expected = [*[("LLEN", key) for key in lists], ("EXISTS", *probed), ("LINDEX", base, -1), ("LINDEX", base, 0)]
    assert first == (pack_commands(expected), 7)


@pytest.mark.parametrize(
    "raw, value",
    [
        (b":42\r\n", 42),
        (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"+OK\r\n", b"OK"),
        (b"*3\r\n$1\r\na\r\n:7\r\n$-1\r\n", [b"a", 7, None]),
        (b"*0\r\n", []),
    ],
)
def test_parse_each_reply_kind(raw, value):
    assert parse_replies(raw) == ([value], False)


def test_nested_arrays_as_scan_and_hscan_answer():
    raw = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n:5\r\n"
    assert parse_replies(raw) == ([[b"0", [b"a", [1]]], 5], False)


def test_a_reply_cut_anywhere_comes_out_whole_once():
    raw = b"*3\r\n$1\r\na\r\n:7\r\n$-1\r\n$5\r\nhe\r\no\r\n*0\r\n-ERR no\r\n+OK\r\n"
    whole, _ = parse_replies(raw)
    for cut in range(len(raw) + 1):
        for second in range(cut, len(raw) + 1):
            parser, replies = ReplyParser(), []
            for part in (raw[:cut], raw[cut:second], raw[second:]):
                parser.feed(part, replies)
            assert [str(r) if isinstance(r, Exception) else r for r in replies] == [
                str(r) if isinstance(r, Exception) else r for r in whole
            ]
            assert not parser.pending


def test_a_long_array_cut_into_many_reads_comes_out_whole():
    # Ten thousand names in one SMEMBERS reply, cut into 4 KB reads, as a slow link delivers them.
    names = [b"queue-%05d" % index for index in range(10_000)]
    raw = b"*%d\r\n" % len(names) + b"".join(b"$%d\r\n%s\r\n" % (len(name), name) for name in names)
    parser, replies = ReplyParser(), []
    for start in range(0, len(raw), 4096):
        parser.feed(raw[start : start + 4096], replies)
    assert replies == [names]


def test_errors_stand_in_their_commands_place():
    (reply,), _ = parse_replies(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert isinstance(reply, ReplyError) and reply.code == "WRONGTYPE"
    assert str(reply).startswith("WRONGTYPE")
    assert parse_replies(b"-unknown trouble\r\n")[0][0].code == "ERR"


@pytest.mark.parametrize("raw", [b":4", b"$5\r\nhel", b"$5\r\nhello", b"*2\r\n$1\r\na\r\n", b""])
def test_incomplete_replies_ask_for_more(raw):
    assert parse_replies(raw) == ([], bool(raw))


def test_an_unknown_reply_type_is_a_connection_error():
    with pytest.raises(RedisUnavailable):
        parse_replies(b"%1\r\n")


def connection_to(url: str, timeout: float = 5.0) -> RedisConnection:
    return connect(Settings.from_env({"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_TIMEOUT": str(timeout)}))


def test_read_replies_from_a_real_server_across_many_reads(redis_server, client):
    big = b"x" * 3_000_000
    client.rpush("list", big, b"small")
    commands = [("LINDEX", "list", 0), ("LLEN", "list"), ("LINDEX", "missing", 0), ("SMEMBERS", "list")] * 50
    replies = connection_to(redis_server.url).round_trip([pack_commands(commands)], len(commands))
    assert replies[0] == big and replies[1] == 2 and replies[2] is None
    assert isinstance(replies[3], ReplyError) and "WRONGTYPE" in str(replies[3])
    assert len(replies) == 200 and replies[196:199] == [big, 2, None]


def dribbling_proxy(port: int) -> str:
    """A URL for a proxy to the Redis on `port` that hands its replies back a few bytes at a time,
    so that a stream gets them over many reads, as from a Redis far away."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, target: socket.socket, piece: int) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                for start in range(0, len(data), piece):
                    target.sendall(data[start : start + piece])
                    if piece < 65536:
                        time.sleep(0.0002)
        except OSError:
            pass
        finally:
            target.close()

    def serve() -> None:
        downstream, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=pump, args=(downstream, upstream, 65536), daemon=True).start()
        pump(upstream, downstream, 7)

    threading.Thread(target=serve, daemon=True).start()
    return f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_a_stream_keeps_its_window_and_sends_follow_ups_given_on_delivery(redis_server, client):
    client.rpush("list", *[b"item-%d" % index for index in range(100)])
    pending = deque(Batch(pack_commands([("LINDEX", "list", index), ("LLEN", "list")]), 2) for index in range(100))
    delivered: List[list] = []
    sent = 0
    awaited_at_send: List[int] = []
    awaited_at_refill: List[int] = []  # at the first batch asked for after a delivery
    refilling = False

    def next_batch() -> Optional[Batch]:
        nonlocal sent, refilling
        if not pending:
            return None
        step = pending.popleft()
        awaited_at_send.append(sent - 2 * len(delivered))  # replies not yet delivered
        if not refilling:
            awaited_at_refill.append(awaited_at_send[-1])
            refilling = True
        sent += step.replies
        return step

    def deliver(values: list) -> None:
        nonlocal refilling
        refilling = False
        delivered.append(values)
        if values[0] == b"item-99":  # a follow-up, made from a reply, goes in the same stream
            pending.append(Batch(pack_commands([("LINDEX", "list", 0)]), 1))

    connection_to(dribbling_proxy(redis_server.port)).stream(next_batch, deliver, window=7)
    assert delivered[:100] == [[b"item-%d" % index, 100] for index in range(100)]
    assert delivered[100:] == [[b"item-0"]]
    assert max(awaited_at_send) < 7 and max(awaited_at_send) >= 5  # the window is used, never exceeded
    # Refilled in slices, once half the window is in: not one small write per delivered batch.
    assert max(awaited_at_refill) <= 3 and len(awaited_at_refill) < 50


def test_a_server_that_goes_silent_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    with silent:
        connection = connection_to(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.2)
        with pytest.raises(RedisTimeout):
            connection.round_trip([pack_commands([("LLEN", "queue")])], 1)


def test_rq_hand_packed_hget_equals_the_general_packing():
    from queue_metrics.systems.rq import enqueued_at_batch

    assert enqueued_at_batch([b"0f9c-\xff"]).packed == pack_commands([("HGET", b"rq:job:0f9c-\xff", "enqueued_at")])
    both = enqueued_at_batch([b"0f9c", b"a1"], b"{app}:job:")
    assert both.packed == pack_commands(
        [("HGET", b"{app}:job:0f9c", "enqueued_at"), ("HGET", b"{app}:job:a1", "enqueued_at")]
    )
    assert both.replies == 2


def test_hand_packed_lpos_is_what_pack_commands_writes():
    from queue_metrics.systems.observed import ListObservers, ListWatch

    key, message = b"q\x06\x169", b'{"headers": {"id": "x"}}'
    for newest_at_head, tail in ((True, ()), (False, ("COUNT", 2))):
        observers = ListObservers(newest_at_head)
        watch = observers._watches[key] = ListWatch()
        watch.newest = message
        rank = 1 if newest_at_head else -1
        expected = pack_commands([("LPOS", key, message, "RANK", rank, *tail, "MAXLEN", 10000)])
        assert observers.search(key).packed == expected
