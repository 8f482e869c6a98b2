"""One RabbitMQ datastore, read through its management HTTP API: every queue of the vhost, its
ready messages, held (unacknowledged) messages and consumers, in one GET per 500 queues.

Each tick sends, on one kept HTTP/1.1 connection (`queue_metrics.http`, gzip):

    GET /api/queues/<vhost>?page=N&page_size=500&columns=name,type,...&use_regex=true&name=<regex>

The server-side name filter leaves out Celery's plumbing (`*.pidbox`, `celeryev.*`, `amq.gen-*`,
`celery_delayed_*`); exclusive and auto-delete queues (reply queues) are left out here. Only
reads, ever: GETs of statistics the broker keeps anyway. They consume nothing, declare nothing
and renew no queue's `x-expires` lease (a passive declare would).

Which system a queue belongs to (`systems.rabbitmq`): Celery's when bound from an exchange of
its own name under its own name. The vhost's bindings (`GET /api/bindings/<vhost>`, one request
for them all) are read only when a queue appears that the reader has not placed yet, and again
every BINDINGS_EVERY ticks while some queue is not Celery's (its binding may have come just after
it): a steady vhost costs the one listing per tick.

A figure the API leaves out is unknown and left out, never 0: a queue new since the broker's
last statistics refresh has no counts yet, and is reported from the next tick on.

Where there is no management API (the connection is refused, or what answers is not the API),
the reader falls back to passive declares over AMQP of Celery's named queues (`declares.py`):
sizes and consumers only, said in one warning line; it asks the API again every
API_RETRY_TICKS ticks, and goes back to it when it answers.
"""

from __future__ import annotations

import binascii
import json
import math
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple
from urllib.parse import quote

from queue_metrics import __version__
from queue_metrics.config import Settings
from queue_metrics.datastores import Location
from queue_metrics.datastores.rabbitmq.latency import Latencies, counters_of
from queue_metrics.datastores.rabbitmq.locations import ApiAddress, api_address
from queue_metrics.errors import ApiMalformed, ApiRefused, WarningNotice, describe_rabbitmq_error
from queue_metrics.http import HttpConnection, gunzipped
from queue_metrics.sample import LATENCY_ESTIMATED, Figure, QueueSample, SystemSample, TickReport
from queue_metrics.systems import SYSTEMS
from queue_metrics.systems.rabbitmq import CELERY, KIND, BrokerSystem, is_celery_queue

PAGE_SIZE = 500
# Only the sample lists of the two counters' details (not their averages and rates): at 1,000
# queues the JSON to parse is what a tick's CPU goes on (BENCHMARKS.md).
COLUMNS = (
    "name,arguments,exclusive,auto_delete,messages_ready,messages_unacknowledged,consumers,message_stats.publish,"
    "messages_ready_details.samples,message_stats.publish_details.samples"
)
# The counters' own sample times (`latency.py`), every SAMPLE_STEP whole seconds, so the latency is
# dated by the broker's refreshes, not by our request (the broker refreshes every 5 s by default:
# a finer step adds bytes, not precision). The ready count is needed at the reading's point only:
# two steps back (the publish counter's newest point is often one step behind the ready
# count's). The publish counter's samples make the history: over the whole last tick (at most
# SAMPLE_AGE_MAX) while the vhost has at most FINE_HISTORY_QUEUES queues, so the estimate has the
# step's resolution; beyond that two steps, as the ready count's, and the estimate has the tick's
# resolution: at 1,000 queues the samples over a 30 s tick would double the tick's CPU.
SAMPLE_STEP = 5
SAMPLE_AGE_MAX = 120
SHORT_AGE = 2 * SAMPLE_STEP
FINE_HISTORY_QUEUES = 250
# Celery's plumbing, left out by the server: control (`<host>.celery.pidbox`, reply queues
# `<id>.reply.celery.pidbox`), events (`celeryev.<uuid>`), server-named queues (`amq.gen-...`),
# and kombu's native delayed delivery levels for quorum queues (`celery_delayed_0`...`_27`).
EXCLUDED = r"^(?!celeryev\.|amq\.gen-|celery_delayed_).*(?<!\.pidbox)$"
EXCLUDED_PREFIXES = ("celeryev.", "amq.gen-", "celery_delayed_")
EXCLUDED_SUFFIX = ".pidbox"
QUEUES_QUERY = (
    f"page_size={PAGE_SIZE}&columns={quote(COLUMNS, safe=',')}&use_regex=true&name={quote(EXCLUDED, safe='')}"
)


def samples_query(interval: float, fine: bool = True) -> str:
    """The sample lists to ask for, in whole seconds (the API ignores others): the ready count's
    over two steps; the publish counter's over one tick when `fine`, else two steps too."""
    age = min(SAMPLE_AGE_MAX, max(SHORT_AGE, math.ceil(interval / SAMPLE_STEP) * SAMPLE_STEP)) if fine else SHORT_AGE
    return f"lengths_age={SHORT_AGE}&lengths_incr={SAMPLE_STEP}&msg_rates_age={age}&msg_rates_incr={SAMPLE_STEP}"


BINDINGS_QUERY = "columns=source,destination,destination_type,routing_key"
# Ticks between two reads of the bindings while some queue is not Celery's.
BINDINGS_EVERY = 10
# Decompressed bytes read of one answer: 500 queues take some 150 kB; bindings about 100 B each.
MAX_ANSWER_BYTES = 32 << 20
# Ticks read by passive declares before the management API is asked again.
API_RETRY_TICKS = 10
UNIT_MESSAGES = "{message}"
FIGURES_CACHED = 4096
UNIT_CONSUMERS = "{consumer}"


class QueueObservation(NamedTuple):
    """What one tick read of a queue that a latency estimate needs (`latency.py` plugs in at
    `RabbitReader._latency`): when the API answered, the queue's publish counter (None: the
    broker keeps none, or has counted nothing yet), its ready messages, its arguments
    (`x-max-priority` breaks a FIFO count)."""

    at: float
    publish: Optional[int]
    ready: int
    arguments: Mapping[str, Any]


def make_systems(settings: Settings) -> List[BrokerSystem]:
    """The queue systems a RabbitMQ holds (those QUEUE_METRICS_BACKENDS pins, else both)."""
    specs = {spec.name: spec for spec in SYSTEMS if spec.datastore == KIND}
    chosen = settings.backends or tuple(specs)
    return [specs[name].make(settings.of(name), settings.extras) for name in chosen if name in specs]  # type: ignore[misc]


def make_reader(
    settings: Settings, location: Location, whole_first_walk: bool, announce: Callable[[str], None]
) -> "RabbitReader":
    """The reader of one RabbitMQ datastore (`datastores.KINDS`)."""
    return RabbitReader(settings, location, announce=announce)


class RabbitReader:
    """One RabbitMQ vhost through its management API. A `datastores.Datastore`."""

    def __init__(
        self,
        settings: Settings,
        location: Location,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        announce: Callable[[str], None] = lambda notice: None,
    ) -> None:
        self.location = location
        self._announce = announce
        # The passive-declare reader (`declares.DeclareReader`) while the API is not there.
        self.fallback: Any = None
        self._settings = settings
        self.api: ApiAddress = api_address(location.url, settings.rabbitmq_api_url)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self.systems = {system.name: system for system in make_systems(settings)}
        self._pinned = settings.backends is not None
        credentials = f"{self.api.user}:{self.api.password}".encode()
        self._headers = {
            "Authorization": "Basic " + binascii.b2a_base64(credentials, newline=False).decode("ascii"),
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "User-Agent": f"queue-metrics/{__version__}",
        }
        self._connection: Optional[HttpConnection] = None
        self._tls: Any = None
        # Each queue's system, as the bindings last showed it.
        self._system_of: Dict[str, str] = {}
        self._ticks_since_bindings = 0
        # Per queue, the last tick's reading, and the latency estimator's histories.
        self.observations: Dict[str, QueueObservation] = {}
        self._latencies = Latencies()
        # Why a queue has no latency (a priority queue, no publish counter...), for doctor.
        self.latency_notes: Dict[str, str] = {}
        self._figures: Dict[Tuple[Optional[int], Optional[int]], Tuple[Figure, ...]] = {}
        self.requests = 0

    # -- the Datastore protocol

    def tick(self) -> TickReport:
        started = self._monotonic()
        deadline = started + self._settings.timeout
        if not self.systems:
            return TickReport((), (), (), 0.0, True)
        errors: List[str] = []
        self.requests = 0
        if self.fallback is not None and self.fallback.ticks % API_RETRY_TICKS:
            return self.fallback.tick()
        try:
            rows = self._queues(deadline)
            kept = [row for row in rows if _kept(row)]
            self._place(kept, deadline, errors)
        except Exception as error:  # noqa: BLE001 (every failure is one line; the loop goes on)
            self._close_api()
            if self.fallback is not None or (_no_api_there(error, self.requests) and CELERY in self.systems):
                # Reading by passive declares already: the API asked again and still not there
                # (refused, or now slow), so the declares go on, on their kept connection.
                return self._fall_back(error)
            api = self.api
            message = describe_rabbitmq_error(error, api.describe(), api.user, api.vhost, self._settings.timeout)
            return TickReport((), (message,), (), self._monotonic() - started, False, self.requests)
        if self.fallback is not None:
            self.fallback.close()
            self.fallback = None
            self._announce(f"{self.location.label}: the RabbitMQ management API at {self.api.describe()} answers again")
        now = self._wall_clock()
        samples, systems, in_use = self._samples(kept, now)
        return TickReport(
            tuple(samples), tuple(errors), in_use, self._monotonic() - started, True, self.requests, tuple(systems)
        )

    def _fall_back(self, error: BaseException) -> TickReport:
        """This tick, and the next API_RETRY_TICKS - 1, by passive declares over AMQP."""
        if self.fallback is None:
            # Imported here: the AMQP client is loaded only by a reader that needs it.
            from queue_metrics.datastores.rabbitmq.declares import DeclareReader

            settings = self._settings
            self.fallback = DeclareReader(
                self.location.url,
                settings.of(CELERY).queues,
                settings.timeout,
                settings.interval,
                self.systems[CELERY].extras,
                lambda: self._tls_context(),
            )
            api = self.api
            why = describe_rabbitmq_error(error, api.describe(), api.user, api.vhost, settings.timeout)
            self._announce(
                WarningNotice(
                    f"{self.location.label}: no RabbitMQ management API ({why}); reading the sizes and consumers of "
                    f"{', '.join(self.fallback.queues) or 'no queue'} by passive declare over AMQP, with no held "
                    f"messages and no latency (name the queues in QUEUE_METRICS_CELERY_QUEUES)"
                )
            )
        return self.fallback.tick()

    def _tls_context(self) -> Any:
        if self._tls is None:
            self._tls = _tls_context(self._settings)
        return self._tls

    @property
    def idle_due(self) -> float:
        return math.inf

    def idle_step(self, deadline: float) -> None:
        """No work between ticks."""

    def describe(self) -> str:
        if self.fallback is not None:
            return f"{self.fallback.where} (passive declares: no management API)"
        return self.api.describe()

    def close(self) -> None:
        self._close_api()
        if self.fallback is not None:
            self.fallback.close()

    def _close_api(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def reset(self) -> None:
        self.close()
        self.fallback = None
        self._system_of.clear()
        self.observations.clear()
        self._latencies = Latencies()

    # -- reading

    def _queues(self, deadline: float) -> List[Dict[str, Any]]:
        """Every queue the name filter keeps, page by page."""
        rows: List[Dict[str, Any]] = []
        page = 1
        query = self.listing_query()
        while True:
            document = self._get(f"{self.api.queues_path()}?page={page}&{query}", deadline)
            if not isinstance(document, dict) or not isinstance(document.get("items"), list):
                raise ApiMalformed("a queue listing without its items")
            rows.extend(item for item in document["items"] if isinstance(item, dict))
            pages = document.get("page_count")
            if not isinstance(pages, int) or page >= pages:
                return rows
            page += 1

    def listing_query(self) -> str:
        """The queue listing's query string (without `page=`): the publish samples over the tick
        for a vhost of few queues (as the last listing had)."""
        fine = len(self.observations) <= FINE_HISTORY_QUEUES
        return f"{QUEUES_QUERY}&{samples_query(self._settings.interval, fine)}"

    def _place(self, rows: List[Dict[str, Any]], deadline: float, errors: List[str]) -> None:
        """Each queue's system: from the bindings when a queue is new (or, while some queue is not
        Celery's, every BINDINGS_EVERY ticks)."""
        names = {row["name"] for row in rows}
        for gone in [name for name in self._system_of if name not in names]:
            del self._system_of[gone]
            self.observations.pop(gone, None)
        self._ticks_since_bindings += 1
        new = any(name not in self._system_of for name in names)
        stale = self._ticks_since_bindings >= BINDINGS_EVERY and any(
            system != CELERY for system in self._system_of.values()
        )
        if not (new or stale):
            return
        try:
            bindings = self._get(f"{self.api.bindings_path()}?{BINDINGS_QUERY}", deadline)
            if not isinstance(bindings, list):
                raise ApiMalformed("a binding listing that is not a list")
        except (ApiRefused, ApiMalformed) as error:
            # The sizes still count: the queues are placed by name alone this tick, and again
            # from the bindings at the next.
            api = self.api
            errors.append(
                "cannot tell Celery's queues from others (bindings): "
                + describe_rabbitmq_error(error, api.describe(), api.user, api.vhost, self._settings.timeout)
            )
            for name in names:
                self._system_of.setdefault(name, CELERY if is_celery_queue(name, False) else "rabbitmq")
            self._ticks_since_bindings = BINDINGS_EVERY
            return
        own: Set[object] = {
            binding.get("destination")
            for binding in bindings
            if isinstance(binding, dict)
            and binding.get("destination_type") == "queue"
            and binding.get("source") == binding.get("destination") == binding.get("routing_key")
        }
        self._system_of = {name: CELERY if is_celery_queue(name, name in own) else "rabbitmq" for name in names}
        self._ticks_since_bindings = 0

    def _samples(
        self, rows: List[Dict[str, Any]], now: float
    ) -> Tuple[List[QueueSample], List[SystemSample], Tuple[str, ...]]:
        samples: List[QueueSample] = []
        # Per system: the sums of held messages and consumers (None once a queue's is unknown).
        totals: Dict[str, List[Optional[int]]] = {name: [0, 0] for name in self.systems if self._pinned}
        for row in rows:
            name = row["name"]
            system = self.systems.get(self._system_of.get(name, ""))
            if system is None:
                continue
            sums = totals.setdefault(system.name, [0, 0])
            ready, unacked, consumers = (
                _count(row.get("messages_ready")),
                _count(row.get("messages_unacknowledged")),
                _count(row.get("consumers")),
            )
            for index, value in enumerate((unacked, consumers)):
                current = sums[index]
                sums[index] = None if current is None or value is None else current + value
            if ready is None:
                # No statistics yet (a queue newer than the broker's last refresh): next tick.
                continue
            observation = QueueObservation(now, _publish_count(row), ready, _arguments(row))
            self.observations[name] = observation
            latency, source = self._latency(name, row)
            figures: Tuple[Figure, ...] = ()
            if system.extras:
                figures = self._figures.get((unacked, consumers)) or self._make_figures(unacked, consumers)
            samples.append(QueueSample(system.name, name, ready, latency, figures, source))
        systems = []
        for name, (unacked_total, consumers_total) in totals.items():
            if not self.systems[name].extras:
                continue
            totals_figures: List[Figure] = []
            if name == CELERY and unacked_total is not None:
                totals_figures.append(Figure("unacked", unacked_total, UNIT_MESSAGES))
            if consumers_total is not None:
                totals_figures.append(Figure("consumers", consumers_total, UNIT_CONSUMERS))
            systems.append(SystemSample(name, tuple(totals_figures)))
        self._latencies.end_tick()
        in_use = tuple(name for name in self.systems if name in totals)
        return samples, systems, in_use

    def _make_figures(self, unacked: Optional[int], consumers: Optional[int]) -> Tuple[Figure, ...]:
        """A queue's figures; most queues share a few pairs, so each is made once."""
        figures = tuple(
            Figure(figure, value, unit)
            for figure, value, unit in (("unacked", unacked, UNIT_MESSAGES), ("consumers", consumers, UNIT_CONSUMERS))
            if value is not None
        )
        if len(self._figures) >= FIGURES_CACHED:
            self._figures.clear()
        self._figures[(unacked, consumers)] = figures
        return figures

    def _latency(self, queue: str, row: Dict[str, Any]) -> Tuple[Optional[float], Optional[str]]:
        """The oldest ready message's wait, estimated from the queue's counters over ticks
        (`latency.py`); None, with the reason kept for doctor, where no estimate holds."""
        readings = counters_of(row)
        if readings is None:
            return None, None
        if row.get("messages_ready") == 0:
            # Nothing ready now: nothing waits, whatever the (older) samples still show.
            self.latency_notes.pop(queue, None)
            self._latencies.estimate(queue, readings)
            return 0.0, LATENCY_ESTIMATED
        estimate = self._latencies.estimate(queue, readings)
        if estimate.seconds is None:
            self.latency_notes[queue] = estimate.reason or "unknown"
            return None, None
        self.latency_notes.pop(queue, None)
        if not estimate.exact and estimate.seconds == 0.0:
            # A backlog older than anything the loop has seen, read for the first time: a lower
            # bound of 0 says nothing; the next ticks give a growing one (as for Redis's observed).
            return None, LATENCY_ESTIMATED
        return estimate.seconds, LATENCY_ESTIMATED

    def _get(self, target: str, deadline: float) -> Any:
        """One GET's JSON; a reused connection the server closed meanwhile is opened anew once."""
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect(deadline)
            self.requests += 1
            try:
                answer = connection.get(target, self._headers, deadline, MAX_ANSWER_BYTES)
            except (ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            if not answer.reusable:
                self.close()
            body = answer.body
            if answer.fields.get("content-encoding", "").lower() == "gzip":
                body = gunzipped(body, MAX_ANSWER_BYTES)
            if not 200 <= answer.status < 300:
                reason = _reason(body)
                raise ApiRefused(answer.status, reason or answer.reason, from_api=reason is not None)
            try:
                return json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise ApiMalformed(f"HTTP {answer.status} with a body that is not JSON") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, deadline: float) -> HttpConnection:
        api = self.api
        tls = self._tls_context() if api.scheme == "https" else None
        self._connection = HttpConnection(api.host, api.port, api.scheme, max(0.001, deadline - self._monotonic()), tls)
        return self._connection


def _tls_context(settings: Settings) -> Any:
    # Imported here: `ssl` loads OpenSSL (megabytes of the dyno's memory), for an https API only.
    import ssl

    if settings.api_tls_verify:
        return ssl.create_default_context(cafile=settings.tls_ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _no_api_there(error: BaseException, requests: int) -> bool:
    """The first request found no management API: the connection was refused, or what answered
    is not the API (a 404 without the API's JSON, a body that is not JSON)."""
    if requests > 1:
        return False
    if isinstance(error, ApiRefused):
        return error.status == 404 and not error.from_api
    if isinstance(error, ApiMalformed):
        return True
    cause: Optional[BaseException] = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _kept(row: Dict[str, Any]) -> bool:
    """A queue to report: named, not exclusive nor auto-delete (reply queues), not Celery's
    plumbing (the server's filter already left that out; a broker that ignored it does not)."""
    name = row.get("name")
    if not isinstance(name, str) or row.get("exclusive") is True or row.get("auto_delete") is True:
        return False
    return not (name.startswith(EXCLUDED_PREFIXES) or name.endswith(EXCLUDED_SUFFIX))


def _count(value: object) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _publish_count(row: Dict[str, Any]) -> Optional[int]:
    stats = row.get("message_stats")
    if not isinstance(stats, dict):
        return None
    return _count(stats.get("publish"))


def _arguments(row: Dict[str, Any]) -> Mapping[str, Any]:
    arguments = row.get("arguments")
    return arguments if isinstance(arguments, dict) else {}


def _reason(body: bytes) -> Optional[str]:
    """The API's own reason for an error status (`{"error": ..., "reason": ...}`), one short line;
    None: the body is not the API's."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    reason = document.get("reason") if isinstance(document, dict) else None
    if not isinstance(reason, str) or not reason:
        return None
    return reason.replace("\n", " ")[:200]
