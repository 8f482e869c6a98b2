"""A Prometheus `/metrics` endpoint: settings, the exposition (pure functions of a TickReport),
and a small HTTP server in one daemon thread.

Names (`p` is the prefix with every character outside [a-zA-Z0-9_] made `_`):

    {p}_size{system,queue,datastore}             jobs waiting (gauge)
    {p}_latency_seconds{system,queue,datastore}  the oldest job's wait (gauge; none when unknown)
    {p}_<figure>[_seconds|_total]{system,queue,datastore}   a queue's other figures
    {p}_<system>_<figure>[_seconds|_total]{system,datastore} a system-wide figure
    {p}_collector_*                               the collector's own (no labels)

A figure in seconds gets `_seconds`; a counter `_total`. Our counters are "happened since the last
tick"; here they are summed into a total since the process started, as Prometheus counters are.

A scrape never waits for a tick and a tick never waits for a scrape: each tick renders the body
(gzipped bytes) and swaps one reference; the server thread only sends bytes it is handed (and
inflates them, once a tick, for a client that takes no gzip).

The server is one thread with at most MAX_CONNECTIONS connections: when a new one comes and all
are taken, the one idle longest makes room, else the one that has been writing longest (a scrape
takes a millisecond to send, so only a client that does not read is that old): Prometheus' scrape
always gets in.
"""

from __future__ import annotations

import functools
import math
import re
import selectors
import socket
import threading
import time
import zlib
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union

from queue_metrics.errors import ConfigError
from queue_metrics.sample import COUNTER, UNIT_SECONDS, Figure, TickReport, sections
from queue_metrics.setting_values import host_port

ADDRESS_VARIABLE = "QUEUE_METRICS_PROMETHEUS_ADDRESS"
# 9808: no exporter in Prometheus' port allocation list claims it; local only unless asked.
DEFAULT_ADDRESS = "127.0.0.1:9808"

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS_MEDIA = "application/openmetrics-text"

GAUGE_TYPE = "gauge"
COUNTER_TYPE = "counter"
SECONDS = "seconds"
NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")

# Counters keyed by (sample name, label text): their totals since the process started.
Totals = Dict[Tuple[str, str], float]


class PrometheusSettings(NamedTuple):
    host: str = "127.0.0.1"
    port: int = 9808

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "PrometheusSettings":
        text = env.get(ADDRESS_VARIABLE, "").strip() or DEFAULT_ADDRESS
        return cls(*host_port(text, ADDRESS_VARIABLE, DEFAULT_ADDRESS))

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


# --- the exposition: pure functions ----------------------------------------------------------


class Family(NamedTuple):
    """One metric family: `name` without `_total` (a counter's samples add it), `unit` is
    SECONDS or "", `samples` its sample lines, UTF-8, each ending in a line feed (the same in both
    formats)."""

    name: str
    kind: str
    unit: str
    help: str
    samples: Union[bytes, bytearray]


def metric_prefix(prefix: str) -> str:
    """The naming contract's `p`: every character outside [a-zA-Z0-9_] made `_`, and a leading
    `_` when it would begin with a digit. The one copy: `queue-metrics alerts` reads it too."""
    cleaned = NAME_UNSAFE.sub("_", prefix)
    # A name cannot begin with a digit.
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def escape_label(value: str) -> str:
    """A label value as the exposition formats quote it: `\\`, `"` and line feeds escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def number(value: float) -> str:
    """Prometheus' float text: `12`, `0.25`, `1e-05`, `NaN`, `+Inf`, `-Inf`."""
    if type(value) is int:  # most figures: counts, written at once
        return str(value)
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


QUEUE_HELP = {
    "size": "Jobs waiting in the queue.",
    "latency": "How long the oldest waiting job has waited (none when unknown).",
    "running": "Jobs running now.",
    "running_age": "How long the longest-running job has run.",
    "due": "Scheduled jobs whose time has come but that have not entered the queue.",
    "due_age": "How long the oldest due job is overdue.",
    "consumers": "Workers or consumers listening to the queue.",
    "unacked": "Messages delivered to a worker and not yet acknowledged.",
    "failed": "Failed jobs of the queue.",
    "delayed": "Jobs scheduled for later.",
    "paused": "1 when the queue is paused.",
}


def _help(name: str, system: Optional[str] = None) -> str:
    """A queue figure's own words, or a general line (the README lists every figure)."""
    words = name.replace("_", " ")
    if system is not None:
        return f"The {system} system-wide {words} figure (see the README)."
    return QUEUE_HELP.get(name, f"The queue's {words} figure, as its queue system reports it (see the README).")


class FigureSpec(NamedTuple):
    """How one figure is exposed: its family's name (without `_total`), type, unit and help."""

    name: str
    kind: str
    unit: str
    help: str


@functools.lru_cache(maxsize=1024)
def figure_spec(base: str, name: str, unit: str, kind: str, system: Optional[str]) -> FigureSpec:
    """Made once per distinct figure: a tick has thousands of figures and a few dozen names."""
    seconds = unit == UNIT_SECONDS
    family = f"{base}_{NAME_UNSAFE.sub('_', name)}{'_' + SECONDS if seconds else ''}"
    return FigureSpec(
        family, COUNTER_TYPE if kind == COUNTER else GAUGE_TYPE, SECONDS if seconds else "", _help(name, system)
    )


class _FamilyBuilder:
    """Families in first-seen order, each with its sample lines in order.

    Each family's lines go into one growing buffer as they are made: a thousand queues' seven
    thousand lines are never as many string objects at once, which would leave the memory
    allocator's arenas of a web dyno's process larger after every tick (measured: 0.8 MB).
    """

    def __init__(self) -> None:
        self.specs: List[FigureSpec] = []
        # Keyed by name and type: a figure that were a counter in one system and a gauge in another
        # makes two families (`x_total` and `x`), never a counter's TYPE over a gauge's lines.
        self.samples: Dict[Tuple[str, str], bytearray] = {}

    def add(self, spec: FigureSpec, labels: str, value: str) -> None:
        key = (spec.name, spec.kind)
        found = self.samples.get(key)
        if found is None:
            found = self.samples[key] = bytearray()
            self.specs.append(spec)
        name = f"{spec.name}_total" if spec.kind == COUNTER_TYPE else spec.name
        line = f"{name}{{{labels}}} {value}\n" if labels else f"{name} {value}\n"
        # A queue name read from bytes that are not UTF-8 holds surrogates: each becomes `?`, as
        # the exposition must be UTF-8 (Prometheus refuses the whole scrape otherwise).
        found += line.encode("utf-8", "replace")

    def families(self) -> List[Family]:
        # The buffers themselves, not copies.
        return [Family(*spec, self.samples[(spec.name, spec.kind)]) for spec in self.specs]


def families_of(
    report: TickReport, prefix: str, now: float, dropped: Optional[int], totals: Mapping[Tuple[str, str], float]
) -> Tuple[List[Family], Totals]:
    """The tick's metric families, and the counters' new totals (`totals` plus this tick's).

    A counter series absent from this tick is forgotten (memory stays bounded when queues come
    and go; Prometheus reads a series that starts again from its new total as a reset), except
    those of a datastore that could not be read this tick: they come back with it. A tick that
    failed as a whole (no datastore section, not read) keeps every total.
    """
    p = metric_prefix(prefix)
    builder = _FamilyBuilder()
    add = builder.add
    new_totals: Totals = {}
    unread: Set[str] = set()
    size = FigureSpec(f"{p}_size", GAUGE_TYPE, "", QUEUE_HELP["size"])
    latency = FigureSpec(f"{p}_latency_seconds", GAUGE_TYPE, SECONDS, QUEUE_HELP["latency"])

    def counted(name: str, labels: str, delta: float) -> str:
        key = (name, labels)
        total = totals.get(key, 0.0) + max(0.0, delta)  # a total never goes down
        new_totals[key] = total
        return number(total)

    def add_figures(base: str, figures: Tuple[Figure, ...], labels: str, system: Optional[str]) -> None:
        for figure in figures:
            spec = figure_spec(base, figure.name, figure.unit, figure.kind, system)
            if spec.kind == COUNTER_TYPE:
                add(spec, labels, counted(spec.name, labels, float(figure.value)))
            elif spec.unit:
                add(spec, labels, number(max(0.0, float(figure.value))))
            else:
                add(spec, labels, number(figure.value))

    for section, samples, systems in sections(report):
        where = "" if section is None else f',datastore="{escape_label(section.label)}"'
        if section is not None and not section.ok:
            unread.add(where)
        for sample in samples:
            labels = f'system="{escape_label(sample.backend)}",queue="{escape_label(sample.queue)}"{where}'
            add(size, labels, number(sample.size))
            if sample.latency is not None:
                # A time is never negative (a clock a little ahead of another's); the other outputs agree.
                add(latency, labels, number(max(0.0, sample.latency)))
            if sample.figures:
                add_figures(p, sample.figures, labels, None)
        for system in systems:
            labels = f'system="{escape_label(system.backend)}"{where}'
            add_figures(f"{p}_{NAME_UNSAFE.sub('_', system.backend)}", system.figures, labels, system.backend)
    failed = not report.datastores and not report.redis_ok
    for key, total in totals.items():
        if key not in new_totals and (failed or any(key[1].endswith(where) for where in unread)):
            new_totals[key] = total
    collector = f"{p}_collector"
    for name, unit, help_text, value in (
        ("up", "", "1 when the last tick read its datastores, else 0.", 1 if report.redis_ok else 0),
        ("last_tick_timestamp", SECONDS, "Unix time of the last tick.", now),
        ("duration", SECONDS, "How long the last tick took.", report.duration),
        ("queues", "", "Queues the last tick read.", len(report.samples)),
        ("errors", "", "Errors in the last tick.", len(report.errors)),
    ):
        name = f"{collector}_{name}_{unit}" if unit else f"{collector}_{name}"
        add(FigureSpec(name, GAUGE_TYPE, unit, help_text), "", number(value))
    if dropped is not None:
        name = f"{collector}_dropped"
        spec = FigureSpec(name, COUNTER_TYPE, "", "Data points the StatsD and OTLP outputs could not send.")
        add(spec, "", counted(name, "", float(dropped)))
    return builder.families(), new_totals


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def family_head(family: Family, openmetrics: bool = False) -> bytes:
    """One family's `# HELP` and `# TYPE` (and OpenMetrics' `# UNIT`) lines."""
    # Text format declares a counter by its samples' name; OpenMetrics by the family's.
    declared = f"{family.name}_total" if family.kind == COUNTER_TYPE and not openmetrics else family.name
    head = f"# HELP {declared} {_escape_help(family.help, openmetrics)}\n# TYPE {declared} {family.kind}\n"
    if openmetrics and family.unit:
        head += f"# UNIT {declared} {family.unit}\n"
    return head.encode("utf-8")


def exposition(families: Sequence[Family], openmetrics: bool = False) -> str:
    """The families as Prometheus text format 0.0.4 or, with `openmetrics`, OpenMetrics 1.0: each
    family's metadata, then all its samples together."""
    body = b"".join(family_head(family, openmetrics) + family.samples for family in families)
    return body.decode("utf-8") + (EOF if openmetrics else "")


EOF = "# EOF\n"
# gzip's fastest level: at 1,000 queues 0.9 ms for 524 kB into 29 kB; level 6 takes 2.2 ms for 26 kB.
GZIP_LEVEL = 1
GZIP_WBITS = 31  # zlib's gzip container


def gzipped_exposition(families: Sequence[Family], openmetrics: bool = False) -> bytes:
    """The exposition, gzipped a family at a time: the whole text is never one string."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    parts = []
    for family in families:
        parts.append(compressor.compress(family_head(family, openmetrics)))
        parts.append(compressor.compress(family.samples))
    if openmetrics:
        parts.append(compressor.compress(EOF.encode()))
    parts.append(compressor.flush())
    return b"".join(parts)


# --- the server ------------------------------------------------------------------------------

MAX_HEADER_BYTES = 8192
# A request must arrive whole within this long of its connection (or its first byte after a
# kept-alive connection's previous response): slowloris clients are closed.
REQUEST_TIMEOUT = 5.0
# A kept-alive connection may wait this long for its next request: longer than the usual scrape
# intervals (15 s to 60 s), so Prometheus keeps its one connection.
KEEPALIVE_TIMEOUT = 120.0
# A response must be read within this long; a client that does not read is cut.
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
ACCEPTS_PER_WAKE = 64
RECV_BYTES = 16384
# Errors in the server thread: one line at most this often (the others are counted into it).
ERROR_LINE_INTERVAL = 60.0
STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
ROOT_PAGE = b"queue-metrics: the metrics are at /metrics\n"
# Before the first tick there is nothing true to serve: a 503 makes Prometheus record the scrape
# as failed (`up` 0, "server returned HTTP status 503" on its targets page), which is the truth.
# An empty 200 would say "read fine, no queues"; `collector_up 0` would say the datastores failed.
# The first tick comes at once after start, so this lasts one tick at most.
NO_TICK_YET = b"no tick yet: the first one is under way\n"


class Bodies(NamedTuple):
    """What the server sends, gzipped: the text format, and OpenMetrics once a client has asked
    for it. Kept gzipped (29 kB rather than 524 kB at 1,000 queues: the resident memory of a web
    dyno's process), and sent so to every client that accepts gzip, as Prometheus does; for
    the others (curl) the server thread inflates it, once per tick."""

    text: bytes
    openmetrics: Optional[bytes] = None


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.lower().split(","):
        coding, _, parameters = item.partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = parameters.replace(" ", "")
            return quality not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header lists OpenMetrics with a non-zero q (Prometheus lists it first)."""
    for item in accept.lower().split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if media != OPENMETRICS_MEDIA:
            continue
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    if float(value) <= 0:
                        break
                except ValueError:
                    break
        else:
            return True
    return False


class Request(NamedTuple):
    method: str
    path: str
    keep_alive: bool
    accept: str
    has_body: bool
    gzip: bool = False


LINE_END = re.compile(r"\r?\n")
# The blank line that ends a request's head, and the empty lines a client may send before one.
HEAD_END = re.compile(rb"\r?\n\r?\n")
LEADING_EMPTY_LINES = re.compile(rb"(?:\r?\n)+")


def parse_request(head: bytes) -> Optional[Request]:
    """The request line and headers (up to the blank line); None when malformed."""
    try:
        text = head.decode("latin-1")
        # Lines end in CRLF, or a bare LF (RFC 9112 2.2 lets a server take one).
        request_line, *header_lines = LINE_END.split(text)
        method, target, version = request_line.split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: Dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
    gzip = accepts_gzip(headers.get("accept-encoding", ""))
    return Request(method, target.split("?", 1)[0], keep_alive, headers.get("accept", ""), has_body, gzip)


def response_head(status: int, content_type: str, length: int, keep_alive: bool, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {STATUS_TEXT[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n"
        f"{extra}"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")


class _Connection:
    __slots__ = ("sock", "inbuf", "chunks", "deadline", "since", "keep_alive", "writing", "waiting")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        # The response's pieces still to send: the head, then the body (a shared, never copied one).
        self.chunks: List[memoryview] = []
        self.deadline = now + REQUEST_TIMEOUT
        # Since when it has been idle (no response under way), or writing its response.
        self.since = now
        self.keep_alive = True
        self.writing = False
        # True while kept alive between requests, with no byte of the next one yet.
        self.waiting = False


class PrometheusServer:
    """Serves the last tick's body from one daemon thread: a selector over non-blocking sockets,
    at most MAX_CONNECTIONS at once, each with its deadline."""

    def __init__(
        self,
        settings: PrometheusSettings,
        err: Callable[[Sequence[str]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._err = err
        self._clock = clock
        self.bodies: Optional[Bodies] = None
        # Set by the server thread when a client asks for OpenMetrics; the tick then renders it.
        self.openmetrics_asked = False
        self._listener = _listen(settings)
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._connections: Dict[socket.socket, _Connection] = {}
        self._stopping = False
        self._last_error_line = -math.inf
        self._errors_unsaid = 0
        # The last body inflated for a client without gzip, and its inflated bytes.
        self._plain: Optional[Tuple[bytes, bytes]] = None
        self._thread = threading.Thread(target=self._serve, name="prometheus", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def publish(self, bodies: Bodies) -> None:
        """The tick's bodies: one reference swapped, seen by the next response."""
        self.bodies = bodies
        # The last body inflated for a client without gzip is let go with the body it came from
        # (a response still sending holds its own reference): half a megabyte at 1,000 queues.
        self._plain = None

    def close(self) -> None:
        self._stopping = True
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass
        self._thread.join(2.0)

    # The thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._step()
                except Exception as error:  # noqa: BLE001 (the server outlives a defect; one line says it)
                    self._report(error)
                    time.sleep(0.05)  # never a busy loop on an error that repeats
        finally:
            for connection in list(self._connections.values()):
                self._drop(connection)
            for sock in (self._listener, self._wake_read, self._wake_write):
                sock.close()
            self._selector.close()

    def _step(self) -> None:
        now = self._clock()
        timeout = min((c.deadline for c in self._connections.values()), default=now + KEEPALIVE_TIMEOUT) - now
        for key, _ in self._selector.select(max(0.0, min(timeout, 1.0))):
            sock = key.fileobj
            if sock is self._listener:
                self._accept()
            elif sock is self._wake_read:
                try:
                    self._wake_read.recv(64)
                except OSError:
                    pass
            else:
                connection = key.data
                if connection is not None and connection.sock in self._connections:
                    self._serve_one(connection)
        now = self._clock()
        for connection in [c for c in self._connections.values() if c.deadline <= now]:
            self._drop(connection)

    def _serve_one(self, connection: _Connection) -> None:
        try:
            if connection.writing:
                self._write(connection)
            else:
                self._read(connection)
        except Exception as error:  # noqa: BLE001 (one client's trouble closes its connection only)
            self._drop(connection)
            if not isinstance(error, OSError):
                self._report(error)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of file descriptors, a reset before accept
                self._report(error)
                # The listener stays ready while descriptors lack: not a busy loop meanwhile.
                time.sleep(0.1)
                return
            sock.setblocking(False)
            if len(self._connections) >= MAX_CONNECTIONS:
                self._evict()
            now = self._clock()
            connection = _Connection(sock, now)
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _evict(self) -> None:
        """Make room: close the connection idle longest, else the one writing longest (a scrape's
        response goes out in a millisecond: only a client that does not read is that old)."""
        self._drop(min(self._connections.values(), key=lambda c: (c.writing, c.since)))

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._drop(connection)
            return
        if connection.waiting:
            connection.waiting = False
            connection.deadline = self._clock() + REQUEST_TIMEOUT
        connection.inbuf += data
        self._answer_buffered(connection)
        if connection.writing:
            self._write(connection)

    def _answer_buffered(self, connection: _Connection) -> None:
        """Starts the response to the request in `inbuf`, if one is there whole."""
        # Empty lines before a request line are skipped (RFC 9112 2.2).
        leading = LEADING_EMPTY_LINES.match(connection.inbuf)
        if leading is not None:
            del connection.inbuf[: leading.end()]
        found = HEAD_END.search(connection.inbuf)
        if found is None:
            if len(connection.inbuf) > MAX_HEADER_BYTES:
                self._respond(connection, 431, b"request header too large\n", keep_alive=False)
            return
        if found.start() > MAX_HEADER_BYTES:
            self._respond(connection, 431, b"request header too large\n", keep_alive=False)
            return
        head = bytes(connection.inbuf[: found.start()])
        del connection.inbuf[: found.end()]
        request = parse_request(head)
        if request is None:
            self._respond(connection, 400, b"bad request\n", keep_alive=False)
            return
        # A body is never read: answer, then close rather than parse it as the next request.
        keep_alive = request.keep_alive and not request.has_body
        if request.method not in ("GET", "HEAD"):
            self._respond(connection, 405, b"only GET\n", keep_alive=False, extra="Allow: GET, HEAD\r\n")
            return
        head_only = request.method == "HEAD"
        if request.path == "/metrics":
            bodies = self.bodies
            if bodies is None:
                self._respond(connection, 503, NO_TICK_YET, keep_alive, head_only, "Retry-After: 1\r\n")
                return
            body, content_type = bodies.text, TEXT_CONTENT_TYPE
            if wants_openmetrics(request.accept):
                self.openmetrics_asked = True
                # Until a tick has rendered OpenMetrics, the text format: a valid answer to any Accept.
                if bodies.openmetrics is not None:
                    body, content_type = bodies.openmetrics, OPENMETRICS_CONTENT_TYPE
            extra = "Vary: Accept, Accept-Encoding\r\n"
            if request.gzip:
                extra += "Content-Encoding: gzip\r\n"
            else:
                body = self._inflated(body)
            self._respond(connection, 200, body, keep_alive, head_only, extra, content_type)
        elif request.path == "/":
            self._respond(connection, 200, ROOT_PAGE, keep_alive, head_only)
        else:
            self._respond(connection, 404, b"not found: the metrics are at /metrics\n", keep_alive, head_only)

    def _inflated(self, body: bytes) -> bytes:
        """A gzipped body inflated for a client without gzip: once per body and tick."""
        plain = self._plain  # one read: `publish` may clear it meanwhile
        if plain is None or plain[0] is not body:
            plain = self._plain = (body, zlib.decompress(body, GZIP_WBITS))
        return plain[1]

    def _respond(
        self,
        connection: _Connection,
        status: int,
        body: bytes,
        keep_alive: bool,
        head_only: bool = False,
        extra: str = "",
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """Sets the response up; the caller writes it (`_write`)."""
        now = self._clock()
        connection.keep_alive = keep_alive
        connection.writing = True
        connection.since = now
        connection.deadline = now + WRITE_TIMEOUT
        head = response_head(status, content_type, len(body), keep_alive, extra)
        connection.chunks = [memoryview(head)] if head_only else [memoryview(head), memoryview(body)]
        self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)

    def _write(self, connection: _Connection) -> None:
        """Sends what the socket takes; once a response is out, answers the next pipelined request
        (a loop, not a call per request: thousands of them never run out of stack)."""
        while connection.writing:
            while connection.chunks:
                # Head and body in one call (gathered by the kernel, never copied): a head sent
                # alone would wait for the client's delayed ACK before the body (40 ms on Linux).
                try:
                    sent = connection.sock.sendmsg(connection.chunks)
                except (BlockingIOError, InterruptedError):
                    return
                while connection.chunks and len(connection.chunks[0]) <= sent:
                    sent -= len(connection.chunks.pop(0))
                if connection.chunks and sent:
                    connection.chunks[0] = connection.chunks[0][sent:]
            # The whole response is sent.
            if not connection.keep_alive:
                self._drop(connection)
                return
            now = self._clock()
            connection.writing = False
            connection.since = now
            self._selector.modify(connection.sock, selectors.EVENT_READ, connection)
            if connection.inbuf:  # a pipelined request already here: its response, if whole
                connection.deadline = now + REQUEST_TIMEOUT
                self._answer_buffered(connection)
            else:
                connection.waiting = True
                connection.deadline = now + KEEPALIVE_TIMEOUT

    def _drop(self, connection: _Connection) -> None:
        if self._connections.pop(connection.sock, None) is not None:
            try:
                self._selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass
        connection.chunks = []
        connection.sock.close()

    def _report(self, error: BaseException) -> None:
        now = self._clock()
        if now - self._last_error_line < ERROR_LINE_INTERVAL:
            self._errors_unsaid += 1
            return
        more = f" (and {self._errors_unsaid} more since the last such line)" if self._errors_unsaid else ""
        self._last_error_line, self._errors_unsaid = now, 0
        try:
            self._err([f"prometheus: the /metrics server met {type(error).__name__}: {error}{more}"[:300]])
        except Exception:  # noqa: BLE001 (stderr gone, EPIPE: nowhere to say it; the server goes on)
            pass


def _listen(settings: PrometheusSettings) -> socket.socket:
    """The listening socket; ConfigError (one line, naming the variable) when it cannot be had."""
    where = settings.describe()
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise ConfigError(f"{ADDRESS_VARIABLE}: cannot listen on {where}: the host name does not resolve") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        reason = "the port is already in use" if isinstance(error, OSError) and error.errno == 98 else None
        reason = reason or (error.strerror or type(error).__name__).lower()
        raise ConfigError(f"{ADDRESS_VARIABLE}: cannot listen on {where}: {reason}") from None
    return sock


# --- the output ------------------------------------------------------------------------------


class PrometheusOutput:
    """Renders each tick for the server; keeps the counters' totals between ticks."""

    def __init__(self, settings: PrometheusSettings, prefix: str, err: Callable[[Sequence[str]], None]) -> None:
        self.prefix = prefix
        self.server = PrometheusServer(settings, err)
        self._totals: Totals = {}

    def send(self, report: TickReport, now: float, dropped: Optional[int] = None) -> None:
        families, self._totals = families_of(report, self.prefix, now, dropped, self._totals)
        text = gzipped_exposition(families)
        openmetrics = gzipped_exposition(families, openmetrics=True) if self.server.openmetrics_asked else None
        self.server.publish(Bodies(text, openmetrics))

    def take_dropped(self) -> int:
        return 0

    def wait(self) -> None:
        """Nothing is under way when `send` returns."""

    def close(self) -> None:
        self.server.close()
