"""Latency observed from outside: how long the oldest message of a list has waited, without
any publish time in the message (Celery's messages carry none).

Each tick reads, per list, its length L, its newest message (LINDEX 0) and where the previous
tick's newest message is now (LPOS <previous newest> RANK 1 MAXLEN 10000: how many messages were
pushed since). Producers push at the head, workers pop at the tail, so:

- pops since the last tick = L_before + pushes - L_now, summed into a running count P;
- the newest message at tick k, M_k, leaves the list after exactly L_k pops from tick k on, and
  every message older than it leaves before it;
- the oldest message now, O, was in the list at tick k exactly when M_k still is, that is when
  P_now - P_k < L_k; and O was not there at tick k-1 unless it was there at k.

So O was published after tick k-1 and no later than tick k, for the first tick k at which it was
in the list, and it has waited at least now - t_k and less than now - t_(k-1): the reported
figure, now - t_k, is never above the truth and at most one interval below it. Before the loop
has seen the list empty or seen its oldest message arrive (a backlog older than the loop), the
first tick is the earliest bound there is: the figure is a lower bound that grows with time.

Where it is not exact: messages put back at the tail (a worker that died, after kombu's
visibility timeout) count from when they came back, or from a bit earlier, not from their first
publish; more than 10,000 pushes between two ticks (LPOS looks no further) or another client's
commands landing between our reads make that tick's count uncertain, and the list falls back to
a lower bound from then on. Memory: per list with messages one message (the last newest) and
at most MAX_TICKS ticks of three numbers; past that, old ticks are thinned out, so very old
backlogs get a lower bound rather than a growing table. An empty list needs no watch: knowing
that it was empty at a tick is enough (`ListWatch(since=that tick)` when it fills). It assumes
no two messages of a list are the same bytes (kombu's carry a unique delivery tag and task id):
LPOS would find the newer twin.
"""

from __future__ import annotations

from array import array
from typing import Optional

# LPOS looks at most this many messages from the head for the previous newest message.
SEARCH_DEPTH = 10_000
# Ticks remembered per list; beyond this, every other old tick is dropped (bounds stay lower).
MAX_TICKS = 128
# A newest message longer than this is not sent back with LPOS: the list falls back to a lower
# bound rather than cost the bandwidth and memory of huge messages.
MAX_TRACKED = 16 * 1024
# `pushed` when LPOS was not sent or failed: the count of what arrived is unknown.
NOT_SEARCHED = -1


class ListWatch:
    """What one list's history says about its oldest message. Pure: times are passed in."""

    __slots__ = ("newest", "since", "times", "lengths", "pops_at", "pops", "length", "seen_at")

    def __init__(self, since: Optional[float] = None) -> None:
        # The newest message at the last tick, to find with LPOS at the next.
        self.newest: Optional[bytes] = None
        # Every message now in the list was published after this time (None: unknown). A watch
        # made for a list seen empty at `since` starts as if it had observed that.
        self.since: Optional[float] = since
        self.times = array("d")
        self.lengths = array("d")
        self.pops_at = array("d")
        self.pops = 0.0
        # The list's length at the last tick, and when that was.
        self.length = 0
        self.seen_at: Optional[float] = None

    def observe(self, now: float, length: int, newest: Optional[bytes], pushed: Optional[int]) -> float:
        """Take one tick's reading; return how long the oldest message has waited (a lower bound).

        `pushed`: the position of the previous newest message found by LPOS (the number of
        messages pushed since), None when LPOS did not find it, NOT_SEARCHED when it was not
        asked (or failed): then what came since is unknown, and the figure a lower bound.
        """
        if length <= 0 or newest is None:
            self._forget(since=now)
            return 0.0
        if self.newest is None:
            # Empty at the last tick (`since` is then that tick), or never seen (unknown).
            self._forget(self.since)
        elif pushed is not None and pushed < 0:
            self._forget(None)
        elif pushed is None:
            if length < SEARCH_DEPTH:
                # The last newest message is gone, so is all that was older: everything now in
                # the list came after the last tick.
                self._forget(self.seen_at)
            else:
                self._forget(None)
        else:
            self.pops += self.length + pushed - length
        self.length = length
        self.newest = newest
        self.seen_at = now
        # When nothing arrived since the last tick no message can be first seen now, so the tick
        # needs no entry: a queue stuck for hours costs no more than one stuck for a tick.
        if pushed != 0 or not self.times:
            self.times.append(now)
            self.lengths.append(length)
            self.pops_at.append(self.pops)
        first = self._first_present()
        if first > 0:
            self.since = self.times[first - 1]
            del self.times[:first], self.lengths[:first], self.pops_at[:first]
        if len(self.times) > MAX_TICKS:
            self._thin()
        return max(0.0, now - self.times[0])

    @property
    def exact(self) -> bool:
        """True when the figure is within one interval of the truth, False for a lower bound."""
        return self.since is not None

    def _first_present(self) -> int:
        """Index of the first remembered tick at which the oldest message now was in the list."""
        pops = self.pops
        for index in range(len(self.times)):
            if pops - self.pops_at[index] < self.lengths[index]:
                return index
        return len(self.times) - 1

    def _forget(self, since: Optional[float]) -> None:
        self.newest = None
        self.length = 0
        self.seen_at = None
        self.since = since
        del self.times[:], self.lengths[:], self.pops_at[:]

    def _thin(self) -> None:
        # Keep the first (the bound reported now) and the newer half whole; thin the rest.
        keep = [0, *range(1, len(self.times) // 2, 2), *range(len(self.times) // 2, len(self.times))]
        self.times = array("d", (self.times[i] for i in keep))
        self.lengths = array("d", (self.lengths[i] for i in keep))
        self.pops_at = array("d", (self.pops_at[i] for i in keep))
