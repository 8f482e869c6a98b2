"""OpenTelemetry metrics over OTLP/HTTP: settings, the request (a pure function of a TickReport),
and a sender that never holds up the loop.

Settings are OpenTelemetry's own variables, read as the OTel SDKs read them (see
https://opentelemetry.io/docs/specs/otel/protocol/exporter/). The request is an
ExportMetricsServiceRequest, written with our own small protobuf encoder or as OTLP/JSON.

Metric names (after the prefix; figure names come from the collector):
    <prefix>.size, <prefix>.latency, <prefix>.<figure>   one point per queue; attributes
                                    messaging.system and messaging.destination.name
    <prefix>.<system>.<figure>      system-wide; attribute messaging.system
    <prefix>.collector.<figure>     the collector's own (the tick's totals)
Every queue and system point also carries queue_metrics.datastore, the label of the datastore it
was read from (`redis` for REDIS_URL): the same queue in two Redis is two series.
A system-wide figure keeps the system in its name so that it can never share a name with a
per-queue figure (RQ's per-queue `failed` registry against Sidekiq's `failed` count, Celery's
per-queue `unacked` against its total): one OTLP metric name has one type and one meaning.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from queue_metrics import __version__
from queue_metrics.errors import ConfigError, readable_name
from queue_metrics.http import HttpConnection, MalformedAnswer
from queue_metrics.outputs import protobuf as pb
from queue_metrics.outputs.format import collector_figures, collector_metric_name, system_metric_name
from queue_metrics.sample import (
    COUNTER,
    GAUGE,
    UNIT_JOBS,
    UNIT_RATIO,
    UNIT_SECONDS,
    DatastoreSection,
    Figure,
    QueueSample,
    TickReport,
    sections,
)

PROTOBUF = "http/protobuf"
JSON = "http/json"
PROTOCOLS = (PROTOBUF, JSON)
CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
GZIP = "gzip"
NO_COMPRESSION = "none"

DEFAULT_BASE_ENDPOINT = "http://localhost:4318"
METRICS_PATH = "v1/metrics"
DEFAULT_TIMEOUT_MS = 10_000
# How long the next tick waits for a request it cut off to end, so that one line counts both.
CUT_OFF_WAIT_S = 0.1
DEFAULT_SERVICE_NAME = "queue-metrics"
SCOPE_NAME = "queue-metrics"

# Semantic conventions for messaging systems.
ATTR_SYSTEM = "messaging.system"
ATTR_DESTINATION = "messaging.destination.name"
# Ours: which datastore (its label) a queue or a system was read from.
ATTR_DATASTORE = "queue_metrics.datastore"

# AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA in metrics.proto.
DELTA = 1
# Queues per request: a tick of ten thousand queues goes as several requests on one connection,
# each a few hundred kilobytes before gzip, rather than one of many megabytes built in memory.
QUEUES_PER_REQUEST = 500
MIN_SECRET_LENGTH = 8
# HTTP header names are RFC 9110 tokens.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")

# Heroku's dyno metadata (labs: runtime-dyno-metadata), as resource attributes.
HEROKU_RESOURCE = (
    ("HEROKU_APP_ID", "heroku.app.id"),
    ("HEROKU_DYNO_ID", "service.instance.id"),
    ("HEROKU_SLUG_COMMIT", "heroku.release.commit"),
)

if TYPE_CHECKING:
    import ssl

Pairs = Tuple[Tuple[str, str], ...]


class OtlpSettings(NamedTuple):
    # The full URL we POST to (path included).
    endpoint: str
    headers: Pairs = ()
    # Seconds; always shorter than the loop's interval.
    timeout: float = DEFAULT_TIMEOUT_MS / 1000
    protocol: str = PROTOBUF
    # GZIP or NO_COMPRESSION when set; None: gzip, and plain requests if the endpoint refuses gzip.
    compression: Optional[str] = None
    resource: Pairs = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], interval: float) -> "OtlpSettings":
        values = {name: value for name, value in env.items() if value.strip() != ""}

        def signal(name: str) -> Tuple[Optional[str], str]:
            """The metrics-specific variable wins over the general one, as in every OTel SDK."""
            for variable in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
                if variable in values:
                    return values[variable].strip(), variable
            return None, f"OTEL_EXPORTER_OTLP_{name}"

        return cls(
            endpoint=_endpoint(values),
            headers=_headers(*signal("HEADERS")),
            timeout=_timeout(*signal("TIMEOUT"), interval),
            protocol=_protocol(*signal("PROTOCOL")),
            compression=_compression(*signal("COMPRESSION")),
            resource=_resource(values),
        )

    def describe(self) -> str:
        """For `config` and messages: the endpoint without password or query, header names only."""
        names = ",".join(name for name, _ in self.headers) or "none"
        return (
            f"{describe_endpoint(self.endpoint)} protocol={self.protocol} timeout={self.timeout:g}s "
            f"compression={self.compression or 'gzip (plain if refused)'} headers={names}"
        )

    def secrets(self) -> List[str]:
        """Strings never to print: header values, the URL's password and query."""
        parts = urllib.parse.urlsplit(self.endpoint)
        found = []
        for _, value in self.headers:
            # The whole value, and the credentials after a scheme word ("Basic ...", "Bearer ...").
            found += [value, value.split(" ")[-1]]
        found += [parts.password or "", parts.query]
        # Short strings are no credentials, and masking them would garble every line (a "1").
        return sorted({text for text in found if len(text) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def describe_endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _endpoint(values: Mapping[str, str]) -> str:
    variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
    # The value may hold a password or a key in its query: never repeat it in a message.
    try:
        if "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" in values:
            # Used as is: the variable names the whole URL.
            variable = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
            url = values[variable].strip()
        else:
            base = urllib.parse.urlsplit(values.get(variable, DEFAULT_BASE_ENDPOINT).strip())
            # The signal's path goes after the base's path (a query, if any, stays a query).
            url = base._replace(path=f"{base.path.rstrip('/')}/{METRICS_PATH}").geturl()
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{variable} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{variable} must be an http:// or https:// URL with a host")
    return url


def _pairs(text: str, variable: str) -> Pairs:
    """`key1=value1,key2=value2` with percent-encoded values (the W3C Baggage octets)."""
    pairs = []
    for index, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        name, equals, value = entry.partition("=")
        name = urllib.parse.unquote(name.strip())
        value = urllib.parse.unquote(value.strip())
        if not equals or not name:
            # Never the entry itself: it may be an API key.
            raise ConfigError(f"{variable}: entry {index} is not key=value")
        pairs.append((name, value))
    return tuple(pairs)


def _headers(text: Optional[str], variable: str) -> Pairs:
    if text is None:
        return ()
    headers = _pairs(text, variable)
    for index, (name, value) in enumerate(headers, start=1):
        if not HEADER_NAME.match(name):
            raise ConfigError(f"{variable}: header {index} has a name that HTTP does not allow")
        if any(ch in value for ch in "\r\n\0"):
            raise ConfigError(f"{variable}: the value of header {name} holds a line break")
    return headers


def _timeout(text: Optional[str], variable: str, interval: float) -> float:
    if text is None:
        # Leave the loop time for everything else it does.
        return min(DEFAULT_TIMEOUT_MS / 1000, interval / 2)
    try:
        milliseconds = float(text)
    except ValueError:
        raise ConfigError(f"{variable} must be a number of milliseconds, got {text!r}") from None
    if not milliseconds > 0 or milliseconds == float("inf"):
        raise ConfigError(f"{variable} must be a positive number of milliseconds, got {text!r}")
    if milliseconds / 1000 >= interval:
        raise ConfigError(f"{variable} ({text} ms) must be shorter than QUEUE_METRICS_INTERVAL ({interval:g} s)")
    return milliseconds / 1000


def _protocol(text: Optional[str], variable: str) -> str:
    word = (text or PROTOBUF).lower()
    if word not in PROTOCOLS:
        raise ConfigError(f"{variable} must be http/protobuf or http/json (grpc is not supported), got {text!r}")
    return word


def _compression(text: Optional[str], variable: str) -> Optional[str]:
    if text is None:
        return None
    word = text.lower()
    if word not in (GZIP, NO_COMPRESSION):
        raise ConfigError(f"{variable} must be gzip or none, got {text!r}")
    return word


def _resource(values: Mapping[str, str]) -> Pairs:
    """Resource attributes: detected ones, then OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME."""
    attributes: Dict[str, str] = {}
    if "HEROKU_APP_ID" in values or "HEROKU_APP_NAME" in values:
        attributes["cloud.provider"] = "heroku"
    for variable, attribute in HEROKU_RESOURCE:
        if variable in values:
            attributes[attribute] = values[variable].strip()
    attributes["service.name"] = values.get("HEROKU_APP_NAME", DEFAULT_SERVICE_NAME).strip()
    if "OTEL_RESOURCE_ATTRIBUTES" in values:
        attributes.update(_pairs(values["OTEL_RESOURCE_ATTRIBUTES"], "OTEL_RESOURCE_ATTRIBUTES"))
    if "OTEL_SERVICE_NAME" in values:
        attributes["service.name"] = values["OTEL_SERVICE_NAME"].strip()
    return tuple(attributes.items())


# --- the request: pure functions -------------------------------------------------------------


class Point(NamedTuple):
    attributes: Pairs
    value: float
    # True: written as an integer (as_int); False: as a double.
    integer: bool


class Metric(NamedTuple):
    name: str
    unit: str
    kind: str
    points: Tuple[Point, ...]


def _is_integer(figure: Figure) -> bool:
    return figure.unit not in (UNIT_SECONDS, UNIT_RATIO) and float(figure.value).is_integer()


def _point(attributes: Pairs, figure: Figure) -> Point:
    return Point(attributes, max(0.0, float(figure.value)), _is_integer(figure))


def queue_attributes(backend: str, queue: str, datastore: Pairs = ()) -> Pairs:
    """A queue's attributes; undecodable bytes in its name (kept as surrogates) shown as \\xNN.
    `datastore`: the datastore's attribute, when the report has datastores."""
    return ((ATTR_SYSTEM, backend), (ATTR_DESTINATION, readable_name(queue)), *datastore)


# A request's queues: runs of one datastore's samples, each with that datastore's attribute.
Piece = Tuple[Pairs, Sequence[QueueSample]]


def otlp_requests(
    report: TickReport,
    prefix: str = "queue",
    dropped: Optional[int] = None,
    queues_per_request: int = QUEUES_PER_REQUEST,
) -> Iterator[List[Metric]]:
    """Every figure of the tick as OTLP metrics, one metric per name in each request, one point
    per series; a request for each `queues_per_request` queues (with all their figures, whatever
    datastores they are in), the system-wide and the collector's own figures in the last one.

    Made one request at a time, as they are sent: the points of ten thousand queues are never
    all in memory at once, and no request grows with the app's queues.
    """
    pieces: List[Piece] = []
    room = queues_per_request
    left = len(report.samples)
    for section, samples, _ in sections(report):
        datastore = _datastore_attribute(section)
        start = 0
        while start < len(samples):
            taken = samples[start : start + room]
            pieces.append((datastore, taken))
            start += len(taken)
            room -= len(taken)
            left -= len(taken)
            if room == 0 and left > 0:
                yield _metrics(pieces, report, prefix, dropped, last=False)
                pieces, room = [], queues_per_request
    yield _metrics(pieces, report, prefix, dropped, last=True)


def _datastore_attribute(section: Optional[DatastoreSection]) -> Pairs:
    return () if section is None else ((ATTR_DATASTORE, section.label),)


def _metrics(
    pieces: Sequence[Piece], report: TickReport, prefix: str, dropped: Optional[int], last: bool
) -> List[Metric]:
    sizes: List[Point] = []
    latencies: List[Point] = []
    groups: Dict[Tuple[str, str, str], List[Point]] = {
        (f"{prefix}.size", UNIT_JOBS, GAUGE): sizes,
        (f"{prefix}.latency", UNIT_SECONDS, GAUGE): latencies,
    }

    def add(name: str, attributes: Pairs, figure: Figure) -> None:
        groups.setdefault((name, figure.unit, figure.kind), []).append(_point(attributes, figure))

    for datastore, samples in pieces:
        for sample in samples:
            attributes = queue_attributes(sample.backend, sample.queue, datastore)
            sizes.append(Point(attributes, max(0, sample.size), True))
            if sample.latency is not None:
                latencies.append(Point(attributes, max(0.0, sample.latency), False))
            for figure in sample.figures:
                add(f"{prefix}.{figure.name}", attributes, figure)
    if last:
        for section, _, systems in sections(report):
            datastore = _datastore_attribute(section)
            for system in systems:
                attributes = ((ATTR_SYSTEM, system.backend), *datastore)
                for figure in system.figures:
                    add(system_metric_name(prefix, system.backend, figure.name), attributes, figure)
        for figure in collector_figures(report, dropped):
            add(collector_metric_name(prefix, figure.name), (), figure)
    return [Metric(name, unit, kind, tuple(points)) for (name, unit, kind), points in groups.items() if points]


def point_count(metrics: Sequence[Metric]) -> int:
    return sum(len(metric.points) for metric in metrics)


def report_point_count(report: TickReport, dropped: Optional[int] = None) -> int:
    """How many points `otlp_requests` makes of the report, without making them."""
    per_queue = sum(1 + (sample.latency is not None) + len(sample.figures) for sample in report.samples)
    return per_queue + sum(len(system.figures) for system in report.systems) + len(collector_figures(report, dropped))


def _pb_attribute(field: int, key: str, value: str) -> bytes:
    # KeyValue { string key = 1; AnyValue value = 2 }, AnyValue { string string_value = 1 }
    return pb.message_field(field, pb.string_field(1, key) + pb.message_field(2, pb.string_field(1, value)))


def _pb_attributes(field: int, attributes: Pairs) -> bytes:
    return b"".join(_pb_attribute(field, key, value) for key, value in attributes)


def _pb_point_attributes(attributes: Pairs, shared: Dict[Tuple[str, str], bytes]) -> bytes:
    """A point's attributes (field 7). `shared`: the pairs a request's queues have in common (their
    system, their datastore), each encoded once for the request; a queue's name is its own."""
    encoded = []
    for pair in attributes:
        if pair[0] == ATTR_DESTINATION:
            encoded.append(_pb_attribute(7, *pair))
            continue
        written = shared.get(pair)
        if written is None:
            written = shared[pair] = _pb_attribute(7, *pair)
        encoded.append(written)
    return b"".join(encoded)


def _pb_points(
    points: Sequence[Point], times: bytes, attributes: Dict[Pairs, bytes], shared: Dict[Tuple[str, str], bytes]
) -> bytes:
    """NumberDataPoint { start_time_unix_nano = 2; time_unix_nano = 3; as_double = 4; as_int = 6;
    attributes = 7 }, each wrapped as field 1 (`data_points`) of Gauge or Sum. `attributes`: each
    series' attributes as encoded once for the request (a queue's are in each of its metrics)."""
    encoded = []
    for point in points:
        value = pb.sfixed64_field(6, int(point.value)) if point.integer else pb.double_field(4, point.value)
        written = attributes.get(point.attributes)
        if written is None:
            written = attributes[point.attributes] = _pb_point_attributes(point.attributes, shared)
        encoded.append(pb.message_field(1, times + value + written))
    return b"".join(encoded)


def protobuf_request(metrics: Sequence[Metric], resource: Pairs, start_ns: int, time_ns: int) -> bytes:
    """ExportMetricsServiceRequest in the protobuf wire format.

    Gauges carry only their time; delta sums carry the interval since the previous export.
    """
    encoded = []
    gauge_times = pb.fixed64_field(3, time_ns)
    sum_times = pb.fixed64_field(2, start_ns) + gauge_times
    attributes: Dict[Pairs, bytes] = {}
    shared: Dict[Tuple[str, str], bytes] = {}
    for metric in metrics:
        if metric.kind == COUNTER:
            # Sum { data_points = 1; aggregation_temporality = 2; is_monotonic = 3 }
            points = _pb_points(metric.points, sum_times, attributes, shared)
            data = pb.message_field(7, points + pb.uint_field(2, DELTA) + pb.uint_field(3, 1))
        else:
            # Gauge { data_points = 1 }
            data = pb.message_field(5, _pb_points(metric.points, gauge_times, attributes, shared))
        # Metric { name = 1; unit = 3; gauge = 5; sum = 7 }
        encoded.append(pb.string_field(1, metric.name) + pb.string_field(3, metric.unit) + data)
    # InstrumentationScope { name = 1; version = 2 }
    scope = pb.string_field(1, SCOPE_NAME) + pb.string_field(2, __version__)
    # ScopeMetrics { scope = 1; metrics = 2 }
    scope_metrics = pb.message_field(1, scope) + pb.repeated_messages(2, encoded)
    # ResourceMetrics { resource = 1; scope_metrics = 2 }; Resource { attributes = 1 }
    resource_metrics = pb.message_field(1, _pb_attributes(1, resource)) + pb.message_field(2, scope_metrics)
    # ExportMetricsServiceRequest { resource_metrics = 1 }
    return pb.message_field(1, resource_metrics)


def _json_attributes(attributes: Pairs) -> list:
    return [{"key": k, "value": {"stringValue": v}} for k, v in attributes]


def _json_point(point: Point, start_ns: int, time_ns: int, attributes: Dict[Pairs, list]) -> dict:
    """`attributes`: each series' attribute list, made once for the request and referred to by
    each of its points (json.dumps writes it out each time): a queue's are in each of its metrics."""
    # OTLP/JSON: lowerCamelCase names, 64-bit integers as decimal strings, enums as numbers.
    written = attributes.get(point.attributes)
    if written is None:
        written = attributes[point.attributes] = _json_attributes(point.attributes)
    entry: dict = {"attributes": written}
    if start_ns:
        entry["startTimeUnixNano"] = str(start_ns)
    entry["timeUnixNano"] = str(time_ns)
    if point.integer:
        entry["asInt"] = str(int(point.value))
    else:
        entry["asDouble"] = point.value
    return entry


def json_request(metrics: Sequence[Metric], resource: Pairs, start_ns: int, time_ns: int) -> bytes:
    """The same request in OTLP/JSON (the protobuf JSON mapping, as OTLP specifies it)."""
    encoded = []
    attributes: Dict[Pairs, list] = {}
    for metric in metrics:
        entry: dict = {"name": metric.name, "unit": metric.unit}
        if metric.kind == COUNTER:
            entry["sum"] = {
                "dataPoints": [_json_point(p, start_ns, time_ns, attributes) for p in metric.points],
                "aggregationTemporality": DELTA,
                "isMonotonic": True,
            }
        else:
            entry["gauge"] = {"dataPoints": [_json_point(p, 0, time_ns, attributes) for p in metric.points]}
        encoded.append(entry)
    document = {
        "resourceMetrics": [
            {
                "resource": {"attributes": _json_attributes(resource)},
                "scopeMetrics": [{"scope": {"name": SCOPE_NAME, "version": __version__}, "metrics": encoded}],
            }
        ]
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


# --- the sender ------------------------------------------------------------------------------


class OtlpSender:
    """POSTs each tick's requests from a short-lived background thread, so the loop never waits.

    One request at a time: when the previous one is still running at the next tick (a receiver
    that hangs past the timeout), it is cut off and the new tick's data is dropped and counted,
    with what the cut-off tick had not sent, in one line. Nothing is kept for later: a failed
    request's points are dropped and counted.
    """

    def __init__(
        self,
        settings: OtlpSettings,
        prefix: str,
        err: Callable[[Sequence[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self._err = err
        self._clock = clock
        self._gzip = settings.compression != NO_COMPRESSION
        self._where = describe_endpoint(settings.endpoint)
        self._lock = threading.Lock()
        self._dropped = 0
        self._thread: Optional[threading.Thread] = None
        self._connection: Optional[HttpConnection] = None
        self._ssl_context: Optional[ssl.SSLContext] = None
        self._started = 0.0
        # The running tick's points not yet accepted by the receiver (its thread counts them down).
        self._unsent = 0
        # Set by `send` when it cuts the running tick off: its line counts that tick's unsent
        # points, and the thread stops without a line of its own (the reset connection is ours).
        self._cut_off = False
        # Delta sums cover the time since the previous export (the process start at first).
        self._last_ns = int(clock() * 1e9)

    def take_dropped(self) -> int:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    def _drop(self, count: int, message: str) -> None:
        with self._lock:
            self._dropped += count
        self._err([f"otlp: {message}; dropped {count} data points"])

    def send(self, report: TickReport, now: float, dropped: Optional[int] = None) -> None:
        count = report_point_count(report, dropped)
        time_ns = int(now * 1e9)
        start_ns, self._last_ns = self._last_ns, time_ns
        if self._thread is not None and self._thread.is_alive():
            running_for = self._clock() - self._started
            self._cut_off = True
            self._abort()
            self._thread.join(CUT_OFF_WAIT_S)  # its shut-down socket ends it at once, as a rule
            self._drop(
                count + self._unsent,
                f"the previous request to {self._where} was still running after {running_for:.2f} s (cut off)",
            )
            return
        self._started = self._clock()
        self._cut_off, self._unsent = False, count
        self._thread = threading.Thread(
            target=self._post, args=(report, dropped, start_ns, time_ns), name="otlp", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait for the requests under way (for `once`); at most the timeout, plus a little."""
        if self._thread is not None:
            self._thread.join(self.settings.timeout + 0.5 if timeout is None else timeout)

    def _abort(self) -> None:
        connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _post(self, report: TickReport, dropped: Optional[int], start_ns: int, time_ns: int) -> None:
        """The tick's requests, one after the other on one connection, each within the timeout;
        the first that fails drops its points and those of the requests after it."""
        encode = json_request if self.settings.protocol == JSON else protobuf_request
        try:
            for metrics in otlp_requests(report, self.prefix, dropped):
                if self._cut_off:  # between two requests: the next tick's line counts the rest
                    return
                body = encode(metrics, self.settings.resource, start_ns, time_ns)
                # The timeout bounds each request, as OTEL_EXPORTER_OTLP_TIMEOUT does in the SDKs;
                # a tick's requests still running at the next tick are cut off (see `send`).
                deadline = time.monotonic() + self.settings.timeout
                status, reason = self._request(body, self._gzip, deadline)
                if self.settings.compression is None and self._gzip and status in (400, 415):
                    # The endpoint may not take gzip: try once without, and stay without if that works.
                    status, reason = self._request(body, False, deadline)
                    if 200 <= status < 300:
                        self._gzip = False
                if not 200 <= status < 300:
                    self._failed(f"{self._where} answered HTTP {status} {reason}".rstrip())
                    return
                self._unsent -= point_count(metrics)
        except socket.timeout:
            self._failed(f"no answer from {self._where} within {self.settings.timeout:g} s")
        except (OSError, ValueError) as error:  # MalformedAnswer is a ValueError
            self._failed(f"cannot send to {self._where}: {_describe_error(error)}")
        except Exception as error:  # noqa: BLE001 - a thread's traceback would be many lines
            self._failed(f"cannot send to {self._where}: unexpected {error.__class__.__name__}")
        finally:
            self._close()

    def _failed(self, message: str) -> None:
        """The tick's unsent points are lost: one line, unless `send` cut the tick off (its line
        counts them)."""
        if not self._cut_off:
            self._drop(self._unsent, message)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _request(self, body: bytes, compressed: bool, deadline: float) -> Tuple[int, str]:
        """POSTs one request, on the tick's connection (opened at its first request)."""
        import gzip

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        parts = urllib.parse.urlsplit(self.settings.endpoint)
        connection = self._connection or self._connect(parts, remaining)
        headers = {"Content-Type": CONTENT_TYPES[self.settings.protocol], "User-Agent": f"queue-metrics/{__version__}"}
        headers.update(self.settings.headers)
        if compressed:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = GZIP
        path = parts.path or "/"
        answer = connection.post(
            f"{path}?{parts.query}" if parts.query else path, headers, body, max(0.001, deadline - time.monotonic())
        )
        if not answer.reusable:
            # The server closes it, or said more than we read: the next request opens another.
            self._close()
        return answer.status, answer.reason

    def _connect(self, parts: urllib.parse.SplitResult, timeout: float) -> HttpConnection:
        tls = None
        if parts.scheme == "https":
            if self._ssl_context is None:
                import ssl  # only for an https:// endpoint: it loads OpenSSL

                # The system's CA certificates, read once.
                self._ssl_context = ssl.create_default_context()
            tls = self._ssl_context
        # The host is never empty: the settings checked it.
        self._connection = HttpConnection(parts.hostname or "", parts.port, parts.scheme, timeout, tls)
        return self._connection


def _describe_error(error: BaseException) -> str:
    ssl = sys.modules.get("ssl")  # loaded by an https:// endpoint or rediss://, never for this

    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, MalformedAnswer):
        return str(error)
    if ssl is not None and isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error.__class__.__name__})"
    if isinstance(error, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return error.__class__.__name__
