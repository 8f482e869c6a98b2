"""Pure formatting: l2met lines and JSON from a TickReport."""

from __future__ import annotations

import json
import re

from queue_metrics.outputs.format import (
    MAX_LINE_BYTES,
    collector_metric_name,
    format_seconds,
    json_line,
    librato_lines,
    metric_queue_part,
    queue_metric_base,
    system_metric_name,
)
from queue_metrics.sample import (
    COUNTER,
    UNIT_RATIO,
    DatastoreSection,
    Figure,
    QueueSample,
    SystemSample,
    TickReport,
)

LOGFMT_PAIR = re.compile(r'^[^\s="]+=[^\s="]+$')
LIBRATO_NAME = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")


def report(*samples, backends=("sidekiq",), errors=(), duration=0.0042):
    return TickReport(tuple(samples), tuple(errors), backends, duration, True, 2)


def test_the_product_line():
    lines = librato_lines(report(QueueSample("sidekiq", "default", 12, 3.2)))
    assert lines == [
        "sample#queue.sidekiq.default.size=12 sample#queue.sidekiq.default.latency=3.2s",
        "sample#queue.collector.queues=1 sample#queue.collector.errors=0 sample#queue.collector.duration=0.004s",
    ]


def test_system_follows_prefix_and_source_is_on_every_line():
    lines = librato_lines(
        report(
            QueueSample("sidekiq", "default", 1, 0.0), QueueSample("rq", "default", 2, None), backends=("sidekiq", "rq")
        ),
        prefix="jobs",
        source="web.1",
    )
    assert lines[0] == (
        "source=web.1 sample#jobs.sidekiq.default.size=1 sample#jobs.sidekiq.default.latency=0s "
        "sample#jobs.rq.default.size=2"
    )
    assert lines[1].startswith("source=web.1 sample#jobs.collector.queues=2 ")


def test_unknown_latency_is_omitted_never_zero():
    line = librato_lines(report(QueueSample("celery", "celery", 4, None), backends=("celery",)))[0]
    assert line == "sample#queue.celery.celery.size=4"


def test_seconds_format():
    assert [format_seconds(x) for x in (0, 3.2, 0.0004, 12.0, 1.23456, -5)] == ["0", "3.2", "0", "12", "1.235", "0"]


def test_names_are_kept_when_safe_and_hashed_when_changed():
    assert metric_queue_part("mailers:high-1_a.b") == "mailers:high-1_a.b"
    odd = ["a b", "a_b", "a=b", 'a"b', "ünï", "high\x06\x163", "x" * 1000, "", "a_b_0123abcd"]
    parts = [metric_queue_part(name) for name in odd]
    assert len(set(parts)) == len(parts)
    assert parts[1] == "a_b"
    for part in parts:
        assert LIBRATO_NAME.match(f"queue.sidekiq.{part}.latency")


def test_a_real_name_never_equals_another_queues_hashed_name():
    hashed = metric_queue_part("a b")
    assert hashed.startswith("a_b_")
    assert metric_queue_part(hashed) != hashed


def test_lines_are_split_below_the_limit_and_keep_every_queue():
    samples = [QueueSample("sidekiq", f"queue-{index:05d}", index, index / 7) for index in range(2000)]
    lines = librato_lines(report(*samples), source="web.1")
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    pairs = [pair for line in lines for pair in line.split(" ")]
    assert all(LOGFMT_PAIR.match(pair) for pair in pairs)
    sizes = [pair for pair in pairs if pair.endswith(tuple("0123456789")) and ".size=" in pair]
    assert len(sizes) == 2000
    assert all(line.startswith("source=web.1 ") for line in lines)


def test_collector_line_even_without_queues():
    lines = librato_lines(report(backends=(), errors=("boom",)))
    assert lines == [
        "sample#queue.collector.queues=0 sample#queue.collector.errors=1 sample#queue.collector.duration=0.004s"
    ]


def test_json_line():
    line = json_line(
        report(
            QueueSample("rq", "default", 3, 1.23456),
            QueueSample("rq", "b\udcff", 0, None),
            backends=("rq",),
            errors=("rq queue x: broken",),
        ),
        time=1.5,
        source="web.1",
    )
    assert "\n" not in line
    document = json.loads(line)
    assert document["queues"] == [
        {"backend": "rq", "queue": "default", "size": 3, "latency": 1.235},
        {"backend": "rq", "queue": "b\\xff", "size": 0, "latency": None},
    ]
    assert document["errors"] == ["rq queue x: broken"]
    assert document["time"] == 1.5 and document["redis_ok"] is True and document["source"] == "web.1"


def test_names_do_not_depend_on_which_systems_are_in_use():
    alone = librato_lines(report(QueueSample("sidekiq", "default", 1, 0.0), backends=("sidekiq",)))
    together = librato_lines(
        report(
            QueueSample("sidekiq", "default", 1, 0.0), QueueSample("rq", "default", 2, None), backends=("sidekiq", "rq")
        )
    )
    assert alone[0] == "sample#queue.sidekiq.default.size=1 sample#queue.sidekiq.default.latency=0s"
    assert together[0].startswith(alone[0] + " ")


def test_queue_figures_system_figures_and_counters():
    sample = QueueSample("rq", "default", 3, 1.5, (Figure("failed", 2), Figure("started", 1)))
    systems = (
        SystemSample("rq", (Figure("workers", 4), Figure("busy", 1))),
        SystemSample(
            "sidekiq",
            (Figure("retry", 5), Figure("utilization", 0.25, UNIT_RATIO), Figure("processed", 17, kind=COUNTER)),
        ),
    )
    lines = librato_lines(TickReport((sample,), (), ("rq", "sidekiq"), 0.001, True, 1, systems))
    assert lines[0] == (
        "sample#queue.rq.default.size=3 sample#queue.rq.default.latency=1.5s sample#queue.rq.default.failed=2 "
        "sample#queue.rq.default.started=1 sample#queue.rq.workers=4 sample#queue.rq.busy=1 "
        "sample#queue.sidekiq.retry=5 sample#queue.sidekiq.utilization=0.25 count#queue.sidekiq.processed=17"
    )
    document = json.loads(json_line(TickReport((sample,), (), ("rq", "sidekiq"), 0.001, True, 1, systems)))
    assert document["queues"][0] == {
        "backend": "rq",
        "queue": "default",
        "size": 3,
        "latency": 1.5,
        "failed": 2,
        "started": 1,
    }
    assert document["systems"] == [
        {"backend": "rq", "workers": 4, "busy": 1},
        {"backend": "sidekiq", "retry": 5, "utilization": 0.25, "processed": 17},
    ]


def test_no_queue_name_collides_with_system_or_collector_names():
    names = ["retry", "dead", "busy", "collector", "sidekiq", "rq", "celery", "retry.size", "a.b", "unacked"]
    queue_names = {
        f"{queue_metric_base('queue', system, name)}.{figure}"
        for system in ("sidekiq", "rq", "celery")
        for name in names
        for figure in ("size", "latency", "failed", "scheduled", "unacked", "started")
    }
    others = {
        system_metric_name("queue", system, figure)
        for system in ("sidekiq", "rq", "celery")
        for figure in (
            "scheduled",
            "retry",
            "dead",
            "processes",
            "busy",
            "concurrency",
            "utilization",
            "processed",
            "failed",
            "workers",
            "unacked",
        )
    }
    others |= {collector_metric_name("queue", figure) for figure in ("queues", "errors", "duration", "dropped")}
    assert not queue_names & others


def test_table_shows_every_per_queue_figure_json_has_and_latencies_to_three_decimals():
    from queue_metrics.outputs.format import json_document, table_lines

    tick = report(
        QueueSample("rq", "default", 3, 12.5, (Figure("started", 1), Figure("failed", 2))),
        QueueSample("rq", "low", 0, 0.05, (Figure("started", 0), Figure("failed", 0))),
        QueueSample("celery", "celery", 7, 1.0, (Figure("unacked", 4, "{message}"),)),
        backends=("rq", "celery"),
    )
    lines = table_lines(tick)
    assert lines == [
        "SYSTEM  QUEUE    SIZE   LATENCY  STARTED  FAILED",
        "rq      default     3  12.500 s        1       2",
        "rq      low         0   0.050 s        0       0",
        "",
        "SYSTEM  QUEUE   SIZE  LATENCY  UNACKED",
        "celery  celery     7  1.000 s        4",
    ]
    # Every per-queue figure of the JSON document is in the table.
    for entry in json_document(tick)["queues"]:
        row = next(line for line in lines if line.split()[:2] == [entry["backend"], entry["queue"]])
        for name in ("started", "failed", "unacked"):
            if name in entry:
                header = lines[
                    [i for i, line in enumerate(lines) if line.startswith("SYSTEM")][
                        0 if entry["backend"] == "rq" else 1
                    ]
                ].split()
                assert row.split()[header.index(name.upper()) + 1] == str(entry[name])


def test_table_says_why_a_latency_is_unknown():
    from queue_metrics.errors import ErrorLog
    from queue_metrics.outputs.format import table_lines
    from queue_metrics.sample import LATENCY_OBSERVED

    errors = ErrorLog()
    gone = "job 'abc' has no enqueued_at (its hash expired or was deleted)"
    errors.about_queue("rq", "default", f"latency unknown: {gone}")
    errors.about_queue("rq", "other", "something else")
    lines = table_lines(
        report(
            QueueSample("rq", "default", 2, None),
            QueueSample("rq", "quiet", 1, None),
            QueueSample("celery", "celery", 5, None, latency_source=LATENCY_OBSERVED),
            errors=errors.messages,
        )
    )
    assert lines[1].split() == ["rq", "default", "2", "unknown*"]
    assert lines[-3:] == [
        "* rq default: latency unknown: job 'abc' has no enqueued_at (its hash expired or was deleted)",
        "* rq quiet: latency unknown: no reason was reported",
        "* celery celery: latency unknown: it is observed over ticks (the messages carry no publish time): "
        "`queue-metrics run` reports it",
    ]


# --- several datastores: each datastore's part of the report (sample.DatastoreSection) ----------


def section(label, queues, systems=0, errors=0, ok=True, labeled_queues=(), labeled_systems=(), source="X_URL"):
    return DatastoreSection(
        label,
        "redis",
        f"redis://{label}.example.com:6379/0",
        source,
        ok,
        queues,
        systems,
        errors,
        frozenset(labeled_queues),
        frozenset(labeled_systems),
    )


def two_datastores(errors=()):
    """Sidekiq's `default` and its system figures on two datastores, an RQ queue on the second
    only: the second's Sidekiq names carry its label, its RQ names do not."""
    samples = (
        QueueSample("sidekiq", "default", 2, 1.5),
        QueueSample("sidekiq", "default", 5, 0.25),
        QueueSample("rq", "default", 1, None, (Figure("failed", 3),)),
    )
    systems = (
        SystemSample("sidekiq", (Figure("retry", 4),)),
        SystemSample("sidekiq", (Figure("retry", 6),)),
        SystemSample("rq", (Figure("workers", 1, "{worker}"),)),
    )
    datastores = (
        section("redis", 1, 1, source="REDIS_URL"),
        section(
            "pink",
            2,
            2,
            errors=len(errors),
            labeled_queues={("sidekiq", "default")},
            labeled_systems={"sidekiq"},
            source="HEROKU_REDIS_PINK_URL",
        ),
    )
    return TickReport(samples, tuple(errors), ("sidekiq", "rq"), 0.003, True, 1, systems, 0, datastores)


def test_one_datastore_formats_exactly_as_a_report_without_datastores():
    plain = TickReport(
        (QueueSample("sidekiq", "default", 2, 1.5), QueueSample("rq", "default", 1, None, (Figure("failed", 3),))),
        (),
        ("sidekiq", "rq"),
        0.003,
        True,
        1,
        (SystemSample("sidekiq", (Figure("retry", 4),)),),
    )
    # The collector's report of one datastore: one section, nothing labeled.
    one = plain._replace(datastores=(section("redis", 2, 1),))
    assert librato_lines(one, source="web.1") == librato_lines(plain, source="web.1")
    assert librato_lines(one)[0] == (
        "sample#queue.sidekiq.default.size=2 sample#queue.sidekiq.default.latency=1.5s "
        "sample#queue.rq.default.size=1 sample#queue.rq.default.failed=3 sample#queue.sidekiq.retry=4"
    )


def test_labeled_names_on_the_later_datastore_only():
    lines = librato_lines(two_datastores(), source="web.1")
    assert lines == [
        "source=web.1 sample#queue.sidekiq.default.size=2 sample#queue.sidekiq.default.latency=1.5s "
        "sample#queue.sidekiq.retry=4 "
        "sample#queue.pink.sidekiq.default.size=5 sample#queue.pink.sidekiq.default.latency=0.25s "
        "sample#queue.rq.default.size=1 sample#queue.rq.default.failed=3 "
        "sample#queue.pink.sidekiq.retry=6 sample#queue.rq.workers=1",
        # The collector's own figures: the tick's totals, never labeled.
        "source=web.1 sample#queue.collector.queues=3 sample#queue.collector.errors=0 "
        "sample#queue.collector.duration=0.003s",
    ]
    names = [pair.split("=")[0] for line in lines for pair in line.split(" ")[1:]]
    assert len(names) == len(set(names))


def test_labeled_names_over_many_queues_stay_on_short_lines():
    samples = tuple(QueueSample("rq", f"q{index:04d}", index, None) for index in range(1500))
    # The second datastore holds q0500 to q1499: the first half of them the first one holds too.
    datastores = (
        section("redis", 1000),
        section("other", 1000, labeled_queues={("rq", f"q{index:04d}") for index in range(500, 1000)}),
    )
    lines = librato_lines(TickReport(samples[:1000] + samples[500:], (), ("rq",), 0.0, True, 1, (), 0, datastores))
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    sizes = [pair for line in lines for pair in line.split(" ") if ".size=" in pair]
    assert len(sizes) == len(set(pair.split("=")[0] for pair in sizes)) == 2000
    assert {"sample#queue.rq.q0500.size=500", "sample#queue.other.rq.q0500.size=500"} <= set(sizes)
    assert "sample#queue.rq.q1000.size=1000" in sizes and "sample#queue.other.rq.q1000.size=1000" not in sizes


def test_json_says_each_queues_and_systems_datastore_and_lists_the_datastores():
    document = json.loads(json_line(two_datastores(errors=("pink: x",))))
    assert [(q["datastore"], q["backend"], q["size"]) for q in document["queues"]] == [
        ("redis", "sidekiq", 2),
        ("pink", "sidekiq", 5),
        ("pink", "rq", 1),
    ]
    assert document["systems"] == [
        {"datastore": "redis", "backend": "sidekiq", "retry": 4},
        {"datastore": "pink", "backend": "sidekiq", "retry": 6},
        {"datastore": "pink", "backend": "rq", "workers": 1},
    ]
    assert document["datastores"] == [
        {
            "label": "redis",
            "kind": "redis",
            "where": "redis://redis.example.com:6379/0",
            "source": "REDIS_URL",
            "ok": True,
            "queues": 1,
            "errors": 0,
        },
        {
            "label": "pink",
            "kind": "redis",
            "where": "redis://pink.example.com:6379/0",
            "source": "HEROKU_REDIS_PINK_URL",
            "ok": True,
            "queues": 2,
            "errors": 1,
        },
    ]
    # A report without datastores (one reader's): no such keys.
    plain = json.loads(json_line(report(QueueSample("rq", "default", 3, 1.0))))
    assert "datastores" not in plain and "datastore" not in plain["queues"][0]


def test_table_lists_the_datastores_and_heads_each_ones_blocks():
    from queue_metrics.outputs.format import table_lines

    # The same queue name in another datastore's error is not this one's reason.
    tick = two_datastores(
        errors=(
            'pink: rq queue "default": latency unknown: no job hash',
            'pink: sidekiq queue "low": latency unknown: x',
        )
    )
    tick = tick._replace(
        samples=tick.samples + (QueueSample("sidekiq", "low", 0, None),),
        datastores=tick.datastores + (section("down", 1, ok=False, errors=1),),
    )
    assert table_lines(tick) == [
        "redis: redis redis://redis.example.com:6379/0 (from REDIS_URL): 1 queue(s)",
        "pink: redis redis://pink.example.com:6379/0 (from HEROKU_REDIS_PINK_URL): 2 queue(s), 2 error(s)",
        "down: redis redis://down.example.com:6379/0 (from X_URL): 1 queue(s), could not be read, 1 error(s)",
        "",
        "== redis ==",
        "SYSTEM   QUEUE    SIZE  LATENCY",
        "sidekiq  default     2  1.500 s",
        "sidekiq: retry 4",
        "",
        "== pink ==",
        "SYSTEM   QUEUE    SIZE  LATENCY",
        "sidekiq  default     5  0.250 s",
        "",
        "SYSTEM  QUEUE    SIZE   LATENCY  FAILED",
        "rq      default     1  unknown*       3",
        "sidekiq: retry 6",
        "rq: workers 1",
        "",
        "== down ==",
        "SYSTEM   QUEUE  SIZE   LATENCY",
        "sidekiq  low       0  unknown*",
        "",
        # The reason is found under its datastore's label, and the note names the datastore.
        "* pink: rq default: latency unknown: no job hash",
        "* down: sidekiq low: latency unknown: no reason was reported",
    ]


def test_table_of_one_datastore_lists_it_then_the_blocks_as_before():
    from queue_metrics.errors import ErrorLog
    from queue_metrics.outputs.format import table_lines

    errors = ErrorLog()
    errors.about_queue("rq", "default", "latency unknown: no job hash")
    plain = report(QueueSample("rq", "default", 2, None), errors=errors.messages)
    one = plain._replace(datastores=(section("redis", 1, errors=1, source="REDIS_URL"),))
    assert table_lines(one) == [
        "redis: redis redis://redis.example.com:6379/0 (from REDIS_URL): 1 queue(s), 1 error(s)",
        "",
        *table_lines(plain),
    ]
    assert table_lines(one)[-1] == "* rq default: latency unknown: no job hash"
    empty = report()._replace(datastores=(section("redis", 0, ok=False),))
    assert table_lines(empty) == [
        "redis: redis redis://redis.example.com:6379/0 (from X_URL): 0 queue(s), could not be read",
        "",
        "(could not be read)",
    ]


# --- the real command over two real Redis ------------------------------------------------------


def sidekiq_default_on_two_redis(make_server) -> dict:
    """The same Sidekiq queue, `default`, with two jobs on each of two redis-servers (the real
    Sidekiq client); the environment naming them `a` and `b`."""
    from helpers.collect import sidekiq

    first, second = make_server(), make_server()
    for server in (first, second):
        sidekiq(server.url, {"enqueue": {"default": 2}})
    return {"QUEUE_METRICS_REDIS_URLS": f"a={first.url},b={second.url}"}


def test_the_same_queue_on_two_redis_in_l2met_json_and_table(make_server):
    from helpers.process import lines_of, queue_metrics

    env = sidekiq_default_on_two_redis(make_server)
    first, second = (url.split("=", 1)[1] for url in env["QUEUE_METRICS_REDIS_URLS"].split(","))

    result = queue_metrics("once", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    pairs = [pair for line in lines_of(result.stdout) for pair in line.split(" ")]
    names = [pair.split("=")[0] for pair in pairs]
    assert len(names) == len(set(names))
    # The first datastore's names as with one Redis; the second's carry its label.
    assert {
        "sample#queue.sidekiq.default.size=2",
        "sample#queue.b.sidekiq.default.size=2",
        "sample#queue.sidekiq.retry=0",
        "sample#queue.b.sidekiq.retry=0",
        "sample#queue.collector.queues=2",
    } <= set(pairs)
    assert "sample#queue.b.sidekiq.default.latency" in {pair.split("=")[0] for pair in pairs}
    assert not [name for name in names if ".a." in name]

    result = queue_metrics("once", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(q["datastore"], q["backend"], q["queue"], q["size"]) for q in document["queues"]] == [
        ("a", "sidekiq", "default", 2),
        ("b", "sidekiq", "default", 2),
    ]
    assert [(s["datastore"], s["backend"], s["retry"]) for s in document["systems"]] == [
        ("a", "sidekiq", 0),
        ("b", "sidekiq", 0),
    ]
    keys = ("label", "kind", "source", "ok", "queues", "errors")
    assert [{key: d[key] for key in keys} for d in document["datastores"]] == [
        {"label": label, "kind": "redis", "source": "QUEUE_METRICS_REDIS_URLS", "ok": True, "queues": 1, "errors": 0}
        for label in ("a", "b")
    ]
    assert [d["where"] for d in document["datastores"]] == [first, second]

    result = queue_metrics("once", "--format", "table", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"a: redis {first} (from QUEUE_METRICS_REDIS_URLS): 1 queue(s)",
        f"b: redis {second} (from QUEUE_METRICS_REDIS_URLS): 1 queue(s)",
        "",
    ]
    for label in ("a", "b"):
        block = lines[lines.index(f"== {label} ==") :]
        # No Sidekiq process runs: nothing running, nothing due, nobody listening.
        assert block[1].split() == ["SYSTEM", "QUEUE", "SIZE", "LATENCY", "RUNNING", "DUE", "CONSUMERS"]
        assert block[2].split()[:3] == ["sidekiq", "default", "2"]
        assert block[3].startswith("sidekiq: scheduled 0, retry 0, dead 0")
