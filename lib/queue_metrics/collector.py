"""One tick over every datastore the settings name, merged into one report.

Each datastore is read by the reader of its kind (`datastores.KINDS`), with its own connection,
timeout and error lines: one that is down, slow or refusing costs the tick at most its own
timeout and never silences the others. The collector names no kind and no queue system.

Names: a queue's metric names are `<prefix>.<system>.<queue>.<figure>` while no two datastores
hold the same system and queue; when they do, the later datastore's (in the settings' order) are
`<prefix>.<label>.<system>.<queue>.<figure>` (`Naming`). A system's figures follow the same rule.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, TypeVar

from queue_metrics.config import Settings
from queue_metrics.datastores import Datastore, idle_until, make_reader
from queue_metrics.sample import DatastoreSection, QueueSample, SystemSample, TickReport

# What `Naming` labels: a (system, queue) or a system.
Name = TypeVar("Name", Tuple[str, str], str)


class Naming:
    """Which names carry a datastore's label: a (system, queue), or a system, that a datastore
    earlier in the settings' order holds too. Once labeled, a name stays labeled while the process
    runs, so a datastore that goes down and comes back keeps its names."""

    def __init__(self, count: int) -> None:
        # The earliest datastore seen holding each (system, queue) and each system.
        self._first_queue: Dict[Tuple[str, str], int] = {}
        self._first_system: Dict[str, int] = {}
        self._queues: List[Set[Tuple[str, str]]] = [set() for _ in range(count)]
        self._systems: List[Set[str]] = [set() for _ in range(count)]
        self._frozen: List[Tuple[FrozenSet[Tuple[str, str]], FrozenSet[str]]] = [(frozenset(), frozenset())] * count

    def labeled(self, index: int, report: TickReport) -> Tuple[FrozenSet[Tuple[str, str]], FrozenSet[str]]:
        """The labeled names of datastore `index` after what its report holds (datastores are
        given in order within a tick)."""
        grew = False
        for sample in report.samples:
            grew |= _held_before(self._first_queue, self._queues[index], (sample.backend, sample.queue), index)
        for backend in report.backends:
            grew |= _held_before(self._first_system, self._systems[index], backend, index)
        if grew:
            self._frozen[index] = (frozenset(self._queues[index]), frozenset(self._systems[index]))
        return self._frozen[index]


def _held_before(firsts: Dict[Name, int], labeled: Set[Name], key: Name, index: int) -> bool:
    """Note that datastore `index` holds `key`; True when that makes `key` newly labeled there (a
    datastore earlier in the order holds it too)."""
    first = firsts.setdefault(key, index)
    if first > index:
        firsts[key] = first = index
    if first < index and key not in labeled:
        labeled.add(key)
        return True
    return False


class Collector:
    """Ticks every datastore; between ticks, gives each its own work (the Redis keyspace walk)."""

    def __init__(
        self,
        settings: Settings,
        whole_first_walk: bool = False,
        announce: Callable[[str], None] = lambda notice: None,
        readers: Optional[Sequence[Datastore]] = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.datastores: List[Datastore] = list(
            readers
            if readers is not None
            else (make_reader(settings, location, whole_first_walk, announce) for location in settings.locations())
        )
        self._naming = Naming(len(self.datastores))
        self._monotonic = monotonic

    def tick(self) -> TickReport:
        started = self._monotonic()
        reports = [self._read(datastore) for datastore in self.datastores]
        if len(reports) == 1:
            # The usual app: one datastore, its report as it is (ten thousand samples not copied).
            return reports[0]._replace(datastores=(self._section(0, reports[0]),))
        samples: List[QueueSample] = []
        systems: List[SystemSample] = []
        errors: List[str] = []
        backends: Dict[str, None] = {}
        for datastore, report in zip(self.datastores, reports):
            samples.extend(report.samples)
            systems.extend(report.systems)
            # Which datastore an error line is about: the same queue may live in two.
            errors.extend(f"{datastore.location.label}: {error}" for error in report.errors)
            backends.update(dict.fromkeys(report.backends))
        return TickReport(
            tuple(samples),
            tuple(errors),
            tuple(backends),
            self._monotonic() - started,
            all(report.redis_ok for report in reports),
            max(report.round_trips for report in reports),
            tuple(systems),
            sum(report.scan_round_trips for report in reports),
            tuple(self._section(index, report) for index, report in enumerate(reports)),
        )

    def _read(self, datastore: Datastore) -> TickReport:
        try:
            return datastore.tick()
        except Exception as error:  # noqa: BLE001 (the loop outlives a defect; the line says what)
            datastore.reset()
            message = f"the tick failed unexpectedly ({type(error).__name__}: {error}); trying again next tick"
            return TickReport((), (message[:300],), (), 0.0, False)

    def _section(self, index: int, report: TickReport) -> DatastoreSection:
        location = self.datastores[index].location
        labeled = self._naming.labeled(index, report) if len(self.datastores) > 1 else (frozenset(), frozenset())
        return DatastoreSection(
            location.label,
            location.kind,
            self.datastores[index].describe(),
            location.source,
            report.redis_ok,
            len(report.samples),
            len(report.systems),
            len(report.errors),
            *labeled,
        )

    def idle(self, deadline: float, sleep: Callable[[float], None] = time.sleep) -> int:
        """Between ticks: every datastore's own work at its pace, until `deadline` (monotonic)."""
        return idle_until(self.datastores, deadline, sleep, self._monotonic)

    def reset(self) -> None:
        for datastore in self.datastores:
            datastore.reset()
