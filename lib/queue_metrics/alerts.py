"""`queue-metrics alerts`: ready alert rules and a dashboard for the tools users have, on our real
metric names, labels/tags and units. Pure functions returning text; the CLI prints it.

One table of rules (`rules`) feeds the three outputs, so a Prometheus alert, its Datadog monitor
and the dashboard's threshold never disagree:
- `prometheus_rules`: an alerting rules file (YAML, written by hand: no YAML package at run time;
  every scalar is a JSON string, which YAML reads as a double-quoted scalar);
- `datadog_monitors`: a JSON array of monitors for Datadog's monitor API (POST /api/v1/monitor,
  one object per request), on the DogStatsD names and tags of `outputs/statsd.py`;
- `grafana_dashboard`: a dashboard JSON for a Prometheus data source (Dashboards > Import).

The Prometheus names follow the naming contract of the Prometheus output (`prometheus_names`),
with its very prefix function (`metric_prefix`: a digit-first prefix gets a leading `_`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from queue_metrics.errors import ConfigError
from queue_metrics.outputs.prometheus import metric_prefix

PROMETHEUS = "prometheus"
DATADOG = "datadog"
GRAFANA = "grafana"
TARGETS = (PROMETHEUS, DATADOG, GRAFANA)

CRITICAL = "critical"
WARNING = "warning"

# Prometheus durations as the options take them: a whole number of seconds, minutes or hours.
DURATION = re.compile(r"\A([0-9]+)([smh])\Z")
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600}
# Options that are a range's length (`[5m]`), never empty; a `for` may be 0 (alert at once).
WINDOWS = ("--absent", "--failed-window")
# Datadog's no-data window must be at least twice the monitor's window (here one minute).
DATADOG_MIN_NO_DATA_MINUTES = 2
# The absence alert waits this long (at most) before it fires, and its window is as much shorter
# (the total stays --absent): a Prometheus that has just started, or just loaded the rules,
# evaluates the rule before its first scrape; the wait lets that scrape come in.
ABSENT_FOR_MAX_SECONDS = 60
# Grafana dashboards' uid: at most 40 characters.
DASHBOARD_UID_PREFIX = "queue-metrics-"
# Tags every Datadog monitor carries, to find them (and delete them) together.
DATADOG_TAG = "source:queue-metrics"
# A queue's series and a system's: the labels (Prometheus) and tags (DogStatsD) that tell them apart.
QUEUE_LABELS = "system, queue, datastore"
QUEUE_TAGS = "{backend,queue,datastore}"
SYSTEM_TAGS = "{backend,datastore}"


class Thresholds(NamedTuple):
    """The options of `queue-metrics alerts`; durations as Prometheus writes them (`5m`)."""

    latency: float = 30.0
    latency_for: str = "5m"
    absent: str = "5m"
    running_age: float = 600.0
    due_age: float = 60.0
    due_for: str = "1m"
    no_consumer_for: str = "2m"
    errors_for: str = "5m"
    down_for: str = "2m"
    failed_window: str = "15m"
    failed_growth: float = 0.0
    failed_ratio: float = 0.05


class DatadogQuery(NamedTuple):
    """One Datadog monitor of a rule: its query, its threshold, and a name's tail when a rule needs
    several (one per metric: a monitor's query reads one metric, or one formula)."""

    query: str
    critical: float
    what: str = ""
    # True for the absence monitor: it alerts on no data, its threshold is never crossed.
    no_data: bool = False


class Rule(NamedTuple):
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    datadog: Tuple[DatadogQuery, ...]
    # The same text for Datadog's message (its template variables, `{{queue.name}}`).
    datadog_message: str


def parse_duration(option: str, text: str) -> int:
    """Seconds of `30s`, `5m`, `1h`; ConfigError naming the option otherwise."""
    match = DURATION.match(text.strip())
    if not match or int(match[1]) == 0 and option in WINDOWS:
        raise ConfigError(f"{option} must be a duration such as 30s, 5m or 1h, got {text!r}")
    return int(match[1]) * SECONDS_PER_UNIT[match[2]]


def check_thresholds(thresholds: Thresholds) -> Thresholds:
    """The thresholds as given, once each duration parses and each number is >= 0 (finite)."""
    for field, value in thresholds._asdict().items():
        option = "--" + field.replace("_", "-")
        if isinstance(value, str):
            parse_duration(option, value)
            continue
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{option} must be a number >= 0, got {value!r}")
    return thresholds


def datadog_prefix(prefix: str) -> str:
    """The prefix as Datadog stores our DogStatsD names: it turns any character other than
    letters, digits, `_` and `.` into `_` (`my-app.q` is queried as `my_app.q`)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", prefix)


def duration_text(seconds: int) -> str:
    """A Prometheus duration for a number of seconds: `4m`, `45s`."""
    return f"{seconds // 60}m" if seconds % 60 == 0 and seconds else f"{seconds}s"


def absent_split(absent: str) -> Tuple[str, str]:
    """(`for`, window) of the absence alert: they add up to --absent. The `for` is half of a short
    --absent (10s: 5s and 5s), at most ABSENT_FOR_MAX_SECONDS (5m: 1m and 4m)."""
    total = parse_duration("--absent", absent)
    wait = min(ABSENT_FOR_MAX_SECONDS, total // 2)
    return duration_text(wait), duration_text(total - wait)


def minutes(duration: str) -> int:
    """Whole minutes for a Datadog window (`last_5m`), rounded up, at least one."""
    return max(1, math.ceil(parse_duration("a duration", duration) / 60))


def plain(value: float) -> float:
    """30.0 -> 30, 0.5 -> 0.5: a threshold as people write it, in JSON too."""
    return int(value) if float(value).is_integer() else float(value)


def number(value: float) -> str:
    """A threshold inside a query: `30`, `0.5`."""
    return repr(plain(value))


# Where an alert is: its system, queue (absent for a system-wide series) and datastore. Go's
# template `with` leaves the queue out when the series has no such label.
WHERE = '{{ $labels.system }}{{ with $labels.queue }} queue "{{ . }}"{{ end }} ({{ $labels.datastore }})'
# Datadog's template variables of a monitor grouped by our tags.
DD_WHERE = '{{backend.name}} queue "{{queue.name}}" ({{datastore.name}})'
DD_SYSTEM_WHERE = "{{backend.name}} ({{datastore.name}})"
VALUE = '{{ $value | printf "%.0f" }}'
PERCENT = "{{ $value | humanizePercentage }}"


def growth_of(name: str, window: str, growth: str) -> str:
    """A gauge of jobs that only grows but for a clearing or a trim (a failed registry, a dead
    set): how far it is now above its lowest value in the window. That is at least the number of
    jobs added since that lowest point, so it never fires without new jobs, and a set cleared by
    hand (then new failures) shows the new jobs at once, where `delta()` (last minus first) went
    negative and hid them for a whole window. A partial removal (some jobs retried) is no growth.
    What no gauge can show: jobs added while as many are trimmed (a capped set at its cap, BullMQ's
    removeOnFail), or added and removed within one scrape interval."""
    return f"{name} - min_over_time({name}[{window}]) > {growth}"


def rules(thresholds: Thresholds, prefix: str) -> Tuple[Rule, ...]:
    """The table: every rule, its Prometheus alert and its Datadog monitors, for a metric prefix
    (QUEUE_METRICS_PREFIX as set)."""
    t = thresholds
    p = metric_prefix(prefix)
    d = datadog_prefix(prefix)
    latency, running_age, due_age = number(t.latency), number(t.running_age), number(t.due_age)
    growth = number(t.failed_growth)
    window = t.failed_window
    dd_window = f"last_{minutes(window)}m"
    absent_for, absent_window = absent_split(t.absent)
    absent_window_seconds = parse_duration("--absent", absent_window)
    ratio = number(t.failed_ratio)
    return (
        Rule(
            "QueueLatencyHigh",
            f"{p}_latency_seconds > {latency}",
            t.latency_for,
            CRITICAL,
            f"Jobs wait too long in {WHERE}",
            f"The oldest job of {WHERE} has waited {VALUE} s, over {latency} s for {t.latency_for}: "
            "too few workers for the load, or workers stuck.",
            (
                DatadogQuery(
                    f"min(last_{minutes(t.latency_for)}m):max:{d}.latency{{*}} by {QUEUE_TAGS} > {latency}", t.latency
                ),
            ),
            f"The oldest job of {DD_WHERE} has waited over {latency} s for {t.latency_for}: "
            "too few workers for the load, or workers stuck.",
        ),
        Rule(
            "QueueMetricsAbsent",
            # Two ways the figures stop: the target is gone (the process or its dyno stopped: no
            # sample at all, which only `absent_over_time` sees), or the loop hangs while the
            # endpoint still answers with the last tick's figures (samples keep coming, with an
            # old tick time, which only the time since the last tick sees).
            # Both wait `absent_for` (see ABSENT_FOR_MAX_SECONDS) and together take --absent.
            f"time() - {p}_collector_last_tick_timestamp_seconds > {absent_window_seconds}"
            f" or absent_over_time({p}_collector_last_tick_timestamp_seconds[{absent_window}])",
            absent_for,
            CRITICAL,
            "queue-metrics sends no figures",
            f"No tick of the collector for {t.absent}: the collector stopped, hangs, or cannot be scraped. "
            "Queue alerts cannot fire meanwhile.",
            # No tick: nothing reaches DogStatsD. Alerted on no data (its threshold, below 0, is
            # never crossed).
            (DatadogQuery(f"avg(last_1m):avg:{d}.collector.queues{{*}} < 0", 0, no_data=True),),
            f"No figure from queue-metrics for {t.absent}: the collector stopped or hangs. "
            "Queue monitors cannot alert meanwhile.",
        ),
        Rule(
            "QueueDeadJobsGrowing",
            # Gauges of jobs out of retries: Sidekiq's dead set (system-wide), Dramatiq's
            # dead-letter set per queue (`growth_of` says why not `delta` nor `increase`).
            f"{growth_of(f'{p}_sidekiq_dead', window, growth)} or {growth_of(f'{p}_dead', window, growth)}",
            "0s",
            WARNING,
            f"Dead jobs pile up in {WHERE}",
            f"{VALUE} jobs of {WHERE} ran out of retries in the last {window}: they will not run again unless "
            "retried by hand.",
            (
                DatadogQuery(
                    f"change(max({dd_window}),{dd_window}):max:{d}.sidekiq.dead{{*}} by {SYSTEM_TAGS} > {growth}",
                    t.failed_growth,
                    "Sidekiq",
                ),
                DatadogQuery(
                    f"change(max({dd_window}),{dd_window}):max:{d}.dead{{*}} by {QUEUE_TAGS} > {growth}",
                    t.failed_growth,
                    "per queue",
                ),
            ),
            f"Jobs ran out of retries in the last {window}: they will not run again unless retried by hand.",
        ),
        Rule(
            "QueueFailedJobsGrowing",
            # RQ's and BullMQ's failed registries per queue, Resque's failed list: gauges of jobs
            # that failed for good (`growth_of`). Sidekiq's failures are QueueFailureRatioHigh's.
            f"{growth_of(f'{p}_failed', window, growth)} or {growth_of(f'{p}_resque_failed', window, growth)}",
            "0s",
            WARNING,
            f"Jobs fail in {WHERE}",
            f"{VALUE} more jobs of {WHERE} failed in the last {window}.",
            (
                DatadogQuery(
                    f"change(max({dd_window}),{dd_window}):max:{d}.failed{{*}} by {QUEUE_TAGS} > {growth}",
                    t.failed_growth,
                    "per queue",
                ),
                DatadogQuery(
                    f"change(max({dd_window}),{dd_window}):max:{d}.resque.failed{{*}} by {SYSTEM_TAGS} > {growth}",
                    t.failed_growth,
                    "Resque",
                ),
            ),
            f"More than {growth} jobs failed in the last {window}.",
        ),
        Rule(
            "QueueFailureRatioHigh",
            # Sidekiq counts every failed attempt, retries included, and `processed` counts every
            # attempt (failed ones too). Many apps have a few retried failures all day (a flaky
            # API, a deadlock retried): alerting on any failure is noise people learn to ignore,
            # and a fixed count suits no volume. The share of attempts that failed does: 5% of
            # them failing over 15 minutes is no longer the usual retry. No attempt (0/0) is no
            # alert; counters (`increase`) cope with a restart of the collector.
            f"increase({p}_sidekiq_failed_total[{window}]) / increase({p}_sidekiq_processed_total[{window}]) > {ratio}",
            "0s",
            WARNING,
            f"Many jobs fail in {WHERE}",
            f"{PERCENT} of the jobs {WHERE} ran in the last {window} failed (over {ratio}): "
            "a broken deploy, or a service the jobs call is down.",
            (
                DatadogQuery(
                    f"sum({dd_window}):sum:{d}.sidekiq.failed{{*}} by {SYSTEM_TAGS}.as_count() / "
                    f"sum:{d}.sidekiq.processed{{*}} by {SYSTEM_TAGS}.as_count() > {ratio}",
                    t.failed_ratio,
                ),
            ),
            f"Over {ratio} of the jobs {DD_SYSTEM_WHERE} ran in the last {window} failed: "
            "a broken deploy, or a service the jobs call is down.",
        ),
        Rule(
            "QueueDueJobsNotEnqueued",
            f"{p}_due_age_seconds > {due_age}",
            t.due_for,
            WARNING,
            f"Due jobs do not enter {WHERE}",
            f"A scheduled or retried job of {WHERE} has been due for {VALUE} s (over {due_age} s) and no "
            "poller moved it into the queue: workers scaled to zero, crashing, or run without the scheduler.",
            (
                DatadogQuery(
                    f"min(last_{minutes(t.due_for)}m):max:{d}.due_age{{*}} by {QUEUE_TAGS} > {due_age}", t.due_age
                ),
            ),
            f"A scheduled or retried job of {DD_WHERE} has been due for over {due_age} s and no poller moved it "
            "into the queue: workers scaled to zero, crashing, or run without the scheduler.",
        ),
        Rule(
            "QueueJobRunningLong",
            f"{p}_running_age_seconds > {running_age}",
            "0s",
            WARNING,
            f"A job runs too long in {WHERE}",
            f"A job of {WHERE} has run for {VALUE} s (over {running_age} s): a hung call or a lock? "
            "Look at it in the system's UI before the queue backs up.",
            (DatadogQuery(f"max(last_1m):max:{d}.running_age{{*}} by {QUEUE_TAGS} > {running_age}", t.running_age),),
            f"A job of {DD_WHERE} has run for over {running_age} s: a hung call or a lock? "
            "Look at it in the system's UI before the queue backs up.",
        ),
        Rule(
            "QueueWithoutConsumer",
            # Matched on every label (a plain `and`): the two series come from the same target,
            # and another app's queue of the same name must not match.
            f"{p}_size > 0 and {p}_consumers == 0",
            t.no_consumer_for,
            CRITICAL,
            f"Nobody takes the jobs of {WHERE}",
            f"{VALUE} jobs wait in {WHERE} and no running worker is configured to take it "
            f"(for {t.no_consumer_for}): a new queue name, or workers started with the wrong queues.",
            # size * (1 - min(consumers, 1)): the size when no consumer, 0 otherwise.
            (
                DatadogQuery(
                    f"min(last_{minutes(t.no_consumer_for)}m):min:{d}.size{{*}} by {QUEUE_TAGS} * "
                    f"(1 - clamp_max(max:{d}.consumers{{*}} by {QUEUE_TAGS}, 1)) > 0",
                    0,
                ),
            ),
            f"Jobs wait in {DD_WHERE} and no running worker is configured to take it "
            f"(for {t.no_consumer_for}): a new queue name, or workers started with the wrong queues.",
        ),
        Rule(
            "QueueCollectorErrors",
            f"{p}_collector_errors > 0",
            t.errors_for,
            WARNING,
            "queue-metrics meets errors",
            f"Each tick of the last {t.errors_for} had errors ({VALUE} in the last): some figures are "
            "missing. The collector's stderr lines say why (`queue-metrics doctor` too).",
            (DatadogQuery(f"min(last_{minutes(t.errors_for)}m):max:{d}.collector.errors{{*}} > 0", 0),),
            f"Each tick of the last {t.errors_for} had errors: some figures are missing. "
            "The collector's stderr lines say why (`queue-metrics doctor` too).",
        ),
        Rule(
            "QueueCollectorDown",
            f"{p}_collector_up == 0",
            t.down_for,
            CRITICAL,
            "queue-metrics cannot read its datastores",
            f"For {t.down_for} the collector could not read its datastores (unreachable, refused, "
            "wrong credentials): no queue figure, no queue alert.",
            # DogStatsD gets no `up` figure: an unreachable datastore counts in collector.errors,
            # which QueueCollectorErrors watches.
            (),
            "",
        ),
    )


# --- the Prometheus names: the naming contract ------------------------------------------------

# Per-queue figures (QueueSample.figures) of every system, by their unit's suffix.
QUEUE_GAUGES = (
    "running",
    "due",
    "consumers",
    "unacked",
    "started",
    "failed",
    "finished",
    "deferred",
    "scheduled",
    "canceled",
    "delayed",
    "paused",
    "dead",
    "active",
    "completed",
    "prioritized",
)
QUEUE_SECONDS = ("running_age", "due_age")
# System-wide figures (SystemSample.figures): (system, figure, suffix).
SYSTEM_FIGURES = (
    ("sidekiq", "scheduled", ""),
    ("sidekiq", "retry", ""),
    ("sidekiq", "dead", ""),
    ("sidekiq", "processes", ""),
    ("sidekiq", "busy", ""),
    ("sidekiq", "concurrency", ""),
    ("sidekiq", "utilization", ""),
    ("sidekiq", "processed", "_total"),
    ("sidekiq", "failed", "_total"),
    ("rq", "workers", ""),
    ("rq", "busy", ""),
    ("resque", "failed", ""),
    ("resque", "workers", ""),
    ("resque", "working", ""),
    ("celery", "unacked", ""),
)
COLLECTOR_NAMES = (
    "collector_up",
    "collector_last_tick_timestamp_seconds",
    "collector_duration_seconds",
    "collector_queues",
    "collector_errors",
    "collector_dropped_total",
)


def prometheus_names(prefix: str) -> FrozenSet[str]:
    """Every metric family the Prometheus output sends, by the naming contract (a real scrape is
    compared with it in tests/test_alerts.py)."""
    p = metric_prefix(prefix)
    names = {f"{p}_size", f"{p}_latency_seconds"}
    names.update(f"{p}_{figure}" for figure in QUEUE_GAUGES)
    names.update(f"{p}_{figure}_seconds" for figure in QUEUE_SECONDS)
    names.update(f"{p}_{system}_{figure}{suffix}" for system, figure, suffix in SYSTEM_FIGURES)
    names.update(f"{p}_{name}" for name in COLLECTOR_NAMES)
    return frozenset(names)


# --- Prometheus: the rules file ---------------------------------------------------------------


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar: JSON's string syntax is one (no YAML package needed)."""
    return json.dumps(text)


def prometheus_rules(thresholds: Thresholds, prefix: str) -> str:
    """An alerting rules file for `rule_files:` (one group, `queue-metrics`)."""
    lines = [
        "# queue-metrics alert rules: `queue-metrics alerts --for prometheus` (load with rule_files).",
        "groups:",
        "  - name: queue-metrics",
        "    rules:",
    ]
    for rule in rules(thresholds, prefix):
        lines.append(f"      - alert: {rule.name}")
        lines.append(f"        expr: {yaml_string(rule.expr)}")
        if parse_duration("for", rule.for_):  # `for: 0s` is Prometheus's default: left out
            lines.append(f"        for: {rule.for_}")
        lines.append("        labels:")
        lines.append(f"          severity: {rule.severity}")
        lines.append("        annotations:")
        lines.append(f"          summary: {yaml_string(rule.summary)}")
        lines.append(f"          description: {yaml_string(rule.description)}")
    return "\n".join(lines) + "\n"


# --- Datadog: the monitors --------------------------------------------------------------------


def datadog_monitors(thresholds: Thresholds, prefix: str) -> List[Dict[str, object]]:
    """Monitor objects for POST /api/v1/monitor (one request each)."""
    monitors: List[Dict[str, object]] = []
    for rule in rules(thresholds, prefix):
        for query in rule.datadog:
            options: Dict[str, object] = {"thresholds": {"critical": plain(query.critical)}, "include_tags": True}
            if query.no_data:
                options["notify_no_data"] = True
                options["no_data_timeframe"] = max(DATADOG_MIN_NO_DATA_MINUTES, minutes(thresholds.absent))
            else:
                options["notify_no_data"] = False
            name = f"queue-metrics {rule.name}"
            if query.what:
                name += f" ({query.what})"
            monitors.append(
                {
                    "name": name,
                    "type": "query alert",
                    "query": query.query,
                    "message": rule.datadog_message,
                    "tags": [DATADOG_TAG, f"severity:{rule.severity}", f"rule:{rule.name}"],
                    "options": options,
                }
            )
    return monitors


def datadog_json(thresholds: Thresholds, prefix: str) -> str:
    return json.dumps(datadog_monitors(thresholds, prefix), indent=2) + "\n"


# --- Grafana: the dashboard -------------------------------------------------------------------


class Panel(NamedTuple):
    title: str
    expr: str
    legend: str
    unit: str
    # A red line at the rule's threshold, when a rule watches the figure.
    threshold: Optional[float] = None


QUEUE_LEGEND = "{{system}} {{queue}} ({{datastore}})"
SYSTEM_LEGEND = "{{system}} ({{datastore}})"


def panels(thresholds: Thresholds, prefix: str) -> Tuple[Panel, ...]:
    p = metric_prefix(prefix)
    # `max by`: two collectors of the same app (two dynos) report the same queue once.
    by_queue = f"max by ({QUEUE_LABELS})"
    return (
        Panel("Jobs waiting", f"{by_queue} ({p}_size)", QUEUE_LEGEND, "short"),
        Panel(
            "Latency (oldest job's wait)", f"{by_queue} ({p}_latency_seconds)", QUEUE_LEGEND, "s", thresholds.latency
        ),
        Panel("Jobs running", f"{by_queue} ({p}_running)", QUEUE_LEGEND, "short"),
        Panel(
            "Longest-running job", f"{by_queue} ({p}_running_age_seconds)", QUEUE_LEGEND, "s", thresholds.running_age
        ),
        Panel("Due jobs not yet in the queue", f"{by_queue} ({p}_due)", QUEUE_LEGEND, "short"),
        Panel("Earliest due job's wait", f"{by_queue} ({p}_due_age_seconds)", QUEUE_LEGEND, "s", thresholds.due_age),
        Panel("Consumers (workers taking the queue)", f"{by_queue} ({p}_consumers)", QUEUE_LEGEND, "short"),
        Panel(
            "Failed and dead jobs",
            f"{by_queue} ({p}_failed) or {by_queue} ({p}_dead) or max by (system, datastore) ({p}_sidekiq_dead)"
            f" or max by (system, datastore) ({p}_resque_failed)",
            QUEUE_LEGEND,
            "short",
        ),
        Panel("Collector up (datastores read)", f"{p}_collector_up", "{{instance}}", "short"),
        Panel(
            "Seconds since the last tick", f"time() - {p}_collector_last_tick_timestamp_seconds", "{{instance}}", "s"
        ),
        Panel("Collector tick duration", f"{p}_collector_duration_seconds", "{{instance}}", "s"),
        Panel("Collector errors per tick", f"{p}_collector_errors", "{{instance}}", "short"),
    )


PANEL_WIDTH = 12
PANEL_HEIGHT = 8
GRID_COLUMNS = 24


def grafana_dashboard(thresholds: Thresholds, prefix: str) -> Dict[str, object]:
    """A dashboard for Dashboards > Import: the data source is chosen there (`DS_PROMETHEUS`)
    and can be changed later (the `datasource` variable)."""
    p = metric_prefix(prefix)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    items: List[Dict[str, object]] = []
    for index, panel in enumerate(panels(thresholds, prefix)):
        steps: List[Dict[str, object]] = [{"color": "green", "value": None}]
        if panel.threshold is not None:
            steps.append({"color": "red", "value": plain(panel.threshold)})
        per_row = GRID_COLUMNS // PANEL_WIDTH
        items.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "datasource": datasource,
                "gridPos": {
                    "h": PANEL_HEIGHT,
                    "w": PANEL_WIDTH,
                    "x": (index % per_row) * PANEL_WIDTH,
                    "y": (index // per_row) * PANEL_HEIGHT,
                },
                "fieldConfig": {
                    "defaults": {
                        "unit": panel.unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"}},
                    },
                    "overrides": [],
                },
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"refId": "A", "datasource": datasource, "expr": panel.expr, "legendFormat": panel.legend}],
            }
        )
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes queue-metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "uid": DASHBOARD_UID_PREFIX + hashlib.sha256(p.encode()).hexdigest()[:12],
        "title": f"Job queues ({p})",
        "tags": ["queue-metrics"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": True, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
                }
            ]
        },
        "panels": items,
    }


def grafana_json(thresholds: Thresholds, prefix: str) -> str:
    return json.dumps(grafana_dashboard(thresholds, prefix), indent=2) + "\n"


def render(target: str, thresholds: Thresholds, prefix: str) -> str:
    """The text `queue-metrics alerts --for <target>` prints."""
    check_thresholds(thresholds)
    if target == PROMETHEUS:
        return prometheus_rules(thresholds, prefix)
    if target == DATADOG:
        return datadog_json(thresholds, prefix)
    if target == GRAFANA:
        return grafana_json(thresholds, prefix)
    raise ConfigError(f"--for must be one of {', '.join(TARGETS)}, got {target!r}")
