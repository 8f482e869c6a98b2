"""The fixed schedule: no drift, missed slots skipped."""

from __future__ import annotations

import pytest

from queue_metrics.loop import StopRequested, StopSignals, next_due, run_forever


def test_next_slot_is_on_the_grid_whatever_a_tick_took():
    assert next_due(100.0, 30.0, now=100.4) == 130.0
    assert next_due(130.0, 30.0, now=159.9) == 160.0


def test_a_slow_tick_skips_missed_slots_instead_of_bunching():
    assert next_due(100.0, 30.0, now=131.0) == 160.0
    assert next_due(100.0, 30.0, now=195.0) == 220.0
    assert next_due(100.0, 30.0, now=130.0) == 160.0  # exactly on a slot: that slot is gone


def test_fractional_intervals_do_not_drift():
    due = 0.0
    for _step in range(1, 1001):
        due = next_due(due, 0.1, now=due + 0.01)
    assert due == pytest.approx(100.0, abs=1e-6)


def test_ticks_keep_the_grid_when_the_idle_work_returns_early():
    """The keyspace walk between ticks may return at once (Redis down): no extra ticks."""
    clock = [0.0]
    ticks = []

    def tick():
        ticks.append(clock[0])
        if len(ticks) == 4:
            raise StopRequested()
        return None

    def sleep(seconds):
        clock[0] += seconds

    with pytest.raises(StopRequested):
        run_forever(
            tick,
            lambda result: None,
            30.0,
            StopSignals(),
            monotonic=lambda: clock[0],
            sleep=sleep,
            idle=lambda deadline: None,
        )
    assert ticks == [0.0, 30.0, 60.0, 90.0]
