"""Bad input: malformed payloads (property-based), wrong key types, odd queue names, many queues.
Nothing crashes, nothing is made up, and one bad queue never hides the others."""

from __future__ import annotations

import json
import math
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.collect import by_queue, collect
from helpers.process import lines_of, queue_metrics
from queue_metrics.systems import celery, rq, sidekiq
from queue_metrics.systems.timestamps import PayloadError

NOW = 1795392400.0
LOGFMT_PAIR = re.compile(r'^[^\s="]+=[^\s="]+$')
LIBRATO_NAME = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")

numbers = st.one_of(st.integers(min_value=-(10**20), max_value=10**20), st.floats(allow_nan=True, allow_infinity=True))
timestamps = st.one_of(
    numbers,
    numbers.map(str),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.floats(min_value=NOW - 1e6, max_value=NOW + 1e6),
    st.integers(min_value=int(NOW * 1000) - 10**9, max_value=int(NOW * 1000) + 10**9),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        numbers.filter(lambda x: not isinstance(x, float) or math.isfinite(x)),
        st.text(max_size=20),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def sidekiq_payloads():
    structured = st.fixed_dictionaries(
        {}, optional={"enqueued_at": timestamps, "created_at": timestamps, "class": json_values, "args": json_values}
    )
    return st.one_of(
        st.binary(max_size=200),
        structured.map(lambda job: json.dumps(job).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
        structured.map(lambda job: json.dumps(job).encode()[: max(0, len(json.dumps(job)) // 2)]),
    )


def celery_payloads():
    headers = st.fixed_dictionaries(
        {},
        optional={
            "eta": timestamps,
            "run_at": timestamps,
            "sentry-task-enqueued-time": timestamps,
            "headers": st.one_of(json_values, st.fixed_dictionaries({}, optional={"run_at": timestamps})),
        },
    )
    properties = st.fixed_dictionaries({}, optional={"published_at": timestamps, "priority": json_values})
    message = st.fixed_dictionaries(
        {},
        optional={
            "headers": st.one_of(headers, json_values),
            "properties": st.one_of(properties, json_values),
            "body": st.text(max_size=10),
        },
    )
    return st.one_of(
        st.binary(max_size=200),
        message.map(lambda m: json.dumps(m).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
    )


def acceptable(latency) -> bool:
    return latency is None or (isinstance(latency, float) and math.isfinite(latency) and latency >= 0)


@given(sidekiq_payloads())
@settings(max_examples=400, deadline=None)
def test_sidekiq_payloads_never_crash(payload):
    try:
        assert acceptable(sidekiq.queue_latency(payload, NOW))
    except PayloadError as error:
        assert "\n" not in str(error) and len(str(error)) < 200


@given(st.one_of(st.binary(max_size=60), timestamps.map(lambda value: str(value).encode())), st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_rq_enqueued_at_never_crashes(value, job_id):
    try:
        seconds = rq.job_enqueued_at(value, job_id)
        assert math.isfinite(seconds)
    except PayloadError as error:
        assert "\n" not in str(error)


@given(st.lists(st.one_of(st.none(), celery_payloads()), min_size=1, max_size=4))
@settings(max_examples=400, deadline=None)
def test_celery_payloads_never_crash(heads):
    try:
        assert acceptable(celery.queue_latency(heads, NOW))
    except PayloadError as error:
        assert "\n" not in str(error)


@given(bad=st.one_of(sidekiq_payloads(), st.binary(min_size=1, max_size=300)))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_malformed_job_never_hides_other_queues(client, redis_url, bad):
    client.flushall()
    good = json.dumps({"class": "X", "args": [], "enqueued_at": time.time() - 5})
    client.sadd("queues", "bad", "good")
    client.lpush("queue:good", good)
    client.lpush("queue:bad", bad, good)  # the malformed job is the oldest
    report = collect(redis_url)
    samples = by_queue(report)
    assert samples["good"].size == 1 and 4 < samples["good"].latency < 7
    assert samples["bad"].size == 2 and acceptable(samples["bad"].latency)
    assert all("\n" not in error for error in report.errors)


def test_huge_and_deeply_nested_payloads(client, redis_url):
    client.sadd("queues", "huge", "deep")
    client.lpush("queue:huge", json.dumps({"args": ["x" * 5_000_000], "enqueued_at": time.time() - 3}))
    client.lpush("queue:deep", "[" * 100_000 + "]" * 100_000)
    report = collect(redis_url)
    samples = by_queue(report)
    assert 2 < samples["huge"].latency < 5
    assert samples["deep"].size == 1 and samples["deep"].latency is None
    assert len(report.errors) == 1 and "deep" in report.errors[0]


def test_wrong_types_for_each_backend(client, redis_url):
    client.sadd("rq:queues", "rq:queue:hash", "rq:queue:gone", "rq:queue:badjob", "rq:queue:ok")
    client.hset("rq:queue:hash", "a", "b")
    client.rpush("rq:queue:badjob", "job1")
    client.set("rq:job:job1", "not a hash")
    client.rpush("rq:queue:ok", "job2")
    client.hset("rq:job:job2", "enqueued_at", "2026-11-23T00:00:00.000000Z")
    client.sadd("_kombu.binding.celery", "c\x06\x16\x06\x16c")
    client.lpush("c", json.dumps({"properties": {"published_at": time.time()}}))
    client.set("c\x06\x169", "a string where a priority list should be")
    report = collect(redis_url)
    rq_samples, celery_samples = by_queue(report, "rq"), by_queue(report, "celery")
    assert "hash" not in rq_samples
    assert (rq_samples["gone"].size, rq_samples["gone"].latency) == (0, 0.0)
    assert (rq_samples["badjob"].size, rq_samples["badjob"].latency) == (1, None)
    assert rq_samples["ok"].latency is not None
    assert (celery_samples["c"].size, celery_samples["c"].latency) == (1, None)
    assert len(report.errors) == 3
    assert all(error.count("\n") == 0 for error in report.errors)


ODD_NAMES = [
    "with space",
    "a=b",
    'say "hi"',
    "it's",
    "ünïcödé-名前",
    "tab\there",
    "new\nline",
    "high\x06\x163",
    "x" * 1000,
    "a_b",
    "a b",
    "a.b",
    "a:b",
    "-",
    "#hash",
    "émoji-🎉",
    "\x00nul",
]


def test_odd_queue_names_stay_valid_logfmt_and_distinct(client, redis_url):
    for name in ODD_NAMES:
        client.sadd("queues", name)
        client.lpush(f"queue:{name}", json.dumps({"enqueued_at": time.time()}))
    result = queue_metrics("once", env={"REDIS_URL": redis_url, "QUEUE_METRICS_SOURCE": "web.1"})
    assert result.returncode == 0, result.stderr
    names = []
    for line in lines_of(result.stdout):
        assert len(line.encode()) < 10_000
        pairs = line.split(" ")
        assert pairs[0] == "source=web.1"
        for pair in pairs:
            assert LOGFMT_PAIR.match(pair), pair
            key = pair.split("=", 1)[0]
            if key.startswith("sample#") and key.endswith(".size"):
                names.append(key[len("sample#") :])
                assert LIBRATO_NAME.match(key[len("sample#") :]), key
    assert len(names) == len(set(names)) == len(ODD_NAMES)
    assert "queue.sidekiq.a_b.size" in names and "queue.sidekiq.a.b.size" in names
    assert "queue.sidekiq.a:b.size" in names


def test_odd_names_in_json_round_trip(client, redis_url):
    for name in ODD_NAMES:
        client.sadd("queues", name)
    result = queue_metrics("once", "--format", "json", env={"REDIS_URL": redis_url})
    (line,) = lines_of(result.stdout)
    assert sorted(queue["queue"] for queue in json.loads(line)["queues"]) == sorted(ODD_NAMES)


def test_ten_thousand_queues_all_appear_on_short_lines(client, redis_url):
    pipe = client.pipeline(transaction=False)
    for index in range(10_000):
        pipe.sadd("queues", f"queue-number-{index:05d}")
        pipe.lpush(f"queue:queue-number-{index:05d}", json.dumps({"enqueued_at": time.time() - index % 50}))
    pipe.execute()
    result = queue_metrics("once", env={"REDIS_URL": redis_url, "QUEUE_METRICS_SOURCE": "web.1"})
    assert result.returncode == 0, result.stderr
    lines = lines_of(result.stdout)
    assert max(len(line.encode()) for line in lines) <= 1000
    sizes = re.findall(r"sample#queue\.sidekiq\.(queue-number-\d{5})\.size=1 ", result.stdout + " ")
    assert len(set(sizes)) == 10_000
    assert lines[-1].startswith("source=web.1 sample#queue.collector.queues=10000 sample#queue.collector.errors=0 ")


def test_numbers_too_big_for_a_float_lose_only_their_figure(client, redis_url):
    """A JSON integer of hundreds of digits, or 1e999, where a timestamp or a thread count goes."""
    client.sadd("queues", "huge", "fine")
    client.lpush("queue:huge", '{"class": "X", "enqueued_at": ' + "9" * 400 + "}")
    client.lpush("queue:fine", json.dumps({"class": "X", "enqueued_at": time.time()}))
    client.sadd("processes", "web.1:1:abc")
    client.hset("web.1:1:abc", mapping={"busy": 1, "beat": time.time(), "info": '{"concurrency": 1e999}'})
    report = collect(redis_url)
    samples = by_queue(report, "sidekiq")
    assert (samples["huge"].size, samples["huge"].latency) == (1, None)
    assert samples["fine"].latency is not None
    assert any('"huge"' in error and "not a finite number" in error for error in report.errors)
    assert any("concurrency" in error for error in report.errors)
    assert all("\n" not in error for error in report.errors)
