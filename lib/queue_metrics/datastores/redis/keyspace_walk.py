"""The keyspace walk: finds keys that reveal queues no registry lists (Celery's exchanges).

It never uses KEYS. It walks the keyspace with SCAN ... MATCH ... COUNT 1000, one short command
at a time: each asks Redis to look at about a thousand keys, so no single command holds a busy
Redis up, whatever its size. The steps are spread evenly over `pass_seconds` (sized from DBSIZE,
read with each step), between the ticks, so no tick but the first waits for a walk (see below); a
walk started when a key already existed finds it, so a new queue is found within two passes.

Every walk is paced, the first one too: `run`'s first tick takes one step (all of a keyspace of
up to about a thousand keys) and the rest follow between ticks at the same pace; `once` and
`doctor`, which report what a whole pass finds, take a step every MIN_STEP_GAP, the most the
steady walk ever asks of Redis.

Several systems walk (Celery's exchanges, BullMQ's and Dramatiq's queues), each for its own
pattern, and together they keep to one walk's budget (`share` walks): on a keyspace so big that
they would look at more than SHARED_FLOOR keys a second between them, each pass takes longer, so
that all of them cost Redis what one walk does (about 0.9 ms per thousand keys; a new queue is
then found later); below that (100,000 keys for three walks at the default 15 s) nothing
changes, as their cost is under 2% of a Redis core. Each walk steps at most every `share` x
MIN_STEP_GAP. (One walk without MATCH, filtered here, would cost Redis as much as one with it but
the dyno some ten times the CPU: every key is sent and parsed.)

The walk keeps only a cursor and the matching keys of the current pass.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Set

from queue_metrics.datastores.redis.resp import pack_commands

SCAN_COUNT = 1000
# At most one step every 10 ms (100 a second), however big the keyspace: on more than 1.5 million
# keys a walk takes longer than QUEUE_METRICS_DISCOVERY_INTERVAL rather than load Redis more.
MIN_STEP_GAP = 0.01
# Keys a second all the walks of one Redis may look at together before they share one walk's pace.
SHARED_FLOOR = 20_000


class KeyspaceWalk:
    """One pattern's walk: `command()` is its next step, `take()` its replies, `due` when the
    next step is (monotonic)."""

    def __init__(
        self,
        pattern: str,
        pass_seconds: float,
        deliver: Callable[[List[str], bool], None],
        system: str,
        share: int = 1,
    ) -> None:
        self.pattern = pattern
        self.system = system  # the queue system it looks for queues of
        # The walks of one Redis share one walk's budget (see the module's docstring).
        self.interval = pass_seconds
        self.share = share
        self.min_gap = MIN_STEP_GAP * share
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
            # The next pass starts a whole pass after this one did, not at once; and a step
            # later at the soonest, when this pass took longer.
            self.due = max(self._pass_started + self.pass_seconds, now + self.step_gap)
            self._pass_started = None
            return
        if new:
            self._deliver(new, False)
        self.due = now + self.step_gap

    @property
    def pass_seconds(self) -> float:
        """The interval; longer on a keyspace where the walks together would look at more keys a
        second than both one walk and SHARED_FLOOR."""
        keys = self.keyspace or 0
        if self.share <= 1 or keys == 0:
            return self.interval
        allowed = max(keys / self.interval, SHARED_FLOOR)
        return max(self.interval, self.share * keys / allowed)

    @property
    def steps_per_pass(self) -> int:
        return max(1, math.ceil((self.keyspace or 0) / SCAN_COUNT))

    @property
    def step_gap(self) -> float:
        """Seconds between steps: the pass spread evenly, never closer than its share of
        MIN_STEP_GAP."""
        return max(self.min_gap, self.pass_seconds / self.steps_per_pass)

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


# Said when a walk will keep people waiting (`once`, `doctor`), or the first tick of `run` leaves
# queues for the walk to find: what it walks, for how long, and how to go without it.
def whole_walk_notice(walk: KeyspaceWalk, seconds: float) -> str:
    return (
        f"walking {walk.keyspace or 0:,} keys for {walk.system} bindings ({walk.pattern}) before reporting: "
        f"about {seconds:.0f} s, a SCAN step every {MIN_STEP_GAP * 1000:.0f} ms "
        f"(an app without {walk.system} skips it with QUEUE_METRICS_BACKENDS)"
    )


def paced_walk_notice(walk: KeyspaceWalk) -> str:
    seconds = walk.steps_per_pass * walk.step_gap
    return (
        f"walking {walk.keyspace or 0:,} keys for {walk.system} bindings ({walk.pattern}) between ticks, "
        f"about {seconds:.0f} s a pass: the first tick reports the queues the registries list, the rest "
        f"from the tick after the walk finds them (an app without {walk.system} skips the walk with "
        f"QUEUE_METRICS_BACKENDS)"
    )
