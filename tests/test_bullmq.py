"""BullMQ 6, BullMQ 5 and Bull 4: jobs added by the real libraries (tests/helpers/bullmq_driver.js);
the libraries' own counts (`getJobCounts`, `getWaitingCount`, BullMQ 6's `getDelayedCount(now)`)
and each job's own `timestamp` are the reference."""

from __future__ import annotations

import json
import os
import time

import pytest

from helpers.bullmq import BullDriver
from helpers.collect import by_queue, collect, make_collector
from helpers.process import queue_metrics
from helpers.workers import queue_figures, wait_for
from queue_metrics.errors import ErrorLog, PayloadError
from queue_metrics.systems.bullmq import (
    JOB_FIELDS,
    BullMQ,
    BullMQSettings,
    _ends,
    _oldest_prioritized,
    delayed_due_ms,
    due_bound,
    job_ready_ms,
    queue_latency,
)

LIBRARIES = ("bullmq", "bullmq5", "bull")
PAYLOADS = os.path.join(os.path.dirname(__file__), "payloads")


@pytest.fixture(params=LIBRARIES)
def lib(request):
    return request.param


@pytest.fixture
def driver(lib, redis_url):
    with BullDriver(lib, redis_url) as running:
        yield running


def library_waiting(counts: dict) -> int:
    """What waits by the library's own counts: wait (+ paused list) + prioritized."""
    return counts["waiting"] + counts["counts"].get("prioritized", 0)


def oldest_ready_ms(jobs) -> float:
    return min(job["timestamp"] + job["delay"] for job in jobs)


def test_sizes_equal_the_library_counts_and_latency_the_oldest_job(driver, redis_url):
    added = driver.call("add", queue="mail", count=3)
    driver.call("add", queue="mail", opts={"lifo": True})
    driver.call("add", queue="mail", opts={"priority": 5}, count=2)
    driver.call("add", queue="mail", opts={"delay": 600_000})
    due = driver.call("add", queue="mail", opts={"delay": 1})
    driver.call("add", queue="other")
    time.sleep(1.0)

    report = collect(redis_url)
    now = time.time()
    counts = driver.call("counts", queue="mail")
    assert report.errors == () and report.backends == ("bullmq",)
    sample = by_queue(report)["mail"]
    # The due delayed job (delay 1 ms, a second ago) counts as waiting: the library counts it
    # among `delayed` until a worker promotes it.
    assert sample.size == library_waiting(counts) + 1 == 7
    if driver.lib == "bullmq":
        assert counts["due"] == 1
    figures = queue_figures(report, "bullmq", "mail")
    assert figures["delayed"] == counts["counts"]["delayed"] - 1 == 1
    assert figures["prioritized"] == counts["counts"].get("prioritized", 0)
    assert (figures["active"], figures["failed"], figures["completed"], figures["paused"]) == (0, 0, 0, 0)
    assert by_queue(report)["other"].size == 1
    expected = now - added[0]["timestamp"] / 1000
    assert expected >= 1.0
    assert sample.latency == pytest.approx(expected, abs=0.5)
    assert due[0]["timestamp"] > added[0]["timestamp"]
    assert report.round_trips <= 3


def test_a_paused_queue_counts_its_jobs_and_says_it_is_paused(driver, redis_url, client):
    first = driver.call("add", queue="held", count=2)
    driver.call("pause", queue="held")
    driver.call("add", queue="held")
    time.sleep(0.8)
    report = collect(redis_url)
    now = time.time()
    counts = driver.call("counts", queue="held")
    assert counts["paused"] is True
    sample = by_queue(report)["held"]
    assert sample.size == library_waiting(counts) == 3
    assert queue_figures(report, "bullmq", "held")["paused"] == 1
    assert sample.latency == pytest.approx(now - first[0]["timestamp"] / 1000, abs=0.5)
    # The layouts differ, as the module's docstring says: v6 keeps the jobs in `wait`.
    kind = client.type("bull:held:paused").decode()
    assert kind == ("none" if driver.lib == "bullmq" else "list")
    assert report.errors == ()


def test_due_delayed_jobs_with_no_worker_count_as_waiting(driver, redis_url):
    jobs = driver.call("add", queue="later", opts={"delay": 300}, count=3)
    driver.call("add", queue="later", opts={"delay": 600_000})
    deadline = jobs[-1]["timestamp"] / 1000 + 0.3
    wait_for(lambda: time.time() > deadline + 0.5, "the delayed jobs to be due", 10)
    report = collect(redis_url)
    now = time.time()
    counts = driver.call("counts", queue="later")
    sample = by_queue(report)["later"]
    assert library_waiting(counts) == 0 and counts["counts"]["delayed"] == 4
    if driver.lib == "bullmq":
        assert counts["due"] == 3
    assert sample.size == 3
    assert queue_figures(report, "bullmq", "later")["delayed"] == 1
    # Ready when due: created + delay.
    assert sample.latency == pytest.approx(now - (jobs[0]["timestamp"] + 300) / 1000, abs=0.5)


def test_a_queue_that_only_had_delayed_jobs_is_found(driver, redis_url):
    driver.call("add", queue="someday", opts={"delay": 600_000})
    sample = by_queue(collect(redis_url))["someday"]
    assert (sample.size, sample.latency) == (0, 0.0)


@pytest.mark.parametrize("lib", ["bullmq", "bullmq5"])
def test_flow_parents_waiting_for_children_are_not_waiting(driver, redis_url):
    driver.call("flow", queue="flows", children=2)
    report = collect(redis_url)
    counts = driver.call("counts", queue="flows")
    assert counts["counts"]["waiting-children"] == 1
    assert by_queue(report)["flows"].size == library_waiting(counts) == 2


@pytest.mark.parametrize("lib", ["bullmq", "bullmq5"])
def test_the_oldest_prioritized_job_is_found_behind_newer_urgent_ones(driver, redis_url):
    old = driver.call("add", queue="ranked", opts={"priority": 10})
    time.sleep(1.5)
    driver.call("add", queue="ranked", opts={"priority": 1}, count=3)
    report = collect(redis_url)
    now = time.time()
    counts = driver.call("counts", queue="ranked")
    sample = by_queue(report)["ranked"]
    assert sample.size == library_waiting(counts) == 4
    assert sample.latency == pytest.approx(now - old[0]["timestamp"] / 1000, abs=0.5)


@pytest.mark.parametrize("lib", ["bullmq", "bull"])
def test_a_worker_draining_a_backlog_gives_the_library_figures_at_every_step(driver, redis_url):
    driver.call("add", queue="work", data={"ms": 500}, count=2)
    time.sleep(0.5)
    driver.call("add", queue="work", data={"ms": 500}, count=4)
    collector = make_collector(redis_url)
    collector.tick()
    driver.call("worker", queue="work")
    checked = set()
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"checked {sorted(checked)}"
        before = driver.call("waiting", queue="work")
        report = collector.tick()
        now = time.time()
        after = driver.call("waiting", queue="work")
        if [job["id"] for job in before] != [job["id"] for job in after]:
            continue  # the worker took a job meanwhile: look again
        sample = by_queue(report)["work"]
        assert sample.size == len(before), before
        expected = now - oldest_ready_ms(before) / 1000 if before else 0.0
        assert sample.latency == pytest.approx(expected, abs=0.5), f"{len(before)} jobs waiting"
        assert report.errors == ()
        checked.add(len(before))
        if not before:
            break
        time.sleep(0.05)
    assert len(checked) >= 3, checked
    counts = driver.call("counts", queue="work")
    assert queue_figures(collector.tick(), "bullmq", "work")["completed"] == counts["counts"]["completed"]


@pytest.mark.parametrize("lib", ["bullmq"])
def test_a_marker_of_bullmq_before_5_is_not_counted(driver, redis_url, client):
    """BullMQ < 5 left `0:<ms>` marker ids at the right end of `wait`; BullMQ 6's own count still
    drops one (and removes it: so it is asked after our reading)."""
    jobs = driver.call("add", queue="old", count=2)
    client.rpush("bull:old:wait", f"0:{int(time.time() * 1000)}")
    time.sleep(0.5)
    report = collect(redis_url)
    now = time.time()
    counts = driver.call("counts", queue="old")
    sample = by_queue(report)["old"]
    assert sample.size == library_waiting(counts) == 2
    assert sample.latency == pytest.approx(now - jobs[0]["timestamp"] / 1000, abs=0.5)


# ---- discovery and settings


@pytest.mark.parametrize("lib", ["bull"])
def test_bull_queue_names_may_hold_colons_and_odd_characters(driver, redis_url):
    names = ["reports:daily", "with space", "{tagged}", "naïve"]
    for name in names:
        driver.call("add", queue=name)
    report = collect(redis_url)
    assert {name: by_queue(report)[name].size for name in names} == {name: 1 for name in names}
    assert report.errors == ()


@pytest.mark.parametrize("lib", ["bullmq"])
def test_names_are_remembered_between_passes_and_dropped_when_gone(driver, redis_url, client):
    driver.call("add", queue="a")
    driver.call("add", queue="b")
    system = BullMQ(BullMQSettings())
    keys = [key.decode() for key in client.scan_iter(match=system.scan_pattern)]
    system.found_keys(keys[:1], False)
    system.found_keys(keys[1:], False)
    assert list(system.queues([], ErrorLog()).queues) == ["a", "b"]
    system.found_keys(["bull:a:id"], True)
    assert list(system.queues([], ErrorLog()).queues) == ["a"]


def test_several_prefixes_name_their_queues(redis_url):
    with BullDriver("bullmq", redis_url, "app") as app, BullDriver("bull", redis_url) as bull:
        app.call("add", queue="emails", count=2)
        bull.call("add", queue="emails")
        samples = by_queue(collect(redis_url, QUEUE_METRICS_BULLMQ_PREFIX="bull,app"))
        assert {name: sample.size for name, sample in samples.items()} == {"app:emails": 2, "bull:emails": 1}
        only_app = by_queue(collect(redis_url, QUEUE_METRICS_BULLMQ_PREFIX="app"))
        assert {name: sample.size for name, sample in only_app.items()} == {"emails": 2}


@pytest.mark.parametrize("lib", ["bullmq"])
def test_once_json_and_doctor_show_bullmq(driver, redis_url):
    driver.call("add", queue="mail")
    once = queue_metrics("once", "--format", "json", env={"REDIS_URL": redis_url})
    assert once.returncode == 0, once.stderr
    (queue,) = json.loads(once.stdout)["queues"]
    assert (queue["backend"], queue["queue"], queue["size"]) == ("bullmq", "mail", 1)
    doctor = queue_metrics("doctor", env={"REDIS_URL": redis_url})
    assert "bullmq" in doctor.stdout and "bull:*:id" in doctor.stdout, doctor.stdout


# ---- bad input: one line naming the queue, the other queues unchanged


@pytest.mark.parametrize("lib", ["bullmq"])
def test_an_expired_job_hash_omits_that_latency_only(driver, redis_url, client):
    jobs = driver.call("add", queue="mail", count=2)
    driver.call("add", queue="other")
    client.delete(f"bull:mail:{jobs[0]['id']}")
    report = collect(redis_url)
    samples = by_queue(report)
    assert (samples["mail"].size, samples["mail"].latency) == (2, None)
    assert samples["other"].latency is not None
    (error,) = report.errors
    assert 'bullmq queue "mail"' in error and "expired" in error


@pytest.mark.parametrize("lib", ["bullmq"])
def test_a_timestamp_that_is_not_a_number_is_said(driver, redis_url, client):
    jobs = driver.call("add", queue="mail", count=2)
    client.hset(f"bull:mail:{jobs[0]['id']}", "timestamp", "yesterday")
    report = collect(redis_url)
    assert (by_queue(report)["mail"].size, by_queue(report)["mail"].latency) == (2, None)
    (error,) = report.errors
    assert "timestamp" in error and "yesterday" in error


@pytest.mark.parametrize("lib", ["bullmq"])
def test_a_key_of_the_wrong_type_loses_that_queue_only(driver, redis_url, client):
    driver.call("add", queue="fine")
    driver.call("add", queue="broken")
    client.delete("bull:broken:wait")
    client.set("bull:broken:wait", "not a list")
    client.set("bull:odd:id", "1")
    client.hset("bull:odd:prioritized", "x", "y")
    report = collect(redis_url)
    samples = by_queue(report)
    assert samples["fine"].size == 1 and "broken" not in samples and "odd" not in samples
    assert len(report.errors) == 2
    assert all("wrong type" in error for error in report.errors)
    assert any('"bull:broken:wait"' in error for error in report.errors)


# ---- pure functions, on hashes captured from the real library


def captured(name: str) -> list:
    with open(os.path.join(PAYLOADS, "bullmq_job_hashes.json")) as file:
        job = json.load(file)[name]
    return [None if job.get(field) is None else job[field].encode() for field in JOB_FIELDS]


def test_ready_time_rules_on_captured_hashes():
    # A promoted delayed job: BullMQ 4+ reset `delay`; opts.delay keeps it.
    assert job_ready_ms(captured("promoted_delayed"), "3") == 1796613121693 + 200
    assert job_ready_ms(captured("still_delayed"), "6") == 1796613000123 + 600000
    # A retried job: its last start (no backoff).
    assert job_ready_ms(captured("retried"), "1") == 1796613121692
    assert job_ready_ms(captured("plain"), "1") == 1796613000109
    assert job_ready_ms(captured("bull4_plain"), "1") == 1796613054027


def test_ready_time_refuses_what_is_not_a_timestamp():
    with pytest.raises(PayloadError, match="expired"):
        job_ready_ms([None] * len(JOB_FIELDS), "7")
    for bad in (b"abc", b"nan", b"12"):
        fields = captured("plain")
        fields[0] = bad
        with pytest.raises(PayloadError, match="timestamp"):
            job_ready_ms(fields, "7")


def test_delayed_scores_due_bound_and_latency():
    # Observed: BullMQ 6 score of a job due at 1796613600124 ms (sequence 0).
    assert delayed_due_ms(b"7358929306107904") == 1796613600124
    now = 1796613600.124
    assert due_bound(now) == (1796613600124 + 1) * 4096 - 1
    assert queue_latency([], now) == 0.0
    assert queue_latency([1796613599124.0, 1796613600000.0], now) == pytest.approx(1.0)


def test_list_ends_skip_markers_and_prioritized_oldest_by_counter():
    assert _ends([b"2", b"1"], b"3") == ([b"1", b"3"], 0)
    assert _ends([b"1", b"0:123"], b"2") == ([b"1", b"2"], 1)
    assert _ends([b"0:123"], b"0:123") == ([], 1)
    assert _ends([], None) == ([], 0)
    # priority 1 jobs (counter 2, 3) run before the priority 10 job (counter 1), which is oldest.
    scores = [b"2", b"4294967298", b"3", b"4294967299", b"1", b"42949672961"]
    assert _oldest_prioritized(scores) == b"1"


@pytest.mark.parametrize("lib", ["bullmq"])
def test_a_steady_queue_costs_one_round_trip_and_a_rerun_job_is_read_again(driver, redis_url, client):
    """The ready times found at the last tick hold while each job's `processedOn` is the same
    (one HGET in the first round trip instead of a follow-up); a job run again is read anew."""
    jobs = driver.call("add", queue="steady", count=3)
    collector = make_collector(redis_url)
    collector.tick()
    collector.tick()
    report = collector.tick()
    assert report.round_trips == 1 and report.errors == ()
    started = int(time.time() * 1000) - 200
    # What a retry leaves on the job (its last start, one attempt made), as BullMQ 6 writes it.
    client.hset(f"bull:steady:{jobs[0]['id']}", mapping={"processedOn": started, "atm": 1})
    report = collector.tick()
    assert report.round_trips == 2
    assert by_queue(report)["steady"].latency == pytest.approx(time.time() - started / 1000, abs=0.3)


@pytest.mark.parametrize("lib", ["bullmq", "bullmq5"])
def test_a_read_only_user_reads_every_figure_and_changes_no_key(driver, redis_url, client):
    driver.call("add", queue="mail", count=2)
    driver.call("add", queue="mail", opts={"priority": 3})
    driver.call("add", queue="mail", opts={"delay": 1})
    driver.call("add", queue="mail", opts={"delay": 600_000})
    driver.call("flow", queue="mail", children=1)
    driver.call("add", queue="held")
    driver.call("pause", queue="held")
    time.sleep(0.2)
    password = "reader-Pa55word"
    client.execute_command("ACL", "SETUSER", "reader", "on", f">{password}", "~*", "-@all", "+@read", "-@dangerous")
    port = client.connection_pool.connection_kwargs["port"]
    before = {key: (client.type(key), client.dump(key)) for key in client.scan_iter(count=1000)}
    collector = make_collector(f"redis://reader:{password}@127.0.0.1:{port}/0")
    for _ in range(20):
        report = collector.tick()
        assert report.errors == () and {sample.queue for sample in report.samples} == {"mail", "held"}
    # 2 + 1 prioritized + the flow's child, and the due delayed job.
    assert by_queue(report)["mail"].size == library_waiting(driver.call("counts", queue="mail")) + 1 == 5
    assert before == {key: (client.type(key), client.dump(key)) for key in client.scan_iter(count=1000)}


# ---- stuck jobs and due jobs (issue 27)


def _oldest_active(driver, queue: str) -> dict:
    """The running job that started first, as the library records it."""
    jobs = driver.call("active", queue=queue)
    assert jobs, "no job running"
    return min(jobs, key=lambda job: job["processedOn"])


def test_running_age_grows_and_matches_the_workers_own_start(driver, redis_url):
    driver.call("add", queue="slow", data={"ms": 8000})
    driver.call("add", queue="slow", data={"ms": 8000})
    driver.call("worker", queue="slow", concurrency=2)
    wait_for(lambda: len(driver.call("active", queue="slow")) == 2, "two jobs to run", 20)
    collector = make_collector(redis_url)
    ages = []
    for _ in range(3):
        report = collector.tick()
        now = time.time()
        figures = queue_figures(report, "bullmq", "slow")
        started = _oldest_active(driver, "slow")["processedOn"] / 1000
        assert figures["running"] == figures["active"] == 2
        assert figures["running_age"] == pytest.approx(now - started, abs=1.0)
        ages.append(figures["running_age"])
        assert report.errors == ()
        time.sleep(0.6)
    assert ages[0] < ages[1] < ages[2]
    # A steady tick reads the same job's start in its first round trip.
    assert collector.tick().round_trips == 1


def test_nothing_running_and_nothing_due_omit_the_ages(driver, redis_url):
    driver.call("add", queue="calm", opts={"delay": 600_000})
    figures = queue_figures(collect(redis_url), "bullmq", "calm")
    assert (figures["running"], figures["due"]) == (0, 0)
    assert "running_age" not in figures and "due_age" not in figures


def test_due_jobs_with_no_worker_then_a_worker_promotes_them(driver, redis_url):
    jobs = driver.call("add", queue="later", opts={"delay": 300}, count=3)
    driver.call("add", queue="later", opts={"delay": 600_000})
    due_at = (jobs[0]["timestamp"] + 300) / 1000
    wait_for(lambda: time.time() > jobs[-1]["timestamp"] / 1000 + 0.8, "the delayed jobs to be due", 10)
    collector = make_collector(redis_url)
    ages = []
    for _ in range(2):
        report = collector.tick()
        now = time.time()
        figures = queue_figures(report, "bullmq", "later")
        if driver.lib == "bullmq":
            assert driver.call("counts", queue="later")["due"] == 3
        # Counted in size too (no worker has promoted them): `due` says which part of it.
        assert figures["due"] == by_queue(report)["later"].size == 3
        assert figures["due_age"] == pytest.approx(now - due_at, abs=0.5)
        ages.append(figures["due_age"])
        time.sleep(0.5)
    assert ages[1] > ages[0]
    driver.call("worker", queue="later")
    wait_for(lambda: queue_figures(collector.tick(), "bullmq", "later")["due"] == 0, "the worker to promote them", 20)
    figures = queue_figures(collector.tick(), "bullmq", "later")
    assert "due_age" not in figures and figures["delayed"] == 1


@pytest.mark.parametrize("lib", ["bullmq"])
def test_an_active_job_whose_hash_is_gone_omits_running_age_only(driver, redis_url, client):
    driver.call("add", queue="lost", data={"ms": 8000})
    driver.call("add", queue="fine", data={"ms": 8000})
    driver.call("worker", queue="lost")
    driver.call("worker", queue="fine")
    wait_for(lambda: driver.call("active", queue="lost") and driver.call("active", queue="fine"), "jobs to run", 20)
    collector = make_collector(redis_url)
    collector.tick()  # the next tick checks the known job's start in its first round trip
    job = _oldest_active(driver, "lost")
    client.delete(f"bull:lost:{job['id']}")
    report = collector.tick()
    lost = queue_figures(report, "bullmq", "lost")
    assert lost["running"] == 1 and "running_age" not in lost
    assert "running_age" in queue_figures(report, "bullmq", "fine")
    (line,) = report.errors
    assert "lost" in line and "running_age unknown" in line and "processedOn" in line
    # A start that is not a number: said, omitted, never a wrong age.
    client.hset(f"bull:lost:{job['id']}", "processedOn", "soon")
    report = collector.tick()
    assert "running_age" not in queue_figures(report, "bullmq", "lost")
    assert any("not a number" in line for line in report.errors)


@pytest.mark.parametrize("lib", ["bullmq"])
def test_extras_off_reports_none_of_the_incident_figures(driver, redis_url):
    driver.call("add", queue="plain", data={"ms": 4000})
    driver.call("add", queue="plain", opts={"delay": 1})
    driver.call("worker", queue="plain")
    wait_for(lambda: driver.call("active", queue="plain"), "a job to run", 20)
    report = collect(redis_url, QUEUE_METRICS_EXTRAS="false")
    figures = queue_figures(report, "bullmq", "plain")
    assert not {"running", "running_age", "due", "due_age"} & set(figures)


def test_a_steady_queue_that_gains_rarer_keys_shows_them_at_the_next_tick(driver, redis_url):
    """A queue of plain jobs is read lean (one EXISTS for its absent `paused`, `prioritized`,
    `delayed`, `meta-paused`); what the library adds to those keys shows at the very next tick."""
    driver.call("add", queue="mail", count=2)
    reader = make_collector(redis_url, QUEUE_METRICS_BACKENDS="bullmq")
    for _ in range(2):
        report = reader.tick()
        assert by_queue(report)["mail"].size == 2
    driver.call("add", queue="mail", opts={"priority": 3}, count=2)
    driver.call("add", queue="mail", opts={"delay": 600_000})
    report = reader.tick()
    counts = driver.call("counts", queue="mail")
    assert by_queue(report)["mail"].size == library_waiting(counts) == 4
    figures = queue_figures(report, "bullmq", "mail")
    # Bull 4 ranks priority jobs inside `wait` (no `prioritized` set): the library's own count.
    prioritized = counts["counts"].get("prioritized", 0)
    assert prioritized == (0 if driver.lib == "bull" else 2)
    assert (figures["prioritized"], figures["delayed"], figures["paused"]) == (prioritized, 1, 0)
    assert report.round_trips <= 3
    driver.call("pause", queue="mail")
    report = reader.tick()
    assert queue_figures(report, "bullmq", "mail")["paused"] == 1
    assert by_queue(report)["mail"].size == library_waiting(driver.call("counts", queue="mail"))
