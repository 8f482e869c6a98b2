"""StatsD and DogStatsD: settings, the lines (a pure function of a TickReport), their packing
into datagrams, and a UDP sender that never waits.

With tags (DogStatsD, the default), a name says what is measured and tags say of what:

    <prefix>.size:12|g|#backend:sidekiq,queue:default       a queue's size (and .latency, in s,
    <prefix>.<figure>:3|g|#backend:rq,queue:default          and its system's per-queue figures)
    <prefix>.<system>.<figure>:5|c|#backend:sidekiq          a system-wide figure
    <prefix>.collector.<figure>:0.012|g                      the collector's own

Every queue and system line also carries `datastore:<label>`, the datastore it was read from
(`redis` for REDIS_URL); the collector's figures are the tick's totals, with no such tag.

Per-queue series always carry a `queue` tag. A system-wide figure keeps its system in its name,
so it never shares a name with a per-queue one (Sidekiq's `failed` count against RQ's per-queue
`failed` registry; Celery's total `unacked` against each queue's): summing a name over its tags
never mixes two meanings. Without tags the names are the l2met names of the log lines (with
`<prefix>.<label>` for a queue or system that an earlier datastore holds too).
"""

from __future__ import annotations

import errno
import socket
from typing import Callable, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from queue_metrics.errors import ConfigError
from queue_metrics.outputs.format import (
    collector_figures,
    collector_metric_name,
    format_seconds,
    metric_queue_part,
    name_digest,
    queue_metric_base,
    system_metric_name,
)
from queue_metrics.sample import COUNTER, UNIT_SECONDS, Figure, TickReport, name_prefix, sections
from queue_metrics.setting_values import boolean, host_port

DEFAULT_ADDRESS = "127.0.0.1:8125"
# An Ethernet MTU (1,500) less IP and UDP headers, with room to spare: no datagram is fragmented.
MAX_DATAGRAM_BYTES = 1432


class StatsdSettings(NamedTuple):
    host: str = "127.0.0.1"
    port: int = 8125
    tags: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> "StatsdSettings":
        values = {name: value.strip() for name, value in env.items() if value.strip() != ""}
        host, port = parse_address(values.get("QUEUE_METRICS_STATSD_ADDRESS", DEFAULT_ADDRESS))
        tags = boolean(values, "QUEUE_METRICS_STATSD_TAGS", default=True)
        if ":" in prefix:
            raise ConfigError("QUEUE_METRICS_PREFIX must not contain ':' with the statsd output (':' ends a name)")
        return cls(host, port, tags)

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} tags={'on' if self.tags else 'off'}"


def parse_address(text: str) -> Tuple[str, int]:
    """`host:port` or `[ipv6]:port`."""
    return host_port(text, "QUEUE_METRICS_STATSD_ADDRESS", DEFAULT_ADDRESS)


# --- the lines: pure functions ---------------------------------------------------------------


def statsd_value(figure: Figure) -> str:
    """Never negative: a leading sign makes a StatsD gauge a change, not a value."""
    if figure.unit == UNIT_SECONDS:
        return format_seconds(figure.value)
    value = max(0.0, float(figure.value))
    if value.is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def statsd_line(name: str, figure: Figure, tags: str = "") -> str:
    kind = "c" if figure.kind == COUNTER else "g"
    return f"{name}:{statsd_value(figure)}|{kind}{tags}"


def untagged_queue_base(prefix: str, backend: str, queue: str) -> str:
    """The l2met `<prefix>.<system>.<queue>`, but with no ':' (it would end a StatsD name): a
    queue name holding one is cleaned and hashed, like other odd names."""
    part = metric_queue_part(queue)
    if ":" not in part:
        return queue_metric_base(prefix, backend, queue)
    return f"{prefix}.{backend}.{part.replace(':', '_')}_{name_digest(queue)}"


def statsd_lines(
    report: TickReport,
    prefix: str = "queue",
    tags: bool = True,
    source: Optional[str] = None,
    dropped: Optional[int] = None,
) -> List[str]:
    """Every figure of the tick, one StatsD line each (see `statsd_line_stream`), all at once."""
    return list(statsd_line_stream(report, prefix, tags, source, dropped))


def statsd_line_stream(
    report: TickReport,
    prefix: str = "queue",
    tags: bool = True,
    source: Optional[str] = None,
    dropped: Optional[int] = None,
) -> Iterator[str]:
    """Every figure of the tick, one StatsD line each, made as they are sent. With datastores,
    each queue and system line is tagged with its datastore (untagged: named as in the log
    lines)."""
    tail = f",source:{source}" if source else ""
    for section, samples, systems in sections(report):
        # The tags every line of the datastore ends with.
        extra = tail if section is None else f",datastore:{section.label}{tail}"
        # Untagged, only names an earlier datastore holds too carry the label: no look-up per
        # queue otherwise.
        labeled = section.labeled_queues if section is not None and not tags else frozenset()
        own = f"{prefix}.{section.label}" if section is not None else prefix
        for sample in samples:
            figures = [Figure("size", sample.size)]
            if sample.latency is not None:
                figures.append(Figure("latency", sample.latency, UNIT_SECONDS))
            figures.extend(sample.figures)
            if tags:
                # metric_queue_part keeps only A-Za-z0-9.:_- (odd names are cleaned and hashed): no
                # ',', '|', '#' or line break can reach the tag.
                suffix = f"|#backend:{sample.backend},queue:{metric_queue_part(sample.queue)}{extra}"
                for figure in figures:
                    yield statsd_line(f"{prefix}.{figure.name}", figure, suffix)
            else:
                start = own if labeled and (sample.backend, sample.queue) in labeled else prefix
                base = untagged_queue_base(start, sample.backend, sample.queue)
                for figure in figures:
                    yield statsd_line(f"{base}.{figure.name}", figure)
        for system in systems:
            # Tagged, the datastore's tag tells two datastores' systems apart; untagged, the name.
            start = prefix if tags else name_prefix(prefix, section, system.backend)
            suffix = f"|#backend:{system.backend}{extra}" if tags else ""
            for figure in system.figures:
                yield statsd_line(system_metric_name(start, system.backend, figure.name), figure, suffix)
    suffix = f"|#{tail[1:]}" if tags and tail else ""
    for figure in collector_figures(report, dropped):
        yield statsd_line(collector_metric_name(prefix, figure.name), figure, suffix)


def datagrams(lines: Iterable[str], limit: int = MAX_DATAGRAM_BYTES) -> Iterator[Tuple[Optional[bytes], int]]:
    """Lines packed, newline-separated, into datagrams of at most `limit` bytes, as they come.

    Yields (datagram, number of lines in it); a line too long for any datagram comes as
    (None, 1): it is dropped (none of ours comes near: names are capped at about 250 characters).
    """
    current = bytearray()
    count = 0
    for line in lines:
        data = line.encode("utf-8", "replace")
        if len(data) > limit:
            yield None, 1
            continue
        if current and len(current) + 1 + len(data) > limit:
            yield bytes(current), count
            current, count = bytearray(), 0
        if current:
            current += b"\n"
        current += data
        count += 1
    if current:
        yield bytes(current), count


# --- the sender ------------------------------------------------------------------------------


class StatsdSender:
    """Sends over a non-blocking UDP socket: a send never waits, and what the kernel refuses
    (a full buffer, a receiver known to be down) is dropped and counted.

    The socket is connected, so the kernel reports "connection refused" after a receiver's host
    answered an earlier datagram with ICMP port-unreachable; datagrams lost on the way without
    such an answer cannot be known, as always with UDP.
    """

    def __init__(
        self, settings: StatsdSettings, prefix: str, source: Optional[str], err: Callable[[Sequence[str]], None]
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self.source = source
        self._err = err
        self._socket: Optional[socket.socket] = None
        self._dropped = 0

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def send(self, report: TickReport, now: float, dropped: Optional[int] = None) -> None:
        packed = datagrams(statsd_line_stream(report, self.prefix, self.settings.tags, self.source, dropped))
        lost = 0
        failure = None
        for datagram, count in packed:
            if datagram is None:  # a line too long for any datagram
                lost += count
                continue
            try:
                self._connected().send(datagram)
            except OSError as error:
                failure = error
                lost += count + sum(count for _, count in packed)
                self._close()
                break
        if lost:
            self._dropped += lost
            where = self.settings.describe().split(" ")[0]
            reason = _describe_error(failure) if failure else "lines longer than a datagram"
            self._err([f"statsd: cannot send to {where}: {reason}; dropped {lost} metrics"])

    def _connected(self) -> socket.socket:
        if self._socket is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.settings.host, self.settings.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self._socket = sock
        return self._socket

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def wait(self, timeout: Optional[float] = None) -> None:
        """Nothing runs in the background: UDP sends are done when `send` returns."""


def _describe_error(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(error, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(error, BlockingIOError) or error.errno in (errno.EAGAIN, errno.ENOBUFS):
        return "the send buffer is full"
    return (error.strerror or error.__class__.__name__).lower()
