"""Pure parsing and latency rules, on payloads captured from the real clients (tests/payloads/)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queue_metrics.systems import celery, rq, sidekiq
from queue_metrics.systems.timestamps import PayloadError, epoch_seconds, iso8601_seconds, latency

PAYLOADS = os.path.join(os.path.dirname(__file__), "payloads")


def captured(name: str) -> bytes:
    with open(os.path.join(PAYLOADS, name), "rb") as handle:
        return handle.read()


def test_sidekiq6_job_captured_from_the_real_client():
    payload = captured("sidekiq6_job.json")
    enqueued_at = json.loads(payload)["enqueued_at"]
    assert isinstance(enqueued_at, float)
    assert sidekiq.job_enqueued_at(payload) == enqueued_at
    assert sidekiq.queue_latency(payload, enqueued_at + 3.25) == pytest.approx(3.25)


def test_sidekiq8_milliseconds_by_magnitude_not_type():
    job = {"class": "X", "args": [], "created_at": 1795387602000, "enqueued_at": 1795387602364}
    assert sidekiq.job_enqueued_at(json.dumps(job).encode()) == pytest.approx(1795387602.364)
    job["enqueued_at"] = "1795387602364"  # Lua clients wrote strings
    assert sidekiq.job_enqueued_at(json.dumps(job).encode()) == pytest.approx(1795387602.364)
    job["enqueued_at"] = 1795387602.3642073
    assert sidekiq.job_enqueued_at(json.dumps(job).encode()) == pytest.approx(1795387602.3642073)


def test_sidekiq_job_without_enqueued_at_counts_zero_as_sidekiq_does():
    # Sidekiq::Queue#latency reads enqueued_at only (checked against Sidekiq 6.4.1 in test_sidekiq).
    assert sidekiq.job_enqueued_at(b'{"created_at": 1795387600.5}') is None
    assert sidekiq.queue_latency(b'{"created_at": 1795387600.5}', 1795387700.0) == 0.0
    assert sidekiq.queue_latency(None, 1795387600.0) == 0.0


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"enqueued_at": true}', "a boolean"),
        (b'{"enqueued_at": "soon"}', "not a number"),
        (b'{"enqueued_at": 12}', "before the year 2000"),
        (b'{"enqueued_at": {"t": 1}}', "an object"),
        (b"\xff\xfe\x00binary", "not JSON"),
    ],
)
def test_sidekiq_malformed_payloads_say_why(payload, message):
    with pytest.raises(PayloadError, match=message):
        sidekiq.job_enqueued_at(payload)


def test_future_timestamps_clamp_to_zero():
    assert latency(1000.0, 990.0) == 0.0
    assert sidekiq.queue_latency(b'{"enqueued_at": 1795387700}', 1795387600.0) == 0.0


def test_rq_enqueued_at_captured_from_the_real_client():
    job = json.loads(captured("rq_job_hash.json"))
    seconds = rq.job_enqueued_at(job["enqueued_at"].encode(), "id")
    assert seconds == pytest.approx(iso8601_seconds(job["enqueued_at"][:-1] + "+00:00", "x"))
    assert job["enqueued_at"].endswith("Z")


def test_rq_timestamp_forms_and_missing_hash():
    assert rq.job_enqueued_at(b"2026-11-23T00:05:48Z", "id") == pytest.approx(1795392348.0)
    assert rq.job_enqueued_at(b"2026-11-23T00:05:48.550918Z", "id") == pytest.approx(1795392348.550918)
    with pytest.raises(PayloadError, match="expired"):
        rq.job_enqueued_at(None, "abc")
    with pytest.raises(PayloadError, match="not an ISO 8601"):
        rq.job_enqueued_at(b"yesterday", "abc")
    with pytest.raises(PayloadError, match="not text"):
        rq.job_enqueued_at(b"\xff\xfe", "abc")


def test_celery_message_without_stamp_has_no_latency():
    assert celery.message_wait(captured("celery_plain_message.json"), 1795392400.0) is None


def test_celery_message_stamped_by_the_hook():
    payload = captured("celery_stamped_message.json")
    published_at = json.loads(payload)["properties"]["published_at"]
    assert celery.message_wait(payload, published_at + 2.5) == pytest.approx(2.5)


def test_celery_message_waits_from_its_stamp_whatever_its_eta():
    payload = captured("celery_eta_message.json")
    message = json.loads(payload)
    eta = iso8601_seconds(message["headers"]["eta"], "eta")
    stamp = message["properties"]["published_at"]
    assert eta > stamp + 1
    # Still in the list before its ETA: no worker has taken it, so it is waiting.
    assert celery.message_wait(payload, stamp + 1) == pytest.approx(1.0)
    assert celery.message_wait(payload, eta + 4) == pytest.approx(eta + 4 - stamp)


def test_celery_other_stamps_and_nested_headers():
    def message(headers=None, properties=None):
        return json.dumps({"body": "", "headers": headers or {}, "properties": properties or {}}).encode()

    now = 1795392400.0
    assert celery.message_wait(message({"run_at": "2026-11-23T00:06:30+00:00"}), now) == pytest.approx(10.0)
    assert celery.message_wait(message({"sentry-task-enqueued-time": now - 7}), now) == pytest.approx(7.0)
    assert celery.message_wait(message({"headers": {"sentry-task-enqueued-time": now - 8}}), now) == pytest.approx(8.0)
    assert celery.message_wait(message(properties={"published_at": str(now - 9)}), now) == pytest.approx(9.0)


def test_celery_queue_latency_is_the_oldest_head_and_unknown_if_any_head_unknown():
    now = 1795392400.0

    def stamped(age):
        return json.dumps({"headers": {}, "properties": {"published_at": now - age}}).encode()

    assert celery.queue_latency([stamped(2), None, stamped(9), None], now) == pytest.approx(9.0)
    assert celery.queue_latency([None, None], now) == 0.0
    assert celery.queue_latency([stamped(2), captured("celery_plain_message.json")], now) is None


def test_celery_priority_list_names_follow_kombu():
    reader = celery.Celery()
    assert reader.list_keys("high") == (b"high", b"high\x06\x163", b"high\x06\x166", b"high\x06\x169")
    prefixed = celery.Celery(celery.CelerySettings(sep=":", priority_steps=(0, 5), keyprefix="shop:"))
    assert prefixed.list_keys("q") == (b"shop:q", b"shop:q:5")


def test_celery_binding_keys_give_prefix_and_exchange():
    assert celery.split_binding_key("_kombu.binding.celery") == ("", "celery")
    assert celery.split_binding_key("shop:_kombu.binding.reports") == ("shop:", "reports")
    assert celery.split_binding_key("shop:queue") is None
    assert celery.Celery(celery.CelerySettings(keyprefix="a*b:")).scan_pattern == "a\\*b:_kombu.binding.*"


def test_epoch_seconds_rejects_non_finite():
    for value in (float("nan"), float("inf"), "nan", None):
        with pytest.raises(PayloadError):
            epoch_seconds(value, "enqueued_at")


def test_celery_held_entry_captured_from_a_real_worker():
    # An ETA task a real Celery 5.7 worker held: Celery publishes to the anonymous exchange.
    entry = captured("celery_unacked_entry.json")
    assert celery.held_route(entry) == ("", "celery") == tuple(json.loads(entry)[1:])


@given(
    message=st.dictionaries(st.text(), st.text() | st.integers() | st.none()),
    exchange=st.text() | st.none(),
    routing_key=st.text() | st.none(),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]),
)
def test_celery_held_entry_route_read_from_the_tail_equals_json(message, exchange, routing_key, ascii_only, indent):
    entry = json.dumps([message, exchange, routing_key], ensure_ascii=ascii_only, indent=indent)
    assert celery.held_route(entry.encode("utf-8", "surrogatepass")) == (exchange, routing_key)


@pytest.mark.parametrize(
    "entry",
    [
        b"",
        b"[]",
        b'["celery"]',
        b'{"a": "b"}',
        b'[{}, 1, "celery"]',
        b'"x", "y"]',
        b'[{}, "a", "b\\"]',
        b'[{}, "a", celery]',
        b'[{}, "a" "b"]',
    ],
)
def test_celery_held_entry_that_is_not_one_says_so(entry):
    with pytest.raises(PayloadError, match="held message is not JSON"):
        celery.held_route(entry)


def test_parsed_heads_parse_a_payload_once_while_ticks_read_it():
    from queue_metrics.systems.contract import ParsedHeads

    parsed = []

    def parse(payload: bytes) -> float:
        parsed.append(payload)
        return float(len(payload))

    heads = ParsedHeads()
    heads.start_tick()
    assert heads.parsed(b"job-1", parse) == 5.0
    heads.start_tick()
    assert heads.parsed(b"job-1", parse) == 5.0  # the same head at the next tick: not parsed again
    assert heads.parsed(b"job-22", parse) == 6.0  # a new head is parsed
    assert parsed == [b"job-1", b"job-22"]
    heads.start_tick()
    heads.start_tick()  # a tick that read neither: both forgotten
    assert heads.parsed(b"job-1", parse) == 5.0
    assert parsed == [b"job-1", b"job-22", b"job-1"]


def test_parsed_heads_never_keep_a_payload_that_failed():
    from queue_metrics.systems.contract import ParsedHeads

    calls = []

    def parse(payload: bytes) -> float:
        calls.append(payload)
        raise PayloadError("oldest job is not JSON")

    heads = ParsedHeads()
    for _ in range(2):
        heads.start_tick()
        with pytest.raises(PayloadError):
            heads.parsed(b"{not json", parse)
    assert len(calls) == 2  # reported at every tick, not once
