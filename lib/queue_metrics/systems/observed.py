"""Latency observed from outside: how long the oldest message of a list has waited, without
any publish time in the message (Celery's messages carry none).

Each tick reads, per list, its length L, its newest message and where the previous tick's newest
message is now (LPOS <previous newest> MAXLEN 10000: how many messages were pushed since). Celery's
producers push at the head and workers pop at the tail (newest at LINDEX 0, LPOS RANK 1 counts
from the head); Resque's push at the tail and pop at the head (newest at LINDEX -1, LPOS RANK -1
searches from the tail, and the count is the distance from the tail). Either way:

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
LPOS would find the newer twin. Resque's plain payloads carry no unique id (the same job class
and arguments enqueued twice are the same bytes), so its LPOS asks for two matches (COUNT 2):
two found means the count is ambiguous, and the list falls back to a lower bound.

`ListObservers` is the part the systems share: the watches of one system's lists across ticks,
which lists were seen empty at the last tick, and the LPOS that feeds them.
"""

from __future__ import annotations

from array import array
from typing import Dict, Optional, Set

from queue_metrics.errors import ReplyError
from queue_metrics.systems.contract import EMPTY_BATCH, Batch

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


def _lpos_parts(rank: int, count: Optional[int]) -> "tuple[bytes, bytes]":
    """What comes before the key and after the message in `LPOS <key> <message> RANK <rank>
    [COUNT <count>] MAXLEN <depth>`, packed (RESP) once."""
    tail = [b"RANK", b"%d" % rank] + ([b"COUNT", b"%d" % count] if count is not None else [])
    tail += [b"MAXLEN", b"%d" % SEARCH_DEPTH]
    head = b"*%d\r\n$4\r\nLPOS\r\n" % (3 + len(tail))
    return head, b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in tail)


class ListObservers:
    """The watches of one system's lists, kept from tick to tick, and the LPOS that feeds them.

    `newest_at_head`: producers push at the head (Celery: the newest at LINDEX 0, LPOS RANK 1
    gives the count pushed since directly); else at the tail (Resque: the newest at LINDEX -1,
    LPOS RANK -1 COUNT 2, and the count is the distance from the tail).

    Per queue, a bit per list (a queue may have several: Celery's priority lists) set when the
    list was not seen empty at a tick: `not_empty`, this tick's, filled by the system; with the
    time of each tick's first reading, a list that fills again is known to have been empty at
    the last tick, so its oldest message arrived within one interval before it is first seen
    (without this, a queue that a worker keeps empty between bursts would never report a latency).
    """

    def __init__(self, newest_at_head: bool = True) -> None:
        self._from_head = newest_at_head
        self._lpos_head, self._lpos_tail = _lpos_parts(1, None) if newest_at_head else _lpos_parts(-1, 2)
        self._watches: Dict[bytes, ListWatch] = {}
        # The lists whose history this tick kept: a list no tick reads with messages any more
        # loses its history.
        self._watched: Set[bytes] = set()
        # False once the server said it has no LPOS (Redis < 6.0.6): no observed latency.
        self.observing = True
        # For each queue read at the last tick and at this one, its bits (see above); 0, a
        # shared small int, when all its lists were empty.
        self.not_empty_before: Dict[str, int] = {}
        self.not_empty: Dict[str, int] = {}
        self._before_at: Optional[float] = None
        self._tick_at: Optional[float] = None

    def start_tick(self) -> None:
        if not self._watched.issuperset(self._watches):
            self._watches = {key: watch for key, watch in self._watches.items() if key in self._watched}
        self._watched = set()
        self.not_empty_before, self.not_empty = self.not_empty, {}
        self._before_at, self._tick_at = self._tick_at, None

    def read_at(self, now: float) -> None:
        """A queue's first replies of this tick arrived at `now`: every list this tick reads
        empty was empty at the first such time or later."""
        if self._tick_at is None:
            self._tick_at = now

    def tracked(self, key: bytes) -> Optional[bytes]:
        """The message to look for with LPOS this tick, if any: the list's last newest message,
        unless observing is off (a Redis without LPOS) or the message is too big to send back."""
        watch = self._watches.get(key)
        if not self.observing or watch is None or watch.newest is None or len(watch.newest) > MAX_TRACKED:
            return None
        return watch.newest

    def search(self, key: bytes) -> Batch:
        """LPOS of the list's newest message at the last tick, when there was one: how many
        messages were pushed since. Packed by hand: once a list and tick."""
        newest = self.tracked(key)
        if newest is None:
            return EMPTY_BATCH
        return Batch(
            b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (self._lpos_head, len(key), key, len(newest), newest, self._lpos_tail),
            1,
        )

    def empty(self, queue: str, bit: int, key: bytes, emptied: bool = False) -> None:
        """The list holds nothing now; `emptied`: its LLEN said otherwise (it emptied between
        the reads), and it counts as seen empty all the same."""
        if emptied and queue in self.not_empty:
            self.not_empty[queue] &= ~(1 << bit)
        self._watches.pop(key, None)  # that it is empty now is in `not_empty`

    def forget(self, key: bytes) -> None:
        """The list's oldest message carries its own time: it needs no history."""
        self._watches.pop(key, None)

    def observe(
        self, queue: str, bit: int, key: bytes, length: int, newest: bytes, lpos: object, now: float
    ) -> Optional[float]:
        """How long the list's oldest message has waited, from its history and this tick's
        reading (`lpos`: the reply to `search`'s LPOS, NOT_SEARCHED when none was sent); None
        when that is not known yet (a lower bound still 0) or cannot be (no LPOS)."""
        if isinstance(lpos, ReplyError):
            if "unknown command" in lpos.text.lower():
                self.observing = False  # Redis < 6.0.6: no LPOS, so no observed latency
            lpos = NOT_SEARCHED
        if not self.observing:
            return None
        watch = self._watches.get(key)
        if watch is None:
            # New, or empty at the last tick: then its messages all came after that tick.
            before = self.not_empty_before.get(queue)
            empty_before = before is not None and not before >> bit & 1
            watch = self._watches[key] = ListWatch(self._before_at if empty_before else None)
        self._watched.add(key)
        seen = watch.observe(now, length, newest, self._pushed(lpos, length))
        if not watch.exact and seen == 0.0:
            return None
        return seen

    def _pushed(self, lpos: object, length: int) -> Optional[int]:
        """Messages pushed since the last tick, from the LPOS reply (see ListWatch.observe)."""
        if self._from_head or lpos is None or lpos == NOT_SEARCHED:
            return lpos  # type: ignore[return-value]
        if not isinstance(lpos, list):
            return NOT_SEARCHED
        if not lpos:
            return None  # not found: popped, with all that was older
        if len(lpos) > 1:
            return NOT_SEARCHED  # twins: which one was the newest is unknown
        return max(NOT_SEARCHED, length - 1 - lpos[0])
