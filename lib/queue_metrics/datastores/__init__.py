"""The contract every datastore kind implements, and the table of kinds.

A datastore is one connection to one server that holds queues: a Redis database today; later a
RabbitMQ management API or a Postgres database. A kind is one package (`datastores/redis/`) with
one row in `KINDS`: a `DatastoreKind` that finds the datastores of its kind the environment names
(`locations`) and builds the reader of one (`reader`, a "module:function" path, imported only when
such a datastore is set: the web dyno loads no code for a kind it does not use).

Each queue system says which kind it reads (`SystemSpec.datastore`); a datastore's reader reads
the systems of its kind. The collector (`queue_metrics.collector`) names no kind and no system: it
ticks every datastore and merges their reports.

Standard library only, nothing done at import time: the build step imports the settings.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Callable, List, Mapping, NamedTuple, Protocol, Sequence, Tuple

from queue_metrics.errors import ConfigError
from queue_metrics.sample import TickReport

DEFAULT_SOURCE = "the default"
# Labels that would read as a queue system's or the collector's name in a metric's name
# (`queue.<label>.<system>...` beside `queue.<system>...`): every name in `systems.SYSTEMS`
# (tests/test_config.py checks), and `collector`.
RESERVED_LABELS = (
    "sidekiq",
    "rq",
    "celery",
    "resque",
    "bullmq",
    "dramatiq",
    "rabbitmq",
    "solid_queue",
    "good_job",
    "delayed_job",
    "que",
    "procrastinate",
    "django_tasks",
    "collector",
)


class Location(NamedTuple):
    """One datastore the settings name."""

    kind: str  # a row of KINDS: "redis"
    # Its name in every output (JSON `datastore`, StatsD tag, OTLP attribute, a second datastore's
    # l2met names): the variable's name in lower case without `_url`, or the `label=` given.
    label: str
    url: str
    # Where the URL came from, for people: a variable's name, or DEFAULT_SOURCE.
    source: str


class Datastore(Protocol):
    """What the collector asks of one datastore's reader. Only reads, ever."""

    location: Location

    def tick(self) -> TickReport:
        """Read every queue of every system of its kind; never raises: what failed is the
        report's error lines (and `redis_ok` False when nothing could be read)."""

    @property
    def idle_due(self) -> float:
        """Monotonic time of its next piece of work between ticks (Redis: a keyspace walk step);
        math.inf when it has none."""

    def idle_step(self, deadline: float) -> None:
        """That piece of work, over by `deadline` (monotonic) whatever the server does."""

    def describe(self) -> str:
        """Where it is, for people: a URL without its credentials."""

    def close(self) -> None:
        """Drop its connection (the next tick opens a new one)."""

    def reset(self) -> None:
        """Drop its connection and what the last tick found, after an unforeseen failure."""


class DatastoreKind(NamedTuple):
    """A row of `KINDS`."""

    name: str
    # The datastores of this kind the environment names, in the order of their naming rule (the
    # first keeps plain names when two hold the same queue); ConfigError on a bad one.
    locations: Callable[[Mapping[str, str]], List[Location]]
    # "module:function" building a reader: function(settings, location, whole_first_walk, announce).
    reader: str
    # Passwords of a location's URL: kept out of every error line.
    passwords: Callable[[str], Tuple[str, ...]]
    # A location's URL for people: without its credentials.
    describe: Callable[[str], str]
    # Whether a variable's value is a URL of this kind (`redis://...`): QUEUE_METRICS_DATASTORES
    # may name only such variables.
    claims: Callable[[str], bool]


def _redis_locations(env: Mapping[str, str]) -> List[Location]:
    from queue_metrics.datastores.redis.locations import redis_locations

    return redis_locations(env)


def _redis_passwords(url: str) -> Tuple[str, ...]:
    from queue_metrics.datastores.redis.url import passwords_of

    return passwords_of(url)


def _describe_redis_url(url: str) -> str:
    from queue_metrics.datastores.redis.url import describe_redis_url

    return describe_redis_url(url)


def _is_redis_url(value: str) -> bool:
    return value.strip().lower().startswith(("redis://", "rediss://", "unix://"))


def _rabbitmq_locations(env: Mapping[str, str]) -> List[Location]:
    if "QUEUE_METRICS_AMQP_URL" not in env and not any(_is_amqp_url(value) for value in env.values()):
        return []  # an app without RabbitMQ loads none of its code
    from queue_metrics.datastores.rabbitmq.locations import rabbitmq_locations

    return rabbitmq_locations(env)


def _rabbitmq_passwords(url: str) -> Tuple[str, ...]:
    from queue_metrics.datastores.rabbitmq.locations import passwords_of

    return passwords_of(url)


def _describe_amqp_url(url: str) -> str:
    from queue_metrics.datastores.rabbitmq.locations import describe_amqp_url

    return describe_amqp_url(url)


def _is_amqp_url(value: str) -> bool:
    return value.strip().lower().startswith(("amqp://", "amqps://"))


def _postgres_locations(env: Mapping[str, str]) -> List[Location]:
    if "QUEUE_METRICS_DATABASE_URLS" not in env and not any(_is_postgres_url(value) for value in env.values()):
        return []  # an app without Postgres loads none of its code
    from queue_metrics.datastores.postgres.locations import postgres_locations

    return postgres_locations(env)


def _postgres_passwords(url: str) -> Tuple[str, ...]:
    from queue_metrics.datastores.postgres.locations import passwords_of

    return passwords_of(url)


def _describe_postgres_url(url: str) -> str:
    from queue_metrics.datastores.postgres.locations import describe_postgres_url

    return describe_postgres_url(url)


def _is_postgres_url(value: str) -> bool:
    return value.strip().lower().startswith(("postgres://", "postgresql://"))


KINDS: Tuple[DatastoreKind, ...] = (
    DatastoreKind(
        "redis",
        _redis_locations,
        "queue_metrics.datastores.redis.reader:make_reader",
        _redis_passwords,
        _describe_redis_url,
        _is_redis_url,
    ),
    DatastoreKind(
        "rabbitmq",
        _rabbitmq_locations,
        "queue_metrics.datastores.rabbitmq.reader:make_reader",
        _rabbitmq_passwords,
        _describe_amqp_url,
        _is_amqp_url,
    ),
    DatastoreKind(
        "postgres",
        _postgres_locations,
        "queue_metrics.datastores.postgres.reader:make_reader",
        _postgres_passwords,
        _describe_postgres_url,
        _is_postgres_url,
    ),
)


def all_locations(env: Mapping[str, str]) -> Tuple[Location, ...]:
    """Every datastore the environment names, kind by kind (ConfigError on a bad one)."""
    from queue_metrics.datastores.redis.locations import named_variables

    named = named_variables(env)
    for name in named or ():
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(f"QUEUE_METRICS_DATASTORES names {name}, which is not set")
        if not any(kind.claims(value) for kind in KINDS):
            raise ConfigError(
                f"QUEUE_METRICS_DATASTORES names {name}, which holds no URL of a datastore this collector "
                f"reads (redis://, rediss://, amqp://, amqps://, postgres://)"
            )
    found = [location for kind in KINDS for location in kind.locations(env)]
    # The built-in default (a Redis on localhost) stands in only for an app that names no
    # datastore at all: an app on RabbitMQ alone has no Redis to read.
    chosen = [location for location in found if location.source != DEFAULT_SOURCE]
    return tuple(chosen or found)


def kind_of(location: Location) -> DatastoreKind:
    return next(kind for kind in KINDS if kind.name == location.kind)


def make_reader(settings: object, location: Location, whole_first_walk: bool, announce: Callable[[str], None]):
    """The reader of one datastore, its kind's code imported now (and only now)."""
    module, function = kind_of(location).reader.split(":")
    return getattr(importlib.import_module(module), function)(settings, location, whole_first_walk, announce)


def describe(location: Location) -> str:
    """`redis rediss://host:port/0 (from REDIS_URL)`: a location for people, no password."""
    return f"{location.kind} {kind_of(location).describe(location.url)} (from {location.source})"


def passwords(locations: Sequence[Location]) -> List[str]:
    return [password for location in locations for password in kind_of(location).passwords(location.url)]


# No piece of between-ticks work starts this close to the next tick: it would be cut short by it
# (it may not hold the tick up), and one cut short costs the next tick a new connection.
LAST_STEP_MARGIN = 0.05


def idle_until(
    datastores: Sequence[Datastore],
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    rest: bool = True,
) -> int:
    """Between ticks: each datastore's work at its own pace, the earliest due first, until
    `deadline` (monotonic); with `rest`, returns at the deadline. Returns the steps taken."""
    steps = 0
    while datastores:
        datastore = min(datastores, key=lambda candidate: candidate.idle_due)
        due = datastore.idle_due
        if math.isinf(due) or due >= deadline - LAST_STEP_MARGIN:
            break
        wait = due - monotonic()
        if wait > 0:
            sleep(wait)
        datastore.idle_step(deadline)
        steps += 1
    if rest:
        sleep(max(0.0, deadline - monotonic()))
    return steps
