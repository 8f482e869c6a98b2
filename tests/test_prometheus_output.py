"""The Prometheus output: the exposition (pure functions on captured reports, checked by the real
`promtool`), the `/metrics` server under hostile clients, a real `run` scraped with urllib and by a
real Prometheus, whose API must return the queues' real figures."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.process import lines_of, queue_metrics, start, stop
from helpers.producers import fill_three_systems, latency_within
from helpers.prometheus import prometheus_server, query, target_metadata, targets, wait_for_query
from helpers.servers import free_port
from helpers.watch import Watcher, collector_line
from queue_metrics.errors import ConfigError
from queue_metrics.outputs import OutputSettings
from queue_metrics.outputs.prometheus import (
    KEEPALIVE_TIMEOUT,
    MAX_CONNECTIONS,
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    WRITE_TIMEOUT,
    Bodies,
    PrometheusServer,
    PrometheusSettings,
    escape_label,
    exposition,
    families_of,
    gzipped_exposition,
    metric_prefix,
    number,
    parse_request,
    wants_openmetrics,
)
from queue_metrics.sample import (
    COUNTER,
    UNIT_RATIO,
    UNIT_SECONDS,
    DatastoreSection,
    Figure,
    QueueSample,
    SystemSample,
    TickReport,
)

NOW = 1_765_000_000.25

# The text format's sample line, and one label pair (value: any character but `"` and `\`, or
# an escape).
SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)\Z")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)


def parse_labels(text: Optional[str]) -> Dict[str, str]:
    if not text:
        return {}
    labels, position = {}, 0
    while position < len(text):
        match = LABEL.match(text, position)
        assert match, f"bad labels at {position}: {text!r}"
        labels[match["key"]] = unescape(match["value"])
        position = match.end()
    return labels


def parse(body: str) -> List[Tuple[str, Dict[str, str], float]]:
    """Every sample of an exposition (text or OpenMetrics); fails on a line off the grammar."""
    samples = []
    for line in body.split("\n"):
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"off the grammar: {line!r}"
        samples.append((match["name"], parse_labels(match["labels"]), float(match["value"])))
    return samples


def section(label: str, queues: int, systems: int, ok: bool = True) -> DatastoreSection:
    return DatastoreSection(label, "redis", f"redis://{label}:6379/0", "REDIS_URL", ok, queues, systems, 0)


def captured(processed: int = 5, ok: bool = True) -> TickReport:
    """A tick of Sidekiq and RQ on one Redis, with figures of every kind."""
    return TickReport(
        samples=(
            QueueSample(
                "sidekiq", "default", 12, 3.25, (Figure("running", 2), Figure("running_age", 7.5, UNIT_SECONDS))
            ),
            QueueSample("rq", "low", 0, None, (Figure("failed", 4), Figure("running", 0))),
        ),
        errors=("rq: something",),
        backends=("sidekiq", "rq"),
        duration=0.0123,
        redis_ok=ok,
        systems=(
            SystemSample(
                "sidekiq",
                (
                    Figure("processed", processed, kind=COUNTER),
                    Figure("retry", 3),
                    Figure("utilization", 0.5, UNIT_RATIO),
                ),
            ),
        ),
        datastores=(section("redis", 2, 1, ok),),
    )


# --- pure functions ------------------------------------------------------------------------------


def test_the_text_format_as_documented():
    families, totals = families_of(captured(), "queue", NOW, None, {})
    text = exposition(families)
    assert text == "\n".join(
        [
            "# HELP queue_size Jobs waiting in the queue.",
            "# TYPE queue_size gauge",
            'queue_size{system="sidekiq",queue="default",datastore="redis"} 12',
            'queue_size{system="rq",queue="low",datastore="redis"} 0',
            "# HELP queue_latency_seconds How long the oldest waiting job has waited (none when unknown).",
            "# TYPE queue_latency_seconds gauge",
            'queue_latency_seconds{system="sidekiq",queue="default",datastore="redis"} 3.25',
            "# HELP queue_running Jobs running now.",
            "# TYPE queue_running gauge",
            # Both queues' `running` together, though RQ's came after its `failed`: one family's
            # samples are never split.
            'queue_running{system="sidekiq",queue="default",datastore="redis"} 2',
            'queue_running{system="rq",queue="low",datastore="redis"} 0',
            "# HELP queue_running_age_seconds How long the longest-running job has run.",
            "# TYPE queue_running_age_seconds gauge",
            'queue_running_age_seconds{system="sidekiq",queue="default",datastore="redis"} 7.5',
            "# HELP queue_failed Failed jobs of the queue.",
            "# TYPE queue_failed gauge",
            'queue_failed{system="rq",queue="low",datastore="redis"} 4',
            "# HELP queue_sidekiq_processed_total The sidekiq system-wide processed figure (see the README).",
            "# TYPE queue_sidekiq_processed_total counter",
            'queue_sidekiq_processed_total{system="sidekiq",datastore="redis"} 5',
            "# HELP queue_sidekiq_retry The sidekiq system-wide retry figure (see the README).",
            "# TYPE queue_sidekiq_retry gauge",
            'queue_sidekiq_retry{system="sidekiq",datastore="redis"} 3',
            "# HELP queue_sidekiq_utilization The sidekiq system-wide utilization figure (see the README).",
            "# TYPE queue_sidekiq_utilization gauge",
            'queue_sidekiq_utilization{system="sidekiq",datastore="redis"} 0.5',
            "# HELP queue_collector_up 1 when the last tick read its datastores, else 0.",
            "# TYPE queue_collector_up gauge",
            "queue_collector_up 1",
            "# HELP queue_collector_last_tick_timestamp_seconds Unix time of the last tick.",
            "# TYPE queue_collector_last_tick_timestamp_seconds gauge",
            "queue_collector_last_tick_timestamp_seconds 1765000000.25",
            "# HELP queue_collector_duration_seconds How long the last tick took.",
            "# TYPE queue_collector_duration_seconds gauge",
            "queue_collector_duration_seconds 0.0123",
            "# HELP queue_collector_queues Queues the last tick read.",
            "# TYPE queue_collector_queues gauge",
            "queue_collector_queues 2",
            "# HELP queue_collector_errors Errors in the last tick.",
            "# TYPE queue_collector_errors gauge",
            "queue_collector_errors 1",
            "",
        ]
    )
    # No dropped counter without a StatsD or OTLP output.
    assert "dropped" not in text
    assert totals == {("queue_sidekiq_processed", 'system="sidekiq",datastore="redis"'): 5.0}


def test_openmetrics_declares_counters_without_total_gives_units_and_ends_with_eof():
    families, _ = families_of(captured(), "queue", NOW, 2, {})
    text = exposition(families, openmetrics=True)
    lines = text.split("\n")
    assert lines[-2:] == ["# EOF", ""]
    assert "# TYPE queue_sidekiq_processed counter" in lines
    assert "# HELP queue_sidekiq_processed The sidekiq system-wide processed figure (see the README)." in lines
    assert 'queue_sidekiq_processed_total{system="sidekiq",datastore="redis"} 5' in lines
    assert "# TYPE queue_collector_dropped counter" in lines and "queue_collector_dropped_total 2" in lines
    units = [line for line in lines if line.startswith("# UNIT ")]
    assert units == [
        "# UNIT queue_latency_seconds seconds",
        "# UNIT queue_running_age_seconds seconds",
        "# UNIT queue_collector_last_tick_timestamp_seconds seconds",
        "# UNIT queue_collector_duration_seconds seconds",
    ]
    # Each UNIT right after its family's TYPE; the samples the same as the text format's.
    for unit in units:
        assert lines[lines.index(unit) - 1] == f"# TYPE {unit.split()[2]} gauge"
    assert parse(text) == parse(exposition(families))


def test_the_gzipped_body_is_the_exposition():
    families, _ = families_of(captured(), "queue", NOW, 1, {})
    for openmetrics in (False, True):
        assert gzip.decompress(gzipped_exposition(families, openmetrics)).decode() == exposition(families, openmetrics)
    # Text that is not UTF-8 (a queue name read from other bytes) becomes `?`: the body stays UTF-8.
    odd = TickReport((QueueSample("rq", "bad\udcffname", 1, None),), (), ("rq",), 0.0, True)
    body = gzip.decompress(gzipped_exposition(families_of(odd, "queue", NOW, None, {})[0])).decode("utf-8")
    assert 'queue="bad?name"' in body


def test_every_family_is_declared_once_with_its_samples_together():
    report = captured()
    many = report._replace(
        samples=tuple(
            QueueSample(system, f"q{index}", index, float(index), (Figure("running", index),))
            for index in range(20)
            for system in ("sidekiq", "rq")
        ),
        datastores=(section("redis", 40, 1),),
    )
    families, _ = families_of(many, "queue", NOW, None, {})
    for openmetrics in (False, True):
        seen, current = [], None
        for line in exposition(families, openmetrics).split("\n"):
            if line.startswith("# TYPE "):
                current = line.split()[2]
                assert current not in seen
                seen.append(current)
            elif line and not line.startswith("#"):
                name = SAMPLE.match(line)["name"]
                assert name in (current, f"{current}_total"), (line, current)


def test_label_values_are_escaped_and_read_back_exactly():
    names = ['say "hi"', "back\\slash", "two\nlines", "ünï cødé ✓", "a,b=c}{", "\\n literally", "tab\there"]
    report = TickReport(
        tuple(QueueSample("rq", name, index, None) for index, name in enumerate(names)),
        (),
        ("rq",),
        0.0,
        True,
        datastores=(section('da"ta\\store', len(names), 0),),
    )
    families, _ = families_of(report, "queue", NOW, None, {})
    text = exposition(families)
    assert 'queue_size{system="rq",queue="say \\"hi\\"",datastore="da\\"ta\\\\store"} 0' in text
    assert 'queue="two\\nlines"' in text and 'queue="back\\\\slash"' in text
    sizes = {labels["queue"]: value for name, labels, value in parse(text) if name == "queue_size"}
    assert sizes == {name: index for index, name in enumerate(names)}
    assert escape_label("plain") == "plain"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique=True))
def test_any_queue_name_round_trips(names):
    report = TickReport(
        tuple(QueueSample("sidekiq", name, index, 1.0) for index, name in enumerate(names)),
        (),
        ("sidekiq",),
        0.0,
        True,
        datastores=(section("redis", len(names), 0),),
    )
    families, _ = families_of(report, "queue", NOW, None, {})
    sizes = {labels["queue"]: value for name, labels, value in parse(exposition(families)) if name == "queue_size"}
    assert sizes == {name: index for index, name in enumerate(names)}


def test_counters_accumulate_over_ticks_and_survive_an_unread_datastore():
    key = ("queue_sidekiq_processed", 'system="sidekiq",datastore="redis"')
    totals: dict = {}
    seen = []
    for processed, ok, dropped in ((5, True, 1), (3, True, 0), (0, False, 2), (4, True, 0)):
        report = captured(processed, ok)
        if not ok:  # an unread datastore: no queue and no system figure this tick
            report = report._replace(samples=(), systems=(), datastores=(section("redis", 0, 0, ok=False),))
        families, totals = families_of(report, "queue", NOW, dropped, totals)
        values = {(name, tuple(labels.items())): value for name, labels, value in parse(exposition(families))}
        seen.append(
            (
                values.get(("queue_sidekiq_processed_total", (("system", "sidekiq"), ("datastore", "redis")))),
                values[("queue_collector_dropped_total", ())],
                values[("queue_collector_up", ())],
            )
        )
    assert seen == [(5, 1, 1), (8, 1, 1), (None, 3, 0), (12, 3, 1)]
    assert totals[key] == 12
    # A series gone from a datastore that was read is forgotten: memory stays bounded.
    families, totals = families_of(
        captured()._replace(systems=(), datastores=(section("redis", 2, 0),)), "q", NOW, None, totals
    )
    assert not any(name.endswith("processed") for name, _ in totals)
    # A counter never goes down, even on a negative reading.
    families, totals = families_of(captured(-7), "queue", NOW, None, {})
    assert 'queue_sidekiq_processed_total{system="sidekiq",datastore="redis"} 0' in exposition(families)


def test_a_tick_that_failed_as_a_whole_keeps_every_total():
    # What runner.Ticker.tick reports when a tick raised: no datastore section, nothing read.
    failed = TickReport((), ("the tick failed unexpectedly (RuntimeError: x); trying again next tick",), (), 0.0, False)
    totals: dict = {}
    seen = []
    for report, dropped in ((captured(5), 1), (failed, 2), (captured(3), 0)):
        families, totals = families_of(report, "queue", NOW, dropped, totals)
        values = {(name, tuple(labels.items())): value for name, labels, value in parse(exposition(families))}
        seen.append(
            (
                values.get(("queue_sidekiq_processed_total", (("system", "sidekiq"), ("datastore", "redis")))),
                values[("queue_collector_dropped_total", ())],
                values[("queue_collector_up", ())],
            )
        )
    # The failed tick shows no series, and the total goes on from 5 (no reset, no lost delta).
    assert seen == [(5, 1, 1), (None, 3, 0), (8, 3, 1)]


def test_a_figure_that_is_a_counter_here_and_a_gauge_there_makes_two_families():
    report = TickReport(
        (
            QueueSample("rq", "a", 1, None, (Figure("moved", 2, kind=COUNTER),)),
            QueueSample("sidekiq", "b", 1, None, (Figure("moved", 3),)),
            QueueSample("rq", "c", 1, None, (Figure("moved", 4, kind=COUNTER),)),
        ),
        (),
        ("rq", "sidekiq"),
        0.0,
        True,
        datastores=(section("redis", 3, 0),),
    )
    families, _ = families_of(report, "queue", NOW, None, {})
    text = exposition(families)
    assert [(family.name, family.kind) for family in families if "moved" in family.name] == [
        ("queue_moved", "counter"),
        ("queue_moved", "gauge"),
    ]
    # Under each TYPE only lines of its own type.
    current = None
    for line in text.split("\n"):
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            assert SAMPLE.match(line)["name"] == current, (line, current)
    assert 'queue_moved_total{system="rq",queue="c",datastore="redis"} 4' in text
    assert 'queue_moved{system="sidekiq",queue="b",datastore="redis"} 3' in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_numbers_prefix_and_a_report_without_datastores():
    assert [number(v) for v in (3, 2.0, 0.25, 1e-05, float("nan"), float("inf"), -float("inf"), 1e20)] == [
        "3",
        "2",
        "0.25",
        "1e-05",
        "NaN",
        "+Inf",
        "-Inf",
        "1e+20",
    ]
    assert metric_prefix("my-app.queues") == "my_app_queues"
    assert metric_prefix("9lives") == "_9lives"
    # A reader's own report (no datastore sections): no datastore label; negative times are 0.
    report = TickReport((QueueSample("rq", "default", 1, -0.5),), (), ("rq",), 0.0, False)
    text = exposition(families_of(report, "my-app", NOW, None, {})[0])
    assert 'my_app_size{system="rq",queue="default"} 1' in text
    assert 'my_app_latency_seconds{system="rq",queue="default"} 0' in text
    assert "my_app_collector_up 0" in text


def test_promtool_accepts_the_text_format():
    names = ['say "hi"', "back\\slash", "two\nlines", "ünï", "x" * 300]
    report = captured()._replace(
        samples=captured().samples + tuple(QueueSample("rq", name, 1, 0.5) for name in names),
        datastores=(section("redis", 2 + len(names), 1),),
    )
    families, _ = families_of(report, "queue", NOW, 3, {})
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition(families), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (result.stdout, result.stderr)


def test_content_negotiation_and_request_parsing():
    prometheus_accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert wants_openmetrics(prometheus_accept)
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics("")
    assert not wants_openmetrics("application/openmetrics-text; q=0")
    request = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain")
    assert request is not None and request.path == "/metrics" and request.keep_alive and not request.has_body
    request = parse_request(b"GET / HTTP/1.0\r\nContent-Length: 5")
    assert request is not None and not request.keep_alive and request.has_body
    assert parse_request(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip, deflate").gzip
    assert not parse_request(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=0").gzip
    assert not parse_request(b"GET / HTTP/1.1\r\nAccept-Encoding: identity").gzip
    assert parse_request(b"GARBAGE") is None
    assert parse_request(b"GET / SPDY/3\r\n") is None
    assert parse_request(b"GET / HTTP/1.1\r\nno colon here") is None
    # Lines that end in a bare LF (RFC 9112 2.2).
    request = parse_request(b"GET /metrics HTTP/1.1\nConnection: close\nAccept-Encoding: gzip")
    assert request is not None and request.path == "/metrics" and not request.keep_alive and request.gzip


def test_settings_and_the_config_command():
    assert PrometheusSettings.from_env({}) == PrometheusSettings("127.0.0.1", 9808)
    assert PrometheusSettings.from_env({"QUEUE_METRICS_PROMETHEUS_ADDRESS": "0.0.0.0:9808"}).host == "0.0.0.0"
    ipv6 = PrometheusSettings.from_env({"QUEUE_METRICS_PROMETHEUS_ADDRESS": "[::1]:9100"})
    assert ipv6 == PrometheusSettings("::1", 9100) and ipv6.describe() == "http://[::1]:9100/metrics"
    for bad in ("9808", "localhost", "h:0", "h:70000", "[::1]9808", ":9808"):
        with pytest.raises(ConfigError, match="QUEUE_METRICS_PROMETHEUS_ADDRESS must be host:port"):
            PrometheusSettings.from_env({"QUEUE_METRICS_PROMETHEUS_ADDRESS": bad})
    chosen = OutputSettings.from_env({"QUEUE_METRICS_OUTPUTS": "logs,prometheus"}, 30.0)
    assert chosen.names == ("logs", "prometheus")
    assert chosen.describe() == ["outputs=logs,prometheus", "prometheus=http://127.0.0.1:9808/metrics"]
    result = queue_metrics(
        "config",
        env={
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "QUEUE_METRICS_OUTPUTS": "prometheus",
            "QUEUE_METRICS_PROMETHEUS_ADDRESS": "[::1]:9100",
        },
    )
    assert result.returncode == 0, result.stderr
    assert lines_of(result.stdout)[-2:] == ["outputs=prometheus", "prometheus=http://[::1]:9100/metrics"]
    result = queue_metrics(
        "config",
        env={
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "QUEUE_METRICS_OUTPUTS": "prometheus",
            "QUEUE_METRICS_PROMETHEUS_ADDRESS": "nope",
        },
    )
    assert result.returncode == 2
    assert result.stderr == (
        "queue-metrics: usage error: QUEUE_METRICS_PROMETHEUS_ADDRESS must be host:port (e.g. 127.0.0.1:9808), "
        "got 'nope'\n"
    )


# --- the server, in this process, over real sockets ------------------------------------------------


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def get(port: int, path: str = "/metrics", accept: str = "", method: str = "GET", host: str = "127.0.0.1"):
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, headers={"Accept": accept} if accept else {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


@pytest.fixture
def server():
    errors: List[str] = []
    started = PrometheusServer(PrometheusSettings("127.0.0.1", free_port()), errors.extend)
    started.errors = errors  # type: ignore[attr-defined]
    yield started
    started.close()


def test_before_the_first_tick_503_then_the_body(server):
    status, headers, body = get(server.port)
    assert (status, body) == (503, b"no tick yet: the first one is under way\n")
    assert headers["Retry-After"] == "1"
    server.publish(Bodies(gz(b"# text\n")))
    assert get(server.port) == (200, get(server.port)[1], b"# text\n")
    status, headers, body = get(server.port, accept="application/openmetrics-text")
    # OpenMetrics asked before a tick rendered it: the text format, a valid answer, and the ask is noted.
    assert (status, headers["Content-Type"], body) == (200, TEXT_CONTENT_TYPE, b"# text\n")
    assert server.openmetrics_asked
    server.publish(Bodies(gz(b"# text\n"), gz(b"# EOF\n")))
    status, headers, body = get(server.port, accept="application/openmetrics-text;version=1.0.0")
    assert (status, headers["Content-Type"], body) == (200, OPENMETRICS_CONTENT_TYPE, b"# EOF\n")
    # Kept gzipped: sent so to a client that takes gzip (as Prometheus does), inflated for others.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    answer = connection.getresponse()
    assert answer.getheader("Content-Encoding") == "gzip" and gzip.decompress(answer.read()) == b"# text\n"
    connection.close()
    assert get(server.port, "/")[0] == 200
    assert get(server.port, "/other")[0] == 404
    status, headers, _ = get(server.port, method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    status, headers, body = get(server.port, method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "7", b"")
    assert server.errors == []


def test_ipv6_loopback():
    server = PrometheusServer(PrometheusSettings("::1", free_port()), print)
    try:
        server.publish(Bodies(gz(b"x 1\n")))
        assert get(server.port, host="::1")[2] == b"x 1\n"
    finally:
        server.close()


def test_keep_alive_and_pipelined_requests(server):
    server.publish(Bodies(gz(b"x 1\n")))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/metrics")
            answer = connection.getresponse()
            assert (answer.status, answer.read(), answer.getheader("Connection")) == (200, b"x 1\n", "keep-alive")
        local_port = connection.sock.getsockname()[1]
        connection.request("GET", "/metrics")
        connection.getresponse().read()
        assert connection.sock.getsockname()[1] == local_port  # one connection throughout
    finally:
        connection.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        received = read_all(sock)
    assert received.count(b"HTTP/1.1 200 OK") == 1 and received.count(b"HTTP/1.1 404 Not Found") == 1


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_an_oversized_header_gets_431_and_the_connection_closes(server):
    server.publish(Bodies(gz(b"x 1\n")))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert get(server.port)[0] == 200


def test_a_failure_in_the_server_thread_is_one_line_and_the_server_goes_on(server):
    server.publish(Bodies(None))  # type: ignore[arg-type] # a defect: no bytes to send
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert read_all(sock) == b""  # that connection is closed
    assert len(server.errors) == 1 and server.errors[0].startswith("prometheus: the /metrics server met TypeError")
    server.publish(Bodies(gz(b"x 1\n")))
    assert get(server.port)[2] == b"x 1\n"


def test_connections_beyond_the_cap_close_the_oldest_idle(server):
    server.publish(Bodies(gz(b"x 1\n")))
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(MAX_CONNECTIONS + 20)]
    try:
        assert get(server.port)[0] == 200  # the newest is served: an older idle one made room
        closed = 0
        for sock in idle:
            sock.settimeout(0.01 if closed >= 21 else 10)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
        # The 20 beyond the cap and one more for the scrape: the oldest ones, closed at once.
        assert closed == 21
        assert all(sock.recv(1) == b"" for sock in idle[:21])
    finally:
        for sock in idle:
            sock.close()
    assert KEEPALIVE_TIMEOUT > 60  # a scrape every minute keeps its connection


def test_bare_lf_requests_and_empty_lines_before_a_request_are_answered(server):
    server.publish(Bodies(gz(b"x 1\n")))
    for request in (
        b"GET /metrics HTTP/1.0\n\n",
        b"GET /metrics HTTP/1.1\nHost: x\nConnection: close\n\n",
        b"GET /metrics HTTP/1.1\r\nConnection: close\n\r\n",
        b"\r\n\r\n\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nx 1\n"), (request, answer)
    # Pipelined, with empty lines between: each answered.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\n\n\r\nGET /nope HTTP/1.1\nConnection: close\n\n")
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and answer.count(b"HTTP/1.1 404 Not Found") == 1
    assert server.errors == []


def test_thousands_of_pipelined_requests_are_all_answered(server):
    server.publish(Bodies(gz(b"x 1\n")))
    count = 2000
    requests = b"GET /x HTTP/1.1\r\n\r\n" * (count - 1) + b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        # Sent from another thread while this one reads: neither side's buffers fill up.
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        try:
            answer = read_all(sock)
        finally:
            sender.join()
    assert answer.count(b"HTTP/1.1 404 Not Found\r\n") == count
    assert server.errors == []


def test_a_scrape_gets_in_when_every_connection_is_a_client_that_never_reads(server):
    # A body larger than what a non-reading client's socket buffers take: 1,500 queues, 357 kB.
    report = TickReport(
        tuple(QueueSample("sidekiq", f"queue-{index:04d}-{'x' * 60}", index, 1.5) for index in range(1500)),
        (),
        ("sidekiq",),
        0.0,
        True,
        datastores=(section("redis", 1500, 0),),
    )
    families, _ = families_of(report, "queue", NOW, None, {})
    body = gzipped_exposition(families)
    server.publish(Bodies(body))
    stuck: List[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            # Small segments: the kernel grows a loopback send buffer by the segment size (64 kB
            # by default), up to megabytes a connection; with these, a few dozen kB each.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", server.port))
            stuck.append(sock)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # no Accept-Encoding: the inflated body
            assert sock.recv(12, socket.MSG_WAITALL) == b"HTTP/1.1 200"  # answered; then never read
        # Every connection is taken, each stuck writing its response.
        connections = list(server._connections.values())
        assert len(connections) == MAX_CONNECTIONS and all(c.writing for c in connections)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read() == body
        finally:
            connection.close()
        # One stuck writer made room (the one writing longest: which one that is, on a loaded
        # machine, the kernel's partial sends decide); the others still wait for their reader.
        writing = {c.sock.getpeername() for c in list(server._connections.values()) if c.writing}
        assert len(writing) == MAX_CONNECTIONS - 1 and writing < {sock.getsockname() for sock in stuck}
    finally:
        for sock in stuck:
            sock.close()
    assert server.errors == []


def test_the_server_outlives_an_error_line_that_cannot_be_written():
    said: List[str] = []
    fail_clock = threading.Event()

    def err(lines) -> None:
        said.extend(lines)
        raise BrokenPipeError(32, "Broken pipe")  # stderr gone

    def clock() -> float:
        if fail_clock.is_set():
            fail_clock.clear()
            raise RuntimeError("a defect in the thread")
        return time.monotonic()

    server = PrometheusServer(PrometheusSettings("127.0.0.1", free_port()), err, clock)
    try:
        server.publish(Bodies(gz(b"x 1\n")))
        fail_clock.set()
        # A new connection wakes the thread, whose next step fails outside any one connection.
        socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        assert said == ["prometheus: the /metrics server met RuntimeError: a defect in the thread"]
        assert get(server.port)[:3:2] == (200, b"x 1\n")
    finally:
        server.close()


# --- a real `run`, real jobs, a real Prometheus ----------------------------------------------------


def prometheus_env(redis_url: str, port: int, **extra: str) -> dict:
    return {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "logs,prometheus",
        "QUEUE_METRICS_PROMETHEUS_ADDRESS": f"127.0.0.1:{port}",
        **extra,
    }


def scrape(port: int, accept: str = "", timeout: float = 10) -> Tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode("utf-8")


def first_body(port: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _, body = scrape(port)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("no /metrics body in time")


def by_labels(samples, name: str) -> Dict[Tuple[str, str], float]:
    return {(labels["system"], labels["queue"]): value for metric, labels, value in samples if metric == name}


def test_a_real_run_serves_what_once_reads(redis_url):
    expected = fill_three_systems(redis_url)
    port = free_port()
    once = queue_metrics("once", "--format", "json", env={"REDIS_URL": redis_url})
    assert once.returncode == 0, once.stderr
    document = json.loads(once.stdout)
    start_time = time.time()
    process = start("run", env=prometheus_env(redis_url, port, QUEUE_METRICS_INTERVAL="0.5"))
    watcher = Watcher(process)
    try:
        body = first_body(port)
        end_time = time.time()
        checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
        samples = parse(body)
        sizes = by_labels(samples, "queue_size")
        assert sizes == {(q["backend"], q["queue"]): q["size"] for q in document["queues"]}
        assert sizes == {key: reference.size for key, reference in expected.items()}
        assert all(labels["datastore"] == "redis" for name, labels, _ in samples if name == "queue_size")
        latencies = by_labels(samples, "queue_latency_seconds")
        for key, reference in expected.items():
            assert latency_within(latencies[key], reference, start_time, end_time), (key, latencies[key])
        # Every other per-queue and system-wide figure of the JSON, under its Prometheus name.
        for entry in document["queues"]:
            for name, value in entry.items():
                if name in ("backend", "queue", "size", "latency", "latency_source", "datastore") or name.endswith(
                    "_age"
                ):
                    continue
                found = by_labels(samples, f"queue_{name}")
                assert found[(entry["backend"], entry["queue"])] == value, name
        for entry in document["systems"]:
            for name, value in entry.items():
                if name in ("backend", "datastore"):
                    continue
                (found,) = [
                    v
                    for metric, labels, v in samples
                    if metric in (f"queue_{entry['backend']}_{name}", f"queue_{entry['backend']}_{name}_total")
                    and labels == {"system": entry["backend"], "datastore": "redis"}
                ]
                if not re.search(r"_(processed|failed)$", name):  # counters since start: 0 in both at first
                    assert found == value, name
        collector = {name: value for name, labels, value in samples if name.startswith("queue_collector_")}
        assert collector["queue_collector_up"] == 1 and collector["queue_collector_errors"] == 0
        assert collector["queue_collector_queues"] == len(document["queues"])
        assert start_time - 1 <= collector["queue_collector_last_tick_timestamp_seconds"] <= time.time()
        # OpenMetrics once asked: from the next tick on.
        scrape(port, "application/openmetrics-text")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, content_type, om_body = scrape(port, "application/openmetrics-text; version=1.0.0")
            if content_type == OPENMETRICS_CONTENT_TYPE:
                break
            time.sleep(0.1)
        assert content_type == OPENMETRICS_CONTENT_TYPE and om_body.endswith("# EOF\n")
        assert by_labels(parse(om_body), "queue_size") == sizes
        assert "Traceback" not in watcher.all_text()
    finally:
        stop(process)


def test_a_port_in_use_is_one_line_and_exit_2(redis_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = queue_metrics("run", env=prometheus_env(redis_url, port), timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"queue-metrics: usage error: QUEUE_METRICS_PROMETHEUS_ADDRESS: cannot listen on "
        f"http://127.0.0.1:{port}/metrics: the port is already in use\n"
    )


def test_once_with_prometheus_alone_prints_the_log_lines_and_serves_nothing(redis_url):
    fill_three_systems(redis_url)
    port = free_port()
    result = queue_metrics("once", env={**prometheus_env(redis_url, port), "QUEUE_METRICS_OUTPUTS": "prometheus"})
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=3 " in result.stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nobody listened there


def test_a_real_prometheus_scrapes_our_figures(redis_url, tmp_path):
    from helpers.collect import sidekiq

    expected = fill_three_systems(redis_url)
    odd = 'we"ird\\queue ü'
    sidekiq(redis_url, {"enqueue": {odd: 2}})
    port = free_port()
    process = start("run", env=prometheus_env(redis_url, port, QUEUE_METRICS_INTERVAL="1"))
    try:
        first_body(port)
        with prometheus_server(tmp_path, [f"127.0.0.1:{port}"]) as base:
            result = wait_for_query(base, "queue_size", lambda found: len(found) == len(expected) + 1)
            sizes = {(r["metric"]["system"], r["metric"]["queue"]): float(r["value"][1]) for r in result}
            assert sizes == {**{key: ref.size for key, ref in expected.items()}, ("sidekiq", odd): 2}
            assert all(r["metric"]["datastore"] == "redis" and r["metric"]["job"] == "queue-metrics" for r in result)
            (target,) = targets(base)
            assert target["health"] == "up" and target["lastError"] == ""
            # The counters arrived as counters, their samples named with `_total`.
            wait_for_query(base, "queue_sidekiq_processed_total", lambda found: len(found) == 1)
            wait_for_query(base, "queue_collector_up == 1", lambda found: len(found) == 1)
            (latency,) = query(base, f"queue_latency_seconds{{queue={json.dumps(odd, ensure_ascii=False)}}}")
            assert float(latency["value"][1]) >= 0
            # Prometheus asks for OpenMetrics: once a tick has made it, its scrapes read our units and
            # the counter family declared without `_total`.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                latency_meta = target_metadata(base, "queue_latency_seconds")
                counter_meta = target_metadata(base, "queue_sidekiq_processed")
                if latency_meta and latency_meta[0]["unit"] == "seconds" and counter_meta:
                    break
                time.sleep(0.5)
            assert latency_meta[0]["unit"] == "seconds" and latency_meta[0]["type"] == "gauge", latency_meta
            assert counter_meta[0]["type"] == "counter", counter_meta
            (target,) = targets(base)
            assert target["health"] == "up" and target["lastError"] == ""
    finally:
        stop(process)


# --- hostile clients against a real `run` ---------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hostile_clients_never_stop_the_loop_nor_a_scrape(redis_url):
    from helpers.collect import sidekiq

    # Enough queues for a response larger than the socket buffers of a client that never reads.
    sidekiq(redis_url, {"enqueue": {f"queue-{index:04d}-{'x' * 60}": 1 for index in range(1500)}})
    port = free_port()
    process = start("run", env=prometheus_env(redis_url, port, QUEUE_METRICS_INTERVAL="0.5"))
    watcher = Watcher(process)
    held: List[socket.socket] = []
    try:
        body = first_body(port)
        assert len(body) > 300_000
        baseline = open_fds(process.pid)
        watcher.wait_for(collector_line, timeout=20)

        # Slowloris: half a request header, then silence.
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        # Clients that never read: many pipelined requests of the large body, sent and left.
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n" * 50)
            held.append(sock)
        # A 1 MB request.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 1_000_000)
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed after its 431, before all was sent
            try:
                assert read_all(sock).startswith(b"HTTP/1.1 431 ")
            except ConnectionResetError:
                pass
        # 10,000 connections in a row, opened and closed (some with a request, most without).
        ticks = []
        failures = 0
        stop_flag = threading.Event()

        def count_ticks() -> None:
            while not stop_flag.is_set():
                ticks.extend(item for item in watcher.drain(0.2) if collector_line(item[1], item[2]))

        counter = threading.Thread(target=count_ticks)
        counter.start()
        begun = time.monotonic()
        try:
            for index in range(10_000):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                        if index % 10 == 0:
                            sock.sendall(b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
                except OSError:
                    failures += 1
            # Meanwhile a normal scrape answers, with the whole body.
            status, _, scraped = scrape(port, timeout=10)
            assert status == 200 and scraped.endswith("queue_collector_errors 0\n")
        finally:
            elapsed = time.monotonic() - begun
            stop_flag.set()
            counter.join()
        assert failures == 0
        # The loop kept ticking all along (one tick each 0.5 s when the machine is idle; a loaded
        # CI machine runs 1,500 queues' ticks slower, never stops them), and ticks on after.
        assert len(ticks) >= int(elapsed / 0.5 / 4), (len(ticks), elapsed)
        for _ in range(2):
            watcher.wait_for(collector_line, timeout=20)
        # Slowloris clients and clients that do not read are closed by their deadlines.
        for sock in held[:30]:
            sock.settimeout(20)
            assert read_all(sock) == b""
        # Nothing kept: the process holds the descriptors it held before (the clients that do not
        # read were cut after the write deadline; the kernel alone still holds what was sent).
        deadline = time.monotonic() + WRITE_TIMEOUT + 10
        while open_fds(process.pid) > baseline and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open_fds(process.pid) <= baseline
        assert scrape(port)[0] == 200
        assert "Traceback" not in watcher.all_text()
        assert "prometheus:" not in watcher.all_text()
    finally:
        for sock in held:
            sock.close()
        stop(process)


def test_only_a_chosen_prometheus_output_is_imported():
    """The loop lives in a customer's web dyno: with the log lines alone, none of this is loaded."""
    code = (
        "import sys\n"
        "from queue_metrics.outputs import OutputSettings, Outputs\n"
        "settings = OutputSettings.from_env({'QUEUE_METRICS_OUTPUTS': sys.argv[1]}, 30.0)\n"
        "outputs = Outputs(settings._replace(prometheus=None), 'queue', None, print)\n"
        "print('queue_metrics.outputs.prometheus' in sys.modules)\n"
    )
    for chosen, imported in (("logs", "False"), ("logs,statsd", "False"), ("logs,prometheus", "True")):
        result = subprocess.run([sys.executable, "-c", code, chosen], capture_output=True, text=True, timeout=30)
        assert (result.stdout.strip(), result.stderr) == (imported, ""), chosen
