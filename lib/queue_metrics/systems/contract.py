"""The contract every queue system implements, and the small tools they share.

A queue system is one module (`sidekiq.py`, `rq.py`, `celery.py`) with one row in
`systems.SYSTEMS`: a `SystemSpec` that names it, parses the settings it owns from the environment,
and builds its `QueueSystem`. The collector knows nothing else about any system.

A system reads with generators: each yields a `Batch` of commands, receives their `Replies` (and
the time they arrived), may yield again for a follow-up read, and returns its result. The
collector advances every generator of a tick in lockstep, so N queues cost one round trip per
step, not N, and a tick never makes more than three round trips.

Commands travel already packed (RESP bytes): a queue's first batch is the same every tick, so
systems pack it once and keep it. At every step the collector hands the replies to the system
reads before the queue reads, so a queue's read can use what its system's read found in the same
round trip (Celery's held messages per queue).

Besides size and latency, systems report "extras" (retries, workers, held messages): per queue
in `QueueSample.figures`, system-wide from `read_system`. They are made with `extras=False` when
the user turned them off (QUEUE_METRICS_EXTRAS).
"""

from __future__ import annotations

import json
from typing import (
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
)

from queue_metrics.datastores.redis.resp import CommandsTemplate, NameKey, pack_commands
from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_registry_denial,
    describe_reply_error,
    show_name,
)
from queue_metrics.sample import UNIT_SECONDS, Figure, QueueSample, SystemSample

Command = Tuple[object, ...]


class Replies(NamedTuple):
    values: list
    # Epoch seconds when the replies arrived: the `now` of every latency computed from them.
    now: float


class Batch(NamedTuple):
    """Commands packed for the wire, and how many replies they will get."""

    packed: bytes
    replies: int


EMPTY_BATCH = Batch(b"", 0)


def batch(*commands: Command) -> Batch:
    return Batch(pack_commands(commands), len(commands))


class BatchTemplate:
    """A batch that differs from queue to queue only by the queue's name inside its keys
    (`NameKey(before, after)` among the arguments), packed when it is sent: one formatting, about
    a microsecond. Not keeping each queue's packed batch from tick to tick spares the web dyno
    megabytes at ten thousand queues (a Celery queue's first batch alone is some 450 bytes)."""

    __slots__ = ("_commands", "replies")

    def __init__(self, *commands: Command) -> None:
        self._commands = CommandsTemplate(commands)
        self.replies = len(commands)

    def batch(self, name: bytes) -> Batch:
        return Batch(self._commands.pack(name), self.replies)


def joined(batches: Iterable[Batch]) -> Batch:
    """Several batches sent as one."""
    batches = list(batches)
    return Batch(b"".join(part.packed for part in batches), sum(part.replies for part in batches))


QueueReader = Generator[Batch, Replies, Optional[QueueSample]]
SystemReader = Generator[Batch, Replies, Optional[SystemSample]]


class Found(NamedTuple):
    """What a system's registries say: its queues, and why it counts as in use."""

    queues: Sequence[str]
    # A short reason for people ("the `queues` set names 3 queues"); None: no sign of the system.
    evidence: Optional[str]


class Workers(NamedTuple):
    """How a system counts the workers running, for `doctor`'s "jobs wait, no worker runs"."""

    # The system-wide figure that counts them (`read_system`).
    figure: str
    # One of them, for people: "Sidekiq process".
    noun: str


class QueueSystem(Protocol):
    """One queue system, as the collector reads it. Only read commands, ever."""

    name: str
    # None: the system keeps no record of its workers in Redis.
    workers: Optional[Workers]

    @property
    def key_patterns(self) -> Tuple[str, ...]:
        """ACL key patterns (`~` left out) that match every key the system reads: what a Redis
        user limited by key patterns must be given."""

    @property
    def scan_pattern(self) -> Optional[str]:
        """SCAN MATCH pattern of keys that reveal queues no registry lists; None: none needed."""

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """Keys matching `scan_pattern`, as the keyspace walk finds them; `complete`: a whole
        pass ended, and keys it did not find are gone."""

    def without_walk(self) -> Optional[str]:
        """What is lost on a server without SCAN, and the fix, for an error line ("Celery queues
        bound to ... may be missing: name them in ..."); None when nothing is (the user named the
        queues the walk would find, or the system needs no walk)."""

    def registry_batch(self) -> Batch:
        """Commands that list the queues, read first every tick."""

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        """The queues to read, from the replies to `registry_batch`."""

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        """A queue's size and latency (and the system's per-queue figures)."""

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        """The system-wide figures, or None for a system that has none."""

    def describe(self) -> List[str]:
        """What it detected about the app (for `queue-metrics doctor`), one line each."""


class SystemSpec(NamedTuple):
    """A row of `systems.SYSTEMS`."""

    name: str
    # The settings the system owns: parsed from the environment mapping (raises ConfigError).
    settings_from_env: Callable[[Mapping[str, str]], object]
    # Builds the system from those settings and the QUEUE_METRICS_EXTRAS switch.
    make: Callable[[object, bool], QueueSystem]
    # The kind of datastore it reads (a row of `datastores.KINDS`): its reader reads the system.
    datastore: str = "redis"


def evidence(listed: Optional[str], setting: str, configured: bool) -> Optional[str]:
    """Why a system counts as in use: what its registry lists, else its queue setting; None: no
    sign of it."""
    if listed:
        return listed
    return f"{setting} is set" if configured else None


GLOB_SPECIAL = str.maketrans({char: f"\\{char}" for char in "*?[]\\"})


def glob_escape(text: str) -> str:
    """Text matched as itself in a glob (an ACL key pattern, SCAN MATCH)."""
    return text.translate(GLOB_SPECIAL)


def decode_name(raw: bytes) -> str:
    """Names are kept as str that turn back into the exact bytes of the key."""
    return raw.decode("utf-8", "surrogateescape")


def encode_key(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def name_key(template: str, prefix: str = "") -> NameKey:
    """The `NameKey` of a key template such as `queue:{name}`, after `prefix`."""
    before, after = template.split("{name}")
    return NameKey(encode_key(prefix + before), encode_key(after))


def parse_json_object(payload: bytes, what: str) -> dict:
    try:
        # Decoding first spares json.loads guessing the encoding of bytes.
        value = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PayloadError(f"{what} is not JSON ({len(payload)} bytes)") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is JSON but not an object")
    return value


Parsed = TypeVar("Parsed")
_NOT_SEEN = object()


class ParsedHeads:
    """What each payload gave when it was parsed, kept across one tick.

    A queue's oldest job (or a Sidekiq process's `info`) is usually the same from one tick to the
    next, and parsing it (a JSON document) costs more than the rest of its queue's reading. So a payload the last tick
    parsed gives the same value again without being parsed: it is known by its hash, and only the
    values are kept, never the payloads (a kilobyte each, at ten thousand queues). Two different
    payloads of equal 64-bit hash would share a value: a chance far below one in a billion
    billion. A system calls `start_tick` once a tick, and what no queue read at the last tick is
    forgotten; a payload that fails to parse is never kept, so its error is reported every tick.
    """

    def __init__(self) -> None:
        self._last: Dict[int, object] = {}
        self._this: Dict[int, object] = {}

    def start_tick(self) -> None:
        self._last, self._this = self._this, {}

    def parsed(self, payload: bytes, parse: Callable[[bytes], Parsed]) -> Parsed:
        key = hash(payload)
        value = self._this.get(key, _NOT_SEEN)
        if value is _NOT_SEEN:
            value = self._last.get(key, _NOT_SEEN)
            if value is _NOT_SEEN:
                value = parse(payload)
            self._this[key] = value
        return value  # type: ignore[return-value]


class SameRegistry:
    """The queues a registry's reply gave last tick, given again while the reply is the same.

    Registries rarely change, and decoding and sorting ten thousand names at every tick would
    make them anew each time (time, and memory the web dyno keeps). The reply is known by the hash
    of its items (the same odds as `ParsedHeads`); the messages made with the value are said again
    at every tick.
    """

    def __init__(self) -> None:
        self._fingerprint: Optional[int] = None
        self._made: Optional[Tuple[Found, ErrorLog]] = None

    def found(self, items: Iterable[object], make: Callable[[ErrorLog], Found], errors: ErrorLog) -> Found:
        fingerprint = hash(tuple(items))
        if self._made is None or fingerprint != self._fingerprint:
            own = ErrorLog()
            self._made = (make(own), own)
            self._fingerprint = fingerprint
        found, made = self._made
        errors.messages.extend(made.messages)
        errors.refusals.extend(made.refusals)
        return found


class ListHead(NamedTuple):
    """A queue list read as LLEN + LINDEX: its size (None: unknown) and its oldest entry."""

    size: Optional[int]
    oldest: Optional[bytes]
    # False when the oldest entry could not be read: the latency is then unknown.
    readable: bool


def list_head(
    backend: str, queue: str, values: Sequence[object], errors: ErrorLog, patterns: Sequence[str] = ()
) -> ListHead:
    """Checks the replies of LLEN + LINDEX, reporting a failed one as an error of the queue;
    `patterns`: the ACL key patterns of the system's queue lists."""
    size, oldest = values
    if isinstance(size, ReplyError):
        errors.about_queue(backend, queue, describe_reply_error(size, patterns=patterns))
        return ListHead(None, None, False)
    if isinstance(oldest, ReplyError):
        errors.about_queue(backend, queue, f"latency unknown: {describe_reply_error(oldest, patterns=patterns)}")
        return ListHead(size, None, False)  # type: ignore[arg-type]
    return ListHead(size, oldest, True)  # type: ignore[arg-type]


def latency_or_report(
    backend: str, queue: str, errors: ErrorLog, compute: Callable[[], Optional[float]]
) -> Optional[float]:
    """The latency `compute` finds, or None with the reason reported when the payload is bad."""
    try:
        return compute()
    except PayloadError as error:
        errors.about_queue(backend, queue, f"latency unknown: {error}")
        return None


def registry_members(
    backend: str, key: str, reply: object, errors: ErrorLog, patterns: Optional[Sequence[str]] = None, note: str = ""
) -> list:
    """The members of a registry set (SMEMBERS), or none with the error reported.

    With `patterns` (the system's ACL key patterns), the set is the one that lists the system's
    queues: a NOPERM on it is a refusal, reported even when nothing else shows the system in use;
    `note` says what the patterns leave out.
    """
    if isinstance(reply, ReplyError):
        if patterns is not None and reply.code == "NOPERM":
            errors.refused(
                key, f"{backend} registry {show_name(key)}: {describe_registry_denial(backend, reply, patterns, note)}"
            )
        else:
            errors.about_reply(backend, f"registry {show_name(key)}", reply, "a set")
        return []
    return reply  # type: ignore[return-value]


class MemberReads:
    """The per-member reads of a registry set (Sidekiq's `processes`, RQ's `rq:workers`).

    Members come and go rarely, so the members the last tick found are read in the first round
    trip, along with the set itself (`known_batch`); only members new this tick need a follow-up
    round trip. Readings of members that left the set are dropped.
    """

    def __init__(self, member_batch: Callable[[bytes], Batch]) -> None:
        # Every member's batch has the same number of commands.
        self._member_batch = member_batch
        self._width = member_batch(b"member").replies
        self._known: Tuple[bytes, ...] = ()
        self.known_batch = EMPTY_BATCH

    def read(
        self, members: Sequence[bytes], known_values: Sequence[object]
    ) -> Generator[Batch, Replies, List[Tuple[bytes, Sequence[object]]]]:
        """Each current member with the replies to its batch; `known_values` are the replies to
        `known_batch` (read with `members`)."""
        width = self._width
        found = {member: known_values[index * width : (index + 1) * width] for index, member in enumerate(self._known)}
        new = [member for member in members if member not in found]
        if new:
            replies = yield joined(self._member_batch(member) for member in new)
            for index, member in enumerate(new):
                found[member] = replies.values[index * width : (index + 1) * width]
        current = tuple(dict.fromkeys(members))
        if current != self._known:
            self._known = current
            self.known_batch = joined(self._member_batch(member) for member in current)
        return [(member, found[member]) for member in current]


class Interval:
    """Turns ever-growing totals (Sidekiq's `stat:processed`) into counts since the last tick.

    The first reading gives no count; a total that went down was reset, and counts from zero.
    """

    def __init__(self) -> None:
        self._last: Dict[str, int] = {}

    def since_last(self, name: str, total: int) -> Optional[int]:
        last = self._last.get(name)
        self._last[name] = total
        if last is None:
            return None
        return total - last if total >= last else total


class SystemFindings:
    """What a system's read finds about each queue (Sidekiq's processes' queues and the jobs they
    run), handed to the queues' reads of the same tick.

    The collector hands replies to the system's read before its queues' reads, but when the
    system's read needs a follow-up (a process new this tick), a queue's reply may come first. Such
    a queue read then `wait`s: it yields empty batches, which send nothing and are handed back
    right after the system's follow-up. A tick without new members waits for nothing.
    """

    __slots__ = ("_pending", "_started", "value")

    def __init__(self) -> None:
        self._pending = False
        self._started = False
        # What the system's read found this tick; None: nothing (extras off, an error, not read).
        self.value: Optional[object] = None

    def start(self) -> None:
        """The system's read begins (it calls `finish` when it ends, in a `finally`)."""
        self._pending = True
        self._started = True
        self.value = None

    def finish(self) -> None:
        self._pending = False

    def new_tick(self) -> None:
        """Called with the registries' replies (`queues`): a tick whose system read was not made
        (the system was not in use at the last tick) has no findings, never the last ones."""
        if not self._started:
            self.value = None
        self._started = False

    @property
    def pending(self) -> bool:
        """The system's read has not ended: a queue's read that needs its findings must `wait`."""
        return self._pending

    def wait(self) -> Generator[Batch, Replies, None]:
        while self._pending:
            yield EMPTY_BATCH


# The figures of issue 27's incidents: jobs running and for how long the longest has run, jobs
# due that no poller moved into the queue and since when, workers configured to take the queue.
UNIT_CONSUMERS = "{consumer}"


def activity_figures(
    now: float,
    running: Optional[int] = None,
    running_since: Optional[float] = None,
    due: Optional[int] = None,
    due_since: Optional[float] = None,
    consumers: Optional[int] = None,
) -> Tuple[Figure, ...]:
    """`running`, `running_age`, `due`, `due_age`, `consumers`, those that are known (not None);
    the ages from the epoch seconds the longest-running job started and the earliest due job fell
    due (None: none runs, none is due)."""
    figures = []
    if running is not None:
        figures.append(Figure("running", running))
    if running_since is not None:
        figures.append(Figure("running_age", max(0.0, now - running_since), UNIT_SECONDS))
    if due is not None:
        figures.append(Figure("due", due))
    if due_since is not None:
        figures.append(Figure("due_age", max(0.0, now - due_since), UNIT_SECONDS))
    if consumers is not None:
        figures.append(Figure("consumers", consumers, UNIT_CONSUMERS))
    return tuple(figures)
