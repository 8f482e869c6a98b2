"""The StatsD/DogStatsD output: every datagram checked against the DogStatsD grammar, the real
`statsd` daemon's flushed values compared with the queues' real sizes, a receiver that is down."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.process import lines_of, queue_metrics, start
from helpers.producers import fill_three_systems, latency_within
from helpers.receivers import StatsdDaemon, UdpListener, free_udp_port
from helpers.watch import Watcher, collector_line
from queue_metrics.config import ConfigError
from queue_metrics.outputs import OutputSettings
from queue_metrics.outputs.statsd import MAX_DATAGRAM_BYTES, StatsdSettings, datagrams, statsd_lines
from queue_metrics.sample import COUNTER, DatastoreSection, Figure, QueueSample, SystemSample, TickReport

# DogStatsD: <name>:<value>|<g|c>[|#<key>:<value>[,<key>:<value>...]], one metric per line. A
# name holds no ':', '|', '#', ',' or space; a tag value none of ',', '|', '#' or line breaks.
NAME = r"[A-Za-z0-9._-]+"
TAG = r"[a-z_]+:[A-Za-z0-9.:_-]+"
DOGSTATSD_LINE = re.compile(
    rf"(?P<name>{NAME}):(?P<value>\d+(?:\.\d+)?)\|(?P<type>[gc])(?:\|#(?P<tags>{TAG}(?:,{TAG})*))?\Z"
)


def parse(datagram: bytes) -> list:
    """(name, value, type, tags dict) of every line; fails on any line off the grammar."""
    assert len(datagram) <= MAX_DATAGRAM_BYTES
    parsed = []
    for line in datagram.decode("ascii").split("\n"):
        match = DOGSTATSD_LINE.match(line)
        assert match, f"off the DogStatsD grammar: {line!r}"
        tags = dict(tag.split(":", 1) for tag in match["tags"].split(",")) if match["tags"] else {}
        parsed.append((match["name"], float(match["value"]), match["type"], tags))
    return parsed


def report_of(*samples: QueueSample, systems=()) -> TickReport:
    return TickReport(
        samples=tuple(samples),
        errors=(),
        backends=("sidekiq", "rq", "celery"),
        duration=0.0123,
        redis_ok=True,
        systems=tuple(systems),
    )


# --- pure functions, captured reports ----------------------------------------------------------


def test_tagged_lines_as_documented():
    report = report_of(
        QueueSample("sidekiq", "default", 12, 3.25),
        QueueSample("rq", "default", 2, None, (Figure("failed", 4),)),
        systems=[SystemSample("sidekiq", (Figure("failed", 5, kind=COUNTER), Figure("utilization", 0.5, "1")))],
    )
    assert statsd_lines(report, "queue", tags=True, dropped=3) == [
        "queue.size:12|g|#backend:sidekiq,queue:default",
        "queue.latency:3.25|g|#backend:sidekiq,queue:default",
        "queue.size:2|g|#backend:rq,queue:default",
        "queue.failed:4|g|#backend:rq,queue:default",
        # A system-wide figure keeps its system in its name: never summed with RQ's per-queue one.
        "queue.sidekiq.failed:5|c|#backend:sidekiq",
        "queue.sidekiq.utilization:0.5|g|#backend:sidekiq",
        "queue.collector.queues:2|g",
        "queue.collector.errors:0|g",
        "queue.collector.duration:0.012|g",
        "queue.collector.dropped:3|c",
    ]
    assert statsd_lines(report, "app.q", tags=True, source="web.1")[0] == (
        "app.q.size:12|g|#backend:sidekiq,queue:default,source:web.1"
    )


def test_untagged_lines_use_the_l2met_names():
    report = report_of(QueueSample("sidekiq", "default", 12, 3.25), QueueSample("rq", "a:b", 1, 0.0))
    lines = statsd_lines(report, "queue", tags=False)
    assert lines[:2] == ["queue.sidekiq.default.size:12|g", "queue.sidekiq.default.latency:3.25|g"]
    # ':' would end a StatsD name: such a queue name is cleaned and hashed, like other odd names.
    assert re.fullmatch(r"queue\.rq\.a_b_[0-9a-f]{8}\.size:1\|g", lines[2])
    assert lines[-1] == "queue.collector.duration:0.012|g"


def two_datastores() -> TickReport:
    """Sidekiq's `default` and its figures on two datastores (the second's names labeled), RQ's on
    the second only."""

    def section(label, queues, systems, labeled_queues=(), labeled_systems=()):
        where = f"redis://{label}.example.com:6379/0"
        return DatastoreSection(
            label,
            "redis",
            where,
            "X_URL",
            True,
            queues,
            systems,
            0,
            frozenset(labeled_queues),
            frozenset(labeled_systems),
        )

    return TickReport(
        samples=(
            QueueSample("sidekiq", "default", 2, 1.5),
            QueueSample("sidekiq", "default", 5, None),
            QueueSample("rq", "default", 1, None, (Figure("failed", 3),)),
        ),
        errors=(),
        backends=("sidekiq", "rq"),
        duration=0.0123,
        redis_ok=True,
        systems=(SystemSample("sidekiq", (Figure("retry", 4),)), SystemSample("sidekiq", (Figure("retry", 6),))),
        datastores=(
            section("redis", 1, 1),
            section("pink", 2, 1, {("sidekiq", "default")}, {"sidekiq"}),
        ),
    )


def test_each_datastores_lines_are_tagged_with_it_and_untagged_names_follow_the_l2met_rule():
    report = two_datastores()
    assert statsd_lines(report, "queue", tags=True, source="web.1") == [
        "queue.size:2|g|#backend:sidekiq,queue:default,datastore:redis,source:web.1",
        "queue.latency:1.5|g|#backend:sidekiq,queue:default,datastore:redis,source:web.1",
        "queue.sidekiq.retry:4|g|#backend:sidekiq,datastore:redis,source:web.1",
        "queue.size:5|g|#backend:sidekiq,queue:default,datastore:pink,source:web.1",
        "queue.size:1|g|#backend:rq,queue:default,datastore:pink,source:web.1",
        "queue.failed:3|g|#backend:rq,queue:default,datastore:pink,source:web.1",
        "queue.sidekiq.retry:6|g|#backend:sidekiq,datastore:pink,source:web.1",
        # The collector's figures are the tick's totals: no datastore.
        "queue.collector.queues:3|g|#source:web.1",
        "queue.collector.errors:0|g|#source:web.1",
        "queue.collector.duration:0.012|g|#source:web.1",
    ]
    assert statsd_lines(report, "queue", tags=False) == [
        "queue.sidekiq.default.size:2|g",
        "queue.sidekiq.default.latency:1.5|g",
        "queue.sidekiq.retry:4|g",
        "queue.pink.sidekiq.default.size:5|g",
        "queue.rq.default.size:1|g",
        "queue.rq.default.failed:3|g",
        "queue.pink.sidekiq.retry:6|g",
        "queue.collector.queues:3|g",
        "queue.collector.errors:0|g",
        "queue.collector.duration:0.012|g",
    ]
    # One datastore: its tag on every queue and system line; untagged names as without datastores.
    one = report._replace(samples=report.samples[:1], systems=report.systems[:1], datastores=report.datastores[:1])
    assert statsd_lines(one)[:3] == [
        "queue.size:2|g|#backend:sidekiq,queue:default,datastore:redis",
        "queue.latency:1.5|g|#backend:sidekiq,queue:default,datastore:redis",
        "queue.sidekiq.retry:4|g|#backend:sidekiq,datastore:redis",
    ]
    assert statsd_lines(one, tags=False) == statsd_lines(one._replace(datastores=()), tags=False)


def test_values_are_never_negative_or_signed():
    """A leading '-' or '+' turns a StatsD gauge into a change of the previous value."""
    report = report_of(QueueSample("sidekiq", "default", 0, -1.5, (Figure("odd", -3),)))
    for line in statsd_lines(report):
        assert DOGSTATSD_LINE.match(line), line
    assert statsd_lines(report)[1] == "queue.latency:0|g|#backend:sidekiq,queue:default"


@given(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=20, unique=True))
def test_any_queue_name_keeps_the_grammar_and_stays_distinct(names):
    report = report_of(*(QueueSample("rq", name, index, 1.0) for index, name in enumerate(names)))
    lines = statsd_lines(report)
    tag_values = set()
    for line in lines:
        match = DOGSTATSD_LINE.match(line)
        assert match, line
        if match["name"] == "queue.size":
            tag_values.add(dict(tag.split(":", 1) for tag in match["tags"].split(","))["queue"])
    assert len(tag_values) == len(names)
    for line in statsd_lines(report, tags=False):
        assert DOGSTATSD_LINE.match(line), line
    packed = list(datagrams(lines))
    assert all(datagram is not None for datagram, _ in packed)  # none too long
    assert b"\n".join(datagram for datagram, _ in packed).decode().split("\n") == lines


def test_many_metrics_per_datagram_and_none_over_1432_bytes():
    report = report_of(*(QueueSample("sidekiq", f"queue-{index:04d}", index, index / 7) for index in range(500)))
    lines = statsd_lines(report)
    packed = list(datagrams(lines))
    assert all(datagram is not None and len(datagram) <= MAX_DATAGRAM_BYTES for datagram, _ in packed)
    assert sum(count for _, count in packed) == len(lines) == 1003  # 500 sizes and latencies, 3 collector figures
    assert len(packed) < len(lines) / 10  # packed, not one per line
    assert max(len(datagram) for datagram, _ in packed) > MAX_DATAGRAM_BYTES - 100  # filled
    # A line no datagram can hold is dropped, counted, and the lines around it still go.
    assert list(datagrams(["a", "x" * 2000, "b"])) == [(None, 1), (b"a\nb", 2)]


def test_settings():
    assert StatsdSettings.from_env({}, "queue") == StatsdSettings("127.0.0.1", 8125, True)
    settings = StatsdSettings.from_env(
        {"QUEUE_METRICS_STATSD_ADDRESS": "[::1]:9125", "QUEUE_METRICS_STATSD_TAGS": "false"}, "queue"
    )
    assert settings == StatsdSettings("::1", 9125, False)
    assert StatsdSettings.from_env({"QUEUE_METRICS_STATSD_ADDRESS": "dd-agent:8125"}, "q").host == "dd-agent"
    for env, words in (
        ({"QUEUE_METRICS_STATSD_ADDRESS": "localhost"}, "QUEUE_METRICS_STATSD_ADDRESS must be"),
        ({"QUEUE_METRICS_STATSD_ADDRESS": "h:70000"}, "QUEUE_METRICS_STATSD_ADDRESS must be"),
        ({"QUEUE_METRICS_STATSD_TAGS": "maybe"}, "QUEUE_METRICS_STATSD_TAGS must be true or false"),
    ):
        with pytest.raises(ConfigError, match=words):
            StatsdSettings.from_env(env, "queue")
    with pytest.raises(ConfigError, match="QUEUE_METRICS_PREFIX must not contain ':'"):
        OutputSettings.from_env({"QUEUE_METRICS_OUTPUTS": "statsd"}, 30.0, "a:b")


# --- the real process, real producers, real receivers ------------------------------------------


def statsd_env(redis_url: str, port: int, **extra: str) -> dict:
    return {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "logs,statsd",
        "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{port}",
        **extra,
    }


def test_every_datagram_follows_the_grammar_and_carries_the_real_figures(redis_url):
    expected = fill_three_systems(redis_url)
    listener = UdpListener()
    try:
        start = time.time()
        result = queue_metrics("once", env=statsd_env(redis_url, listener.port))
        end = time.time()
        received = listener.collect(1.0)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # The log lines still come, untouched but for the collector's dropped counter.
    assert "sample#queue.sidekiq.default.size=3 " in result.stdout
    assert "count#queue.collector.dropped=0" in lines_of(result.stdout)[-1]

    assert received
    metrics = [metric for datagram in received for metric in parse(datagram)]
    sizes = {(t["backend"], t["queue"]): v for name, v, kind, t in metrics if name == "queue.size"}
    assert sizes == {key: reference.size for key, reference in expected.items()}
    latencies = {(t["backend"], t["queue"]): v for name, v, kind, t in metrics if name == "queue.latency"}
    assert set(latencies) == set(expected)
    for key, reference in expected.items():
        assert latency_within(latencies[key], reference, start, end), (key, latencies[key], reference, start, end)
    assert all(kind == "g" for name, _, kind, _ in metrics if name != "queue.collector.dropped")
    collector = {name: (value, kind) for name, value, kind, tags in metrics if name.startswith("queue.collector.")}
    assert collector["queue.collector.queues"] == (len(expected), "g")
    assert collector["queue.collector.dropped"] == (0, "c")


def test_without_tags_the_names_and_values_are_the_log_lines(redis_url):
    fill_three_systems(redis_url)
    listener = UdpListener()
    try:
        result = queue_metrics("once", env=statsd_env(redis_url, listener.port, QUEUE_METRICS_STATSD_TAGS="false"))
        received = listener.collect(1.0)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    metrics = [metric for datagram in received for metric in parse(datagram)]
    assert all(tags == {} for *_, tags in metrics)
    logged = {}
    for line in lines_of(result.stdout):
        for pair in line.split(" "):
            kind, _, rest = pair.partition("#")
            name, _, value = rest.partition("=")
            logged[name] = (float(value.rstrip("s")), "c" if kind == "count" else "g")
    # The same report, formatted twice: the same names, the same numbers.
    assert {name: (value, kind) for name, value, kind, _ in metrics} == logged


def test_the_real_statsd_daemon_aggregates_what_we_send(redis_url):
    expected = fill_three_systems(redis_url)
    daemon = StatsdDaemon()
    try:
        start = time.time()
        for tags in ("true", "false"):
            result = queue_metrics("once", env=statsd_env(redis_url, daemon.port, QUEUE_METRICS_STATSD_TAGS=tags))
            assert result.returncode == 0, result.stderr
        end = time.time()
        flush = daemon.wait_for_gauges(
            "queue.celery.reports.size", "queue.size;backend=celery;queue=reports;datastore=redis"
        )
        flushes = daemon.flushes()
    finally:
        daemon.close()
    gauges = flush["gauges"]
    for (backend, queue), reference in expected.items():
        # The daemon turns DogStatsD tags into `;key=value` parts of the key; `redis` is the
        # datastore's label (REDIS_URL).
        assert gauges[f"queue.size;backend={backend};queue={queue};datastore=redis"] == reference.size
        assert gauges[f"queue.{backend}.{queue}.size"] == reference.size
        # The untagged run's value (the last one sent): read between `start` and `end`.
        assert latency_within(gauges[f"queue.{backend}.{queue}.latency"], reference, start, end)
    assert gauges["queue.collector.queues"] == len(expected)
    # Nothing we sent was a line the daemon could not read.
    assert sum(f["counters"].get("statsd.bad_lines_seen", 0) for f in flushes) == 0
    assert sum(f["counters"].get("statsd.metrics_received", 0) for f in flushes) > 2 * len(expected)


def test_an_odd_queue_name_from_the_real_client_keeps_the_grammar(redis_url):
    from helpers.collect import sidekiq

    sidekiq(redis_url, {"enqueue": {"we,ird|queue#1 x:y\u00e9": 2}})
    listener = UdpListener()
    try:
        result = queue_metrics("once", env=statsd_env(redis_url, listener.port))
        received = listener.collect(1.0)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    metrics = [metric for datagram in received for metric in parse(datagram)]
    (size,) = [(value, tags) for name, value, _, tags in metrics if name == "queue.size"]
    assert size[0] == 2 and re.fullmatch(r"we_ird_queue_1_x:y__[0-9a-f]{8}", size[1]["queue"])


def test_a_receiver_that_is_down_costs_nothing_and_is_counted(redis_url):
    fill_three_systems(redis_url)
    port = free_udp_port()  # nothing listens there
    process = start("run", env=statsd_env(redis_url, port, QUEUE_METRICS_INTERVAL="0.3"))
    watcher = Watcher(process)
    try:
        _, _, error = watcher.wait_for(lambda stream, line: stream == "stderr" and "statsd:" in line, timeout=10)
        assert re.fullmatch(
            rf"queue-metrics: error: statsd: cannot send to 127\.0\.0\.1:{port}: connection refused "
            r"\(nothing listens there\); dropped \d+ metrics\n",
            error,
        )
        dropped_line = watcher.wait_for(
            lambda stream, line: collector_line(stream, line) and "collector.dropped=0" not in line, timeout=10
        )[2]
        assert int(re.search(r"count#queue\.collector\.dropped=(\d+)", dropped_line)[1]) > 0
        # The loop goes on every tick, with the log lines.
        ticks = [item for item in watcher.drain(1.6) if collector_line(item[1], item[2])]
        assert 4 <= len(ticks) <= 7
        assert "Traceback" not in watcher.all_text()
    finally:
        process.kill()
        process.wait()


def test_statsd_alone_prints_no_log_lines(redis_url):
    expected = fill_three_systems(redis_url)
    listener = UdpListener()
    try:
        result = queue_metrics("once", env={**statsd_env(redis_url, listener.port), "QUEUE_METRICS_OUTPUTS": "statsd"})
        received = listener.collect(1.0)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    metrics = [metric for datagram in received for metric in parse(datagram)]
    assert len([name for name, *_ in metrics if name == "queue.size"]) == len(expected)


def test_the_same_queue_on_two_redis_tagged_and_named(make_server):
    from helpers.collect import sidekiq

    first, second = make_server(), make_server()
    for server in (first, second):
        sidekiq(server.url, {"enqueue": {"default": 2}})
    env = {"QUEUE_METRICS_REDIS_URLS": f"a={first.url},b={second.url}", "QUEUE_METRICS_OUTPUTS": "statsd"}
    listener = UdpListener()
    try:
        metrics = {}
        for tags in ("true", "false"):
            result = queue_metrics(
                "once",
                env={
                    **env,
                    "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{listener.port}",
                    "QUEUE_METRICS_STATSD_TAGS": tags,
                },
            )
            assert result.returncode == 0 and result.stderr == "", result.stderr
            metrics[tags] = [metric for datagram in listener.collect(1.0) for metric in parse(datagram)]
    finally:
        listener.close()
    tagged = metrics["true"]
    sizes = [(tags, value) for name, value, _, tags in tagged if name == "queue.size"]
    assert sizes == [
        ({"backend": "sidekiq", "queue": "default", "datastore": "a"}, 2),
        ({"backend": "sidekiq", "queue": "default", "datastore": "b"}, 2),
    ]
    retries = [(tags, value) for name, value, _, tags in tagged if name == "queue.sidekiq.retry"]
    assert retries == [({"backend": "sidekiq", "datastore": "a"}, 0), ({"backend": "sidekiq", "datastore": "b"}, 0)]
    collector = [tags for name, _, _, tags in tagged if name.startswith("queue.collector.")]
    assert len(collector) == 4 and all(tags == {} for tags in collector)  # queues, errors, duration, dropped
    untagged = {name: value for name, value, _, _ in metrics["false"]}
    assert untagged["queue.sidekiq.default.size"] == 2 and untagged["queue.b.sidekiq.default.size"] == 2
    assert untagged["queue.sidekiq.retry"] == 0 and untagged["queue.b.sidekiq.retry"] == 0
    assert "queue.b.sidekiq.default.latency" in untagged and untagged["queue.collector.queues"] == 2
    assert len(metrics["false"]) == len(untagged)  # no name twice
