"""RabbitMQ (CloudAMQP) datastores: found with no setting, read through the management API of
the machine's real broker (a fresh vhost per test), against real Celery producers and workers;
read-only, and every fault a clear line while the other datastores are still reported."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Dict, Iterator, List

import kombu
import pytest
from celery import Celery

from helpers.rabbitmq import (
    API,
    amqp_url,
    api,
    delete_user,
    delete_vhost,
    fast_statistics,
    make_user,
    make_vhost,
    queues,
    quoted,
)
from helpers.servers import free_port, tls_proxy
from helpers.workers import HELPERS, queue_figures, system_figures, wait_for, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.datastores import all_locations
from queue_metrics.datastores.rabbitmq.locations import api_address, rabbitmq_locations, vhost_of
from queue_metrics.datastores.redis.reader import make_systems
from queue_metrics.errors import ConfigError
from queue_metrics.sample import LATENCY_ESTIMATED, TickReport

PASSWORD = "pw-Secr3t-x9"
# How far an estimated latency may be from the truth: a broker refresh (5 s by default) and a
# sample step (5 s), with room for the refresh of the other counter (latency.py).
LATENCY_BOUND = 12.0


@pytest.fixture(scope="module", autouse=True)
def _fast_statistics() -> None:
    fast_statistics()


@pytest.fixture
def vhost() -> Iterator[str]:
    name = make_vhost()
    yield name
    delete_vhost(name)


def collector(env: Dict[str, str]) -> Collector:
    return Collector(Settings.from_env({"QUEUE_METRICS_RABBITMQ_API_URL": API, **env}))


def sizes(report: TickReport) -> Dict[str, int]:
    return {f"{sample.backend}/{sample.queue}": sample.size for sample in report.samples}


def celery_app(url: str) -> Celery:
    app = Celery("shop", broker=url)
    app.conf.task_create_missing_queues = True
    # Each publish waits for the broker's confirm: a reading right after `publish` (on another
    # connection) then sees every message (without it, the last one may still be on its way).
    app.conf.broker_transport_options = {"confirm_publish": True}
    return app


def publish(app: Celery, queue: str, count: int, seconds: float = 0.0) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("shop.nap", args=(seconds,), queue=queue, producer=producer)


def kombu_size(url: str, queue: str) -> int:
    with kombu.Connection(url) as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count


def stats_show(vhost: str, expected: Dict[str, int]) -> None:
    """Until the API shows those ready counts and every queue's consumers (the broker refreshes
    the two from separate tables: for a moment a queue may have one and not the other)."""

    def shown() -> bool:
        listed = queues(vhost)
        ready = all(listed.get(name, {}).get("messages_ready") == count for name, count in expected.items())
        return ready and all("consumers" in row for row in listed.values())

    wait_for(shown, f"the API's statistics to show {expected}")


def publishes_show(vhost: str, expected: Dict[str, int]) -> None:
    """Until the API's publish counters show those counts (channels report them apart from the
    queues' ready counts, and later: a counter read before then would seem to change)."""

    def shown() -> bool:
        listed = queues(vhost)
        return all(
            listed.get(name, {}).get("message_stats", {}).get("publish") == count for name, count in expected.items()
        )

    wait_for(shown, f"the API's publish counters to show {expected}")


# -- found with no setting


def test_variables_found_in_order_deduplicated_and_labeled():
    cloud = "amqps://user:pw@bee.rmq.cloudamqp.com/vh"
    env = {
        "CLOUDAMQP_URL": cloud,
        "CELERY_BROKER_URL": cloud.replace("amqps", "amqp"),  # the same broker: one datastore
        "RABBITMQ_URL": "amqp://other:pw@rabbit.example.com/",
        "BROKER_URL": "redis://localhost:6379/0",  # a Redis URL: the Redis kind's
    }
    found = rabbitmq_locations(env)
    assert [(location.label, location.source) for location in found] == [
        ("cloudamqp", "CLOUDAMQP_URL"),
        ("rabbitmq_url", "RABBITMQ_URL"),  # `rabbitmq` is a system's name
    ]
    assert [(location.kind, location.label) for location in all_locations(env)] == [
        ("redis", "broker"),
        ("rabbitmq", "cloudamqp"),
        ("rabbitmq", "rabbitmq_url"),
    ]
    assert [location.label for location in rabbitmq_locations({"CELERY_BROKER_URL": "amqp://h/"})] == ["celery_broker"]
    assert [location.label for location in rabbitmq_locations({**env, "QUEUE_METRICS_AMQP_URL": "amqp://x/"})] == [
        "amqp"
    ]
    named = all_locations({**env, "QUEUE_METRICS_DATASTORES": "RABBITMQ_URL"})
    assert [(location.kind, location.label) for location in named] == [("rabbitmq", "rabbitmq_url")]


def test_a_rabbitmq_only_app_reads_no_default_redis():
    (only,) = all_locations({"CLOUDAMQP_URL": "amqps://u:p@bee.rmq.cloudamqp.com/vh"})
    assert only.kind == "rabbitmq"
    # Only the default Redis when nothing at all is named.
    (default,) = all_locations({})
    assert default.kind == "redis"


def test_api_address_vhost_and_credentials():
    cloud = api_address("amqps://us%40er:p%2Fw@bee.rmq.cloudamqp.com/my%2Fvh", None)
    assert cloud.describe() == "https://bee.rmq.cloudamqp.com/api/ (vhost 'my/vh')"
    assert (cloud.user, cloud.password, cloud.queues_path()) == ("us@er", "p/w", "/api/queues/my%2Fvh")
    own = api_address("amqp://u:p@h/", "http://mon:mpw@h:15672/api")
    assert (own.scheme, own.port, own.path, own.user, own.password, own.vhost) == (
        "http",
        15672,
        "/api/",
        "mon",
        "mpw",
        "/",
    )
    assert vhost_of("amqp://h") == vhost_of("amqp://h/") == vhost_of("amqp://h/%2F") == "/"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"QUEUE_METRICS_AMQP_URL": "http://u:pw-Secr3t-x9@h/"}, "QUEUE_METRICS_AMQP_URL must start with amqp://"),
        ({"QUEUE_METRICS_AMQP_URL": "amqp://u:pw-Secr3t-x9@h:port/"}, "its port is not a number"),
        ({"CLOUDAMQP_URL": "amqp://u:pw-Secr3t-x9@h/", "QUEUE_METRICS_RABBITMQ_API_URL": "ftp://h/"}, "http://"),
        ({"QUEUE_METRICS_DATASTORES": "MY_URL", "MY_URL": "mysql://u:pw-Secr3t-x9@h/"}, "amqp://"),
    ],
)
def test_bad_settings_are_one_line_without_the_password(env, message):
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env(env)
    assert PASSWORD not in str(raised.value) and "\n" not in str(raised.value)


def test_the_redis_reader_leaves_the_rabbitmq_systems_alone_and_backends_take_them():
    assert [system.name for system in make_systems(Settings.from_env({}))] == [
        "sidekiq",
        "rq",
        "celery",
        "resque",
        "bullmq",
        "dramatiq",
    ]
    pinned = Settings.from_env({"QUEUE_METRICS_BACKENDS": "rabbitmq,celery"})
    assert pinned.backends == ("rabbitmq", "celery")
    assert [system.name for system in make_systems(pinned)] == ["celery"]
    assert pinned.of("celery") is not None  # Celery on Redis keeps its own settings


def test_a_redis_only_run_imports_nothing_of_rabbitmq(redis_url):
    code = (
        "import sys; from queue_metrics.runner import Ticker; from queue_metrics.config import Settings;"
        f"t = Ticker(Settings.from_env({{'REDIS_URL': {redis_url!r}}})); t.tick();"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('queue_metrics.datastores.rabbitmq', 'queue_metrics.http'))))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


# -- read through the management API


def test_sizes_match_the_api_and_kombu_and_queues_are_placed(vhost):
    url = amqp_url(vhost)
    app = celery_app(url)
    published_at = time.time()
    publish(app, "celery", 7)
    publish(app, "orders", 3)  # made on demand: bound to a direct exchange of its own name
    with kombu.Connection(url) as connection:
        channel = connection.default_channel
        channel.queue_declare(
            "dramatiq.default", durable=True, auto_delete=False
        )  # another app's: the default exchange
        for _ in range(4):
            channel.basic_publish(channel.prepare_message(b"x"), exchange="", routing_key="dramatiq.default")
        for plumbing in ("w1@host.celery.pidbox", "celeryev.0123", "celery_delayed_3"):
            channel.queue_declare(plumbing, durable=False, auto_delete=False)
        channel.queue_declare("reply.q", auto_delete=True)
    app.pool.force_close_all()
    stats_show(vhost, {"celery": 7, "orders": 3, "dramatiq.default": 4})
    report = collector({"CLOUDAMQP_URL": url}).tick()
    assert report.errors == ()
    assert sizes(report) == {"celery/celery": 7, "celery/orders": 3, "rabbitmq/dramatiq.default": 4}
    listed = queues(vhost)
    for sample in report.samples:
        assert sample.size == listed[sample.queue]["messages_ready"] == kombu_size(url, sample.queue)
        # Estimated from the counters (latency.py): none yet, or within the estimate's bound
        # (a broker refresh and a sample step) of the time since the messages were published.
        # (None with no source while the broker's two sample lists share no grid point yet.)
        assert sample.latency_source == LATENCY_ESTIMATED or sample.latency is None
        assert sample.latency is None or 0 <= sample.latency <= time.time() - published_at + LATENCY_BOUND
        assert queue_figures(report, sample.backend, sample.queue) == {"unacked": 0, "consumers": 0}
    assert {name: figure.value for name, figure in system_figures(report, "celery").items()} == {
        "unacked": 0,
        "consumers": 0,
    }
    assert {name: figure.value for name, figure in system_figures(report, "rabbitmq").items()} == {"consumers": 0}


def test_real_workers_held_messages_and_consumers(vhost):
    url = amqp_url(vhost)
    app = celery_app(url)
    publish(app, "celery", 20, seconds=120.0)  # long naps: what the workers hold stays put
    app.pool.force_close_all()
    command = [sys.executable, "-m", "celery", "-A", "celery_worker_app", "worker", "--pool", "solo", "-Q", "celery"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    env = {"CELERY_BROKER_URL": url, "PYTHONPATH": HELPERS}
    with worker_process(command + ["-n", "one@%h"], env), worker_process(command + ["-n", "two@%h"], env):

        def settled() -> bool:
            row = queues(vhost)["celery"]
            return row.get("consumers") == 2 and row.get("messages_unacknowledged", 0) >= 2

        wait_for(settled, "two workers holding messages", timeout=90)
        time.sleep(2.5)  # past the statistics refresh (1 s) after the workers' last prefetch
        report = collector({"CLOUDAMQP_URL": url}).tick()
        row = queues(vhost)["celery"]
        declared = kombu_size(url, "celery")
    figures = queue_figures(report, "celery", "celery")
    assert figures == {"unacked": row["messages_unacknowledged"], "consumers": 2}
    assert sizes(report)["celery/celery"] == row["messages_ready"] == declared
    assert system_figures(report, "celery")["consumers"].value == 2
    assert system_figures(report, "celery")["unacked"].value == row["messages_unacknowledged"]


def test_a_monitoring_user_with_no_permissions_reads_and_one_without_the_tag_is_told(vhost):
    url = amqp_url(vhost)
    publish(celery_app(url), "celery", 2)
    stats_show(vhost, {"celery": 2})
    make_user("qm-monitor", PASSWORD, "monitoring", vhost)
    make_user("qm-plain", PASSWORD, "", vhost)
    try:
        report = collector({"CLOUDAMQP_URL": amqp_url(vhost, "qm-monitor", PASSWORD)}).tick()
        assert report.errors == () and sizes(report) == {"celery/celery": 2}
        refused = collector({"CLOUDAMQP_URL": amqp_url(vhost, "qm-plain", PASSWORD)}).tick()
    finally:
        delete_user("qm-monitor")
        delete_user("qm-plain")
    (line,) = refused.errors
    assert "Not management user" in line and "set_user_tags qm-plain monitoring" in line
    assert PASSWORD not in line


def test_a_queue_deleted_between_ticks_is_gone_and_the_rest_reported(vhost):
    url = amqp_url(vhost)
    app = celery_app(url)
    publish(app, "celery", 1)
    publish(app, "orders", 2)
    app.pool.force_close_all()
    stats_show(vhost, {"celery": 1, "orders": 2})
    reading = collector({"CLOUDAMQP_URL": url})
    assert sizes(reading.tick()) == {"celery/celery": 1, "celery/orders": 2}
    api("DELETE", f"queues/{quoted(vhost)}/orders")
    report = reading.tick()
    assert report.errors == () and sizes(report) == {"celery/celery": 1}
    assert set(reading.datastores[0].observations) == {"celery"}  # type: ignore[attr-defined]


def test_odd_vhost_names_are_percent_encoded():
    odd = make_vhost("qm/odd %x")
    try:
        publish(celery_app(amqp_url(odd)), "celery", 3)
        stats_show(odd, {"celery": 3})
        report = collector({"CLOUDAMQP_URL": amqp_url(odd)}).tick()
        assert report.errors == () and sizes(report) == {"celery/celery": 3}
    finally:
        delete_vhost(odd)
    # `%2F`: the default vhost `/`.
    default = collector({"CLOUDAMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"})
    report = default.tick()
    assert report.errors == () and report.redis_ok
    assert default.datastores[0].describe() == f"{API} (vhost '/')"


# -- faults: one line naming the datastore, no password; Redis still reported


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_every_fault_is_one_line_and_redis_is_still_reported(vhost, client, redis_url, tmp_path):
    client.lpush("queue:default", json.dumps({"jid": "1", "enqueued_at": time.time()}))
    client.sadd("queues", "default")
    make_user("qm-nowhere", PASSWORD, "monitoring", None)  # no permission entry on the vhost
    lines: List[str] = []

    def one(env: Dict[str, str], expected: str, timeout: str = "2") -> str:
        env = {"REDIS_URL": redis_url, "QUEUE_METRICS_TIMEOUT": timeout, **env}
        started = time.monotonic()
        report = Collector(Settings.from_env(env)).tick()
        assert time.monotonic() - started < 2 * float(timeout) + 1
        assert sizes(report) == {"sidekiq/default": 1}  # the Redis datastore, still read
        assert len(report.errors) == 1, report.errors
        (line,) = report.errors
        assert line.startswith("cloudamqp: ") and expected in line, line
        assert PASSWORD not in line and "\n" not in line
        lines.append(line)
        return line

    api_url = {"QUEUE_METRICS_RABBITMQ_API_URL": API}
    try:
        one({"CLOUDAMQP_URL": amqp_url(vhost, "guest", PASSWORD), **api_url}, "rejected the credentials")
        one({"CLOUDAMQP_URL": amqp_url(vhost, "qm-nowhere", PASSWORD), **api_url}, "set_permissions -p")
    finally:
        delete_user("qm-nowhere")
    one({"CLOUDAMQP_URL": amqp_url("no-such-vhost-qm"), **api_url}, 'no vhost "no-such-vhost-qm"')
    # No management API, and no broker on the AMQP port either (the reader falls back to it).
    down = f"http://127.0.0.1:{free_port()}/api/"
    nowhere = f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}/{quoted(vhost)}"
    line = one({"CLOUDAMQP_URL": nowhere, "QUEUE_METRICS_RABBITMQ_API_URL": down}, "connection refused")
    assert "the AMQP server at amqp://127.0.0.1:" in line
    with silent_server() as port:
        slow = {"CLOUDAMQP_URL": amqp_url(vhost), "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{port}/api/"}
        one(slow, "did not answer within 1 s", timeout="1")
    plain = {"CLOUDAMQP_URL": amqp_url(vhost), "QUEUE_METRICS_RABBITMQ_API_URL": "https://127.0.0.1:15672/api/"}
    one(plain, "is that port really https?")
    with tls_proxy(tmp_path, 15672) as (port, cert):
        https = {"CLOUDAMQP_URL": amqp_url(vhost), "QUEUE_METRICS_RABBITMQ_API_URL": f"https://127.0.0.1:{port}/api/"}
        one(https, "certificate verify failed")  # verified by default: a self-signed certificate fails
        for trusted in ({"QUEUE_METRICS_TLS_CA_FILE": cert}, {"QUEUE_METRICS_TLS_VERIFY": "false"}):
            report = Collector(Settings.from_env({**https, **trusted})).tick()
            assert report.errors == () and report.redis_ok
    print("\n".join(lines))


# -- read-only


def test_ticks_change_none_of_the_brokers_counters(vhost):
    url = amqp_url(vhost)
    app = celery_app(url)
    publish(app, "celery", 5)
    publish(app, "orders", 2)
    app.pool.force_close_all()
    with kombu.Connection(url) as connection:
        connection.default_channel.queue_declare("other", durable=True, auto_delete=False)
    stats_show(vhost, {"celery": 5, "orders": 2})
    publishes_show(vhost, {"celery": 5, "orders": 2})

    def counters() -> Dict[str, tuple]:
        return {
            name: (
                row.get("messages"),
                row.get("messages_ready"),
                row.get("messages_unacknowledged"),
                *(row.get("message_stats", {}).get(key, 0) for key in ("publish", "redeliver", "get", "deliver")),
            )
            for name, row in queues(vhost).items()
        }

    before = counters()
    reading = collector({"CLOUDAMQP_URL": url})
    started, ticks = time.monotonic(), 0
    while ticks < 1000 and time.monotonic() - started < 20:
        report = reading.tick()
        assert report.errors == () and len(report.samples) == 3
        ticks += 1
    print(f"{ticks} ticks in {time.monotonic() - started:.1f} s")
    assert ticks >= 200
    time.sleep(2.5)  # two statistics refreshes
    assert counters() == before
    assert before["celery"][:2] == (5, 5)


def test_doctor_reads_a_rabbitmq_datastore(vhost):
    from queue_metrics.doctor import checkup_all

    url = amqp_url(vhost)
    publish(celery_app(url), "celery", 1)
    stats_show(vhost, {"celery": 1})
    result = checkup_all(Settings.from_env({"CLOUDAMQP_URL": url, "QUEUE_METRICS_RABBITMQ_API_URL": API}))
    assert result.lines[1].endswith("celery: 1 queue"), result.lines
    # A job waits and no worker consumes the queue: what doctor is for.
    assert not result.healthy
    assert result.lines[-1] == 'Problem: celery: queue "celery" has 1 job and no worker listens to it'
    with kombu.Connection(url) as connection:
        # A consumer (the broker's own count: no task is taken, prefetch 0 and no ack needed).
        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        channel.basic_consume("celery", callback=lambda message: None)
        wait_for(lambda: queues(vhost)["celery"].get("consumers") == 1, "the consumer in the API's statistics")
        listened = checkup_all(Settings.from_env({"CLOUDAMQP_URL": url, "QUEUE_METRICS_RABBITMQ_API_URL": API}))
    assert listened.healthy, listened.lines
    refused = checkup_all(
        Settings.from_env(
            {"CLOUDAMQP_URL": amqp_url(vhost, "guest", PASSWORD), **{"QUEUE_METRICS_RABBITMQ_API_URL": API}}
        )
    )
    assert not refused.healthy and "rejected the credentials" in refused.lines[-1]


def test_a_backlog_gets_an_estimated_latency_and_a_priority_queue_a_reason(vhost):
    """A backlog published while the loop watches: every tick after it shows a latency within the
    bound of the truth (no consumer: the truth is the time since the first publish); a priority
    queue has none, and doctor says why."""
    url = amqp_url(vhost)
    with kombu.Connection(url) as connection:
        channel = connection.default_channel
        channel.queue_declare("work", durable=True, auto_delete=False)
        channel.queue_declare("urgent", durable=True, auto_delete=False, arguments={"x-max-priority": 5})
        reader = collector({"CLOUDAMQP_URL": url})
        reader.tick()  # the queues seen empty: what comes next is seen arriving
        first = time.time()
        for _ in range(5):
            channel.basic_publish(channel.prepare_message(b"x"), exchange="", routing_key="work")
            channel.basic_publish(channel.prepare_message(b"x"), exchange="", routing_key="urgent")
    estimates = []
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and len(estimates) < 3:
        time.sleep(3)
        report = reader.tick()
        assert report.errors == ()
        samples = {sample.queue: sample for sample in report.samples}
        if "work" not in samples or "urgent" not in samples or samples["work"].size != 5:
            continue  # the broker has not refreshed its counts yet
        truth = time.time() - first
        assert samples["urgent"].size == 5 and samples["urgent"].latency is None
        if samples["work"].latency is not None:
            estimates.append((samples["work"].latency, truth))
    assert len(estimates) == 3, estimates
    for estimate, truth in estimates:
        assert truth - LATENCY_BOUND <= estimate <= truth + LATENCY_BOUND, (estimate, truth)
    assert estimates[-1][0] > estimates[0][0]  # it grows while nobody consumes
    from queue_metrics.doctor import checkup_all

    doctor = checkup_all(Settings.from_env({"CLOUDAMQP_URL": url, "QUEUE_METRICS_RABBITMQ_API_URL": API}))
    assert any(
        line.startswith('Note: queue "urgent" has no latency: a priority queue (x-max-priority)')
        for line in doctor.lines
    ), doctor.lines
