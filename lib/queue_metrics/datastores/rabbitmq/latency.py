"""How long the oldest ready message of a RabbitMQ queue has waited, from the management API's
counters alone (no consuming; Celery's messages carry no publish time).

A queue is first in, first out: messages are numbered 0, 1, 2, ... in publish order, and the
oldest ready message is number `published - ready` (every older one has left: delivered,
dropped or purged). Each tick's reading adds `(time, published)` points to a short per-queue
history, and the oldest message's publish time is interpolated between the two points that
bracket its number.

Dating. The API's counters are not live: queues and channels report every
`collect_statistics_interval` (5 s by default, and a monitoring user cannot read it), and the
management agent gathers those reports on its own timer. A request with
`lengths_age=A&lengths_incr=I&msg_rates_age=A&msg_rates_incr=I` gives each queue
`messages_ready_details.samples` and `message_stats.publish_details.samples`: `{sample, timestamp}`
pairs, newest first, timestamps in epoch milliseconds on a grid of I seconds, each report shown
at the first grid point at or after it and carried forward. A reading is dated at the newest
grid point both lists have, with both counters as they stood there, never at the request's
time; the publish list also gives the history the grid points where its count changed (and the
point before each change), so the history is as fine as the grid, whatever the tick.

Error bounds. Let L be the refresh lag (how old a counter can be at the grid point it is shown
at: the statistics interval twice, the queue's or channel's report then the agent's gathering,
plus the grid step: 11 s at the defaults and a 1 s grid) and T the spacing of the history's
points around the oldest message (the grid step where the publish samples cover the whole tick,
else the tick). A message numbered between two points was published between them, so its
interpolated publish time is off by at most T + L, and, once the history has seen that message
arrive, the figure at the reading's time d is:
- never below the true wait at d by more than T + L (the counters' oldest message is at least as
  old as the real one at d; measured: about one statistics interval young in a steady flow);
- never above the wait at d of the message that was oldest at some moment within L before d by
  more than T + L. A worker draining faster than producers publish moves the real oldest
  message forward by more than L in L: the figure follows one refresh late.
Before the history has seen it (a backlog older than the loop, or a history reset) the figure is
the time since the queue was first seen: a lower bound that grows with time, `exact` False, as
for unstamped Celery on Redis. A queue seen empty starts an exact history at that point: whatever
comes later was published after it. The two counters come from different processes' reports
(channels count publishes, the queue its ready messages), each up to a statistics interval old:
when a burst larger than the backlog lands within one interval after a quiet time, one reading
can take a message of the burst for the oldest (too young) or one consumed before it (too old);
the next reading corrects it.

Where it does not hold, and what is given instead (`seconds` None and a reason for doctor):
- a priority queue (`x-max-priority`): it is not first in, first out across priorities;
- no `message_stats` while messages are ready: the broker keeps no publish counter (management
  `rates_mode = none`);
- a reading without sample timestamps (the request lacked `lengths_age`/`msg_rates_age`), or
  with counters the API has not computed yet (a new quorum queue, for a few seconds).
A publish counter that went down (a node restart, the queue deleted and declared again) resets
the history: a lower bound again. Messages that enter a queue without a publish (dead-lettered
from another queue) are not counted by `publish`, so they make the queue's figures too young;
publishes are counted when routed, so a publish the queue did not accept (`x-max-length` with
`reject-publish`) makes them too old until the queue is next seen empty.

Memory: per queue at most MAX_POINTS points of two numbers; the history is kept only back to
the point that brackets the oldest message, and L (STALE_MARGIN) before it: a ready count shown
late makes one reading's head too young, and the next reading must find the points before it. A
queue whose oldest message stays put while
publishers go on thins out its points where they are densest, so its step T grows to about
2 x (the oldest message's wait) / MAX_POINTS: about 3 % of the wait past a minute or so at a
1 s grid. The caller forgets queues not seen at a tick (`Latencies.end_tick`).
"""

from __future__ import annotations

from array import array
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

# Points kept per queue; beyond this, the point in the densest stretch is dropped.
MAX_POINTS = 64
# Seconds of history kept before the point that brackets the oldest message: the refresh lag L
# at the defaults (twice the 5 s statistics interval, plus the 1 s grid). A ready count that lags
# the publish count moves the estimated head forward by at most what was published within L.
STALE_MARGIN = 11.0

# Why a queue gets no latency (said once per queue in doctor).
REASON_PRIORITY = "a priority queue (x-max-priority) is not first in, first out: its latency cannot be estimated"
REASON_NO_PUBLISH_COUNTER = (
    "the broker reports no message_stats (management rates_mode none): the latency cannot be estimated"
)
REASON_NOT_DATED = "the management API gave no sample timestamps (lengths_age, msg_rates_age): the latency is not dated"
REASON_NO_COUNTS = "the management API has not computed this queue's counts yet"


class Estimate(NamedTuple):
    """One queue's latency: `seconds` None with a `reason` when it cannot be estimated; `exact`
    False when it is a lower bound (the oldest message arrived before the loop could see it)."""

    seconds: Optional[float]
    exact: bool
    reason: Optional[str] = None


class Readings(NamedTuple):
    """What one queue object of `GET /api/queues/<vhost>` says for the latency.

    `sampled_at` (epoch seconds) is the grid point the counters are taken at, None when the reply
    carried no samples; `published` None when the broker reports no publish counter;
    `publish_points` the publish counter's `(time, count)` samples, oldest first."""

    sampled_at: Optional[float]
    published: Optional[int]
    ready: Optional[int]
    priority: bool
    publish_points: Tuple[Tuple[float, int], ...] = ()


def _samples(details: Any) -> Dict[int, int]:
    """`{timestamp in ms: sample}` of a `*_details` object; empty when absent or malformed. (Called
    twice per queue and tick: `type(...) is int` also leaves out booleans, at half the cost.)"""
    found: Dict[int, int] = {}
    if type(details) is not dict:
        return found
    samples = details.get("samples")
    if type(samples) is not list:
        return found
    for item in samples:
        if type(item) is dict:
            stamp, value = item.get("timestamp"), item.get("sample")
            if type(stamp) is int and type(value) is int:
                found[stamp] = value
    return found


def _count(value: Any) -> Optional[int]:
    return value if type(value) is int and value >= 0 else None


def counters_of(queue: Dict[str, Any]) -> Optional[Readings]:
    """The latency's inputs from one queue object of the API's reply; None when its ready count is
    not there (an absent field is unknown, never 0)."""
    arguments = queue.get("arguments")
    priority = type(arguments) is dict and arguments.get("x-max-priority") is not None
    ready = _count(queue.get("messages_ready"))
    if ready is None:
        return None
    stats = queue.get("message_stats")
    published: Optional[int] = None
    publish_samples: Dict[int, int] = {}
    if type(stats) is dict:
        # The key appears once the counter is non-zero: absent in a present `message_stats` is 0.
        published = _count(stats.get("publish", 0))
        publish_samples = _samples(stats.get("publish_details"))
    ready_samples = _samples(queue.get("messages_ready_details"))
    if not ready_samples or (published is not None and published > 0 and not publish_samples):
        return Readings(None, published, ready, priority)
    if not publish_samples:
        # No publish yet (or no counter at all): date the reading by the ready count's own grid.
        newest = max(ready_samples)
        return Readings(newest / 1000.0, published, ready_samples[newest], priority)
    # The newest point both lists reach; the two counters come from different processes' reports,
    # so each is taken as it stood at that same point: at the point itself when the list has it,
    # else at its newest point before (a value is carried forward until the next report, so it
    # was still true there, give or take one grid step: a short list must not cost the reading).
    at = min(max(ready_samples), max(publish_samples))
    ready_at = _as_of(ready_samples, at)
    publish_at = _as_of(publish_samples, at)
    if ready_at is None or publish_at is None:
        return Readings(None, published, ready, priority)
    points = tuple((stamp / 1000.0, publish_samples[stamp]) for stamp in sorted(publish_samples) if stamp <= at)
    return Readings(at / 1000.0, publish_at, ready_at, priority, points)


def _as_of(samples: Dict[int, int], at: int) -> Optional[int]:
    """A sample list's value at `at`: its own point there, else its newest point before."""
    if at in samples:
        return samples[at]
    before = [stamp for stamp in samples if stamp <= at]
    return samples[max(before)] if before else None


class PublishHistory:
    """One queue's `(time, published)` history and what it says about the oldest ready message.
    Pure: times come from the readings."""

    __slots__ = ("times", "counts", "exact_from", "last_at")

    def __init__(self) -> None:
        self.times = array("d")
        self.counts = array("d")
        # Messages numbered from this count on have been seen arriving (None: nothing seen yet).
        self.exact_from: Optional[float] = None
        self.last_at: Optional[float] = None

    def observe(
        self,
        sampled_at: float,
        published: int,
        ready: int,
        points: Iterable[Tuple[float, int]] = (),
    ) -> Estimate:
        """Take one reading (counters as they stood at `sampled_at`); return the oldest ready
        message's wait at `sampled_at`."""
        if self.last_at is not None and sampled_at <= self.last_at:
            # The same refresh again (a request within one grid step): nothing new.
            return self._estimate(sampled_at, published, ready)
        for at, count in points:
            self._add(at, count)
        self._add(sampled_at, published)
        self.last_at = sampled_at
        return self._estimate(sampled_at, published, ready)

    def _add(self, at: float, count: int) -> None:
        if self.times and at <= self.times[-1]:
            return
        if self.counts and count < self.counts[-1]:
            # A counter went down: the node restarted or the queue was declared again. What came
            # before means nothing now.
            self._reset()
        if not self.times:
            self.times.append(at)
            self.counts.append(count)
            return
        if count == self.counts[-1] and len(self.counts) >= 2 and self.counts[-2] == count:
            # Nothing published since the last point: move it forward. It then says "not yet
            # published at this later time", which is what brackets the next message tightly.
            self.times[-1] = at
            return
        self.times.append(at)
        self.counts.append(count)
        if len(self.times) > MAX_POINTS:
            self._thin()

    def _estimate(self, at: float, published: int, ready: int) -> Estimate:
        if ready <= 0:
            # Empty at `at`: every later message is seen arriving.
            self._reset()
            self.times.append(at)
            self.counts.append(published)
            self.exact_from = float(published)
            self.last_at = at
            return Estimate(0.0, True)
        head = published - ready
        first = self.counts[0]
        if head < first:
            # Older than the history: from before the loop (a lower bound), or, after the queue
            # was seen empty, a publish counter older than the ready count (counted from there).
            return Estimate(max(0.0, at - self.times[0]), self.exact_from is not None)
        index = self._keep_from(self._bracket(head))
        if index > 0:
            del self.times[:index], self.counts[:index]
        if self.exact_from is None:
            self.exact_from = self.counts[0] if len(self.counts) > 1 and head >= self.counts[0] else None
        published_at = self._interpolate(head)
        return Estimate(max(0.0, at - published_at), self.exact_from is not None)

    def _bracket(self, head: float) -> int:
        """Index of the last point at or below `head`: message `head` came after it."""
        index = 0
        for position in range(len(self.counts)):
            if self.counts[position] <= head:
                index = position
            else:
                break
        return index

    def _keep_from(self, bracket: int) -> int:
        """The first point to keep: the head's bracket, or an earlier one within STALE_MARGIN
        before it. A ready count shown a refresh late (lower than it is, beside a publish count
        that already holds a burst) puts the head too far forward; the next reading's head lies
        before it, and the points in between must still be there to date it."""
        times = self.times
        keep = bracket
        while keep > 0 and times[keep] > times[bracket] - STALE_MARGIN:
            keep -= 1
        return keep

    def _interpolate(self, head: float) -> float:
        times, counts = self.times, self.counts
        for position in range(1, len(counts)):
            if counts[position] > head:
                span = counts[position] - counts[position - 1]
                # Message `head` is number head - before + 1 of the `span` that came in between:
                # spread evenly, the middle of its share.
                share = (head - counts[position - 1] + 0.5) / span
                return times[position - 1] + share * (times[position] - times[position - 1])
        return times[-1]

    def _reset(self) -> None:
        del self.times[:], self.counts[:]
        self.exact_from = None

    def _thin(self) -> None:
        # Drop the inner point whose neighbours are closest in time: the history keeps an even
        # resolution over the time it spans (its widest step about twice span / MAX_POINTS).
        times = self.times
        drop = min(range(1, len(times) - 1), key=lambda i: times[i + 1] - times[i - 1])
        del self.times[drop], self.counts[drop]


class Latencies:
    """Every queue's history of one datastore. Call `estimate` for each queue read at a tick, then
    `end_tick`, which forgets the queues not read at that tick (deleted, or filtered out)."""

    __slots__ = ("histories", "seen")

    def __init__(self) -> None:
        self.histories: Dict[str, PublishHistory] = {}
        self.seen: Set[str] = set()

    def estimate(self, queue: str, readings: Readings) -> Estimate:
        self.seen.add(queue)
        if readings.priority:
            self.histories.pop(queue, None)
            return Estimate(None, False, REASON_PRIORITY)
        if readings.published is None:
            self.histories.pop(queue, None)
            if readings.ready == 0:
                return Estimate(0.0, True)
            return Estimate(None, False, REASON_NO_PUBLISH_COUNTER)
        if readings.sampled_at is None or readings.ready is None:
            return Estimate(None, False, REASON_NOT_DATED if readings.ready is not None else REASON_NO_COUNTS)
        history = self.histories.get(queue)
        if history is None:
            history = self.histories[queue] = PublishHistory()
        return history.observe(readings.sampled_at, readings.published, readings.ready, readings.publish_points)

    def forget(self, queue: str) -> None:
        self.histories.pop(queue, None)

    def end_tick(self) -> List[str]:
        """Forget every queue not estimated since the last call; return their names."""
        gone = [name for name in self.histories if name not in self.seen]
        for name in gone:
            del self.histories[name]
        self.seen = set()
        return gone
