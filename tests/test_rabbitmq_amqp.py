"""RabbitMQ without its management API: Celery's named queues read by passive declare over AMQP
(`datastores/rabbitmq/amqp.py`, `declares.py`), against the machine's real broker (a fresh vhost
per test), real Celery producers and a real `celery worker`; the API itself stands in for the
broker's own view (the reference), while the collector is pointed at an address where no API is."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List

import kombu
import pytest

from helpers.rabbitmq import AMQP_HOST, API, amqp_url, api, delete_vhost, fast_statistics, make_vhost, queues, quoted
from helpers.servers import free_port, tls_proxy, wait_for_port
from helpers.workers import HELPERS, queue_figures, system_figures, wait_for, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.datastores.rabbitmq.amqp import AmqpConnection, Declared, Refused
from queue_metrics.datastores.rabbitmq.declares import declared_queues
from queue_metrics.datastores.rabbitmq.reader import API_RETRY_TICKS, RabbitReader
from queue_metrics.errors import WarningNotice
from queue_metrics.sample import TickReport
from test_rabbitmq import PASSWORD, celery_app, kombu_size, publish, publishes_show, sizes, stats_show


@pytest.fixture(scope="module", autouse=True)
def _fast_statistics() -> None:
    fast_statistics()


@pytest.fixture
def vhost() -> Iterator[str]:
    name = make_vhost("qma")
    yield name
    delete_vhost(name)


def no_api() -> str:
    """An API address where nothing listens: the reader falls back to AMQP."""
    return f"http://127.0.0.1:{free_port()}/api/"


def reading(env: Dict[str, str], notices: List[str]) -> Collector:
    return Collector(Settings.from_env({"QUEUE_METRICS_RABBITMQ_API_URL": no_api(), **env}), announce=notices.append)


def test_without_the_api_sizes_and_consumers_come_from_passive_declares(vhost):
    url = amqp_url(vhost)
    app = celery_app(url)
    publish(app, "celery", 5)
    publish(app, "orders", 12, seconds=120.0)  # long naps: what the worker holds stays put
    app.pool.force_close_all()
    command = [sys.executable, "-m", "celery", "-A", "celery_worker_app", "worker", "--pool", "solo", "-Q", "orders"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING", "-n", "w@%h"]
    notices: List[str] = []
    env = {"CLOUDAMQP_URL": url, "QUEUE_METRICS_CELERY_QUEUES": "celery,orders,nosuch"}
    with worker_process(command, {"CELERY_BROKER_URL": url, "PYTHONPATH": HELPERS}):

        def held() -> bool:
            row = queues(vhost).get("orders", {})
            return row.get("consumers") == 1 and row.get("messages_unacknowledged", 0) >= 2

        wait_for(held, "the worker holding messages", timeout=90)
        time.sleep(2.5)  # past the statistics refresh after the worker's last prefetch
        collector = reading(env, notices)
        reports = [collector.tick() for _ in range(3)]
        listed = queues(vhost)
        declared = {name: kombu_size(url, name) for name in ("celery", "orders")}
    for report in reports:
        assert sizes(report) == {"celery/celery": 5, "celery/orders": listed["orders"]["messages_ready"]}
        assert sizes(report) == {f"celery/{name}": count for name, count in declared.items()}
        assert report.errors == ('no queue "nosuch" on the broker (404): check QUEUE_METRICS_CELERY_QUEUES',)
        assert queue_figures(report, "celery", "orders") == {"consumers": 1}
        assert queue_figures(report, "celery", "celery") == {"consumers": 0}
        assert system_figures(report, "celery")["consumers"].value == 1
        assert all(sample.latency is None and sample.latency_source == "unavailable" for sample in report.samples)
    assert listed["orders"]["messages_ready"] < 12  # the worker holds some: ready only
    # One warning, on the first tick: what is missing and why.
    (notice,) = notices
    assert isinstance(notice, WarningNotice)
    assert "no RabbitMQ management API" in notice and "connection refused" in notice
    assert "passive declare" in notice and "no latency" in notice


def test_one_round_trip_whatever_is_missing(vhost):
    with kombu.Connection(amqp_url(vhost)) as connection:
        for name in ("a", "b", "c"):
            connection.default_channel.queue_declare(name, durable=True, auto_delete=False)
    publish(celery_app(amqp_url(vhost)), "b", 4)
    connection = AmqpConnection(AMQP_HOST, 5672, "guest", "guest", vhost, 5.0)
    writes: List[bytes] = []
    send = connection._send

    def counted(data: bytes) -> None:
        writes.append(data)
        send(data)

    connection._send = counted  # type: ignore[method-assign]
    names = ["a", "gone-1", "b", "gone-2", "c"]
    try:
        for _ in range(3):
            writes.clear()
            results = connection.declare(names)
            assert results == [
                Declared("a", 0, 0),
                Refused("gone-1", 404, "NOT_FOUND - no queue 'gone-1' in vhost '%s'" % vhost),
                Declared("b", 4, 0),
                Refused("gone-2", 404, "NOT_FOUND - no queue 'gone-2' in vhost '%s'" % vhost),
                Declared("c", 0, 0),
            ]
            # One write asks everything (reopening the two closed channels), one write answers the
            # two channel closes, which the server does not answer: one round trip.
            assert len(writes) == 2
            assert writes[1].count(b"\xce") == 2
    finally:
        connection.close()


def test_celery_plumbing_is_never_declared(vhost):
    """A passive declare renews `x-expires`: a reply queue named by mistake must still expire."""
    assert declared_queues(["celery", "x.reply.celery.pidbox", "celeryev.1", "celery"]) == (
        ("celery",),
        ("x.reply.celery.pidbox", "celeryev.1"),
    )
    assert declared_queues([]) == (("celery",), ())
    with kombu.Connection(amqp_url(vhost)) as connection:
        connection.default_channel.queue_declare("celery", durable=True, auto_delete=False)
        connection.default_channel.queue_declare(
            "x.reply.celery.pidbox", auto_delete=False, arguments={"x-expires": 2000}
        )
    notices: List[str] = []
    collector = reading(
        {"CLOUDAMQP_URL": amqp_url(vhost), "QUEUE_METRICS_CELERY_QUEUES": "celery,x.reply.celery.pidbox"}, notices
    )
    started = time.monotonic()
    while time.monotonic() - started < 5:
        report = collector.tick()
        assert sizes(report) == {"celery/celery": 0}
        assert len(report.errors) == 1 and "is not declared" in report.errors[0]
        time.sleep(0.25)
    wait_for(lambda: "x.reply.celery.pidbox" not in queues(vhost), "the reply queue to expire", timeout=10)


def test_ticks_change_none_of_the_brokers_counters(vhost):
    url = amqp_url(vhost)
    publish(celery_app(url), "celery", 5)
    stats_show(vhost, {"celery": 5})
    publishes_show(vhost, {"celery": 5})

    def counters() -> tuple:
        row = queues(vhost)["celery"]
        stats = row.get("message_stats", {})
        return (
            row["messages"],
            row["messages_ready"],
            *(stats.get(key, 0) for key in ("publish", "redeliver", "get", "deliver")),
        )

    before = counters()
    collector = reading({"CLOUDAMQP_URL": url}, [])
    for _ in range(300):
        report = collector.tick()
        assert sizes(report) == {"celery/celery": 5} and report.errors == ()
    time.sleep(2.5)  # two statistics refreshes
    assert counters() == before


@contextlib.contextmanager
def not_the_api() -> Iterator[int]:
    """An HTTP server that is not the management API: 404 with an HTML page for every path."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_what_is_not_the_api_falls_back_and_a_missing_vhost_does_not(vhost):
    publish(celery_app(amqp_url(vhost)), "celery", 2)
    with not_the_api() as port:
        settings = Settings.from_env(
            {"CLOUDAMQP_URL": amqp_url(vhost), "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{port}/api/"}
        )
        report = Collector(settings).tick()
    assert sizes(report) == {"celery/celery": 2} and report.errors == ()
    # The real API's 404 for a vhost it does not have: said as such, nothing declared.
    missing = {"CLOUDAMQP_URL": amqp_url("qma-no-such-vhost"), "QUEUE_METRICS_RABBITMQ_API_URL": API}
    reader = RabbitReader(Settings.from_env(missing), _location("qma-no-such-vhost"))
    report = reader.tick()
    assert reader.fallback is None
    assert len(report.errors) == 1 and 'no vhost "qma-no-such-vhost"' in report.errors[0]


def _location(vhost: str):
    from queue_metrics.datastores import Location

    return Location("rabbitmq", "cloudamqp", amqp_url(vhost), "CLOUDAMQP_URL")


@contextlib.contextmanager
def forwarder(port: int, upstream: int) -> Iterator[None]:
    """Plain TCP from `port` to `upstream` (the management API appearing where there was none)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)

    def pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.close()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", upstream))
            threading.Thread(target=pump, args=(client, server), daemon=True).start()
            threading.Thread(target=pump, args=(server, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        listener.close()


def test_the_api_is_asked_again_and_used_when_it_answers(vhost):
    url = amqp_url(vhost)
    publish(celery_app(url), "celery", 3)
    stats_show(vhost, {"celery": 3})
    port = free_port()
    notices: List[str] = []
    settings = Settings.from_env(
        {"CLOUDAMQP_URL": url, "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{port}/api/"}
    )
    reader = RabbitReader(settings, _location(vhost), announce=notices.append)
    report = reader.tick()
    assert reader.fallback is not None and sizes(report) == {"celery/celery": 3}
    with forwarder(port, 15672):
        wait_for_port(port)
        # Passive declares until the retry, API_RETRY_TICKS ticks after the fall back...
        for _ in range(2, API_RETRY_TICKS + 1):
            report = reader.tick()
            assert sizes(report) == {"celery/celery": 3} and report.errors == ()
            assert reader.fallback is not None and "unacked" not in queue_figures(report, "celery", "celery")
        # ...then the API again, with its held messages.
        report = reader.tick()
        reader.close()
    assert reader.fallback is None
    assert queue_figures(report, "celery", "celery") == {"unacked": 0, "consumers": 0}
    assert len(notices) == 2 and notices[1].endswith("answers again")


def test_faults_over_amqp_are_one_line_without_the_password(vhost, tmp_path):
    def one(url: str, expected: str, **extra: str) -> str:
        env = {"CLOUDAMQP_URL": url, "QUEUE_METRICS_TIMEOUT": "2", **extra}
        report: TickReport = reading(env, []).tick()
        assert report.samples == () and len(report.errors) == 1, report.errors
        (line,) = report.errors
        assert expected in line, line
        assert PASSWORD not in line and "\n" not in line
        return line

    one(amqp_url(vhost, "guest", PASSWORD), "refused user 'guest' (403: ACCESS_REFUSED")
    one(amqp_url("qma-no-such-vhost"), 'no vhost "qma-no-such-vhost"')
    one(f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}/{quoted(vhost)}", "connection refused")
    one(f"amqps://guest:{PASSWORD}@127.0.0.1:5672/{quoted(vhost)}", "is that port really amqps?")
    publish(celery_app(amqp_url(vhost)), "celery", 1)
    with tls_proxy(tmp_path, 5672) as (port, cert):
        tls_url = f"amqps://guest:guest@127.0.0.1:{port}/{quoted(vhost)}"
        one(tls_url, "certificate verify failed")  # verified by default: a self-signed certificate fails
        for trusted in ({"QUEUE_METRICS_TLS_CA_FILE": cert}, {"QUEUE_METRICS_TLS_VERIFY": "false"}):
            report = reading({"CLOUDAMQP_URL": tls_url, **trusted}, []).tick()
            assert sizes(report) == {"celery/celery": 1} and report.errors == ()


def test_a_closed_connection_is_opened_again_within_the_tick(vhost):
    publish(celery_app(amqp_url(vhost)), "celery", 2)
    collector = reading({"CLOUDAMQP_URL": amqp_url(vhost)}, [])
    assert sizes(collector.tick()) == {"celery/celery": 2}
    ours = []

    def listed() -> bool:
        rows = api("GET", f"vhosts/{quoted(vhost)}/connections")
        ours[:] = [row["name"] for row in rows if row.get("client_properties", {}).get("product") == "queue-metrics"]
        return len(ours) == 1

    wait_for(listed, "the collector's AMQP connection in the API's list")
    api("DELETE", f"connections/{quoted(ours[0])}")
    report = collector.tick()
    assert sizes(report) == {"celery/celery": 2} and report.errors == ()


def test_a_reader_with_the_api_never_loads_the_amqp_client(vhost):
    script = (
        "import sys; from queue_metrics.collector import Collector; from queue_metrics.config import Settings; "
        f"r = Collector(Settings.from_env({{'CLOUDAMQP_URL': {amqp_url(vhost)!r}, "
        "'QUEUE_METRICS_RABBITMQ_API_URL': 'http://127.0.0.1:15672/api/'})).tick(); "
        "assert r.errors == (), r.errors; "
        "print(sorted(m for m in sys.modules if m.endswith(('.amqp', '.declares'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_an_api_that_is_slow_when_asked_again_leaves_the_declares_going(vhost):
    url = amqp_url(vhost)
    publish(celery_app(url), "celery", 2)
    port = free_port()
    settings = Settings.from_env(
        {
            "CLOUDAMQP_URL": url,
            "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{port}/api/",
            "QUEUE_METRICS_TIMEOUT": "1",
        }
    )
    reader = RabbitReader(settings, _location(vhost))
    assert sizes(reader.tick()) == {"celery/celery": 2} and reader.fallback is not None
    connection = reader.fallback._connection
    # Something now listens where the API should be, and never answers.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    try:
        for _ in range(API_RETRY_TICKS + 1):
            report = reader.tick()
            assert sizes(report) == {"celery/celery": 2} and report.errors == (), report.errors
            # The same AMQP connection all along: asking the API again did not drop it.
            assert reader.fallback._connection is connection is not None
    finally:
        listener.close()
        reader.close()
