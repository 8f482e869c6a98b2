"""`queue-metrics alerts`: the Prometheus rules checked and unit-tested by the real `promtool`
(each rule fires on the series it is about and stays quiet otherwise), the Datadog monitors'
names and tags compared with what our StatsD output really sends from real queues, the Grafana
dashboard's names with the Prometheus naming contract."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Dict, List, NamedTuple, Tuple

import pytest
from rq import Queue

from helpers.collect import sidekiq
from helpers.process import queue_metrics, start
from helpers.receivers import UdpListener
from helpers.servers import free_port
from helpers.workers import HELPERS, wait_for, worker_process
from queue_metrics.alerts import (
    Thresholds,
    absent_split,
    check_thresholds,
    datadog_monitors,
    datadog_prefix,
    grafana_dashboard,
    parse_duration,
    prometheus_names,
    render,
    rules,
)
from queue_metrics.errors import ConfigError
from queue_metrics.outputs.prometheus import metric_prefix
from test_statsd import parse

# `9app`: a name cannot begin with a digit, the endpoint serves `_9app_size` (the rules must read it).
PREFIXES = ("queue", "my-app.q", "9app")
CUSTOM = ("--latency", "10", "--latency-for", "2m", "--running-age", "120", "--due-age", "5", "--absent", "90s")


def alerts_text(target: str, *options: str, prefix: str = "queue") -> str:
    result = queue_metrics("alerts", "--for", target, *options, env={"QUEUE_METRICS_PREFIX": prefix})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def promtool(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *arguments], capture_output=True, text=True, timeout=60)


# --- pure functions ----------------------------------------------------------------------------


def test_prefixes_as_each_tool_stores_the_names():
    assert metric_prefix("queue") == "queue"
    assert metric_prefix("my-app.q") == "my_app_q"
    assert metric_prefix("a:b") == "a_b"
    assert metric_prefix("9app") == "_9app"
    # Datadog keeps the dots of a DogStatsD name and makes any other odd character `_`.
    assert datadog_prefix("my-app.q") == "my_app.q"
    assert datadog_prefix("queue") == "queue"


def test_durations_and_thresholds_are_checked_with_the_options_name():
    assert parse_duration("--absent", "90s") == 90
    assert parse_duration("--latency-for", "5m") == 300
    assert parse_duration("--failed-window", "2h") == 7200
    assert parse_duration("--latency-for", "0s") == 0  # alert at once
    for option, text in (("--absent", "0m"), ("--latency-for", "5"), ("--latency-for", "5 min"), ("--absent", "1d")):
        with pytest.raises(ConfigError, match=f"^{option} must be a duration such as 30s, 5m or 1h, got"):
            parse_duration(option, text)
    with pytest.raises(ConfigError, match="^--running-age must be a number >= 0, got -1.0"):
        check_thresholds(Thresholds(running_age=-1.0))
    with pytest.raises(ConfigError, match="^--latency must be a number >= 0, got nan"):
        check_thresholds(Thresholds(latency=float("nan")))
    assert check_thresholds(Thresholds()) == Thresholds()


def test_the_absence_alert_waits_part_of_its_window():
    """`for` + window = --absent: at most a minute of `for`, half of a short --absent."""
    assert absent_split("5m") == ("1m", "4m")
    assert absent_split("90s") == ("45s", "45s")
    assert absent_split("10s") == ("5s", "5s")
    assert absent_split("1h") == ("1m", "59m")
    assert absent_split("1s") == ("0s", "1s")


def test_a_bad_option_is_one_line_and_a_usage_error():
    result = queue_metrics("alerts", "--for", "prometheus", "--latency-for", "five minutes")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "queue-metrics: usage error: --latency-for must be a duration such as 30s, 5m or 1h, got 'five minutes'\n"
    )
    result = queue_metrics("alerts", "--for", "nagios")
    assert result.returncode == 2 and "'nagios' is not one of" in result.stderr
    result = queue_metrics("alerts", "--for", "prometheus", env={"QUEUE_METRICS_PREFIX": "bad prefix!"})
    assert result.returncode == 2 and "QUEUE_METRICS_PREFIX may hold only" in result.stderr


def test_the_alerts_module_is_not_loaded_by_the_loop():
    """`run` with only the log lines must not import it (it lives in a customer's web dyno)."""
    code = (
        "import sys, queue_metrics.cli, queue_metrics.runner, queue_metrics.loop;"
        "print('queue_metrics.alerts' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_name_in_every_rule_and_panel_is_in_the_contract():
    for prefix in PREFIXES:
        names = prometheus_names(prefix)
        p = metric_prefix(prefix)
        exprs = [rule.expr for rule in rules(Thresholds(), prefix)]
        exprs += [
            target["expr"] for panel in grafana_dashboard(Thresholds(), prefix)["panels"] for target in panel["targets"]
        ]
        used = set()
        for expr in exprs:
            found = set(re.findall(rf"\b{p}_[a-z_]+\b", expr))
            assert found, expr
            used |= found
        assert used <= names, used - names
        # What the issue asks the dashboard and rules to show.
        for figure in ("size", "latency_seconds", "running", "running_age_seconds", "due", "due_age_seconds"):
            assert f"{p}_{figure}" in used
        for figure in ("consumers", "collector_up", "collector_duration_seconds", "collector_errors"):
            assert f"{p}_{figure}" in used


def test_the_grafana_dashboard_is_importable_json():
    dashboard = json.loads(alerts_text("grafana"))
    assert dashboard == grafana_dashboard(Thresholds(), "queue")
    assert dashboard["title"] and len(dashboard["uid"]) <= 40
    # The same prefix gives the same uid (importing again replaces the dashboard); another, another.
    assert json.loads(alerts_text("grafana"))["uid"] == dashboard["uid"]
    assert json.loads(alerts_text("grafana", prefix="my-app.q"))["uid"] != dashboard["uid"]
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS" and dashboard["__inputs"][0]["pluginId"] == "prometheus"
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    positions = {(panel["gridPos"]["x"], panel["gridPos"]["y"]) for panel in dashboard["panels"]}
    assert len(positions) == len(ids)  # no two panels on top of each other
    for panel in dashboard["panels"]:
        assert panel["type"] == "timeseries" and panel["datasource"]["uid"] == "${datasource}"
        (target,) = panel["targets"]
        assert target["expr"] and target["legendFormat"]
    # The latency panel draws the alert's threshold.
    (latency,) = [panel for panel in dashboard["panels"] if "queue_latency_seconds" in panel["targets"][0]["expr"]]
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 30.0
    custom = json.loads(alerts_text("grafana", *CUSTOM))
    (latency,) = [panel for panel in custom["panels"] if "queue_latency_seconds" in panel["targets"][0]["expr"]]
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 10.0


# --- Prometheus: the real promtool -------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("options", [(), CUSTOM], ids=["defaults", "custom"])
def test_promtool_checks_the_rules_clean(tmp_path, prefix, options):
    path = tmp_path / "rules.yml"
    path.write_text(alerts_text("prometheus", *options, prefix=prefix))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(Thresholds(), prefix))} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr
    text = path.read_text()
    p = metric_prefix(prefix)
    assert f'expr: "{p}_latency_seconds > {10 if options else 30}"' in text
    assert f"for: {'2m' if options else '5m'}" in text


class Expected(NamedTuple):
    labels: Dict[str, str]
    value: float


class Scenario(NamedTuple):
    """Input series, a time when the rule must fire with exactly `alerts`, and a time when it
    must not (pending, or no series over the threshold)."""

    rule: str
    series: Dict[str, str]
    fires_at: str
    alerts: Tuple[Expected, ...]
    quiet_at: str


def sel(p: str, name: str, **labels: str) -> str:
    inside = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{p}_{name}{{{inside}}}"


SIDEKIQ_DEFAULT = {"system": "sidekiq", "queue": "default", "datastore": "redis"}


def scenarios(p: str) -> List[Scenario]:
    """Every rule with its default thresholds (Thresholds()), series one minute apart."""
    sidekiq_system = {"system": "sidekiq", "datastore": "redis"}
    return [
        Scenario(
            "QueueLatencyHigh",
            {
                sel(p, "latency_seconds", **SIDEKIQ_DEFAULT): "10 40x10",
                sel(p, "latency_seconds", system="rq", queue="mailers", datastore="redis"): "10x10",
            },
            "7m",  # over 30 s since 1m, for 5m
            (Expected(SIDEKIQ_DEFAULT, 40),),
            "3m",  # pending
        ),
        # The collector's process is gone: no sample at all.
        Scenario(
            "QueueMetricsAbsent",
            {sel(p, "collector_last_tick_timestamp_seconds"): "0+60x5"},
            "11m",
            (Expected({}, 1),),
            "8m",
        ),
        # The loop hangs while the endpoint still answers: the same tick time, scraped on.
        Scenario(
            "QueueMetricsAbsent",
            {sel(p, "collector_last_tick_timestamp_seconds"): "0+60x3 180x10"},
            "9m",  # 540 - 180 > 300
            (Expected({}, 360),),
            "7m",  # 420 - 180 = 240
        ),
        # Before its first scrape a fresh Prometheus has no sample: no alert (it waits 1m).
        Scenario(
            "QueueMetricsAbsent",
            {sel(p, "collector_last_tick_timestamp_seconds"): "_ 60+60x4"},
            "11m",  # the last sample at 5m: no sample in [6m, 10m] (pending), 1m later firing
            (Expected({}, 1),),
            "0m",
        ),
        Scenario(
            "QueueDeadJobsGrowing",
            {
                sel(p, "sidekiq_dead", **sidekiq_system): "0x5 1+1x20",
                sel(p, "dead", system="dramatiq", queue="default", datastore="redis"): "3x30",
                sel(p, "dead", system="dramatiq", queue="low", datastore="redis"): "0x5 1+1x20",
                # Cleared by hand, then two new dead jobs: seen at once (delta() was negative).
                sel(p, "dead", system="dramatiq", queue="high", datastore="redis"): "500x5 0 2x20",
                # Some retried by hand: no new dead job.
                sel(p, "dead", system="dramatiq", queue="mailers", datastore="redis"): "500x5 400x20",
            },
            "10m",
            (
                Expected({"system": "dramatiq", "queue": "high", "datastore": "redis"}, 2),
                Expected({"system": "dramatiq", "queue": "low", "datastore": "redis"}, 5),
                Expected(sidekiq_system, 5),
            ),
            "4m",
        ),
        Scenario(
            "QueueFailedJobsGrowing",
            {
                sel(p, "failed", system="rq", queue="default", datastore="redis"): "0x5 1+1x20",
                sel(p, "failed", system="bullmq", queue="emails", datastore="redis"): "4x30",
                # Cleared by hand, then one new failure; another registry partly cleared.
                sel(p, "failed", system="rq", queue="low", datastore="redis"): "500x5 0 1x20",
                sel(p, "failed", system="bullmq", queue="reports", datastore="redis"): "500x5 400x20",
                sel(p, "resque_failed", system="resque", datastore="redis"): "0x5 2+2x20",
            },
            "10m",
            (
                Expected({"system": "resque", "datastore": "redis"}, 10),
                Expected({"system": "rq", "queue": "default", "datastore": "redis"}, 5),
                Expected({"system": "rq", "queue": "low", "datastore": "redis"}, 1),
            ),
            "4m",
        ),
        # Sidekiq's failed attempts over its processed ones: 1% (a retried failure a minute)
        # stays quiet; 30 failures a minute out of 100 attempts fires.
        Scenario(
            "QueueFailureRatioHigh",
            {
                sel(p, "sidekiq_failed_total", **sidekiq_system): "0+1x30",
                sel(p, "sidekiq_processed_total", **sidekiq_system): "0+100x30",
                sel(p, "sidekiq_failed_total", system="sidekiq", datastore="other"): "0x5 30+30x20",
                sel(p, "sidekiq_processed_total", system="sidekiq", datastore="other"): "0+100x30",
                # No attempt at all (0/0): no alert.
                sel(p, "sidekiq_failed_total", system="sidekiq", datastore="idle"): "0x30",
                sel(p, "sidekiq_processed_total", system="sidekiq", datastore="idle"): "0x30",
            },
            "10m",  # 150 of 1000
            (Expected({"system": "sidekiq", "datastore": "other"}, 0.15),),
            "4m",
        ),
        Scenario(
            "QueueDueJobsNotEnqueued",
            {
                sel(p, "due_age_seconds", **SIDEKIQ_DEFAULT): "30 90x10",
                sel(p, "due_age_seconds", system="rq", queue="default", datastore="redis"): "5x10",
            },
            "3m",
            (Expected(SIDEKIQ_DEFAULT, 90),),
            "1m",  # pending
        ),
        Scenario(
            "QueueJobRunningLong",
            {
                sel(p, "running_age_seconds", system="rq", queue="default", datastore="redis"): "0+60x20",
                sel(p, "running_age_seconds", **SIDEKIQ_DEFAULT): "30x20",
            },
            "11m",
            (Expected({"system": "rq", "queue": "default", "datastore": "redis"}, 660),),
            "10m",  # 600: not over
        ),
        Scenario(
            "QueueWithoutConsumer",
            {
                sel(p, "size", **SIDEKIQ_DEFAULT): "5x10",
                sel(p, "consumers", **SIDEKIQ_DEFAULT): "0x10",
                sel(p, "size", system="sidekiq", queue="mailers", datastore="redis"): "5x10",
                sel(p, "consumers", system="sidekiq", queue="mailers", datastore="redis"): "1x10",
                sel(p, "size", system="sidekiq", queue="low", datastore="redis"): "0x10",
                sel(p, "consumers", system="sidekiq", queue="low", datastore="redis"): "0x10",
            },
            "3m",
            (Expected(SIDEKIQ_DEFAULT, 5),),
            "1m",  # pending
        ),
        Scenario("QueueCollectorErrors", {sel(p, "collector_errors"): "2x10"}, "6m", (Expected({}, 2),), "3m"),
        Scenario("QueueCollectorDown", {sel(p, "collector_up"): "1 1 0x10"}, "5m", (Expected({}, 0),), "3m"),
    ]


def expand(template: str, labels: Dict[str, str], value: float) -> str:
    """The annotation Prometheus makes from our templates (the few constructs they use)."""

    def with_queue(match: "re.Match[str]") -> str:
        queue = labels.get("queue", "")
        return match[1].replace("{{ . }}", queue) if queue else ""

    text = re.sub(r"\{\{ with \$labels\.queue \}\}(.*?)\{\{ end \}\}", with_queue, template)
    text = text.replace('{{ $value | printf "%.0f" }}', f"{value:.0f}")
    text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    return re.sub(r"\{\{ \$labels\.([a-z]+) \}\}", lambda match: labels.get(match[1], ""), text)


def unit_test(scenario: Scenario, prefix: str, thresholds: Thresholds) -> dict:
    (rule,) = [rule for rule in rules(thresholds, prefix) if rule.name == scenario.rule]
    expected = []
    for alert in scenario.alerts:
        labels = {**alert.labels, "severity": rule.severity}
        annotations = {
            "summary": expand(rule.summary, alert.labels, alert.value),
            "description": expand(rule.description, alert.labels, alert.value),
        }
        expected.append({"exp_labels": labels, "exp_annotations": annotations})
    return {
        "interval": "1m",
        "input_series": [{"series": series, "values": values} for series, values in scenario.series.items()],
        "alert_rule_test": [
            {"eval_time": scenario.fires_at, "alertname": scenario.rule, "exp_alerts": expected},
            {"eval_time": scenario.quiet_at, "alertname": scenario.rule, "exp_alerts": []},
        ],
    }


def run_unit_tests(tmp_path, rules_text: str, tests: List[dict]) -> subprocess.CompletedProcess:
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(rules_text)
    # JSON is YAML: promtool reads it as it is.
    test_path = tmp_path / "rules_test.yml"
    test_path.write_text(json.dumps({"rule_files": [str(rules_path)], "evaluation_interval": "1m", "tests": tests}))
    return promtool("test", "rules", str(test_path))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_promtool_unit_tests_each_rule_fires_and_stays_quiet(tmp_path, prefix):
    p = metric_prefix(prefix)
    cases = scenarios(p)
    assert {case.rule for case in cases} == {rule.name for rule in rules(Thresholds(), prefix)}
    tests = [unit_test(case, prefix, Thresholds()) for case in cases]
    result = run_unit_tests(tmp_path, alerts_text("prometheus", prefix=prefix), tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_wrong_expectation(tmp_path):
    """The harness can fail: the latency alert expected too early (while pending) is refused."""
    case = scenarios("queue")[0]._replace(fires_at="3m")
    result = run_unit_tests(tmp_path, alerts_text("prometheus"), [unit_test(case, "queue", Thresholds())])
    assert result.returncode == 1 and "QueueLatencyHigh" in result.stdout + result.stderr


def test_custom_thresholds_change_when_rules_fire(tmp_path):
    """`--latency 10 --latency-for 2m`: a steady 15 s latency fires at 3m; with the defaults it never
    does. `--absent 90s`: a hung loop is reported after 90 s."""
    series = {sel("queue", "latency_seconds", **SIDEKIQ_DEFAULT): "15x10"}
    custom = Thresholds(latency=10, latency_for="2m", running_age=120, due_age=5, absent="90s")
    fires = Scenario("QueueLatencyHigh", series, "3m", (Expected(SIDEKIQ_DEFAULT, 15),), "1m")
    hung = Scenario(
        "QueueMetricsAbsent",
        {sel("queue", "collector_last_tick_timestamp_seconds"): "0+60x3 180x10"},
        "5m",  # 300 - 180 > 90
        (Expected({}, 120),),
        "4m",  # 240 - 180 = 60
    )
    tests = [unit_test(case, "queue", custom) for case in (fires, hung)]
    result = run_unit_tests(tmp_path, alerts_text("prometheus", *CUSTOM), tests)
    assert result.returncode == 0, result.stdout + result.stderr
    quiet = Scenario("QueueLatencyHigh", series, "10m", (), "9m")
    result = run_unit_tests(tmp_path, alerts_text("prometheus"), [unit_test(quiet, "queue", Thresholds())])
    assert result.returncode == 0, result.stdout + result.stderr


# --- Datadog -----------------------------------------------------------------------------------

# A metric in a monitor query: `<space aggregator>:<name>{<scope>}` and its `by {<tag keys>}`.
QUERY_METRIC = re.compile(r"\b(?:avg|min|max|sum):([A-Za-z0-9_.]+)\{([^}]*)\}(?: by \{([^}]*)\})?")
QUERY_THRESHOLD = re.compile(r" ([<>]=?) (-?[0-9.]+)\Z")


def metrics_of(query: str) -> List[Tuple[str, Tuple[str, ...]]]:
    """(metric name, tag keys grouped by) of every metric a query reads."""
    found = [(name, tuple(by.split(",")) if by else ()) for name, _, by in QUERY_METRIC.findall(query)]
    assert found, query
    return found


@pytest.mark.parametrize("options", [(), CUSTOM], ids=["defaults", "custom"])
def test_datadog_monitors_are_what_the_monitor_api_takes(options):
    monitors = json.loads(alerts_text("datadog", *options))
    thresholds = Thresholds(latency=10, latency_for="2m", running_age=120, due_age=5, absent="90s")
    assert monitors == datadog_monitors(thresholds if options else Thresholds(), "queue")
    names = [monitor["name"] for monitor in monitors]
    assert len(set(names)) == len(names)
    for monitor in monitors:
        assert set(monitor) == {"name", "type", "query", "message", "tags", "options"}
        assert monitor["type"] == "query alert" and monitor["message"]
        # The query's threshold is the options' critical one (the API refuses them apart).
        operator, threshold = QUERY_THRESHOLD.search(monitor["query"]).groups()
        assert float(threshold) == monitor["options"]["thresholds"]["critical"]
        assert all(re.fullmatch(r"[a-z_]+:[A-Za-z0-9_.-]+", tag) for tag in monitor["tags"])
        metrics_of(monitor["query"])
    (absent,) = [monitor for monitor in monitors if monitor["options"]["notify_no_data"]]
    assert absent["options"]["no_data_timeframe"] == (2 if options else 5)  # 90s: at least 2 minutes
    (latency,) = [monitor for monitor in monitors if ".latency{" in monitor["query"]]
    expected = "min(last_2m):max:queue.latency{*} by {backend,queue,datastore} > 10" if options else None
    assert latency["query"] == (expected or "min(last_5m):max:queue.latency{*} by {backend,queue,datastore} > 30")
    # A prefix Datadog would rewrite is queried as Datadog stores it.
    assert all(
        ".latency{" not in m["query"] or "my_app.q.latency{" in m["query"]
        for m in datadog_monitors(Thresholds(), "my-app.q")
    )


def rq_worker(url: str, *queues: str):
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    return worker_process([rq, "worker", "--url", url, "--path", HELPERS, *queues], {})


def fill_every_system_with_figures(url: str, client) -> None:
    """Sidekiq (a backlog, due jobs, no process: consumers 0), RQ (a job running in a real worker
    run without the scheduler: a due job stays out), Resque and Dramatiq queues, by their own
    clients."""
    from dramatiq.brokers.redis import RedisBroker

    from helpers.dramatiq_actors import declare

    sidekiq(url, {"enqueue": {"default": 2}, "jobs": [{"class": "QuickJob", "in": 1}]})
    queue = Queue("default", connection=client)
    queue.enqueue_in(timedelta(seconds=1), "rq_jobs.quick")
    job = queue.enqueue("rq_jobs.nap", 60)
    queue.enqueue("rq_jobs.quick")
    wait_for(lambda: job.refresh() or job.started_at is not None, "the RQ job to start", 30)
    driver = os.path.join(HELPERS, "resque_driver.js")
    payload = {"jobs": [{"queue": "default", "class": "Nap", "args": ["a", 0]}], "namespace": "resque"}
    done = subprocess.run(
        ["node", driver, url, "enqueue"], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    broker = RedisBroker(url=url)
    try:
        declare(broker).quick.send()
    finally:
        broker.client.close()
    time.sleep(1.5)  # the due jobs are due


def test_every_datadog_name_and_tag_is_one_our_statsd_output_sends(redis_url, client):
    """A real `run` against real queues of five systems with every figure the monitors read."""
    listener = UdpListener()
    env = {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "statsd",
        "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{listener.port}",
        "QUEUE_METRICS_INTERVAL": "0.5",
    }
    try:
        with rq_worker(redis_url, "default"):
            fill_every_system_with_figures(redis_url, client)
            process = start("run", env=env)
            try:
                received = listener.collect(3.0)  # some six ticks: counters come from the second
            finally:
                process.terminate()
                process.wait(timeout=10)
    finally:
        listener.close()
    sent: Dict[str, set] = {}
    for datagram in received:
        for name, _, _, tags in parse(datagram):
            sent.setdefault(name, set()).update(tags)
    for figure in ("running_age", "due_age", "consumers", "failed", "dead", "sidekiq.dead", "sidekiq.failed"):
        assert f"queue.{figure}" in sent, sorted(sent)
    for monitor in datadog_monitors(Thresholds(), "queue"):
        for name, keys in metrics_of(monitor["query"]):
            assert name in sent, (monitor["name"], name)
            assert set(keys) <= sent[name], (monitor["name"], name, keys, sent[name])


# --- Prometheus names from a real scrape -------------------------------------------------------


def scraped_families(port: int, timeout: float = 60) -> set:
    """The families a real `/metrics` declares, once a tick with counters (the second) is in."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                body = answer.read().decode("utf-8")
        except (OSError, urllib.error.HTTPError):
            body = ""
        if "_total{" in body:
            break
        time.sleep(0.2)
    assert "_total{" in body, body[:500]
    # The text format declares a counter by its sample name (`..._total`).
    return set(re.findall(r"^# TYPE (\S+) \S+$", body, re.M))


def test_every_name_the_rules_and_dashboard_read_is_one_a_real_scrape_serves(redis_url, client):
    """A real `run` with the prometheus output against real queues of four systems: every family
    it serves is in `prometheus_names` (the rules' and dashboard's list), and every name a rule
    or a panel reads is served."""
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "QUEUE_METRICS_OUTPUTS": "prometheus",
        "QUEUE_METRICS_PROMETHEUS_ADDRESS": f"127.0.0.1:{port}",
        "QUEUE_METRICS_INTERVAL": "0.5",
    }
    with rq_worker(redis_url, "default"):
        fill_every_system_with_figures(redis_url, client)
        process = start("run", env=env)
        try:
            served = scraped_families(port)
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert not served - prometheus_names("queue"), served - prometheus_names("queue")
    used = set()
    for rule in rules(Thresholds(), "queue"):
        used |= set(re.findall(r"\bqueue_[a-z_]+\b", rule.expr))
    for panel in grafana_dashboard(Thresholds(), "queue")["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bqueue_[a-z_]+\b", target["expr"]))
    assert used <= served, used - served


def test_the_cli_prints_what_render_makes():
    for target in ("prometheus", "datadog", "grafana"):
        assert alerts_text(target, *CUSTOM, prefix="my-app.q") == render(
            target, Thresholds(latency=10, latency_for="2m", running_age=120, due_age=5, absent="90s"), "my-app.q"
        )
