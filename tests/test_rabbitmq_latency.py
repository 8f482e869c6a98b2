"""The RabbitMQ latency estimate (pure): counters read from captured management API replies, and
the error bounds on simulated first-in, first-out queues whose counters the API shows late and on
a grid, as RabbitMQ 3.10.8 does."""

from __future__ import annotations

import bisect
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_metrics.datastores.rabbitmq.latency import (
    MAX_POINTS,
    REASON_NO_COUNTS,
    REASON_NO_PUBLISH_COUNTER,
    REASON_NOT_DATED,
    REASON_PRIORITY,
    Estimate,
    Latencies,
    PublishHistory,
    counters_of,
)

PAYLOADS = Path(__file__).parent / "payloads"


def page():
    """`GET /api/queues/<vhost>?page=1&page_size=500&columns=...&lengths_age=10&lengths_incr=5
    &msg_rates_age=10&msg_rates_incr=5` from RabbitMQ 3.10.8 (tests/payloads; captured by hand):
    `celery` and `priority` (x-max-priority 10) each with 3 messages published 2 s apart and
    none consumed, `fresh` never published to, `quorum` a quorum queue declared a moment before."""
    reply = json.loads((PAYLOADS / "rabbitmq_queues_page.json").read_text())
    return {item["name"]: item for item in reply["items"]}


def test_the_counters_are_taken_at_the_newest_grid_point_both_lists_have():
    queues = page()
    readings = counters_of(queues["celery"])
    # The ready count's list reaches one grid step further than the publish count's: both are
    # read at the step they share, where the publish count had caught up with the three publishes.
    ready_times = [s["timestamp"] for s in queues["celery"]["messages_ready_details"]["samples"]]
    publish_times = [s["timestamp"] for s in queues["celery"]["message_stats"]["publish_details"]["samples"]]
    assert max(ready_times) > max(publish_times)
    assert readings.sampled_at == max(publish_times) / 1000
    assert (readings.published, readings.ready, readings.priority) == (3, 3, False)
    assert [count for _, count in readings.publish_points] == [0, 1, 3]
    assert [at for at, _ in readings.publish_points] == sorted(at / 1000 for at in publish_times)


def test_lists_without_a_common_point_are_read_as_of_the_newer_of_their_ends():
    # The publish list one step behind and off the ready list's points (as a short tick can give):
    # each counter as it stood at the earlier of the two lists' newest points.
    queue = json.loads(json.dumps(page()["celery"]))
    ready = queue["messages_ready_details"]["samples"]
    publish = queue["message_stats"]["publish_details"]["samples"]
    for sample in publish:
        sample["timestamp"] -= 2500
    readings = counters_of(queue)
    newest_publish = max(sample["timestamp"] for sample in publish)
    assert not {s["timestamp"] for s in ready} & {s["timestamp"] for s in publish}
    assert readings.sampled_at == newest_publish / 1000
    shown = max((s for s in ready if s["timestamp"] <= newest_publish), key=lambda s: s["timestamp"])
    assert readings.ready == shown["sample"]
    assert readings.published == max(publish, key=lambda s: s["timestamp"])["sample"]
    assert Latencies().estimate("celery", readings).seconds is not None


def test_a_queue_with_nothing_ready_now_has_no_wait_whatever_its_samples_say():
    from queue_metrics.config import Settings
    from queue_metrics.datastores import Location
    from queue_metrics.datastores.rabbitmq.reader import RabbitReader
    from queue_metrics.sample import LATENCY_ESTIMATED

    url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    reader = RabbitReader(Settings.from_env({"CLOUDAMQP_URL": url}), Location("rabbitmq", "cloudamqp", url, "x"))
    queue = dict(page()["celery"])
    assert reader._latency("celery", queue)[1] == LATENCY_ESTIMATED  # 3 ready in the samples
    queue["messages_ready"] = 0  # drained since the samples' last refresh
    assert reader._latency("celery", queue) == (0.0, LATENCY_ESTIMATED)


def test_a_priority_queue_gets_no_latency_and_says_why():
    queues = page()
    readings = counters_of(queues["priority"])
    assert readings.priority
    estimate = Latencies().estimate("priority", readings)
    assert estimate.seconds is None and estimate.reason == REASON_PRIORITY


def test_a_queue_never_published_to_has_no_message_stats_and_is_empty():
    queues = page()
    assert "message_stats" not in queues["fresh"]
    readings = counters_of(queues["fresh"])
    assert (readings.published, readings.ready) == (None, 0)
    ready_times = [sample["timestamp"] for sample in queues["fresh"]["messages_ready_details"]["samples"]]
    assert readings.sampled_at == max(ready_times) / 1000
    estimate = Latencies().estimate("fresh", readings)
    assert (estimate.seconds, estimate.exact, estimate.reason) == (0.0, True, None)


def test_ready_messages_without_message_stats_get_no_latency():
    # rates_mode none removes message_stats; the captured `celery` queue without it stands for
    # such a broker (the shared test broker cannot change rates_mode without a restart).
    queue = dict(page()["celery"])
    del queue["message_stats"]
    estimate = Latencies().estimate("celery", counters_of(queue))
    assert estimate.seconds is None and estimate.reason == REASON_NO_PUBLISH_COUNTER


def test_a_new_quorum_queue_without_counts_is_unknown_not_zero():
    assert counters_of(page()["quorum"]) is None


def test_a_reply_without_samples_is_not_dated():
    queue = dict(page()["celery"])
    queue["messages_ready_details"] = {"rate": 0.0}
    readings = counters_of(queue)
    assert readings.sampled_at is None and readings.ready == 3
    estimate = Latencies().estimate("celery", readings)
    assert estimate.seconds is None and estimate.reason == REASON_NOT_DATED
    assert REASON_NO_COUNTS != REASON_NOT_DATED


def test_a_backlog_older_than_the_loop_is_a_growing_lower_bound_until_its_head_is_seen_arriving():
    history = PublishHistory()
    # 50 messages waiting, none consumed, 2 published per second from now on.
    first = history.observe(1000.0, 500, 50)
    later = history.observe(1010.0, 520, 70)
    assert (first.seconds, first.exact) == (0.0, False)
    assert (later.seconds, later.exact) == (10.0, False)
    # A consumer drains the old backlog: the head is now message 510, published in (1000, 1010].
    drained = history.observe(1020.0, 540, 30)
    assert drained.exact and 10.0 <= drained.seconds <= 20.0


def test_a_counter_that_went_down_resets_the_history():
    history = PublishHistory()
    history.observe(0.0, 10, 0)
    history.observe(5.0, 20, 5)
    assert history.observe(10.0, 30, 5).exact
    # The node restarted: the counters start again from 0 with a backlog recovered from disk.
    after = history.observe(15.0, 3, 8)
    assert (after.seconds, after.exact) == (0.0, False)
    assert len(history.times) == 1


def test_a_long_backlog_thinned_out_stays_within_its_widened_step():
    # Hypothesis rarely builds histories past MAX_POINTS: one message published per second for an
    # hour (message n in (n, n + 1]), its oldest consumed every third second, read every second.
    history = PublishHistory()
    history.observe(0.0, 0, 0)
    consumed = 0
    for second in range(1, 3600):
        consumed += second % 3 == 0
        estimate = history.observe(float(second), second, second - consumed)
        truth = second - (consumed + 0.5)
        assert estimate.exact
        assert abs(estimate.seconds - truth) <= 1.0 + 2 * truth / (MAX_POINTS - 2)
        assert len(history.times) <= MAX_POINTS


def test_memory_stays_bounded_while_the_head_stays_put():
    history = PublishHistory()
    history.observe(0.0, 0, 0)
    for tick in range(1, 2000):
        estimate = history.observe(tick * 5.0, tick * 10, tick * 10)
        assert estimate.exact and abs(estimate.seconds - tick * 5.0) <= 5.0
        assert len(history.times) <= MAX_POINTS


def test_queues_not_seen_at_a_tick_are_forgotten():
    latencies = Latencies()
    readings = counters_of(page()["celery"])
    latencies.estimate("celery", readings)
    latencies.estimate("other", readings)
    assert latencies.end_tick() == []
    latencies.estimate("celery", readings)
    assert latencies.end_tick() == ["other"]
    assert set(latencies.histories) == {"celery"}


# --- Simulated first-in, first-out queues ------------------------------------------------------


def simulate(tick, statistics, lags, grid, age, per_tick, shorter_publish_list):
    """A queue under `per_tick` lists of ("publish" | "consume", offset in the tick) events, read
    every `tick` seconds through an API that shows its counters as RabbitMQ does: the statistics
    are gathered every `statistics` seconds, each time as they stood `lag` seconds before; each
    list of samples has a point every `grid` seconds back `age` seconds from the request, the
    value at a point being the last one gathered at or before it. Yields, per tick, the estimate,
    the true wait then (at the reading's time) of the message that was oldest when its counters
    were true, and the largest lag."""
    events = []
    for index, tick_events in enumerate(per_tick):
        events.extend((index * tick + offset * tick, kind) for kind, offset in tick_events)
    events.sort()
    publish_times = []
    consumed_at = []  # time each consume happened (only when something was ready)
    for at, kind in events:
        if kind == "publish":
            publish_times.append(at)
        elif len(consumed_at) < len(publish_times):
            consumed_at.append(at)

    def counts(at):
        published = bisect.bisect_right(publish_times, at)
        consumed = bisect.bisect_right(consumed_at, at)
        return published, published - consumed

    rounds = int(len(per_tick) * tick / statistics) + 2
    gathered = [(index * statistics, index * statistics - lags[index % len(lags)]) for index in range(rounds)]
    gathered_at = [at for at, _ in gathered]
    latencies = Latencies()
    for index in range(1, len(per_tick)):
        request = index * tick + 0.1
        newest = math.ceil(request / grid) * grid
        points = [newest - step * grid for step in range(int(age / grid) + 1)]
        ready_samples, publish_samples = [], []
        for point in points:
            last = bisect.bisect_right(gathered_at, point) - 1
            true_at = gathered[last][1] if last >= 0 else -1.0
            published, ready = counts(true_at)
            ready_samples.append({"sample": ready, "timestamp": int(point * 1000)})
            publish_samples.append({"sample": published, "timestamp": int(point * 1000)})
        if shorter_publish_list:
            publish_samples = publish_samples[1:]
        queue = {
            "name": "q",
            "arguments": {},
            "messages_ready": ready_samples[0]["sample"],
            "messages_ready_details": {"samples": ready_samples},
            "message_stats": {"publish": publish_samples[0]["sample"], "publish_details": {"samples": publish_samples}},
        }
        readings = counters_of(queue)
        estimate = latencies.estimate("q", readings)
        published, ready = readings.published, readings.ready
        truth = 0.0 if ready == 0 else readings.sampled_at - publish_times[published - ready]
        yield estimate, truth


def tick_events():
    event = st.tuples(st.sampled_from(["publish", "consume"]), st.floats(0.0, 0.999))
    return st.lists(event, max_size=16)


@settings(max_examples=400, deadline=None)
@given(
    tick=st.sampled_from([5.0, 10.0, 30.0]),
    statistics=st.sampled_from([1.0, 2.0, 5.0]),
    lag_fractions=st.lists(st.floats(0.0, 0.999), min_size=1, max_size=5),
    grid=st.sampled_from([1.0, 5.0]),
    age_ticks=st.sampled_from([0.2, 1.0, 1.5]),
    per_tick=st.lists(tick_events(), min_size=2, max_size=60),
    shorter_publish_list=st.booleans(),
)
def test_within_the_history_step_plus_the_refresh_lag_once_exact(
    tick, statistics, lag_fractions, grid, age_ticks, per_tick, shorter_publish_list
):
    lags = [fraction * statistics for fraction in lag_fractions]
    age = max(grid, round(age_ticks * tick / grid) * grid)
    # The history's step: the grid where the publish list covers the whole tick, else the tick.
    step = grid if age >= tick else tick
    # How long before its grid point a value shown there may have been true: the statistics
    # interval, the lag, and the grid step (a value is shown at the first point at or after it).
    refresh_lag = statistics + max(lags) + grid
    for estimate, truth in simulate(tick, statistics, lags, grid, age, per_tick, shorter_publish_list):
        assert estimate.seconds is not None and estimate.seconds >= 0.0
        if estimate.exact:
            # Past MAX_POINTS points the history thins out: its step grows with the wait.
            thinned = 2 * truth / (MAX_POINTS - 2)
            assert abs(estimate.seconds - truth) <= step + refresh_lag + thinned + 1e-6, (estimate, truth)
        else:
            assert estimate.seconds <= truth + 1e-6


def test_a_ready_count_shown_late_beside_a_burst_is_corrected_at_the_next_reading():
    """Seen in a loaded CI run: the queue's ready count, a refresh late, showed the backlog lower
    than it was while the channels' publish count already held a second burst, so one reading
    took a message of that burst for the oldest. The next reading's head lies before the point
    that bracketed it: that point's predecessors must still be there to date it."""
    history = PublishHistory()
    assert history.observe(0.0, 0, 0) == Estimate(0.0, True)
    # 300 published between t=1 and t=2; ready 300: the oldest is of t=1.
    assert history.observe(5.0, 300, 300, [(1.0, 0), (2.0, 300)]).seconds == pytest.approx(4.0, abs=0.1)
    # 150 more at t=9; the ready count shown (141) is stale, the true backlog is 400: too young once.
    young = history.observe(10.0, 450, 141, [(8.0, 300), (9.0, 450)])
    assert young.seconds < 2.0
    # The next reading shows the true 254 ready: the oldest is number 216, of the first burst
    # (between t=1 and t=2), waiting about 13.3 s at t=15 (dropping the points before t=8 gave 7).
    assert history.observe(15.0, 470, 254, [(14.0, 470)]).seconds == pytest.approx(13.28, abs=0.1)
