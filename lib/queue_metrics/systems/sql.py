"""The contract every queue system in a SQL database (Postgres) implements, and its tools.

A SQL queue system is one module (`systems/good_job.py`...) with one row in `systems.SYSTEMS`
naming the `postgres` datastore kind; its `make(settings, extras)` builds a `SqlSystem`. The
Postgres reader (`datastores/postgres/reader.py`) asks every database which of the systems' tables
it has, with their columns, in one cheap catalog query, then sends each present system's one
SELECT, all in the same round trip, and turns its rows into samples with `queue_samples`.

A system's SELECT answers one row per queue, with the columns `queue`, `size` and `latency` (the
seconds the oldest ready job has waited, computed from the database's `now()`, NULL when nothing
is ready) and then one column per figure (`scheduled`, `running`, `failed`, `paused`...), named
as the figure; a figure that is NULL is left out. A row whose `queue` is NULL holds system-wide
figures. With extras off (QUEUE_METRICS_EXTRAS=false) only size and latency are reported.

Rules every SELECT keeps: one statement whatever the number of queues; served by the system's own
indexes (no sequential scan of the jobs table: each system's test file: helpers/sql_plans.py); no `FOR UPDATE`, no
advisory lock, no function with side effects. The session is read-only and bounded by
`statement_timeout` whatever the SELECT says (`datastores/postgres/wire.py`).
"""

from __future__ import annotations

from typing import FrozenSet, List, Mapping, Optional, Protocol, Sequence, Tuple

from queue_metrics.errors import ErrorLog
from queue_metrics.sample import Figure, QueueSample, SystemSample

# The unit of each figure a SQL system may report (OTLP); a figure not named here is a count.
UNITS = {"paused": "1", "running_age": "s", "due_age": "s"}
UNIT_JOBS = "{job}"

Columns = Mapping[str, FrozenSet[str]]
# Among a table's columns when the session may SELECT it (no column has this name: a leading
# space); for the tables a system reads only when it may (the workers' tables, for `consumers`).
READABLE = " readable"


class SqlSystem(Protocol):
    """One queue system whose jobs live in SQL tables. Only reads, ever."""

    name: str
    extras: bool

    @property
    def tables(self) -> Tuple[str, ...]:
        """The tables that may show the system in a database (names as `to_regclass` takes them,
        resolved through the session's search_path)."""

    def query(self, columns: Columns) -> Optional[str]:
        """The tick's one SELECT, for the tables found (each with its columns: the system's
        version shows in them); None when the system is not in this database; TableShapeError,
        naming what is missing, when its tables are there but not of a shape it knows."""

    def describe(self, columns: Columns) -> List[str]:
        """What it detected (the version its columns show), for `doctor`: one line each."""


def unit_of(figure: str) -> str:
    return UNITS.get(figure, UNIT_JOBS)


def number(text: Optional[str], what: str) -> Optional[float]:
    """A numeric column's text as a float (None for NULL); ValueError naming `what` otherwise."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number") from None


def queue_samples(
    system: SqlSystem, columns: Sequence[str], rows: Sequence[Sequence[Optional[str]]], errors: ErrorLog
) -> Tuple[List[QueueSample], List[SystemSample]]:
    """A system's SELECT result as samples (see the module's docstring for its shape)."""
    if tuple(columns[:3]) != ("queue", "size", "latency"):
        errors.messages.append(f"{system.name}: its query's columns are {', '.join(columns)}: not queue, size, latency")
        return [], []
    figure_names = columns[3:]
    samples: List[QueueSample] = []
    system_figures: List[Figure] = []
    for row in rows:
        queue = row[0]
        try:
            values = [number(value, f"{name} of queue {queue!r}") for name, value in zip(columns[1:], row[1:])]
        except ValueError as error:
            errors.about_queue(system.name, queue or "", str(error))
            continue
        size, latency, figure_values = values[0], values[1], values[2:]
        figures = (
            tuple(
                Figure(name, _whole(value), unit_of(name))
                for name, value in zip(figure_names, figure_values)
                if value is not None
            )
            if system.extras
            else ()
        )
        if queue is None:
            system_figures.extend(figures)
            continue
        if not size:
            latency = 0.0
        elif latency is not None and latency < 0:
            # A ready time written by an app whose clock runs ahead of the database's (Rails'
            # `created_at`, Django's `enqueued_at`): waited no time, never less.
            latency = 0.0
        samples.append(QueueSample(system.name, queue, int(size or 0), latency, figures))
    systems = [SystemSample(system.name, tuple(system_figures))] if system_figures else []
    return samples, systems


def _whole(value: float) -> float:
    return int(value) if value == int(value) else value
