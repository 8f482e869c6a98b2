"""Every datastore an app has: several real redis-servers read at once, each with its own
connection, error lines and labels; real Sidekiq, Celery and rq producers and workers on them.

The printed form of a second datastore's labeled names belongs to tests/test_format.py and the
outputs' tests; here the l2met names asserted are those that carry no label (the first
datastore's, or a queue only one datastore holds), and a second datastore's labeled names are
asserted on its `DatastoreSection`.
"""

from __future__ import annotations

import re
import time
from typing import Dict, List, Set, Tuple

import pytest
import redis
from celery import Celery
from kombu import pools
from rq import Queue

import queue_metrics.celery as stamp_hook
from helpers.collect import sidekiq
from helpers.process import lines_of, queue_metrics, start
from helpers.producers import channel_size
from helpers.servers import free_port, self_signed_certificate
from helpers.watch import Watcher
from helpers.workers import start_celery_worker, wait_for, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.datastores.redis.locations import same_server
from queue_metrics.errors import ConfigError
from queue_metrics.sample import TickReport, sections

PASSWORD = "Pink-Pa55word-9"
PINK = "HEROKU_REDIS_PINK_URL"
NAME = re.compile(r"(?:sample|count)#([^=\s]+)=")


def collector_of(env: Dict[str, str]) -> Collector:
    """The top-level collector the command runs, settings from a plain dict."""
    return Collector(Settings.from_env(env), whole_first_walk=True)


def metric_names(stdout: str) -> Set[str]:
    return set(NAME.findall(stdout))


def sizes(report: TickReport) -> Dict[Tuple[str, str, str], int]:
    """(datastore label, system, queue) -> size, each sample under its own section."""
    return {
        (section.label, sample.backend, sample.queue): sample.size
        for section, samples, _ in sections(report)
        for sample in samples
    }


def systems_by_label(report: TickReport) -> Dict[str, List[str]]:
    return {section.label: [system.backend for system in systems] for section, _, systems in sections(report)}


def cache_keys(url: str) -> None:
    """What an app's cache Redis holds: nothing any queue system reads."""
    client = redis.Redis.from_url(url)
    client.set("views/products/1", "<html>")
    client.hset("rack:session:abc", mapping={"user": "1"})
    client.zadd("leaderboard", {"ada": 3})
    client.close()


# ---- 1. Sidekiq's own convention: jobs on the Redis REDIS_PROVIDER names, a cache on REDIS_URL


@pytest.fixture
def pink_and_cache(make_server):
    pink, cache = make_server(), make_server()
    cache_keys(cache.url)
    env = {"REDIS_URL": cache.url, PINK: pink.url, "REDIS_PROVIDER": PINK}
    return pink, cache, env


# A Sidekiq app left to Sidekiq's own Redis settings (tests/helpers/sidekiq_jobs.rb sets REDIS_URL).
SIDEKIQ_DEFAULTS_APP = """require "sidekiq"
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
"""


def test_sidekiq_on_the_redis_redis_provider_names_is_read_and_the_cache_prints_nothing(pink_and_cache, tmp_path):
    pink, cache, env = pink_and_cache
    # A real Sidekiq process with the app's variables: Sidekiq itself follows REDIS_PROVIDER to
    # the PINK Redis (its heartbeat lands there), and works `critical` only: `default` waits.
    app = tmp_path / "app.rb"
    app.write_text(SIDEKIQ_DEFAULTS_APP)
    command = ["sidekiq", "-r", str(app), "-c", "2", "-q", "critical", "-t", "1"]
    with worker_process(command, env):
        pink_client, cache_client = redis.Redis.from_url(pink.url), redis.Redis.from_url(cache.url)
        wait_for(lambda: pink_client.scard("processes") == 1, "the Sidekiq process to beat on the PINK Redis")
        assert not cache_client.exists("processes")
        theirs = sidekiq(pink.url, {"enqueue": {"default": 3}, "sleep": 0.2})
        assert theirs["queues"]["default"]["size"] == 3

        result = queue_metrics("once", env=env)
        report = collector_of(env).tick()

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "sample#queue.sidekiq.default.size=3 " in result.stdout
    assert "sample#queue.sidekiq.processes=1" in result.stdout
    assert "sample#queue.collector.queues=1 sample#queue.collector.errors=0 " in result.stdout
    # Nothing of the cache's own: the queue's names, Sidekiq's figures and the collector's only.
    names = metric_names(result.stdout)
    assert names and all(name.startswith(("queue.sidekiq.", "queue.collector.")) for name in names), names

    # The PINK Redis first (REDIS_PROVIDER's), the cache second, holding nothing, no error.
    pink_section, cache_section = report.datastores
    assert (pink_section.label, pink_section.source) == ("heroku_redis_pink", PINK)
    assert (cache_section.label, cache_section.source) == ("redis", "REDIS_URL")
    assert (cache_section.ok, cache_section.queues, cache_section.systems, cache_section.errors) == (True, 0, 0, 0)
    assert sizes(report) == {("heroku_redis_pink", "sidekiq", "default"): 3}
    assert pink_section.labeled_queues == frozenset() and pink_section.labeled_systems == frozenset()


def test_without_redis_provider_every_heroku_redis_color_is_read_too(pink_and_cache):
    pink, cache, env = pink_and_cache
    del env["REDIS_PROVIDER"]
    sidekiq(pink.url, {"enqueue": {"default": 3}})

    result = queue_metrics("once", env=env)
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=3 " in result.stdout
    assert "sample#queue.collector.queues=1 " in result.stdout

    report = collector_of(env).tick()
    assert [(section.label, section.ok) for section in report.datastores] == [
        ("redis", True),
        ("heroku_redis_pink", True),
    ]
    assert sizes(report) == {("heroku_redis_pink", "sidekiq", "default"): 3}
    # One datastore holds Sidekiq: its names stay plain.
    assert all(not section.labeled_queues and not section.labeled_systems for section in report.datastores)

    config = queue_metrics("config", env=env)
    assert config.returncode == 0, config.stderr
    assert [line for line in lines_of(config.stdout) if line.startswith("datastore.")] == [
        f"datastore.redis=redis redis://127.0.0.1:{cache.port}/0 (from REDIS_URL)",
        f"datastore.heroku_redis_pink=redis redis://127.0.0.1:{pink.port}/0 (from {PINK})",
    ]


def test_queue_metrics_datastores_leaves_out_a_pink_redis_that_is_set(pink_and_cache):
    pink, cache, env = pink_and_cache
    del env["REDIS_PROVIDER"]
    sidekiq(pink.url, {"enqueue": {"default": 3}})
    sidekiq(cache.url, {"enqueue": {"mailers": 1}})
    env["QUEUE_METRICS_DATASTORES"] = "REDIS_URL"

    report = collector_of(env).tick()
    assert [section.label for section in report.datastores] == ["redis"]
    assert sizes(report) == {("redis", "sidekiq", "mailers"): 1}
    result = queue_metrics("once", env=env)
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.mailers.size=1 " in result.stdout
    assert "default" not in result.stdout
    config = queue_metrics("config", env=env)
    assert [line for line in lines_of(config.stdout) if line.startswith("datastore.")] == [
        f"datastore.redis=redis redis://127.0.0.1:{cache.port}/0 (from REDIS_URL)"
    ]


def test_queue_metrics_datastores_may_name_a_unix_socket_redis(make_server, tmp_path):
    socket_path = str(tmp_path / "redis.sock")
    local = make_server(extra=["--unixsocket", socket_path])
    other = make_server()
    sidekiq(local.url, {"enqueue": {"default": 2}})
    sidekiq(other.url, {"enqueue": {"default": 7}})
    env = {"REDIS_URL": f"unix://{socket_path}", PINK: other.url, "QUEUE_METRICS_DATASTORES": "REDIS_URL"}

    report = collector_of(env).tick()
    assert [(section.label, section.where) for section in report.datastores] == [("redis", f"unix://{socket_path}")]
    assert sizes(report) == {("redis", "sidekiq", "default"): 2}


# ---- 2. Sidekiq on one Redis, Celery on another


@pytest.fixture
def celery_on(request):
    made: List[Celery] = []

    def make(url: str) -> Celery:
        application = Celery("shop", broker=url)
        application.conf.task_create_missing_queues = True
        stamp_hook.install(application)
        made.append(application)
        return application

    yield make
    stamp_hook.uninstall()
    for application in made:
        application.close()
    pools.reset()


def test_sidekiq_on_one_redis_and_celery_on_another_while_a_real_worker_drains(make_server, celery_on):
    jobs, broker = make_server(), make_server()
    sidekiq(jobs.url, {"enqueue": {"default": 2}})
    app = celery_on(broker.url)
    for _ in range(4):
        app.send_task("shop.tasks.nap", args=[0.8], queue="work")
    env = {"REDIS_URL": jobs.url, "CELERY_BROKER_URL": broker.url}

    result = queue_metrics("once", env=env)
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=2 " in result.stdout
    assert "sample#queue.celery.work.size=4 " in result.stdout

    collector = collector_of(env)
    report = collector.tick()
    assert report.errors == ()
    assert [(section.label, section.source) for section in report.datastores] == [
        ("redis", "REDIS_URL"),
        ("celery_broker", "CELERY_BROKER_URL"),
    ]
    assert sizes(report) == {("redis", "sidekiq", "default"): 2, ("celery_broker", "celery", "work"): 4}
    assert systems_by_label(report) == {"redis": ["sidekiq"], "celery_broker": ["celery"]}
    assert all(not section.labeled_queues and not section.labeled_systems for section in report.datastores)
    (celery_sample,) = [sample for sample in report.samples if sample.backend == "celery"]
    assert celery_sample.latency is not None  # stamped by the hook

    # A real worker drains the broker: at every tick whose moment the queue did not move across,
    # our size is kombu's; the Sidekiq queue on the other Redis keeps its 2 throughout.
    worker = start_celery_worker(broker.url, ["work"])
    compared: Set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while True:
            before = channel_size(app, "work")
            report = collector.tick()
            after = channel_size(app, "work")
            assert report.errors == ()
            ours = sizes(report)
            assert ours[("redis", "sidekiq", "default")] == 2
            if before == after:
                assert ours[("celery_broker", "celery", "work")] == before
                compared.add(before)
            if after == 0 and 0 in compared:
                break
            assert time.monotonic() < deadline, f"the worker never drained the queue (compared {compared})"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    # Not only the end: sizes on the way down were compared too.
    assert len(compared) >= 2 and max(compared) > 0, compared


# ---- 3. The same Sidekiq queue on two Redis: the second's names labeled, and stable


def test_the_same_queue_on_two_redis_labels_the_second_and_keeps_its_names(make_server):
    first, second = make_server(), make_server()
    sidekiq(first.url, {"enqueue": {"default": 2}})
    sidekiq(second.url, {"enqueue": {"default": 5, "mailers": 1}})
    env = {"REDIS_URL": first.url, PINK: second.url}

    result = queue_metrics("once", env=env)
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=2 " in result.stdout

    collector = collector_of(env)
    report = collector.tick()
    assert report.errors == ()
    plain, labeled = report.datastores
    assert (plain.label, labeled.label) == ("redis", "heroku_redis_pink")
    assert sizes(report) == {
        ("redis", "sidekiq", "default"): 2,
        ("heroku_redis_pink", "sidekiq", "default"): 5,
        ("heroku_redis_pink", "sidekiq", "mailers"): 1,
    }
    assert (plain.labeled_queues, plain.labeled_systems) == (frozenset(), frozenset())
    # `mailers` lives in the second only: plain; `default` and Sidekiq's own figures: labeled.
    expected = (frozenset({("sidekiq", "default")}), frozenset({"sidekiq"}))
    assert (labeled.labeled_queues, labeled.labeled_systems) == expected

    # The first goes down: the second keeps its labeled names, and the error says which one.
    port = first.port
    first.stop()
    report = collector.tick()
    assert [section.ok for section in report.datastores] == [False, True]
    assert len(report.errors) == 1 and report.errors[0].startswith("redis: "), report.errors
    assert sizes(report) == {
        ("heroku_redis_pink", "sidekiq", "default"): 5,
        ("heroku_redis_pink", "sidekiq", "mailers"): 1,
    }
    assert (report.datastores[1].labeled_queues, report.datastores[1].labeled_systems) == expected

    # Back on the same port (empty, as a restarted Redis without persistence is), then its jobs.
    restarted = make_server(port=port)
    report = collector.tick()
    assert report.errors == ()
    assert (report.datastores[1].labeled_queues, report.datastores[1].labeled_systems) == expected
    sidekiq(restarted.url, {"enqueue": {"default": 1}})
    report = collector.tick()
    assert sizes(report)[("redis", "sidekiq", "default")] == 1
    assert (report.datastores[0].labeled_queues, report.datastores[0].labeled_systems) == (frozenset(), frozenset())
    assert (report.datastores[1].labeled_queues, report.datastores[1].labeled_systems) == expected


def test_rq_on_two_redis_labels_the_second_systems_figures(make_server):
    first, second = make_server(), make_server()
    for server, queue in ((first, "default"), (second, "reports")):
        client = redis.Redis.from_url(server.url)
        Queue(queue, connection=client).enqueue("builtins.len", "abc")
        client.close()
    report = collector_of({"REDIS_URL": first.url, "RQ_REDIS_URL": second.url}).tick()
    assert report.errors == ()
    assert sizes(report) == {("redis", "rq", "default"): 1, ("rq_redis", "rq", "reports"): 1}
    # Different queues: plain; rq's system-wide figures (workers...) on both: the second's labeled.
    assert [(section.labeled_queues, section.labeled_systems) for section in report.datastores] == [
        (frozenset(), frozenset()),
        (frozenset(), frozenset({"rq"})),
    ]


# ---- 4. REDIS_URL and REDIS_TLS_URL of one server: one datastore, read through TLS


@pytest.fixture
def plain_and_tls(make_server, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server = make_server(
        tls_port=free_port(),
        extra=["--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no", "--requirepass", PASSWORD],
    )
    env = {
        "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
        "REDIS_TLS_URL": f"rediss://:{PASSWORD}@127.0.0.1:{server.tls_port}/0",
    }
    return server, env


def test_redis_url_and_redis_tls_url_of_one_server_are_read_once_through_tls(plain_and_tls):
    server, env = plain_and_tls
    sidekiq(env["REDIS_URL"], {"enqueue": {"default": 2}})

    (location,) = Settings.from_env(env).locations()
    assert (location.label, location.source) == ("redis", "REDIS_URL")
    assert location.url.startswith("rediss://") and f":{server.tls_port}/" in location.url

    collector = collector_of(env)
    report = collector.tick()
    assert report.errors == ()
    assert [section.label for section in report.datastores] == ["redis"]
    assert sizes(report) == {("redis", "sidekiq", "default"): 2}
    # The server sees our one connection on its TLS port, none on the plain one.
    admin = redis.Redis.from_url(env["REDIS_URL"])
    ours = [client for client in admin.client_list() if client["id"] != str(admin.client_id())]
    assert [client["laddr"] for client in ours] == [f"127.0.0.1:{server.tls_port}"]
    admin.close()

    result = queue_metrics("once", env=env)
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=2 " in result.stdout
    assert "sample#queue.collector.queues=1 " in result.stdout
    config = queue_metrics("config", env=env)
    assert [line for line in lines_of(config.stdout) if line.startswith("datastore.")] == [
        f"datastore.redis=redis rediss://127.0.0.1:{server.tls_port}/0 (from REDIS_URL)"
    ]
    for output in (result, config):
        assert PASSWORD not in output.stdout + output.stderr


def test_the_tls_url_of_a_heroku_redis_color_is_the_same_datastore_under_the_colors_label(plain_and_tls):
    server, env = plain_and_tls
    colors = {
        "HEROKU_REDIS_PINK_TLS_URL": env["REDIS_TLS_URL"],
        PINK: env["REDIS_URL"],
    }
    (location,) = Settings.from_env(colors).locations()
    assert (location.label, location.source) == ("heroku_redis_pink", PINK)
    assert location.url == env["REDIS_TLS_URL"]


# ---- 5. One Redis stopped, or hung, while `run` goes on


def run_ticks(watcher: Watcher, count: int, timeout: float = 20.0) -> List[List[str]]:
    """The next `count` ticks' stdout lines; a tick's lines end with its collector line."""
    ticks: List[List[str]] = []
    current: List[str] = []
    while len(ticks) < count:
        _, _, line = watcher.wait_for(lambda stream, _line: stream == "stdout", timeout)
        current.append(line)
        if "collector.queues=" in line:
            ticks.append(current)
            current = []
    return ticks


def collector_figure(tick: List[str], figure: str) -> float:
    (value,) = re.findall(rf"queue\.collector\.{figure}=([0-9.]+)", tick[-1])
    return float(value)


def has_queue(tick: List[str], queue: str) -> bool:
    return any(f"sample#queue.sidekiq.{queue}.size=" in line for line in tick)


@pytest.fixture
def two_redis_running(make_server):
    """A `run` process (0.5 s ticks) over two Redis, each with a Sidekiq queue of its own."""
    first, second = make_server(), make_server()
    sidekiq(first.url, {"enqueue": {"alpha": 1}})
    sidekiq(second.url, {"enqueue": {"beta": 2}})
    processes = []

    def run(**extra: str) -> Watcher:
        env = {"REDIS_URL": first.url, PINK: second.url, "QUEUE_METRICS_INTERVAL": "0.5", **extra}
        process = start("run", env=env)
        processes.append(process)
        return Watcher(process)

    yield first, second, run
    for process in processes:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


def error_lines(watcher: Watcher) -> List[str]:
    return [line for _, stream, line in watcher.seen if stream == "stderr" and ": error: " in line]


def finish(watcher: Watcher) -> None:
    watcher.process.terminate()
    watcher.process.wait(timeout=10)
    watcher.drain(1.0)


def test_one_redis_stopped_mid_run_costs_one_error_line_a_tick_and_comes_back(two_redis_running, make_server):
    first, second, run = two_redis_running
    watcher = run()
    for tick in run_ticks(watcher, 2):
        assert has_queue(tick, "alpha") and has_queue(tick, "beta"), tick
        assert collector_figure(tick, "errors") == 0

    port = second.port
    second.stop()
    run_ticks(watcher, 1)  # the tick under way when it stopped may have read it or not
    for tick in run_ticks(watcher, 4):
        assert has_queue(tick, "alpha") and not has_queue(tick, "beta"), tick
        assert collector_figure(tick, "errors") == 1, tick

    restarted = make_server(port=port)
    sidekiq(restarted.url, {"enqueue": {"beta": 2}})
    watcher.wait_for(lambda stream, line: stream == "stdout" and "sample#queue.sidekiq.beta.size=2 " in line, 20)
    run_ticks(watcher, 1)  # the rest of that tick
    for tick in run_ticks(watcher, 2):
        assert has_queue(tick, "alpha") and has_queue(tick, "beta"), tick
        assert collector_figure(tick, "errors") == 0
    finish(watcher)

    # Every error line is about the stopped one, and there is exactly one for each tick that
    # counted an error (the lines of every tick: those read above and the rest).
    errors = error_lines(watcher)
    ticks_text = [line for _, stream, line in watcher.seen if stream == "stdout" and "collector.errors=" in line]
    counted = sum(int(re.search(r"collector\.errors=(\d+)", line).group(1)) for line in ticks_text)
    assert counted >= 4 and len(errors) == counted, (counted, errors)
    assert all(line.startswith("queue-metrics: error: heroku_redis_pink: ") for line in errors), errors


def test_a_hung_redis_costs_each_tick_its_timeout_and_the_other_is_reported_every_tick(two_redis_running):
    first, second, run = two_redis_running
    watcher = run(QUEUE_METRICS_INTERVAL="1", QUEUE_METRICS_TIMEOUT="0.3")
    run_ticks(watcher, 1)
    second.pause()
    try:
        run_ticks(watcher, 1)  # the tick under way
        started = time.monotonic()
        ticks = run_ticks(watcher, 4)
        elapsed = time.monotonic() - started
    finally:
        second.resume()
    for tick in ticks:
        assert has_queue(tick, "alpha") and not has_queue(tick, "beta"), tick
        assert collector_figure(tick, "errors") == 1, tick
        # Its timeout, and no more than a little over it: not the 5 s default, not twice.
        assert 0.29 <= collector_figure(tick, "duration") < 0.45, tick
    # The hung one never pushed a tick back: four ticks in about four intervals.
    assert elapsed < 4 * 1.0 + 1.0, elapsed
    finish(watcher)
    errors = error_lines(watcher)
    assert errors and all(
        line.startswith("queue-metrics: error: heroku_redis_pink: ") and "did not answer within 0.3 s" in line
        for line in errors
    ), errors


# ---- 6. A Redis that holds no queues: at most one round trip a tick, read-only, silent


def test_a_redis_without_queues_costs_one_read_only_round_trip_a_tick_and_prints_nothing(make_server):
    jobs, cache = make_server(), make_server()
    sidekiq(jobs.url, {"enqueue": {"default": 2}})
    cache_keys(cache.url)
    env = {"REDIS_URL": jobs.url, PINK: cache.url}

    collector = collector_of(env)
    collector.tick()  # the first: the whole keyspace walk
    admin = redis.Redis.from_url(cache.url)
    ticks = 6
    admin.config_resetstat()
    for _ in range(ticks):
        report = collector.tick()
        assert report.errors == ()
        assert report.datastores[1].queues == report.datastores[1].systems == 0
    commands = {name[len("cmdstat_") :]: value["calls"] for name, value in admin.info("commandstats").items()}
    reads = admin.info("stats")["total_reads_processed"]
    assert commands.pop("config|resetstat") == 1  # this test's own, counted once done
    # A read event is one round trip on the wire; two more are this test's own INFO commands
    # (each counted once done: the first is in neither figure, the second in the reads only).
    assert reads - 2 <= ticks, reads
    assert sum(commands.values()) > 0  # it was read
    assert sum(commands.values()) <= 16 * ticks, commands
    table = admin.command()
    flags = {name: table[name.split("|")[0]]["flags"] for name in commands}
    assert all("readonly" in flags[name] for name in commands), flags
    assert admin.info("keyspace")["db0"]["keys"] == 3
    admin.close()

    result = queue_metrics("once", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    names = metric_names(result.stdout)
    assert "queue.sidekiq.default.size" in names
    assert all(name.startswith(("queue.sidekiq.", "queue.collector.")) for name in names), names
    assert "heroku_redis_pink" not in result.stdout


# ---- 7. Bad input: a usage error naming the variable, never its value


BAD_URL = f"redis://:{PASSWORD}@127.0.0.1:notaport/0"


@pytest.mark.parametrize(
    "env, words",
    [
        ({"QUEUE_METRICS_REDIS_URLS": BAD_URL}, "QUEUE_METRICS_REDIS_URLS (item 1) is not a valid Redis URL"),
        (
            {"QUEUE_METRICS_REDIS_URLS": f"redis://127.0.0.1:1/0,{BAD_URL}"},
            "QUEUE_METRICS_REDIS_URLS (item 2) is not a valid Redis URL",
        ),
        # A URL without its scheme: its text before any '=' is no label, and never printed.
        (
            {"QUEUE_METRICS_REDIS_URLS": f"user:{PASSWORD}@127.0.0.1:6379/0?db=0"},
            "QUEUE_METRICS_REDIS_URLS (item 1) is not a Redis URL",
        ),
        (
            {"QUEUE_METRICS_REDIS_URLS": f"Jobs=redis://:{PASSWORD}@127.0.0.1:1/0"},
            "QUEUE_METRICS_REDIS_URLS (item 1): a label may hold only a-z",
        ),
        (
            {"REDIS_PROVIDER": "HEROKU_REDIS_GOLD_URL", "REDIS_URL": "redis://127.0.0.1:1/0"},
            "REDIS_PROVIDER names HEROKU_REDIS_GOLD_URL, which is not set",
        ),
        (
            {"REDIS_PROVIDER": "DATABASE_URL", "DATABASE_URL": f"postgres://app:{PASSWORD}@127.0.0.1:5432/app"},
            "REDIS_PROVIDER names DATABASE_URL, which holds no redis://",
        ),
        (
            {"REDIS_PROVIDER": f"redis://:{PASSWORD}@127.0.0.1:6379/0"},
            "REDIS_PROVIDER must hold the name of a variable, not a URL",
        ),
        ({"REDIS_PROVIDER": PINK, PINK: BAD_URL}, f"{PINK} is not a valid Redis URL"),
        (
            {"QUEUE_METRICS_REDIS_URLS": f"a=redis://:{PASSWORD}@127.0.0.1:1/0,a=redis://:{PASSWORD}@127.0.0.2:1/0"},
            "label 'a'",
        ),
        ({"QUEUE_METRICS_REDIS_URLS": f"sidekiq=redis://:{PASSWORD}@127.0.0.1:1/0"}, "'sidekiq' cannot be a label"),
        ({"QUEUE_METRICS_DATASTORES": "HEROKU_REDIS_GOLD_URL"}, "HEROKU_REDIS_GOLD_URL, which is not set"),
        (
            {"QUEUE_METRICS_DATASTORES": "DATABASE_URL", "DATABASE_URL": f"mysql://app:{PASSWORD}@db:3306/app"},
            "QUEUE_METRICS_DATASTORES names DATABASE_URL, which holds no URL",
        ),
        (
            {
                "QUEUE_METRICS_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:1/0",
                "QUEUE_METRICS_REDIS_URLS": f"redis://:{PASSWORD}@127.0.0.1:2/0",
            },
            "set QUEUE_METRICS_REDIS_URL or QUEUE_METRICS_REDIS_URLS, not both",
        ),
        ({"REDIS_URL": f"http://user:{PASSWORD}@127.0.0.1:80/"}, "REDIS_URL is not a Redis URL"),
    ],
)
def test_bad_datastore_settings_are_usage_errors_naming_the_variable_and_never_its_value(env, words):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert words in str(raised.value)
    for command in ("once", "config"):
        result = queue_metrics(command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        (line,) = lines_of(result.stderr)
        assert line.startswith("queue-metrics: usage error: ") and words in line, line
        assert result.stdout == ""
        assert PASSWORD not in line and "127.0.0.1" not in line, line


def test_a_database_without_job_tables_prints_nothing_and_an_amqp_broker_is_a_rabbitmq_datastore(make_server):
    server = make_server()
    sidekiq(server.url, {"enqueue": {"default": 1}})
    env = {
        "REDIS_URL": server.url,
        # The machine's PostgreSQL (trust): the app's own database, with no job table in it.
        "DATABASE_URL": f"postgres://postgres:{PASSWORD}@127.0.0.1:5432/postgres",
        "CELERY_BROKER_URL": f"amqp://guest:{PASSWORD}@127.0.0.1:5672//",
        "BROKER_URL": f"amqps://guest:{PASSWORD}@127.0.0.1:5671//",  # the same broker, vhost and user
        # The machine's RabbitMQ, which refuses that password.
        "QUEUE_METRICS_RABBITMQ_API_URL": "http://127.0.0.1:15672/api/",
    }
    redis_location, broker, database = Settings.from_env(env).locations()
    assert (redis_location.label, redis_location.url) == ("redis", server.url)
    assert (broker.kind, broker.label, broker.source) == ("rabbitmq", "celery_broker", "CELERY_BROKER_URL")
    assert (database.kind, database.label, database.source) == ("postgres", "database", "DATABASE_URL")
    result = queue_metrics("once", env=env)
    assert result.returncode == 1, result.stderr  # a datastore could not be read
    assert "sample#queue.sidekiq.default.size=1 " in result.stdout
    (line,) = lines_of(result.stderr)
    assert line.startswith("queue-metrics: error: celery_broker: ") and "rejected the credentials" in line, line
    assert PASSWORD not in result.stdout + result.stderr


def test_a_tls_ca_file_is_checked_when_any_datastore_uses_tls(tmp_path, make_server):
    plain = make_server()
    broken = tmp_path / "ca.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    env = {
        "REDIS_URL": plain.url,
        PINK: f"rediss://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        "QUEUE_METRICS_TLS_CA_FILE": str(broken),
    }
    result = queue_metrics("once", env=env)
    assert result.returncode == 2, result.stderr
    (line,) = lines_of(result.stderr)
    assert "QUEUE_METRICS_TLS_CA_FILE" in line and "holds no certificate OpenSSL can load" in line
    assert PASSWORD not in line


# ---- 9. Where the datastores come from: pure rules of datastores.redis.locations


def labels(env: Dict[str, str]) -> List[Tuple[str, str]]:
    return [(location.label, location.source) for location in Settings.from_env(env).locations()]


def test_the_search_order_and_labels():
    env = {
        "RQ_REDIS_URL": "redis://rq:6379/0",
        "BROKER_URL": "redis://broker:6379/0",
        "CELERY_BROKER_URL": "redis://celery:6379/0",
        "REDISGREEN_URL": "redis://green:6379/0",
        "OPENREDIS_URL": "redis://open:6379/0",
        "REDISTOGO_URL": "redis://togo:6379/0",
        "REDISCLOUD_URL": "redis://cloud:6379/0",
        "HEROKU_REDIS_PINK_URL": "redis://pink:6379/0",
        "HEROKU_REDIS_AMBER_URL": "redis://amber:6379/0",
        "REDIS_TLS_URL": "rediss://tls:6380/0",
        "REDIS_URL": "redis://main:6379/0",
    }
    assert labels(env) == [
        ("redis", "REDIS_URL"),
        ("redis_tls", "REDIS_TLS_URL"),
        ("heroku_redis_amber", "HEROKU_REDIS_AMBER_URL"),
        ("heroku_redis_pink", "HEROKU_REDIS_PINK_URL"),
        ("rediscloud", "REDISCLOUD_URL"),
        ("redistogo", "REDISTOGO_URL"),
        ("openredis", "OPENREDIS_URL"),
        ("redisgreen", "REDISGREEN_URL"),
        ("celery_broker", "CELERY_BROKER_URL"),
        ("broker", "BROKER_URL"),
        ("rq_redis", "RQ_REDIS_URL"),
    ]
    # REDIS_PROVIDER's variable comes first; the others keep their order.
    provided = labels({**env, "REDIS_PROVIDER": "HEROKU_REDIS_PINK_URL"})
    assert provided[0] == ("heroku_redis_pink", "HEROKU_REDIS_PINK_URL")
    assert provided[1:] == [pair for pair in labels(env) if pair[0] != "heroku_redis_pink"]
    # Only it, when QUEUE_METRICS_REDIS_URL is set; the named ones, in their order, with
    # QUEUE_METRICS_DATASTORES.
    assert labels({**env, "QUEUE_METRICS_REDIS_URL": "redis://q:1/0"}) == [("redis", "QUEUE_METRICS_REDIS_URL")]
    named = labels({**env, "QUEUE_METRICS_DATASTORES": "RQ_REDIS_URL, REDIS_URL"})
    assert named == [("rq_redis", "RQ_REDIS_URL"), ("redis", "REDIS_URL")]
    # Nothing set: the default, as before.
    assert [(location.label, location.url) for location in Settings.from_env({}).locations()] == [
        ("redis", "redis://localhost:6379/0")
    ]


def test_queue_metrics_redis_urls_labels():
    env = {"QUEUE_METRICS_REDIS_URLS": "redis://a:1/0, jobs=rediss://b:2/0 ,redis://c:3/0?db=1", "REDIS_URL": "x"}
    settings = Settings.from_env(env)
    assert [(location.label, location.url) for location in settings.locations()] == [
        ("redis", "redis://a:1/0"),
        ("jobs", "rediss://b:2/0"),
        ("redis_3", "redis://c:3/0?db=1"),
    ]
    assert {location.source for location in settings.locations()} == {"QUEUE_METRICS_REDIS_URLS"}
    # The first is the one a reader reads by default (doctor's one Redis, error messages).
    assert (settings.redis_url, settings.redis_url_var) == ("redis://a:1/0", "QUEUE_METRICS_REDIS_URLS")


def test_one_server_and_database_is_one_datastore():
    tls = f"rediss://:{PASSWORD}@host.example.com:6380/0"
    plain = f"redis://:{PASSWORD}@host.example.com:6379/0"
    # REDIS_URL's label, the TLS URL to read through, whichever comes first.
    for env in ({"REDIS_URL": plain, "REDIS_TLS_URL": tls}, {"REDIS_URL": tls, "REDIS_TLS_URL": plain}):
        (location,) = Settings.from_env(env).locations()
        assert (location.label, location.url, location.source) == ("redis", tls, "REDIS_URL")
    # One URL set twice (an add-on's and the app's own broker variable): one datastore.
    assert labels({"REDIS_URL": plain, "CELERY_BROKER_URL": plain, "RQ_REDIS_URL": plain}) == [("redis", "REDIS_URL")]
    # Another database of that server is another datastore.
    other_db = plain.replace("/0", "/1")
    assert labels({"REDIS_URL": plain, "CELERY_BROKER_URL": other_db}) == [
        ("redis", "REDIS_URL"),
        ("celery_broker", "CELERY_BROKER_URL"),
    ]


def test_same_server():
    assert same_server("redis://h:6379/0") == same_server("redis://H:6379") == same_server("redis://h/0")
    assert same_server("redis://h:6379/2") == same_server("redis://h:6379?db=2")
    assert same_server("redis://h:6379/0") != same_server("redis://h:6380/0")
    assert same_server("redis://h:6379/0") != same_server("redis://h:6379/1")
    assert same_server("redis://h:6379/0") != same_server("redis://g:6379/0")
    # With a password: the TLS port of the same server, as an add-on's two URLs are.
    assert same_server("redis://:pw@h:6379/0") == same_server("rediss://:pw@h:6380/0")
    assert same_server("redis://:pw@h:6379/0") == same_server("redis://:p%77@h:6379/0")
    assert same_server("redis://:pw@h:6379/0") != same_server("rediss://:other@h:6380/0")
    assert same_server("redis://:pw@h:6379/0") != same_server("rediss://user:pw@h:6380/0")
    assert same_server("unix:///tmp/r.sock") == same_server("unix:///tmp/r.sock?db=0")
    assert same_server("unix:///tmp/r.sock") != same_server("unix:///tmp/r.sock?db=3")


def test_two_servers_on_one_host_with_one_password_are_two_datastores():
    # Two Redis of one machine (ports 6379 and 6380), both plain, both with the same password:
    # not one server's plain and TLS ports.
    first = f"redis://:{PASSWORD}@10.0.0.5:6379/0"
    second = f"redis://:{PASSWORD}@10.0.0.5:6380/0"
    assert labels({"REDIS_URL": first, "RQ_REDIS_URL": second}) == [
        ("redis", "REDIS_URL"),
        ("rq_redis", "RQ_REDIS_URL"),
    ]
    urls = f"jobs={first},cache={second}"
    assert [label for label, _ in labels({"QUEUE_METRICS_REDIS_URLS": urls})] == ["jobs", "cache"]


def test_two_servers_on_one_host_with_one_password_are_both_read(make_server):
    first = make_server(extra=["--requirepass", PASSWORD])
    second = make_server(extra=["--requirepass", PASSWORD])
    urls = [f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0" for server in (first, second)]
    sidekiq(urls[0], {"enqueue": {"default": 1}})
    sidekiq(urls[1], {"enqueue": {"mailers": 2}})
    report = collector_of({"REDIS_URL": urls[0], "RQ_REDIS_URL": urls[1]}).tick()
    assert report.errors == ()
    assert sizes(report) == {("redis", "sidekiq", "default"): 1, ("rq_redis", "sidekiq", "mailers"): 2}


def test_every_heroku_redis_color_with_its_tls_url():
    env = {
        "HEROKU_REDIS_PINK_TLS_URL": f"rediss://:{PASSWORD}@pink:6380/0",
        "HEROKU_REDIS_PINK_URL": f"redis://:{PASSWORD}@pink:6379/0",
        "HEROKU_REDIS_AMBER_URL": "redis://amber:6379/0",
        "HEROKU_REDIS_URL": "redis://not-an-add-on-color:6379/0",
        "MY_HEROKU_REDIS_PINK_URL": "redis://neither:6379/0",
    }
    assert labels(env) == [("heroku_redis_amber", "HEROKU_REDIS_AMBER_URL"), ("heroku_redis_pink", PINK)]
    (_, pink) = Settings.from_env(env).locations()
    assert pink.url.startswith("rediss://")


def test_doctor_passes_an_app_whose_cache_redis_holds_no_queues(make_server):
    """The cache Redis beside the jobs' one is no problem; no queues in any datastore is one."""
    cache, jobs = make_server(), make_server()
    redis.Redis.from_url(cache.url).set("cache:page", "x")
    env = {"REDIS_URL": cache.url, "HEROKU_REDIS_PINK_URL": jobs.url}
    nowhere = queue_metrics("doctor", env=env)
    assert nowhere.returncode == 1
    assert [line for line in nowhere.stdout.splitlines() if line.startswith("Problem: ")] == [
        "Problem: no queue of a system this reads found (Sidekiq, RQ, Celery, Resque, BullMQ, Dramatiq on Redis; "
        "Celery on RabbitMQ; Solid Queue, GoodJob, Delayed Job, Que, procrastinate, Django tasks on Postgres): is "
        "this where your jobs live? (the app's variables are read: REDIS_URL, HEROKU_REDIS_<COLOR>_URL, "
        "REDIS_PROVIDER, CLOUDAMQP_URL, DATABASE_URL, ...; QUEUE_METRICS_DATASTORES names them)"
    ]
    redis.Redis.from_url(jobs.url).sadd("queues", "default")  # a Sidekiq app, its queue empty
    doctor = queue_metrics("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout
    assert "== Datastore redis ==" in doctor.stdout and "== Datastore heroku_redis_pink ==" in doctor.stdout
    assert "Holds no queue of a system this reads (an app's cache?)" in doctor.stdout
