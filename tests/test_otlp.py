"""The OTLP/HTTP output: settings read as OTel SDKs read them; every request decoded with the
official schema (opentelemetry-proto, protobuf and its JSON mapping) and every data point compared
with the real queues; receivers that hang, fail, are down, or refuse gzip."""

from __future__ import annotations

import re
import time

import pytest
import redis
import rq
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from helpers.process import lines_of, queue_metrics, start
from helpers.producers import fill_three_systems, latency_then
from helpers.receivers import OtlpReceiver, by_queue, points, resource_of, single
from helpers.servers import free_port, self_signed_certificate
from helpers.watch import Watcher, collector_line
from queue_metrics.config import ConfigError
from queue_metrics.outputs import protobuf as pb
from queue_metrics.outputs.otlp import (
    OtlpSender,
    OtlpSettings,
    json_request,
    otlp_requests,
    protobuf_request,
    report_point_count,
)
from queue_metrics.sample import COUNTER, DatastoreSection, Figure, QueueSample, SystemSample, TickReport

API_KEY = "glc_Sup3rSecretApiKey0123456789"


def settings(**env: str) -> OtlpSettings:
    return OtlpSettings.from_env(env, interval=30.0)


# --- settings --------------------------------------------------------------------------------


def test_endpoint_rules_as_in_the_otel_spec():
    assert settings().endpoint == "http://localhost:4318/v1/metrics"
    assert settings(OTEL_EXPORTER_OTLP_ENDPOINT="https://otlp.example.com/otlp").endpoint == (
        "https://otlp.example.com/otlp/v1/metrics"
    )
    assert settings(OTEL_EXPORTER_OTLP_ENDPOINT="https://otlp.example.com/otlp/").endpoint == (
        "https://otlp.example.com/otlp/v1/metrics"
    )
    assert settings(OTEL_EXPORTER_OTLP_ENDPOINT="https://otlp.example.com?key=1").endpoint == (
        "https://otlp.example.com/v1/metrics?key=1"
    )
    # The signal-specific variable is used as is, and wins.
    assert (
        settings(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://a:4318", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://b:9000/custom"
        ).endpoint
        == "http://b:9000/custom"
    )
    for value in ("otlp.example.com", "ftp://x/", "http://:80/", "http://host:port/", "http://[::1"):
        with pytest.raises(ConfigError, match="^OTEL_EXPORTER_OTLP_ENDPOINT ") as error:
            settings(OTEL_EXPORTER_OTLP_ENDPOINT=value)
        assert value not in str(error.value)


def test_headers_percent_decoded_and_never_in_a_message():
    parsed = settings(OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Basic%20{API_KEY}, x-scope-orgid = 42 ,,")
    assert parsed.headers == (("Authorization", f"Basic {API_KEY}"), ("x-scope-orgid", "42"))
    assert settings(OTEL_EXPORTER_OTLP_HEADERS="a=1", OTEL_EXPORTER_OTLP_METRICS_HEADERS="b=2").headers == (("b", "2"),)
    assert API_KEY not in parsed.describe() and "Authorization" in parsed.describe()
    assert API_KEY in parsed.secrets()
    for value in (f"Authorization {API_KEY}", f"bad name={API_KEY}", f"a={API_KEY}%0Ax"):
        with pytest.raises(ConfigError, match="^OTEL_EXPORTER_OTLP_HEADERS") as error:
            settings(OTEL_EXPORTER_OTLP_HEADERS=value)
        assert API_KEY not in str(error.value)


def test_timeout_protocol_compression():
    assert settings().timeout == 10.0
    assert OtlpSettings.from_env({}, interval=5.0).timeout == 2.5  # always shorter than the interval
    assert settings(OTEL_EXPORTER_OTLP_TIMEOUT="1500").timeout == 1.5
    assert settings(OTEL_EXPORTER_OTLP_TIMEOUT="9000", OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="250").timeout == 0.25
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_TIMEOUT \(30000 ms\) must be shorter than"):
        settings(OTEL_EXPORTER_OTLP_TIMEOUT="30000")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_METRICS_TIMEOUT must be a positive"):
        settings(OTEL_EXPORTER_OTLP_METRICS_TIMEOUT="-1")
    assert settings().protocol == "http/protobuf"
    assert settings(OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/json").protocol == (
        "http/json"
    )
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or http/json"):
        settings(OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert settings().compression is None
    assert settings(OTEL_EXPORTER_OTLP_COMPRESSION="none").compression == "none"
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_COMPRESSION must be gzip or none"):
        settings(OTEL_EXPORTER_OTLP_COMPRESSION="zstd")


def test_service_name_and_resource_attributes():
    assert dict(settings().resource) == {"service.name": "queue-metrics"}
    heroku = dict(settings(HEROKU_APP_NAME="shop", HEROKU_APP_ID="9d1b", HEROKU_DYNO_ID="1vac").resource)
    assert heroku == {
        "cloud.provider": "heroku",
        "heroku.app.id": "9d1b",
        "service.instance.id": "1vac",
        "service.name": "shop",
    }
    resource = dict(
        settings(
            HEROKU_APP_NAME="shop", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod%20eu,service.name=from-attrs"
        ).resource
    )
    assert resource["deployment.environment"] == "prod eu" and resource["service.name"] == "from-attrs"
    resource = dict(settings(OTEL_RESOURCE_ATTRIBUTES="service.name=a", OTEL_SERVICE_NAME="b").resource)
    assert resource["service.name"] == "b"
    with pytest.raises(ConfigError, match="OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value"):
        settings(OTEL_RESOURCE_ATTRIBUTES="novalue")


# --- the request, decoded with the official schema ---------------------------------------------


def captured_report() -> TickReport:
    return TickReport(
        samples=(
            QueueSample("sidekiq", "default", 12, 3.25),
            QueueSample("rq", "b\udcffad", 2, None, (Figure("failed", 4),)),
            QueueSample("celery", "celery", 0, 0.0, (Figure("unacked", 1),)),
        ),
        errors=("one",),
        backends=("sidekiq", "rq", "celery"),
        duration=0.0125,
        redis_ok=True,
        systems=(
            SystemSample("sidekiq", (Figure("failed", 5, kind=COUNTER), Figure("utilization", 0.5, "1"))),
            SystemSample("celery", (Figure("unacked", 3),)),
        ),
    )


def test_protobuf_and_json_decode_to_the_same_request_with_every_figure():
    [metrics] = otlp_requests(captured_report(), "queue", dropped=7)
    resource = (("service.name", "shop"),)
    from_protobuf = ExportMetricsServiceRequest.FromString(protobuf_request(metrics, resource, 10**18, 2 * 10**18))
    from_json = json_format.Parse(json_request(metrics, resource, 10**18, 2 * 10**18), ExportMetricsServiceRequest())
    assert from_protobuf == from_json
    found = points(from_protobuf)
    assert by_queue(found, "queue.size") == {("sidekiq", "default"): 12, ("rq", "b\\xffad"): 2, ("celery", "celery"): 0}
    assert by_queue(found, "queue.latency") == {("sidekiq", "default"): 3.25, ("celery", "celery"): 0.0}
    assert by_queue(found, "queue.failed") == {("rq", "b\\xffad"): 4}
    assert by_queue(found, "queue.unacked") == {("celery", "celery"): 1}
    # System-wide figures keep the system in their name: one name, one type, one meaning.
    assert found["queue.celery.unacked"] == [({"messaging.system": "celery"}, 3, found["queue.celery.unacked"][0][2])]
    failed = found["queue.sidekiq.failed"][0][2]
    assert failed.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    assert failed.sum.is_monotonic and failed.sum.data_points[0].start_time_unix_nano == 10**18
    assert single(found, "queue.sidekiq.utilization") == 0.5
    assert single(found, "queue.collector.errors") == 1 and single(found, "queue.collector.duration") == 0.0125
    assert single(found, "queue.collector.dropped") == 7
    units = {
        metric.name: metric.unit
        for rm in from_protobuf.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert (
        units["queue.size"] == "{job}" and units["queue.latency"] == "s" and units["queue.sidekiq.utilization"] == "1"
    )
    assert len(units) == len(metrics)  # one metric per name
    assert from_protobuf.resource_metrics[0].scope_metrics[0].scope.name == "queue-metrics"


def test_a_big_tick_goes_as_several_requests_on_one_connection_with_every_point_once():
    samples = tuple(QueueSample("rq", f"q{index:04d}", index, 1.5, (Figure("failed", 1),)) for index in range(1203))
    report = TickReport(
        samples, (), ("rq",), 0.01, True, systems=(SystemSample("rq", (Figure("workers", 2, "{worker}"),)),)
    )
    receiver = OtlpReceiver()
    errors: list = []
    try:
        sender = OtlpSender(settings(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url), "queue", errors.extend)
        sender.send(report, time.time())
        sender.wait()
        requests = [receiver.next() for _ in range(3)]  # 500 queues a request
        assert receiver.requests.empty() and errors == []
    finally:
        receiver.close()
    found = [points(request.decoded) for request in requests]
    sizes = {key: value for each in found for key, value in by_queue(each, "queue.size").items()}
    assert sizes == {("rq", f"q{index:04d}"): index for index in range(1203)}
    assert [len(each["queue.size"]) for each in found] == [500, 500, 203]
    assert sum(len(entries) for each in found for entries in each.values()) == report_point_count(report)
    # System-wide and collector figures once, in the last request.
    assert ["queue.rq.workers" in each for each in found] == [False, False, True]
    assert single(found[-1], "queue.collector.queues") == 1203
    assert len({request.peer for request in requests}) == 1  # one connection for the tick


def datastore(label: str, queues: int, systems: int = 0) -> DatastoreSection:
    return DatastoreSection(label, "redis", f"redis://{label}.example.com:6379/0", "X_URL", True, queues, systems, 0)


def by_datastore(found: dict, name: str) -> dict:
    return {
        (a["queue_metrics.datastore"], a["messaging.system"], a["messaging.destination.name"]): v
        for a, v, _ in found.get(name, [])
    }


def test_every_queue_and_system_point_says_its_datastore():
    report = captured_report()._replace(
        datastores=(datastore("redis", 1, 1), datastore("pink", 2, 1)), errors=("pink: one",)
    )
    [metrics] = otlp_requests(report, "queue", dropped=0)
    resource = (("service.name", "shop"),)
    from_protobuf = ExportMetricsServiceRequest.FromString(protobuf_request(metrics, resource, 10**18, 2 * 10**18))
    from_json = json_format.Parse(json_request(metrics, resource, 10**18, 2 * 10**18), ExportMetricsServiceRequest())
    assert from_protobuf == from_json
    found = points(from_protobuf)
    assert by_datastore(found, "queue.size") == {
        ("redis", "sidekiq", "default"): 12,
        ("pink", "rq", "b\\xffad"): 2,
        ("pink", "celery", "celery"): 0,
    }
    assert by_datastore(found, "queue.failed") == {("pink", "rq", "b\\xffad"): 4}
    assert [attributes for attributes, _, _ in found["queue.sidekiq.utilization"]] == [
        {"messaging.system": "sidekiq", "queue_metrics.datastore": "redis"}
    ]
    assert [attributes for attributes, _, _ in found["queue.celery.unacked"]] == [
        {"messaging.system": "celery", "queue_metrics.datastore": "pink"}
    ]
    # The collector's figures are the tick's totals: no datastore.
    assert all(attributes == {} for name in found if ".collector." in name for attributes, _, _ in found[name])
    assert sum(len(entries) for entries in found.values()) == report_point_count(report, 0)


def test_requests_of_500_queues_across_datastores_with_every_point_once():
    # 1,203 queues in three datastores, none a multiple of 500: the requests still hold 500,
    # 500 and 203 queues, and every point its own datastore.
    counts = {"a": 300, "b": 450, "c": 453}
    samples = tuple(
        QueueSample("rq", f"q{index:04d}", index, 1.5, (Figure("failed", 1),))
        for count in counts.values()
        for index in range(count)
    )
    systems = tuple(SystemSample("rq", (Figure("workers", 2, "{worker}"),)) for _ in counts)
    report = TickReport(
        samples,
        (),
        ("rq",),
        0.01,
        True,
        systems=systems,
        datastores=tuple(datastore(label, count, 1) for label, count in counts.items()),
    )
    requests = list(otlp_requests(report, "queue", 0))
    assert [len(metrics[0].points) for metrics in requests] == [500, 500, 203]
    found = [points(ExportMetricsServiceRequest.FromString(protobuf_request(m, (), 1, 2))) for m in requests]
    sizes = {key: value for each in found for key, value in by_datastore(each, "queue.size").items()}
    assert sizes == {(label, "rq", f"q{index:04d}"): index for label, count in counts.items() for index in range(count)}
    failed = {key for each in found for key in by_datastore(each, "queue.failed")}
    assert failed == set(sizes)
    assert sum(len(entries) for each in found for entries in each.values()) == report_point_count(report, 0)
    assert ["queue.rq.workers" in each for each in found] == [False, False, True]
    assert [a["queue_metrics.datastore"] for a, _, _ in found[-1]["queue.rq.workers"]] == list(counts)
    # Exactly 1,000 queues: two requests, the second the last.
    exact = report._replace(samples=samples[:1000], datastores=(datastore("a", 600, 3), datastore("b", 400)))
    first, last = otlp_requests(exact)
    assert [len(first[0].points), len(last[0].points)] == [500, 500]
    assert {"queue.rq.workers", "queue.collector.queues"} <= {metric.name for metric in last}
    assert not {"queue.rq.workers", "queue.collector.queues"} & {metric.name for metric in first}


def test_varints_and_fixed_fields_as_protobuf_writes_them():
    assert pb.varint(0) == b"\x00" and pb.varint(300) == b"\xac\x02"
    assert pb.varint(-1) == b"\xff" * 9 + b"\x01"
    assert pb.uint_field(2, 0) == b"" and pb.uint_field(2, 1) == b"\x10\x01"
    assert pb.sfixed64_field(6, 0) == b"\x31" + bytes(8)  # a oneof member is written even when 0


# --- the real process, real producers, real receivers ------------------------------------------


@pytest.fixture
def receivers():
    started = []

    def receiver(mode: str = "ok") -> OtlpReceiver:
        started.append(OtlpReceiver(mode))
        return started[-1]

    yield receiver
    for one in started:
        one.close()


def otlp_env(redis_url: str, endpoint: str, **extra: str) -> dict:
    return {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "logs,otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        **extra,
    }


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_every_data_point_equals_the_real_queues(redis_url, receivers, protocol):
    expected = fill_three_systems(redis_url)
    receiver = receivers()
    headers = f"Authorization=Basic%20{API_KEY},X-Scope-OrgID=shop%2Fprod"
    result = queue_metrics(
        "once",
        env=otlp_env(
            redis_url,
            receiver.url + "/otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_HEADERS=headers,
            HEROKU_APP_NAME="shop-web",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "sample#queue.sidekiq.default.size=3 " in result.stdout  # the log lines still come
    request = receiver.next()
    assert request.path == "/otlp/v1/metrics"
    # Headers arrive as set, percent-decoded; gzip by default.
    assert request.headers["authorization"] == f"Basic {API_KEY}"
    assert request.headers["x-scope-orgid"] == "shop/prod"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == (
        "application/json" if protocol == "http/json" else "application/x-protobuf"
    )
    assert resource_of(request.decoded)["service.name"] == "shop-web"

    found = points(request.decoded)
    assert by_queue(found, "queue.size") == {key: reference.size for key, reference in expected.items()}
    sent_at = found["queue.size"][0][2].gauge.data_points[0].time_unix_nano / 1e9
    assert abs(sent_at - time.time()) < 10
    latencies = by_queue(found, "queue.latency")
    assert set(latencies) == set(expected)
    for key, reference in expected.items():
        assert latencies[key] == pytest.approx(latency_then(reference, sent_at), abs=0.5), key
    assert single(found, "queue.collector.queues") == len(expected)
    assert single(found, "queue.collector.errors") == 0
    assert single(found, "queue.collector.dropped") == 0
    assert API_KEY not in result.stdout + result.stderr


def test_a_receiver_that_refuses_gzip_gets_plain_requests(redis_url, receivers):
    fill_three_systems(redis_url)
    receiver = receivers("no-gzip")
    process = start("run", env=otlp_env(redis_url, receiver.url, QUEUE_METRICS_INTERVAL="0.3"))
    watcher = Watcher(process)
    try:
        first, second = receiver.next(), receiver.next()
        assert "content-encoding" not in first.headers and "content-encoding" not in second.headers
        watcher.drain(0.5)
        # One 415 and its plain retry, then plain requests only: one hit each from then on.
        assert receiver.hits <= receiver.requests.qsize() + 3
        assert "error:" not in watcher.all_text()
    finally:
        process.kill()
        process.wait()


def run_against(redis_url: str, endpoint: str, **extra: str) -> Watcher:
    env = otlp_env(
        redis_url,
        endpoint,
        QUEUE_METRICS_INTERVAL="0.5",
        OTEL_EXPORTER_OTLP_TIMEOUT="300",
        OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer%20{API_KEY}",
        **extra,
    )
    return Watcher(start("run", env=env))


def check_loop_goes_on(watcher: Watcher, error: str) -> None:
    """The error line (one per failed export), log lines every tick on time, drops counted."""
    _, _, line = watcher.wait_for(lambda stream, text: stream == "stderr" and "otlp:" in text, timeout=10)
    assert re.fullmatch(rf"queue-metrics: error: otlp: {error}; dropped \d+ data points\n", line), line
    dropped = watcher.wait_for(
        lambda stream, text: collector_line(stream, text) and "collector.dropped=0" not in text, timeout=10
    )[2]
    assert int(re.search(r"count#queue\.collector\.dropped=(\d+)", dropped)[1]) > 0
    ticks = [at for at, stream, text in watcher.drain(2.6) if collector_line(stream, text)]
    assert 4 <= len(ticks) <= 7, ticks
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5 + 0.25  # never held up by the receiver
    assert API_KEY not in watcher.all_text() and "Traceback" not in watcher.all_text()


def test_a_receiver_that_hangs_costs_at_most_its_timeout(redis_url, receivers):
    fill_three_systems(redis_url)
    receiver = receivers("hang")
    watcher = run_against(redis_url, receiver.url)
    try:
        check_loop_goes_on(watcher, rf"no answer from http://127\.0\.0\.1:{receiver.port}/v1/metrics within 0\.3 s")
    finally:
        watcher.process.kill()
        watcher.process.wait()


def test_a_request_still_running_at_the_next_tick_is_cut_off(redis_url, receivers):
    # 1,200 queues go as three requests (500 queues each), each answered after 0.3 s: a tick's
    # requests take 0.9 s, and the next tick, 0.5 s later, finds them still running.
    connection = redis.Redis.from_url(redis_url)
    for number in range(1200):
        rq.Queue(f"q{number}", connection=connection).enqueue("os.getcwd")
    receiver = receivers("slow")
    env = otlp_env(redis_url, receiver.url, QUEUE_METRICS_INTERVAL="0.5", OTEL_EXPORTER_OTLP_TIMEOUT="400")
    watcher = Watcher(start("run", env=env))
    try:
        _, _, line = watcher.wait_for(lambda stream, text: stream == "stderr" and "cut off" in text, timeout=10)
        found = re.fullmatch(
            rf"queue-metrics: error: otlp: the previous request to http://127\.0\.0\.1:{receiver.port}/v1/metrics"
            r" was still running after (\d+\.\d\d) s \(cut off\); dropped \d+ data points\n",
            line,
        )
        assert found, line
        assert 0.3 <= float(found[1]) <= 0.9  # about one interval, said to the hundredth
        # One line counts both ticks' lost points: the new tick's and what the cut-off one had not
        # sent. The next collector line's counter says the same number.
        dropped = int(re.search(r"dropped (\d+) data points", line)[1])
        counted = watcher.wait_for(
            lambda stream, text: collector_line(stream, text) and "collector.dropped=0" not in text, timeout=10
        )[2]
        assert int(re.search(r"count#queue\.collector\.dropped=(\d+)", counted)[1]) == dropped
        seen = watcher.drain(2.6)
        ticks = [at for at, stream, text in seen if collector_line(stream, text)]
        assert 4 <= len(ticks) <= 7, ticks
        assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5 + 0.25  # never held up by the receiver
        # The cut-off request's reset connection is ours: no second line blames the receiver.
        errors = [text for _, stream, text in watcher.seen if stream == "stderr" and "error:" in text]
        assert errors and all("(cut off)" in text for text in errors), errors
        assert "Traceback" not in watcher.all_text()
    finally:
        watcher.process.kill()
        watcher.process.wait()


def test_a_receiver_that_answers_500(redis_url, receivers):
    fill_three_systems(redis_url)
    receiver = receivers("fail")
    watcher = run_against(redis_url, receiver.url)
    try:
        check_loop_goes_on(
            watcher,
            rf"http://127\.0\.0\.1:{receiver.port}/v1/metrics answered HTTP 500 "
            "Internal Server Error",
        )
    finally:
        watcher.process.kill()
        watcher.process.wait()


def test_a_receiver_that_is_down_and_a_url_password_never_shown(redis_url):
    fill_three_systems(redis_url)
    port = free_port()
    watcher = run_against(redis_url, f"http://user:{API_KEY}@127.0.0.1:{port}/otlp?api-key={API_KEY}")
    try:
        check_loop_goes_on(watcher, rf"cannot send to http://127\.0\.0\.1:{port}/otlp/v1/metrics: connection refused")
    finally:
        watcher.process.kill()
        watcher.process.wait()


def test_config_shows_outputs_without_secrets():
    result = queue_metrics(
        "config",
        env={
            "QUEUE_METRICS_OUTPUTS": "otlp,statsd",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://u:{API_KEY}@otlp.example.com",
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Basic%20{API_KEY}",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = lines_of(result.stdout)
    assert "outputs=statsd,otlp" in lines
    assert "statsd=127.0.0.1:8125 tags=on" in lines
    assert (
        "otlp=https://otlp.example.com/v1/metrics protocol=http/protobuf timeout=10s "
        "compression=gzip (plain if refused) headers=Authorization"
    ) in lines
    assert API_KEY not in result.stdout + result.stderr


def test_bad_output_settings_are_usage_errors():
    for env, message in (
        (
            {"QUEUE_METRICS_OUTPUTS": "logs,graphite"},
            "QUEUE_METRICS_OUTPUTS: unknown output 'graphite' (choose from logs, statsd, otlp, prometheus)",
        ),
        ({"QUEUE_METRICS_OUTPUTS": ","}, "QUEUE_METRICS_OUTPUTS names no output"),
        (
            {"QUEUE_METRICS_OUTPUTS": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": f"{API_KEY}"},
            "OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not key=value",
        ),
    ):
        result = queue_metrics("once", env=env)
        assert result.returncode == 2
        assert lines_of(result.stderr) == [f"queue-metrics: usage error: {message}"]
        assert API_KEY not in result.stderr


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("otlp-tls"))


def test_https_endpoint_verified_against_the_system_certificates(redis_url, certificate):
    expected = fill_three_systems(redis_url)
    receiver = OtlpReceiver(tls=certificate)
    try:
        # Untrusted (self-signed): refused, in one line.
        result = queue_metrics("once", env=otlp_env(redis_url, receiver.url))
        assert result.returncode == 0
        assert re.fullmatch(
            rf"queue-metrics: error: otlp: cannot send to https://localhost:{receiver.port}/v1/metrics: "
            r"TLS failed \(CERTIFICATE_VERIFY_FAILED\); dropped \d+ data points\n",
            result.stderr,
        )
        # Trusted (OpenSSL's SSL_CERT_FILE names the CA bundle): sent over TLS.
        result = queue_metrics("once", env=otlp_env(redis_url, receiver.url, SSL_CERT_FILE=certificate[0]))
        assert result.returncode == 0 and result.stderr == ""
        found = points(receiver.next().decoded)
        assert by_queue(found, "queue.size") == {key: reference.size for key, reference in expected.items()}
    finally:
        receiver.close()


def test_the_same_queue_on_two_redis_says_its_datastore(make_server, receivers):
    from helpers.collect import sidekiq

    first, second = make_server(), make_server()
    for server in (first, second):
        sidekiq(server.url, {"enqueue": {"default": 2}})
    receiver = receivers()
    env = {
        "QUEUE_METRICS_REDIS_URLS": f"a={first.url},b={second.url}",
        "QUEUE_METRICS_OUTPUTS": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    result = queue_metrics("once", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    found = points(receiver.next().decoded)
    assert by_datastore(found, "queue.size") == {("a", "sidekiq", "default"): 2, ("b", "sidekiq", "default"): 2}
    assert set(by_datastore(found, "queue.latency")) == {("a", "sidekiq", "default"), ("b", "sidekiq", "default")}
    retry = sorted((a["queue_metrics.datastore"], a["messaging.system"], v) for a, v, _ in found["queue.sidekiq.retry"])
    assert retry == [("a", "sidekiq", 0), ("b", "sidekiq", 0)]
    assert single(found, "queue.collector.queues") == 2
