"""Resque: jobs enqueued and worked by the real node-resque 9.7.1 (it writes Resque's own keys,
tests/helpers/resque_driver.js). Its `queue.length`, `queue.workers()`, `queue.allWorkingOn()` and
`queue.failedCount()` are the reference; latency is checked against each job's own enqueue time,
taken by the producer just before it enqueued the job."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from datetime import datetime

import pytest

import queue_metrics.systems.resque as resque_system
from helpers.collect import by_queue, collect, make_collector
from helpers.process import queue_metrics
from helpers.workers import HELPERS, queue_figures, system_figures, wait_for
from queue_metrics.errors import PayloadError
from queue_metrics.sample import LATENCY_FROM_STAMP, LATENCY_OBSERVED
from queue_metrics.systems.observed import NOT_SEARCHED, ListObservers
from queue_metrics.systems.resque import ACTIVE_JOB_WRAPPER, ResqueSettings, job_enqueued_at

DRIVER = os.path.join(HELPERS, "resque_driver.js")
PAYLOADS = os.path.join(os.path.dirname(__file__), "payloads")
INTERVAL = 1.0
ODD_NAMES = ("with space", "{braces}", "naïve ☃")


def node_resque(url: str, command: str, payload: dict):
    """One command of the driver (enqueue, stats); its JSON answer."""
    result = subprocess.run(
        ["node", DRIVER, url, command], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def enqueue(url: str, jobs: list, namespace: str = "resque") -> list:
    return node_resque(url, "enqueue", {"jobs": jobs, "namespace": namespace})


def stats(url: str, queues=()) -> dict:
    return node_resque(url, "stats", {"queues": list(queues)})


@contextlib.contextmanager
def node_workers(url: str, queues: list):
    """Real node-resque Workers, one per list of queues, in one node process."""
    process = subprocess.Popen(
        ["node", DRIVER, url, "work"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    process.stdin.write(json.dumps({"queues": queues, "timeout_ms": 50}))
    process.stdin.close()
    try:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


class Producer(threading.Thread):
    """The driver's `produce`: enqueues round-robin at a steady rate; each job's enqueue time."""

    def __init__(self, url: str, queues: list, per_second: float, seconds: float, nap_ms: int) -> None:
        super().__init__(daemon=True)
        self.enqueued_at = {}
        self.process = subprocess.Popen(
            ["node", DRIVER, url, "produce"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        plan = {"queues": queues, "per_second": per_second, "seconds": seconds, "nap_ms": nap_ms}
        self.process.stdin.write(json.dumps(plan))
        self.process.stdin.close()

    def run(self) -> None:
        for line in self.process.stdout:
            job = json.loads(line)
            self.enqueued_at[job["id"]] = job["at"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.join(timeout=10)


def job_id(payload: bytes) -> str:
    """The test's id of a job: the first argument, of the job or of the ActiveJob job data."""
    args = json.loads(payload)["args"]
    return args[0]["arguments"][0] if isinstance(args[0], dict) else args[0]


def active_job(queue: str, *arguments, **data) -> dict:
    return {"queue": queue, "active_job": {"arguments": list(arguments), **data}}


# ---- pure: the stamps, on payloads captured from node-resque


def captured(name: str) -> bytes:
    with open(os.path.join(PAYLOADS, name), "rb") as file:
        return json.dumps(json.load(file)).encode()


def test_active_job_enqueued_at_with_nine_fraction_digits_and_none():
    payload = captured("resque_active_job.json")
    stamp = json.loads(payload)["args"][0]["enqueued_at"]
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 10  # Rails 7.1+: iso8601(9)
    expected = datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
    assert job_enqueued_at(payload) == pytest.approx(expected, abs=1e-6)  # rel's default is 30 min here
    # Rails before 7.1 wrote whole seconds.
    older = json.loads(payload)
    older["args"][0]["enqueued_at"] = "2026-12-07T03:13:10Z"
    assert (
        job_enqueued_at(json.dumps(older).encode()) == datetime.fromisoformat("2026-12-07T03:13:10+00:00").timestamp()
    )
    assert job_enqueued_at(captured("resque_plain_job.json")) is None


def test_active_job_scheduled_with_a_wait_is_ready_from_its_scheduled_at():
    """ActiveJob serializes a job when it is scheduled (`set(wait:)`, and every `retry_on` retry):
    `enqueued_at` is then, and the job reaches its Resque queue (resque-scheduler pushes the same
    payload) only at `scheduled_at`. Captured from ActiveJob 7.1.6's own `serialize` after
    `set(wait: 600)`, as its ResqueAdapter#enqueue_at hands it to Resque."""
    payload = captured("resque_active_job_scheduled.json")
    data = json.loads(payload)["args"][0]
    scheduled = datetime.fromisoformat(data["scheduled_at"][:26] + "+00:00").timestamp()
    enqueued = datetime.fromisoformat(data["enqueued_at"][:26] + "+00:00").timestamp()
    assert scheduled - enqueued == pytest.approx(600, abs=1)
    assert job_enqueued_at(payload) == pytest.approx(scheduled, abs=0.001)
    # A scheduled_at before enqueued_at (a wait_until in the past) leaves enqueued_at.
    data["scheduled_at"] = "2026-12-07T03:00:00Z"
    assert job_enqueued_at(json.dumps({"class": ACTIVE_JOB_WRAPPER, "args": [data]}).encode()) == pytest.approx(
        enqueued, abs=0.001
    )
    data["scheduled_at"] = "later"
    with pytest.raises(PayloadError, match=r"^args\[0\].scheduled_at is not an ISO 8601 time: 'later'$"):
        job_enqueued_at(json.dumps({"class": ACTIVE_JOB_WRAPPER, "args": [data]}).encode())


def test_judoscale_timestamp_wins_and_bad_stamps_say_why():
    # judoscale-resque adds `timestamp` (Time.now.utc.to_f) to the payload Resque.push writes.
    job = json.loads(captured("resque_plain_job.json"))
    assert job_enqueued_at(json.dumps({**job, "timestamp": 1796613190.25}).encode()) == 1796613190.25
    with pytest.raises(PayloadError, match="^timestamp is not a number: 'soon'$"):
        job_enqueued_at(json.dumps({**job, "timestamp": "soon"}).encode())
    wrapped = json.loads(captured("resque_active_job.json"))
    wrapped["args"][0]["enqueued_at"] = "yesterday"
    with pytest.raises(PayloadError, match=r"^args\[0\].enqueued_at is not an ISO 8601 time: 'yesterday'$"):
        job_enqueued_at(json.dumps(wrapped).encode())
    with pytest.raises(PayloadError, match=r"^oldest job is not JSON \(8 bytes\)$"):
        job_enqueued_at(b"garbage{")
    # A plain job whose first argument happens to be a hash is no ActiveJob job.
    assert job_enqueued_at(json.dumps({**job, "args": [{"enqueued_at": "x"}]}).encode()) is None


def test_lpos_from_the_tail_counts_the_jobs_pushed_since():
    observers = ListObservers(newest_at_head=False)
    # LPOS ... RANK -1 COUNT 2: the index from the head of the last newest job.
    assert observers._pushed([9], 10) == 0
    assert observers._pushed([6], 10) == 3
    assert observers._pushed([], 10) is None  # popped, with all that was older
    assert observers._pushed([9, 4], 10) == NOT_SEARCHED  # twins: ambiguous
    assert observers._pushed(NOT_SEARCHED, 10) == NOT_SEARCHED


def test_settings():
    assert ResqueSettings.from_env({}) == ResqueSettings("resque", ())
    own = ResqueSettings.from_env(
        {"QUEUE_METRICS_RESQUE_NAMESPACE": " resque:shop ", "QUEUE_METRICS_RESQUE_QUEUES": "a,b"}
    )
    assert own == ResqueSettings("resque:shop", ("a", "b"))


# ---- the real node-resque


def test_sizes_equal_node_resque_and_latency_from_active_job_enqueued_at(redis_url):
    queues = ["default", "mailers", *ODD_NAMES]
    done = enqueue(
        redis_url,
        [
            active_job("default", "a"),
            active_job("default", "b"),
            {"queue": "mailers", "class": "Nap", "args": ["c", 1]},
            active_job("default", "d"),
            *[active_job(name, name) for name in ODD_NAMES],
        ],
    )
    time.sleep(1.0)
    report = collect(redis_url)
    now = time.time()
    samples = by_queue(report, "resque")
    assert report.errors == () and report.backends == ("resque",)
    assert {name: sample.size for name, sample in samples.items()} == stats(redis_url, queues)["lengths"]
    first = {job["queue"]: job["at"] for job in reversed(done)}
    for name in ("default", *ODD_NAMES):
        assert samples[name].latency == pytest.approx(now - first[name], abs=0.5)
        assert samples[name].latency >= 1.0 and samples[name].latency_source == LATENCY_FROM_STAMP
    # No stamp: observed over ticks, so unknown at the first.
    assert (samples["mailers"].latency, samples["mailers"].latency_source) == (None, LATENCY_OBSERVED)


def test_once_json_and_lines_name_the_system(redis_url):
    enqueue(redis_url, [active_job("default", "a"), {"queue": "default", "class": "Boom"}])
    env = {"QUEUE_METRICS_REDIS_URL": redis_url}
    document = json.loads(queue_metrics("once", "--format", "json", env=env).stdout)
    assert [(q["backend"], q["queue"], q["size"], q["latency_source"]) for q in document["queues"]] == [
        ("resque", "default", 2, "stamp")
    ]
    assert document["systems"] == [{"datastore": "redis", "backend": "resque", "failed": 0, "workers": 0, "working": 0}]
    lines = queue_metrics("once", env=env).stdout
    assert "sample#queue.resque.default.size=2 sample#queue.resque.default.latency=" in lines
    doctor = queue_metrics("doctor", env=env).stdout
    assert "resque: in use: the 'resque:queues' set names 1 queue(s)" in doctor
    assert "2 jobs are waiting and no Resque worker is running" in doctor


def test_workers_working_and_failed_equal_node_resque(redis_url):
    enqueue(
        redis_url,
        [
            {"queue": "risky", "class": "Boom"},
            {"queue": "risky", "class": "Boom"},
            {"queue": "slow", "class": "Nap", "args": ["x", 8000]},
        ],
    )
    with node_workers(redis_url, [["risky"], ["slow"], ["idle"]]):

        def settled() -> bool:
            own = stats(redis_url)
            return own["failed"] == 2 and sum(isinstance(value, dict) for value in own["working"].values()) == 1

        wait_for(settled, "both Boom jobs failed and the Nap job runs")
        figures = system_figures(collect(redis_url), "resque")
        own = stats(redis_url)
    assert (
        {name: figure.value for name, figure in figures.items()}
        == {
            "failed": own["failed"],
            "workers": len(own["workers"]),
            "working": sum(isinstance(value, dict) for value in own["working"].values()),
        }
        == {"failed": 2, "workers": 3, "working": 1}
    )


def test_a_real_worker_drains_backlogs_while_the_collector_runs(redis_url, client):
    """Three queues, one worker each, fed faster than they drain: ActiveJob jobs (stamped), plain
    jobs (observed), and both in turn (whichever the oldest job is)."""
    kinds = {"stamped": "active_job", "plain": "plain", "mixed": "mixed"}
    producer = Producer(redis_url, [{"name": n, "kind": k} for n, k in kinds.items()], 9, 40, 600)
    producer.start()
    checked = []
    try:
        with node_workers(redis_url, [[name] for name in kinds]):
            time.sleep(1.0)
            collector = make_collector(redis_url, QUEUE_METRICS_INTERVAL=str(INTERVAL))
            for _ in range(14):
                before = {name: client.lindex(f"resque:queue:{name}", 0) for name in kinds}
                report = collector.tick()
                now = time.time()
                heads = {name: client.lindex(f"resque:queue:{name}", 0) for name in kinds}
                assert report.errors == ()
                for name, sample in by_queue(report, "resque").items():
                    # A head the worker took during the tick leaves us not knowing which job the
                    # tick saw (in "mixed", stamped or not): only an unchanged head is checked.
                    if sample.latency is None or heads[name] is None or heads[name] != before[name]:
                        continue
                    truth = now - producer.enqueued_at[job_id(heads[name])]
                    stamped = json.loads(heads[name])["class"].startswith("ActiveJob")
                    checked.append((name, sample.latency_source, sample.latency, truth, stamped))
                time.sleep(INTERVAL)
            producer.process.kill()
            time.sleep(0.5)
        final = collector.tick()
    finally:
        producer.stop()
    assert {s.queue: s.size for s in final.samples} == stats(redis_url, kinds)["lengths"]
    assert len(checked) >= 30, checked
    for name, source, reported, truth, stamped in checked:
        assert source == (LATENCY_FROM_STAMP if stamped else LATENCY_OBSERVED), (name, source, stamped)
        if stamped:
            # The head read just after the tick is the tick's, or the next job (1/3 s younger).
            assert truth - 0.5 <= reported <= truth + 0.5, (name, reported, truth)
        else:
            # Never above the truth; at most one interval below once seen arriving.
            assert reported <= truth + 0.5, (name, reported, truth)
    late = [(truth - reported) for name, source, reported, truth, _ in checked[len(checked) // 2 :] if name == "plain"]
    assert late and max(late) <= INTERVAL + 0.5, late


def test_a_queue_that_empties_and_refills_is_seen_arriving(redis_url, client):
    collector = make_collector(redis_url)
    enqueue(redis_url, [{"queue": "bursty", "class": "Nap", "args": ["a", 0]}])
    collector.tick()
    with node_workers(redis_url, [["bursty"]]):
        wait_for(lambda: stats(redis_url, ["bursty"])["lengths"]["bursty"] == 0, "the worker took the job")
    assert by_queue(collector.tick())["bursty"].latency == 0.0
    time.sleep(INTERVAL)
    (job,) = enqueue(redis_url, [{"queue": "bursty", "class": "Nap", "args": ["b", 0]}])
    collector.tick()
    time.sleep(2 * INTERVAL)
    sample = by_queue(collector.tick())["bursty"]
    truth = time.time() - job["at"]
    assert sample.latency_source == LATENCY_OBSERVED
    assert truth - INTERVAL - 0.5 <= sample.latency <= truth + 0.5


def test_identical_jobs_never_give_a_latency_above_the_truth(redis_url, client):
    """Plain Resque payloads carry no id: the same job enqueued twice is the same bytes. A backlog
    of twins, one enqueued and one taken between ticks, looks unchanged to a search for the last
    newest job; two copies found make the count ambiguous, and the figure stays a lower bound
    (here nothing) rather than grow from the first tick."""
    collector = make_collector(redis_url)
    twin = {"queue": "twins", "class": "Nap", "args": ["same", 0]}
    waiting = [job["at"] for job in enqueue(redis_url, [twin, twin])]  # enqueue times, oldest first
    collector.tick()
    for _ in range(5):
        time.sleep(INTERVAL / 2)
        waiting += [job["at"] for job in enqueue(redis_url, [twin])]
        client.lpop("resque:queue:twins")  # a worker's LPOP: the oldest goes
        waiting.pop(0)
        time.sleep(INTERVAL / 2)
        sample = by_queue(collector.tick())["twins"]
        assert sample.size == 2 and sample.latency_source == LATENCY_OBSERVED
        assert sample.latency is None or sample.latency <= time.time() - waiting[0] + 0.5, (sample, waiting)


def test_bad_input_one_line_per_queue_and_the_others_unchanged(redis_url, client):
    good = ["good", *ODD_NAMES]
    done = enqueue(
        redis_url, [active_job(name, name) for name in good] + [active_job("badtime", "x", enqueued_at="yesterday")]
    )
    lengths = stats(redis_url, good)["lengths"]  # before resque:failed turns into a hash
    plain = json.loads(captured("resque_plain_job.json"))
    client.sadd("resque:queues", "notjson", "badstamp", "wrongtype")
    client.rpush("resque:queue:notjson", b"garbage{")
    client.rpush("resque:queue:badstamp", json.dumps({**plain, "queue": "badstamp", "timestamp": "soon"}))
    client.set("resque:queue:wrongtype", "a string")
    client.hset("resque:failed", "not", "a list")
    collector = make_collector(redis_url)
    for _ in range(2):
        report = collector.tick()
        now = time.time()
        samples = by_queue(report, "resque")
        assert sorted(report.errors) == [
            'resque failed jobs "resque:failed": its key holds the wrong type of value (expected a list)',
            "resque queue \"badstamp\": latency unknown: timestamp is not a number: 'soon'",
            "resque queue \"badtime\": latency unknown: args[0].enqueued_at is not an ISO 8601 time: 'yesterday'",
            'resque queue "notjson": latency unknown: oldest job is not JSON (8 bytes)',
            'resque queue "wrongtype": its key holds the wrong type of value (expected a list)',
        ], report.errors
        assert {name: (s.size, s.latency) for name, s in samples.items() if name not in good} == {
            "notjson": (1, None),
            "badstamp": (1, None),
            "badtime": (1, None),
        }
        for job in done[: len(good)]:
            assert samples[job["queue"]].size == lengths[job["queue"]] == 1
            assert samples[job["queue"]].latency == pytest.approx(now - job["at"], abs=0.5)
        assert set(system_figures(report, "resque")) == {"workers", "working"}


def test_another_namespace_is_read_when_set(redis_url):
    (job,) = enqueue(redis_url, [active_job("default", "a")], namespace="resque:shop")
    assert collect(redis_url).backends == ()
    report = collect(redis_url, QUEUE_METRICS_RESQUE_NAMESPACE="resque:shop")
    sample = by_queue(report, "resque")["default"]
    assert (sample.size, report.errors) == (1, ())
    assert sample.latency == pytest.approx(time.time() - job["at"], abs=0.5)


def test_a_redis_without_lpos_keeps_stamped_latency_and_says_why_the_rest_has_none(make_server):
    """Redis before 6.0.6 has no LPOS (here: renamed away): ActiveJob queues keep their latency,
    plain ones report none ("unobservable"), and no queue fills the log with errors."""
    server = make_server(extra=["--rename-command", "LPOS", ""])
    enqueue(server.url, [active_job("stamped", "a"), {"queue": "plain", "class": "Nap", "args": ["b", 0]}])
    collector = make_collector(server.url)
    for _ in range(3):
        report = collector.tick()
        time.sleep(0.2)
    samples = by_queue(report, "resque")
    assert report.errors == ()
    assert (samples["stamped"].latency_source, samples["stamped"].latency > 0) == (LATENCY_FROM_STAMP, True)
    assert (samples["plain"].size, samples["plain"].latency, samples["plain"].latency_source) == (
        1,
        None,
        "unobservable",
    )


# ---- stuck jobs and queues nobody listens to (issue 27)


def test_worker_ids_queues_and_globs_as_resque_reads_them():
    worker_queues, takes = resque_system.worker_queues, resque_system.takes
    assert worker_queues("web.1:4242:mailers,default") == ("mailers", "default")
    assert worker_queues("host:4242:*") == ("*",)
    assert worker_queues("host:12-0:a:b") == ("a:b",)  # split at the first two colons only
    assert worker_queues("host:4242") is None and worker_queues("host:4242:") is None
    assert takes(("*",), "anything") and takes(("mail*",), "mailers") and takes(("a", "b"), "b")
    assert not takes(("mail*",), "default") and not takes(("mailers",), "mail")


def test_run_at_as_ruby_resque_and_node_resque_write_it():
    run_at_seconds, working_on = resque_system.run_at_seconds, resque_system.working_on
    assert run_at_seconds("2026-12-07T03:46:55Z") == datetime.fromisoformat("2026-12-07T03:46:55+00:00").timestamp()
    # node-resque: new Date().toString(), in the worker's own time zone.
    assert run_at_seconds("Mon Dec 07 2026 03:46:55 GMT+0000 (Coordinated Universal Time)") == run_at_seconds(
        "2026-12-07T03:46:55Z"
    )
    assert run_at_seconds("Mon Dec 07 2026 04:46:55 GMT+0100 (Central European Standard Time)") == run_at_seconds(
        "2026-12-07T03:46:55Z"
    )
    for bad in ("soon", 12, None, "Mon Feb 31 2026 03:46:55 GMT+0000"):
        with pytest.raises(PayloadError):
            run_at_seconds(bad)
    assert working_on(b'{"queue": "q", "run_at": "later", "payload": {}}').problem is not None
    for bad in (b"garbage{", b'{"run_at": "2026-12-07T03:46:55Z"}', b"[1]"):
        with pytest.raises(PayloadError):
            working_on(bad)


def test_consumers_and_running_age_with_real_workers(redis_url):
    enqueue(
        redis_url,
        [
            {"queue": "mailers", "class": "Nap", "args": ["m", 0]},
            {"queue": "slow", "class": "Nap", "args": ["a", 9000]},
            {"queue": "slow", "class": "Nap", "args": ["b", 9000]},
        ],
    )
    # Workers for other queues only: `mailers` has a job and no consumer.
    with node_workers(redis_url, [["slow"], ["other", "slow"]]):
        wait_for(lambda: len(stats(redis_url)["started"]) == 2, "both slow jobs to run")
        collector = make_collector(redis_url)
        ages = []
        for _ in range(3):
            report = collector.tick()
            now = time.time()
            started = min(job["at"] for job in stats(redis_url)["started"].values())
            slow = queue_figures(report, "resque", "slow")
            assert (slow["consumers"], slow["running"]) == (2, 2)
            # node-resque's run_at has whole seconds: the worker's own start, as node-resque reads it.
            assert slow["running_age"] == pytest.approx(now - started, abs=1.0)
            ages.append(slow["running_age"])
            mailers = queue_figures(report, "resque", "mailers")
            assert (mailers["consumers"], mailers["running"]) == (0, 0) and "running_age" not in mailers
            assert by_queue(report)["mailers"].size == 1
            assert report.errors == ()
            time.sleep(0.6)
        assert ages[0] < ages[2]
    # A worker for every queue: `mailers` gets its consumer, and its job runs.
    with node_workers(redis_url, [["*"]]):
        wait_for(lambda: stats(redis_url, ["mailers"])["lengths"]["mailers"] == 0, "the mailers job to run")
        report = collect(redis_url)
        assert queue_figures(report, "resque", "mailers")["consumers"] >= 1


def test_a_worker_payload_that_is_bad_omits_its_queues_running_only(redis_url, client):
    enqueue(redis_url, [{"queue": "fine", "class": "Nap", "args": ["f", 9000]}])
    with node_workers(redis_url, [["fine"]]):
        wait_for(lambda: len(stats(redis_url)["started"]) == 1, "the job to run")
        client.sadd("resque:queues", "broken", "late")
        client.sadd("resque:workers", "ghost:1:broken", "ghost:2:late", "ghost:3")
        client.set("resque:worker:ghost:1:broken", b"garbage{")
        client.set("resque:worker:ghost:2:late", json.dumps({"queue": "late", "run_at": "soon", "payload": {}}))
        collector = make_collector(redis_url)
        for _ in range(2):
            report = collector.tick()
            broken, late, fine = (queue_figures(report, "resque", name) for name in ("broken", "late", "fine"))
            assert "running" not in broken and "running_age" not in broken
            assert late["running"] == 1 and "running_age" not in late
            assert fine["running"] == 1 and "running_age" in fine
            # The worker id without queues: consumers is unknown everywhere, never counted short.
            assert not any("consumers" in figures for figures in (broken, late, fine))
            assert sorted(report.errors) == [
                'resque queue "late": running_age unknown: worker "ghost:2:late": run_at is not an ISO 8601 time: '
                "'soon'",
                'resque: "resque:worker:ghost:1:broken": worker payload is not JSON (8 bytes): running left out '
                "of the queues it takes (broken)",
                'resque: worker "ghost:3" (in "resque:workers") names no queues (<host>:<pid>:<queues>): '
                "consumers left out of every queue",
            ], report.errors


def test_extras_off_leaves_the_incident_figures_out(redis_url):
    enqueue(redis_url, [{"queue": "quiet", "class": "Nap", "args": ["q", 4000]}])
    with node_workers(redis_url, [["quiet"]]):
        wait_for(lambda: len(stats(redis_url)["started"]) == 1, "the job to run")
        figures = queue_figures(collect(redis_url, QUEUE_METRICS_EXTRAS="false"), "resque", "quiet")
    assert figures == {}
