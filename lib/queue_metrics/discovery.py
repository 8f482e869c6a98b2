"""The keyspace walk: finds keys that reveal queues no registry lists (Celery's exchanges).

It never uses KEYS. It walks the keyspace with SCAN ... MATCH ... COUNT 1000, one short command
at a time: each asks Redis to look at about a thousand keys, so no single command holds a busy
Redis up, whatever its size. The steps are spread evenly over `pass_seconds` (sized from DBSIZE,
read with each step), between the ticks, so a tick itself never waits for a walk; a walk started
when a key already existed finds it, so a new queue is found within two passes.

The walk keeps only a cursor and the matching keys of the current pass.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Set

from queue_metrics.resp import pack_commands

SCAN_COUNT = 1000
# At most one step every 10 ms (100 a second), however big the keyspace: on more than 1.5 million
# keys a walk takes longer than QUEUE_METRICS_DISCOVERY_INTERVAL rather than load Redis more.
MIN_STEP_GAP = 0.01


class KeyspaceWalk:
    """One pattern's walk: `command()` is its next step, `take()` its replies, `due` when the
    next step is (monotonic)."""

    def __init__(self, pattern: str, pass_seconds: float, deliver: Callable[[List[str], bool], None]) -> None:
        self.pattern = pattern
        self.pass_seconds = pass_seconds
        self._deliver = deliver
        self.cursor = 0
        self._found: Set[str] = set()
        self.passes = 0
        self.steps = 0
        self.keyspace: Optional[int] = None
        self._pass_started: Optional[float] = None
        # Monotonic time of the next step; the first is due at once.
        self.due = -math.inf

    def command(self) -> bytes:
        return pack_commands([("SCAN", self.cursor, "MATCH", self.pattern, "COUNT", SCAN_COUNT), ("DBSIZE",)])

    def take(self, replies: list, now: float) -> None:
        """Use the replies to `command()`; `now` is monotonic."""
        (cursor, keys), keyspace = replies
        if self._pass_started is None:
            self._pass_started = now
        self.keyspace = keyspace if isinstance(keyspace, int) else self.keyspace
        self.steps += 1
        fresh = [key.decode("utf-8", "surrogateescape") for key in keys]
        new = [key for key in fresh if key not in self._found]
        self._found.update(fresh)
        self.cursor = int(cursor)
        if self.cursor == 0:
            self.passes += 1
            self._deliver(sorted(self._found), True)
            self._found = set()
            # The next pass starts a whole pass after this one did, not at once.
            self.due = self._pass_started + self.pass_seconds
            self._pass_started = None
            return
        if new:
            self._deliver(new, False)
        steps_per_pass = max(1, math.ceil((self.keyspace or 0) / SCAN_COUNT))
        self.due = now + max(MIN_STEP_GAP, self.pass_seconds / steps_per_pass)

    def restart(self, now: float) -> None:
        """After a failed step: a new pass from the start, a whole pass later (and counted as
        done, so `once` does not wait for it)."""
        self.cursor = 0
        self._found = set()
        self._pass_started = None
        self.passes = max(self.passes, 1)
        self.due = now + self.pass_seconds

    @property
    def in_pass(self) -> bool:
        return self._pass_started is not None
