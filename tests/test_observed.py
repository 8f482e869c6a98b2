"""The observed-latency rule on a simulated FIFO list (pure): whatever the pushes and pops
between ticks, the figure is never above the truth and, once the loop has seen the oldest
message arrive, never more than one interval below it."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from queue_metrics.systems.observed import MAX_TICKS, ListWatch

INTERVAL = 10.0


def run(script, backlog_before_start: int = 0):
    """script: per tick, a list of events between ticks: ("push", offset) or ("pop",)."""
    watch = ListWatch()
    items = deque()  # (publish time, unique payload); index 0 = head (newest)
    serial = 0
    for index in range(backlog_before_start):
        serial += 1
        items.append((-100.0 - index, b"m%d" % serial))
    previous_newest = None
    results = []
    for tick, events in enumerate(script):
        now = tick * INTERVAL
        for event in events:
            if event[0] == "push":
                serial += 1
                items.appendleft((now - INTERVAL + event[1] * INTERVAL, b"m%d" % serial))
            elif items:
                items.pop()
        payloads = [payload for _, payload in items]
        pushed = payloads.index(previous_newest) if previous_newest in payloads else None
        newest = payloads[0] if payloads else None
        wait = watch.observe(now, len(items), newest, pushed)
        truth = now - items[-1][0] if items else 0.0
        results.append((wait, truth, watch.exact))
        previous_newest = newest
    return results


events = st.lists(st.one_of(st.tuples(st.just("push"), st.floats(0.001, 0.999)), st.tuples(st.just("pop"))), max_size=8)


@given(st.lists(events, min_size=1, max_size=60))
def test_never_above_the_truth_and_within_one_interval_once_exact(script):
    # Pushes happen in order within the interval before each tick: sort their offsets.
    script = [
        sorted(tick, key=lambda event: (event[0] == "pop", event[1] if event[0] == "push" else 0)) for tick in script
    ]
    for wait, truth, exact in run(script):
        assert wait <= truth + 1e-9
        if exact:
            assert wait >= truth - INTERVAL - 1e-9


def test_a_backlog_older_than_the_loop_is_a_growing_lower_bound():
    results = run([[]] * 5, backlog_before_start=3)
    assert [exact for _, _, exact in results] == [False] * 5
    assert [wait for wait, _, _ in results] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert all(wait < truth for wait, truth, _ in results)


def test_once_the_old_backlog_is_gone_the_figure_is_exact():
    script = [[], [("push", 0.5)], [("pop",), ("pop",), ("pop",)], [], []]
    results = run(script, backlog_before_start=3)
    wait, truth, exact = results[-1]
    assert exact and truth - INTERVAL <= wait <= truth


def test_memory_stays_bounded_for_a_backlog_that_never_drains():
    watch = ListWatch()
    for tick in range(10 * MAX_TICKS):
        watch.observe(tick * INTERVAL, tick + 1, b"m%d" % tick, 1 if tick else None)
    assert len(watch.times) <= MAX_TICKS + 1
    assert watch.observe(10 * MAX_TICKS * INTERVAL, 10 * MAX_TICKS + 1, b"x", 1) == 10 * MAX_TICKS * INTERVAL
