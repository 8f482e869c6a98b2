"""Zero-config discovery against real producers and workers: queues that appear at any time,
kombu's priority lists and key prefixes, ETA messages with and without a worker, stable names."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery
from kombu import pools
from rq import Queue

import queue_metrics.celery as stamp_hook
from helpers.collect import by_queue, collect, make_collector, sidekiq
from helpers.process import start
from helpers.producers import channel_size
from helpers.watch import Watcher
from helpers.workers import start_celery_worker
from queue_metrics.outputs.format import librato_lines


def celery_app(url: str, **transport_options) -> Celery:
    application = Celery("shop", broker=url)
    application.conf.task_create_missing_queues = True
    if transport_options:
        application.conf.broker_transport_options = transport_options
    stamp_hook.install(application)
    return application


@pytest.fixture
def apps():
    made = []

    def make(url: str, **transport_options) -> Celery:
        application = celery_app(url, **transport_options)
        made.append(application)
        return application

    yield make
    stamp_hook.uninstall()
    for application in made:
        application.close()
    pools.reset()


def test_run_reports_a_queue_whose_exchange_appears_after_it_started(redis_url, apps):
    """An app routing every task to its own queue, on a fresh Redis: no `_kombu.binding.celery`
    at start. Default discovery settings; a fast tick only to keep the test short."""
    process = start("run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "1"})
    watcher = Watcher(process)
    try:
        watcher.wait_for(lambda stream, line: "collector.queues=0" in line, timeout=10)
        sent = time.monotonic()
        apps(redis_url).send_task("shop.tasks.ship", queue="invoices")
        arrived, _, line = watcher.wait_for(lambda stream, line: "queue.celery.invoices.size=1" in line, timeout=60)
        # Found within two passes of the walk (15 s each) and reported at the next tick.
        assert arrived - sent < 32
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_all_ten_priority_lists_counted_as_kombu_counts_them_with_no_setting(redis_url, apps):
    app = apps(redis_url, priority_steps=list(range(10)))
    for priority in range(10):
        for _ in range(3):
            app.send_task("shop.tasks.ship", queue="ranked", priority=priority)
    sample = by_queue(collect(redis_url))["ranked"]
    with app.connection_for_write() as connection:
        theirs = connection.default_channel.queue_declare(queue="ranked", passive=True).message_count
    assert sample.size == theirs == 30
    assert sample.latency is not None


def test_default_priority_steps_are_not_overcounted(redis_url, apps):
    app = apps(redis_url)
    for priority in (0, 2, 5, 9):
        app.send_task("shop.tasks.ship", queue="plain", priority=priority)
    assert by_queue(collect(redis_url))["plain"].size == channel_size(app, "plain") == 4


def test_global_keyprefix_found_with_no_setting(redis_url, apps):
    app = apps(redis_url, global_keyprefix="shop:")
    for _ in range(50):
        app.send_task("shop.tasks.ship", queue="celery")
    report = collect(redis_url)
    assert report.errors == ()
    # Found prefixes stay in the name: two apps sharing a Redis never share a metric.
    assert by_queue(report)["shop:celery"].size == channel_size(app, "celery") == 50
    assert "queue.celery.shop:celery.size=50" in librato_lines(report)[0]
    # Told the prefix, the collector reads that app's keys only, under kombu's queue names.
    pinned = collect(
        redis_url,
        QUEUE_METRICS_CELERY_KEYPREFIX="shop:",
        QUEUE_METRICS_CELERY_QUEUES="celery",
        QUEUE_METRICS_BACKENDS="celery",
    )
    assert by_queue(pinned)["celery"].size == 50


def test_two_prefixes_and_custom_exchanges_in_one_redis(redis_url, apps):
    shop, blog = apps(redis_url, global_keyprefix="shop:"), apps(redis_url, global_keyprefix="blog:")
    shop.send_task("shop.tasks.ship", queue="mail")
    blog.send_task("shop.tasks.ship", queue="mail")
    blog.send_task("shop.tasks.ship", queue="mail")
    samples = by_queue(collect(redis_url))
    assert (samples["shop:mail"].size, samples["blog:mail"].size) == (1, 2)


@pytest.mark.parametrize(
    "options",
    [
        {"eta": datetime.now(timezone.utc) + timedelta(minutes=10)},
        {"countdown": 600},
    ],
)
def test_eta_messages_with_a_worker_running(redis_url, apps, options):
    """A running worker takes ETA and countdown messages off the list at once and holds them:
    the queue is then empty (size 0, latency 0), while the tasks wait in the worker."""
    app = apps(redis_url)
    worker = start_celery_worker(redis_url, ["work"])
    try:
        app.send_task("shop.tasks.ship", queue="work", **options)
        deadline = time.monotonic() + 30
        while channel_size(app, "work") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert channel_size(app, "work") == 0, "the worker never took the ETA message"
        sample = by_queue(collect(redis_url))["work"]
        assert (sample.size, sample.latency) == (0, 0.0)
        # Behind a busy worker, ordinary messages wait in the list: latency from their stamps.
        app.send_task("shop.tasks.nap", args=[3], queue="work")
        time.sleep(0.5)
        for _ in range(3):
            app.send_task("shop.tasks.ship", queue="work")
        time.sleep(1.0)
        sample = by_queue(collect(redis_url))["work"]
        assert sample.size == channel_size(app, "work") >= 1
        assert sample.latency == pytest.approx(1.0, abs=0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=20)


def test_names_never_change_when_another_system_appears(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 2}})
    collector = make_collector(redis_url)
    before = librato_lines(collector.tick())[0]
    assert before.startswith("sample#queue.sidekiq.default.size=2 ")
    Queue("default", connection=client).enqueue("builtins.len", "abc")
    after = librato_lines(collector.tick())[0]
    assert after.startswith("sample#queue.sidekiq.default.size=2 ")
    assert "sample#queue.rq.default.size=1" in after
    # And the same after a restart.
    assert librato_lines(make_collector(redis_url).tick())[0].split(" ")[0] == after.split(" ")[0]
