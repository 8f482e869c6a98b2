"""One Postgres database: the job tables of every SQL queue system in it, read-only, in one round
trip a tick.

Each tick sends, in one write on one kept session (`wire.py`: read-only, `statement_timeout`):

1. the catalog query: which of the systems' tables exist here (`to_regclass`, through the
   session's search_path) and their columns, which say each system's version;
2. the SELECT of each system the last tick found (`systems/sql.py`), one per system.

A system that appears (or whose tables changed shape: a migration ran) is read in a second round
trip of that same tick. A database that holds none of the tables costs that one catalog query,
then its connection is closed and the question asked again only every DETECT_EVERY ticks: an app
whose jobs are elsewhere (Sidekiq with a Rails database) keeps its connection slots. Until this
database has shown a job table, what fails there is said once, as a warning, not at every tick.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from queue_metrics.config import Settings
from queue_metrics.datastores import Location
from queue_metrics.datastores.postgres.locations import Address, address_of, describe_postgres_url
from queue_metrics.datastores.postgres.wire import UNSUPPORTED_STARTUP, PostgresConnection, Rows
from queue_metrics.errors import (
    ErrorLog,
    PostgresError,
    TableShapeError,
    WarningNotice,
    describe_postgres_error,
    describe_postgres_query_error,
)
from queue_metrics.sample import Figure, QueueSample, SystemSample, TickReport
from queue_metrics.systems import SYSTEMS
from queue_metrics.systems.sql import READABLE, Columns, SqlSystem, queue_samples, unit_of

KIND = "postgres"
# Ticks between two catalog queries of a database that holds no job table.
DETECT_EVERY = 10
# A lock the reader waits for (an ALTER TABLE's, a migration's) gives up after this: waiting,
# it would hold up every query of the app queued behind that lock.
LOCK_TIMEOUT_MS = 1000


def catalog_query(tables: List[str]) -> str:
    """Which of `tables` exist, with their columns: one row per column; and a row whose column is
    `sql.READABLE` for each table the session may SELECT (a system reads a table it can do
    without, such as the workers' for `consumers`, only then: its role may not have it)."""
    names = "unnest(ARRAY[" + ", ".join("'" + table.replace("'", "''") + "'" for table in tables) + "]::text[])"
    return (
        f"SELECT t.name, a.attname FROM {names} AS t(name) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(t.name) "
        "WHERE a.attnum > 0 AND NOT a.attisdropped "
        f"UNION ALL SELECT t.name, '{READABLE}' FROM {names} AS t(name) "
        "WHERE to_regclass(t.name) IS NOT NULL AND has_table_privilege(to_regclass(t.name), 'SELECT')"
    )


def make_systems(settings: Settings) -> List[SqlSystem]:
    """The SQL queue systems (those QUEUE_METRICS_BACKENDS pins, else all)."""
    specs = {spec.name: spec for spec in SYSTEMS if spec.datastore == KIND}
    chosen = settings.backends or tuple(specs)
    return [specs[name].make(settings.of(name), settings.extras) for name in chosen if name in specs]  # type: ignore[misc]


def make_reader(
    settings: Settings, location: Location, whole_first_walk: bool, announce: Callable[[str], None]
) -> "PostgresReader":
    """The reader of one Postgres datastore (`datastores.KINDS`)."""
    return PostgresReader(settings, location, announce=announce)


class PostgresReader:
    """One Postgres database. A `datastores.Datastore`."""

    def __init__(
        self,
        settings: Settings,
        location: Location,
        announce: Callable[[str], None] = lambda notice: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.address: Address = address_of(location.url, location.source)
        self._settings = settings
        self._announce = announce
        self._monotonic = monotonic
        self.systems = make_systems(settings)
        tables = [table for system in self.systems for table in system.tables]
        self._catalog = catalog_query(list(dict.fromkeys(tables)))
        self._connection: Optional[PostgresConnection] = None
        self._tls: Any = None
        # Behind a pooler that refuses startup parameters (wire.py: a pooled session).
        self._pooled = False
        # Each present system's SELECT as the last catalog answer made it.
        self._queries: Dict[str, str] = {}
        self.columns: Columns = {}
        self._ticks_without_tables = 0
        # Whether this database ever held a job table (until then, failures are one warning).
        self.held_jobs = False
        # Whether a catalog query has ever been answered (until then, `findings` says nothing).
        self.read_once = False
        self._warned: Set[str] = set()
        # Per system, the queues it has shown and its figures' names: a queue whose rows are all
        # gone (drained, and Delayed Job deletes what it ran) is reported as 0, not forgotten.
        self._seen: Dict[str, Dict[str, Tuple[str, ...]]] = {}

    # -- the Datastore protocol

    def tick(self) -> TickReport:
        started = self._monotonic()
        if not self.systems:
            return TickReport((), (), (), 0.0, True)
        if not self._queries and self._ticks_without_tables % DETECT_EVERY:
            self._ticks_without_tables += 1
            return TickReport((), (), (), 0.0, True)
        errors = ErrorLog()
        deadline = started + self._settings.timeout
        try:
            results, round_trips = self._read(deadline)
        except Exception as error:  # noqa: BLE001 (every failure is one line; the loop goes on)
            self.close()
            message = describe_postgres_error(error, self.describe(), self.address.user, self._settings.timeout)
            if not self.held_jobs:
                # Maybe not a jobs database at all: said once, and asked again later.
                self._ticks_without_tables = 1
                if message not in self._warned:
                    self._warned.add(message)
                    self._announce(WarningNotice(f"{self.location.label}: {message} (no job table found there yet)"))
                return TickReport((), (), (), self._monotonic() - started, True, 1)
            return TickReport((), (message,), (), self._monotonic() - started, False, 1)
        samples: List[QueueSample] = []
        systems: List[SystemSample] = []
        in_use: List[str] = []
        for system in self.systems:
            result = results.get(system.name)
            if result is None:
                continue
            in_use.append(system.name)
            if isinstance(result, PostgresError):
                errors.add(f"{system.name}: {describe_postgres_query_error(result, self._settings.timeout)}")
                continue
            if isinstance(result, TableShapeError):
                errors.add(f"{system.name}: {result}")
                continue
            found, totals = queue_samples(system, result.columns, result.rows, errors)
            samples.extend(found)
            samples.extend(self._drained(system, found))
            systems.extend(totals)
        if not in_use:
            # No job table here: nothing to keep a connection open for.
            self.close()
            self._ticks_without_tables = 1
        else:
            self.held_jobs = True
        return TickReport(
            tuple(samples),
            tuple(errors.messages),
            tuple(in_use),
            self._monotonic() - started,
            True,
            round_trips,
            tuple(systems),
        )

    def _drained(self, system: SqlSystem, found: List[QueueSample]) -> List[QueueSample]:
        """The queues the system showed before and has no row of now: every figure 0."""
        seen = self._seen.setdefault(system.name, {})
        for sample in found:
            seen[sample.queue] = tuple(figure.name for figure in sample.figures)
        present = {sample.queue for sample in found}
        return [
            QueueSample(system.name, queue, 0, 0.0, tuple(Figure(name, 0, unit_of(name)) for name in figures))
            for queue, figures in seen.items()
            if queue not in present
        ]

    def _read(self, deadline: float) -> Tuple[Dict[str, Any], int]:
        """The catalog and every known system's SELECT in one round trip; the SELECT of a system
        new (or changed) since in a second."""
        reused = self._connection is not None
        connection = self._connection or self._connect(deadline)
        connection.set_timeout(deadline - self._monotonic())
        sent = dict(self._queries)
        retried = 0
        try:
            replies = connection.queries([self._catalog, *sent.values()])
        except (ConnectionError, PostgresError):
            # A kept session the server ended between ticks (idle_session_timeout, a restart,
            # pg_terminate_backend, a pooler's idle timeout) says so only at this read (a FATAL,
            # or the socket closed): read once more, on a new session. `queries` raises only a
            # FATAL or PANIC PostgresError; a timeout is not retried.
            if not reused:
                raise
            self.close()
            connection = self._connect(deadline)
            connection.set_timeout(deadline - self._monotonic())
            replies = connection.queries([self._catalog, *sent.values()])
            retried = 1
        catalog = replies[0]
        if isinstance(catalog, PostgresError):
            raise catalog
        self.columns = _columns_of(catalog)
        self.read_once = True
        results: Dict[str, Any] = dict(zip(sent, replies[1:]))
        wanted: Dict[str, Optional[str]] = {}
        for system in self.systems:
            try:
                wanted[system.name] = system.query(self.columns)
            except TableShapeError as error:
                # There, but not readable: said at every tick, until a migration runs.
                results[system.name] = TableShapeError(f"{error}: a migration not yet run?")
        self._queries = {name: sql for name, sql in wanted.items() if sql is not None}
        for name in [name for name in results if name not in self._queries and name in wanted]:
            del results[name]  # its tables went away since the last tick
        again = {name: sql for name, sql in self._queries.items() if sent.get(name) != sql}
        if not again:
            return results, 1 + retried
        connection.set_timeout(deadline - self._monotonic())
        results.update(zip(again, connection.queries(list(again.values()))))
        return results, 2 + retried

    def _connect(self, deadline: float) -> PostgresConnection:
        address = self.address
        tls = self._tls_context() if address.tls_asked else None
        timeout_ms = max(1, int(self._settings.timeout * 1000))
        for pooled in (self._pooled, True):
            try:
                self._connection = PostgresConnection(
                    address.host,
                    address.port,
                    address.user,
                    address.password,
                    address.database,
                    max(0.001, deadline - self._monotonic()),
                    timeout_ms,
                    min(timeout_ms, LOCK_TIMEOUT_MS),
                    tls,
                    address.tls_required,
                    pooled,
                )
                return self._connection
            except PostgresError as error:
                # A pooler (PgBouncer) refused our startup parameters: its session then.
                if pooled or not (error.code == "08P01" and UNSUPPORTED_STARTUP in error.text):
                    raise
                self._pooled = True
        raise AssertionError("unreachable")  # pragma: no cover

    def _tls_context(self) -> Any:
        if self._tls is None:
            # Imported here: `ssl` loads OpenSSL (megabytes), for a TLS database only.
            import ssl

            if self.address.tls_verified:
                context = ssl.create_default_context(cafile=self._settings.tls_ca_file)
                context.check_hostname = self.address.sslmode == "verify-full"
            else:
                # sslmode=require, as libpq: encrypted, the certificate not checked (Heroku
                # Postgres's is not signed by a public authority).
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    def findings(self) -> List[str]:
        """What the last catalog query found, for `doctor`: each system's tables and version."""
        lines = [line for system in self.systems for line in system.describe(self.columns)]
        if not lines and self.read_once:
            names = ", ".join(system.name for system in self.systems)
            lines.append(f"No job table of a system read here ({names}) in this database (search_path)")
        return lines

    @property
    def idle_due(self) -> float:
        return float("inf")

    def idle_step(self, deadline: float) -> None:
        """No work between ticks."""

    def describe(self) -> str:
        return describe_postgres_url(self.location.url)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def reset(self) -> None:
        self.close()
        self._queries = {}
        self.columns = {}
        self._seen.clear()


def _columns_of(catalog: Rows) -> Dict[str, FrozenSet[str]]:
    found: Dict[str, Set[str]] = {}
    for table, column in catalog.rows:
        if table is not None and column is not None:
            found.setdefault(table, set()).add(column)
    return {table: frozenset(names) for table, names in found.items()}
