"""Celery latency with no stamp, observed from the lists alone, against real unstamped producers
and a real worker that consumes slower than they publish. The truth is each task's own publish
time, recorded by the producer when it sent it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Optional

import pytest
import redis
from celery import Celery
from kombu import pools

import queue_metrics.celery as stamp_hook
from helpers.celery_worker_app import make_app
from helpers.collect import by_queue, make_collector
from helpers.workers import HELPERS, start_celery_worker, wait_for, worker_process
from queue_metrics.outputs.format import table_lines
from queue_metrics.sample import LATENCY_OBSERVED

INTERVAL = 1.0
QUEUES = {"reports": (0,), "ranked": (0, 9)}  # queue -> priorities its producer uses


class Producer(threading.Thread):
    """Publishes unstamped tasks round-robin over QUEUES at a steady rate, recording publish times."""

    def __init__(self, url: str, per_second: float) -> None:
        super().__init__(daemon=True)
        stamp_hook.uninstall()
        self.app = Celery("shop", broker=url)
        self.app.conf.task_create_missing_queues = True
        self.per_second = per_second
        self.published = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        turn = 0
        while not self.stopping.is_set():
            for queue, priorities in QUEUES.items():
                priority = priorities[turn % len(priorities)]
                sent_at = time.time()
                result = self.app.send_task("shop.tasks.nap", args=[0.4], queue=queue, priority=priority)
                self.published[result.id] = sent_at
            turn += 1
            self.stopping.wait(len(QUEUES) / self.per_second)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.app.close()


def truth(client, queue: str, published: dict, now: float) -> float:
    """now minus the publish time of the oldest message waiting in any of the queue's lists."""
    oldest = []
    for key in client.keys(f"{queue}*"):
        payload = client.lindex(key, -1)
        if payload is not None:
            oldest.append(published[json.loads(payload)["headers"]["id"]])
    return max((now - sent_at for sent_at in oldest), default=0.0)


def start_worker(url: str) -> subprocess.Popen:
    return start_celery_worker(url, list(QUEUES))


@pytest.fixture
def cleanup():
    yield
    stamp_hook.uninstall()
    pools.reset()


def compare(collector, client, producer, ticks: int, checked: list) -> None:
    for _ in range(ticks):
        report = collector.tick()
        assert report.errors == ()
        now = time.time()
        for queue in QUEUES:
            sample = by_queue(report).get(queue)
            if sample is None or sample.latency is None:
                continue
            expected = truth(client, queue, producer.published, now)
            assert sample.latency_source == LATENCY_OBSERVED
            checked.append((queue, sample.latency, expected))
        time.sleep(INTERVAL)


def test_observed_latency_follows_the_truth_while_backlogs_grow(redis_url, client, cleanup):
    producer = Producer(redis_url, per_second=6)  # the worker naps 0.4 s a task: ~2.5 a second
    worker = start_worker(redis_url)
    producer.start()
    checked = []
    try:
        time.sleep(1.0)  # bindings exist, the worker has started taking tasks
        collector = make_collector(redis_url, QUEUE_METRICS_INTERVAL=str(INTERVAL))
        compare(collector, client, producer, 12, checked)
        # The loop restarted mid-run: a backlog older than the new loop, a lower bound at first.
        restarted = make_collector(redis_url, QUEUE_METRICS_INTERVAL=str(INTERVAL))
        compare(restarted, client, producer, 4, checked)
    finally:
        producer.stop()
        worker.terminate()
        worker.wait(timeout=20)
    assert len(checked) >= 20, checked
    for queue, reported, expected in checked:
        # Never above the truth; never more than one interval below it once the loop has seen the
        # oldest message arrive (before that, a lower bound: below, never above).
        assert reported <= expected + 0.5, (queue, reported, expected)
    late = [expected - reported for _, reported, expected in checked[len(checked) // 3 : 2 * len(checked) // 3]]
    assert max(late) <= INTERVAL + 0.5, late


def test_a_queue_that_empties_and_refills(redis_url, client, cleanup):
    stamp_hook.uninstall()
    app = Celery("shop", broker=redis_url)
    app.conf.task_create_missing_queues = True
    collector = make_collector(redis_url)
    sent = time.time()
    app.send_task("shop.tasks.ship", queue="bursty")
    collector.tick()
    time.sleep(INTERVAL)
    first = by_queue(collector.tick())["bursty"]
    # Seen since the first tick only: a lower bound, never above the truth.
    assert 0 < first.latency <= time.time() - sent
    client.delete("bursty")  # drained (as a worker's BRPOP would)
    assert by_queue(collector.tick())["bursty"].latency == 0.0
    time.sleep(INTERVAL)
    refilled = time.time()
    app.send_task("shop.tasks.ship", queue="bursty")
    collector.tick()
    time.sleep(2 * INTERVAL)
    sample = by_queue(collector.tick())["bursty"]
    now = time.time()
    # Seen arriving between two ticks: within one interval of the truth, never above it.
    assert now - refilled - INTERVAL - 0.5 <= sample.latency <= now - refilled + 0.5
    app.close()


def test_a_redis_without_lpos_keeps_stamped_latency_and_says_nothing_per_queue(make_server, cleanup):
    """Redis before 6.0.6 has no LPOS (here: the command renamed away): stamped queues keep their
    latency, unstamped ones report none, and no queue fills the log with errors."""
    server = make_server(extra=["--rename-command", "LPOS", ""])
    app = Celery("shop", broker=server.url)
    app.conf.task_create_missing_queues = True
    app.send_task("shop.tasks.ship", queue="plain")
    stamp_hook.install(app)
    app.send_task("shop.tasks.ship", queue="stamped")
    collector = make_collector(server.url)
    for _ in range(3):
        report = collector.tick()
        time.sleep(0.2)
    assert report.errors == ()
    samples = by_queue(report)
    assert samples["stamped"].latency is not None and samples["stamped"].latency_source == "stamp"
    assert (samples["plain"].size, samples["plain"].latency) == (1, None)
    # Why it is unknown, where people read it: no LPOS, so it will never be observed.
    assert samples["plain"].latency_source == "unobservable"
    (reason,) = [line for line in table_lines(report) if line.startswith("* celery plain: latency unknown: ")]
    assert "no LPOS" in reason and "install(app)" in reason and "no reason was reported" not in reason, reason
    app.close()


def test_a_redis_without_lpos_found_mid_tick_leaves_the_other_queues_replies_in_place(make_server):
    """The first queue to meet "unknown command" for LPOS turns observing off; a queue whose
    follow-up already carried LPOS for two lists must still take its replies in their places."""
    import redis

    server = make_server(extra=["--rename-command", "LPOS", ""])
    client = redis.Redis.from_url(server.url)
    for queue in ("a", "b"):
        client.sadd("_kombu.binding.celery", f"{queue}\x06\x16\x06\x16{queue}")
        for step in (3, 6):
            client.lpush(f"{queue}\x06\x16{step}", json.dumps({"headers": {"id": f"{queue}{step}"}, "properties": {}}))
    collector = make_collector(server.url)
    collector.tick()  # each priority list now has a history: the next tick sends LPOS for it
    report = collector.tick()
    assert report.errors == ()
    samples = by_queue(report)
    assert {name: (samples[name].size, samples[name].latency) for name in ("a", "b")} == {
        "a": (2, None),
        "b": (2, None),
    }


def test_a_thousand_backlogged_queues_each_within_one_interval(redis_url, client, cleanup):
    """1,000 queues, a message published to each between ticks and one taken from each by a
    'worker' (BRPOP's end): every queue's observed latency against its oldest message's real
    publish time, after the loop has seen the first backlog go."""
    queues = [f"bulk{index}" for index in range(1000)]
    client.sadd("_kombu.binding.celery", *[f"{q}\x06\x16\x06\x16{q}" for q in queues])
    published = {}

    def publish(count: int) -> None:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for _ in range(count):
                task = f"{queue}-{len(published)}"
                published[task] = time.time()
                pipe.lpush(queue, json.dumps({"headers": {"id": task}, "properties": {}, "body": ""}))
        pipe.execute()

    def consume() -> None:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.rpop(queue)
        pipe.execute()

    collector = make_collector(redis_url)
    publish(2)
    collector.tick()
    for _ in range(5):
        time.sleep(INTERVAL / 2)
        publish(1)
        time.sleep(INTERVAL / 2)
        consume()
        report = collector.tick()
        assert report.errors == () and report.round_trips <= 3
    now = time.time()
    samples = by_queue(report)
    for queue in queues[::50]:
        expected = now - published[json.loads(client.lindex(queue, -1))["headers"]["id"]]
        sample = samples[queue]
        assert sample.latency_source == LATENCY_OBSERVED
        assert expected - INTERVAL - 0.5 <= sample.latency <= expected + 0.5, (queue, sample.latency, expected)


# ---- a lightly loaded queue: bursts over ten priority steps, a worker that keeps up

STEPS = list(range(10))
# Tasks published before each tick (1-based; tick 1 sees the queue empty), and their priorities
# (each a list of its own: kombu's list for priority p at steps 0-9 is `bursty\x06\x16<p>`).
BURSTS = {2: 9, 3: 3, 7: 12, 8: 2, 12: 6, 15: 10}
PRIORITIES = (7, 0, 9, 3, 5, 1, 8, 2, 6, 4, 9, 0)
BURST_TICKS = 18


def bursty_lists() -> list:
    return ["bursty", *[f"bursty\x06\x16{step}" for step in STEPS[1:]]]


def oldest_publish(client, published: dict, latest: bool) -> Optional[float]:
    """When the oldest message now waiting in any of bursty's lists was published: its list's
    tail, the earliest of them. `latest`: the end of its publish call, else the start."""
    pipe = client.pipeline(transaction=False)
    for key in bursty_lists():
        pipe.lindex(key, -1)
    times = [published[json.loads(payload)["headers"]["id"]][latest] for payload in pipe.execute() if payload]
    return min(times, default=None)


@pytest.mark.parametrize("steps_setting", [None, ",".join(map(str, STEPS))], ids=["detected", "pinned"])
def test_bursts_over_ten_priority_steps_have_a_latency_at_every_tick(redis_url, client, cleanup, steps_setting):
    """A worker that keeps up: each burst is gone within a few ticks, and its lists stay empty in
    between. Every tick after the first reports a latency, never above the truth (each task's
    publish time, recorded here) and never more than the time since the last reading below it."""
    stamp_hook.uninstall()
    app = make_app(redis_url, priority_steps=STEPS)
    command = [sys.executable, "-m", "celery", "-A", "celery_worker_app", "worker", "-P", "solo", "-c", "1"]
    command += ["-Q", "bursty", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    env = {"CELERY_BROKER_URL": redis_url, "CELERY_PRIORITY_STEPS": ",".join(map(str, STEPS)), "PYTHONPATH": HELPERS}
    settings = {"QUEUE_METRICS_CELERY_PRIORITY_STEPS": steps_setting} if steps_setting else {}
    published = {}  # task id -> (before, after) its publish call
    readings = []  # (tick, latency, size, upper bound, lower bound)
    try:
        with worker_process(command, env):
            wait_for(lambda: client.exists("_kombu.binding.bursty"), "the worker to bind its queue", timeout=60)
            collector = make_collector(redis_url, **settings)
            last_before = None
            for tick in range(1, BURST_TICKS + 1):
                time.sleep(INTERVAL / 2)
                for index in range(BURSTS.get(tick, 0)):  # half an interval after the last reading
                    before = time.time()
                    result = app.send_task("shop.nap", args=[0.3], queue="bursty", priority=PRIORITIES[index])
                    published[result.id] = (before, time.time())
                time.sleep(INTERVAL / 2)
                before = time.time()
                oldest_before = oldest_publish(client, published, latest=False)
                report = collector.tick()
                after = time.time()
                oldest_after = oldest_publish(client, published, latest=True)
                assert report.errors == ()
                sample = by_queue(report)["bursty"]
                # The truth at the reading lies between the two: only the worker took messages.
                upper = after - oldest_before if oldest_before is not None else 0.0
                lower = before - oldest_after - (after - last_before) if oldest_after is not None else None
                readings.append((tick, sample.latency, sample.size, upper, lower))
                last_before = before
    finally:
        app.close()
    assert readings[0][1] is None or readings[0][2] == 0  # the first tick: nothing seen arrive yet
    busy = [reading for reading in readings[1:] if reading[2]]
    assert len(busy) >= 6 and any(reading[4] is not None for reading in busy), readings
    for tick, latency, _size, upper, lower in readings[1:]:
        assert latency is not None, (tick, readings)
        assert latency <= upper + 0.2, (tick, readings)
        assert lower is None or latency >= lower - 0.2, (tick, readings)


def test_a_priority_list_that_empties_and_refills_keeps_its_latency(redis_url, client, cleanup):
    """A priority list seen empty is not read again (only lists with messages are) for as long as
    it stays empty; when it fills again, the loop still knows it was empty at the last tick."""
    stamp_hook.uninstall()
    app = make_app(redis_url, priority_steps=STEPS)
    app.send_task("shop.nap", args=[0], queue="ranked", priority=5)
    collector = make_collector(redis_url)
    assert by_queue(collector.tick())["ranked"].size == 1
    client.delete("ranked\x06\x165")  # drained (as a worker's BRPOP would)
    for _ in range(3):
        assert by_queue(collector.tick())["ranked"].latency == 0.0
    time.sleep(INTERVAL / 2)
    before = time.time()
    app.send_task("shop.nap", args=[0], queue="ranked", priority=5)
    time.sleep(INTERVAL / 2)
    refilled = by_queue(collector.tick())["ranked"]
    # Seen arriving: 0 at first sight, at most one interval below the truth (half of one here).
    assert (refilled.size, refilled.latency, refilled.latency_source) == (1, 0.0, LATENCY_OBSERVED)
    time.sleep(INTERVAL)
    later = by_queue(collector.tick())["ranked"]
    now = time.time()
    assert now - before - INTERVAL - 0.5 <= later.latency <= now - before
    app.close()


def test_the_first_reading_of_an_unstamped_queue_says_its_latency_will_be_observed(redis_url):
    """`once --format table` says why the latency is unknown, from the sample alone: it is observed
    over ticks, and one reading has no history yet."""
    from helpers.process import queue_metrics
    from queue_metrics.outputs.format import NOT_OBSERVED_YET

    producer = redis.Redis.from_url(redis_url)
    producer.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
    producer.lpush("celery", json.dumps({"headers": {"id": "a"}, "properties": {"delivery_tag": "a"}}))
    collector = make_collector(redis_url)
    (sample,) = collector.tick().samples
    assert (sample.latency, sample.latency_source) == (None, LATENCY_OBSERVED)
    result = queue_metrics("once", "--format", "table", env={"REDIS_URL": redis_url})
    assert f"* celery celery: latency unknown: {NOT_OBSERVED_YET}" in result.stdout
