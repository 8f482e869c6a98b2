"""The `queue-metrics` command (click). With `runner.py`, the only code that reads `os.environ` or
writes to stdout/stderr."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import click

from queue_metrics import __version__
from queue_metrics.datastores import describe, passwords
from queue_metrics.datastores.redis.url import describe_redis_url
from queue_metrics.runner import (
    NOTHING_READ,
    PROGRAM,
    USAGE_ERROR,
    Output,
    Ticker,
    load_output_settings,
    load_settings,
    run_loop,
)

format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["librato", "json", "table"]),
    default=None,
    help="Output format (default: QUEUE_METRICS_FORMAT, else librato; `once` on a terminal: table).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROGRAM)
def main() -> None:
    """Queue size and latency of job queues (Sidekiq, RQ, Celery, Resque, BullMQ, Dramatiq, Solid Queue,
    GoodJob, Delayed Job, Que, procrastinate, Django tasks), read from Redis, RabbitMQ or Postgres,
    printed as log metrics.

    Settings come from QUEUE_METRICS_* environment variables; every Redis the app has is read
    (REDIS_URL, HEROKU_REDIS_<COLOR>_URL, REDIS_PROVIDER, ...), or those QUEUE_METRICS_REDIS_URL(S)
    names.
    """


@main.command()
@format_option
def once(output_format: Optional[str]) -> None:
    """Read every queue once, print the metrics, exit (1 if the reading had any error)."""
    if output_format is None and "QUEUE_METRICS_FORMAT" not in os.environ and sys.stdout.isatty():
        output_format = "table"
    settings = load_settings(output_format)
    output_settings = load_output_settings(settings)
    if output_settings.prometheus:
        # An endpoint needs a process that stays (`run`): `once` prints the log lines instead
        # when no other output is chosen.
        senders = output_settings.statsd or output_settings.otlp
        output_settings = output_settings._replace(prometheus=None, logs=output_settings.logs or not senders)
    ticker = Ticker(settings, output_settings, whole_first_walk=True)
    report = ticker.tick()
    ticker.emit(report)
    ticker.outputs.wait()
    # A script or a deploy check must see a failed reading: every error line counts, not only an
    # unreachable Redis (the figures that could be read are still printed).
    if not report.redis_ok or report.errors:
        raise SystemExit(NOTHING_READ)


@main.command()
@format_option
@click.option(
    "--interval", type=float, default=None, help="Seconds between ticks (default: QUEUE_METRICS_INTERVAL, else 30)."
)
def run(output_format: Optional[str], interval: Optional[float]) -> None:
    """Print the metrics now and then every interval, until SIGTERM or SIGINT."""
    settings = load_settings(output_format, interval)
    run_loop(settings, load_output_settings(settings))


@main.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between readings (a live view: 2 s, as watch(1); QUEUE_METRICS_INTERVAL is not used).",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds of latency over which a queue's row is highlighted.",
)
@click.option("--ticks", type=click.IntRange(min=1), default=None, help="Stop after this many readings.")
@click.option("--ascii", "ascii_only", is_flag=True, help="ASCII only (default: when stdout's encoding is not UTF-8).")
def watch(interval: float, latency: float, ticks: Optional[int], ascii_only: bool) -> None:
    """A live view of every queue: size, latency, trend; `q` or Ctrl-C quits.

    On a terminal the screen is redrawn in place every interval, the queues that need a look
    first; otherwise (or with TERM=dumb) a plain line per queue per reading.
    """
    from queue_metrics.outputs import OutputSettings
    from queue_metrics.runner import describe_locations
    from queue_metrics.watch import Options, run_watch

    settings = load_settings(interval=interval)
    # The view sends nothing on: StatsD or OTLP from a second process would count the counters twice.
    ticker = Ticker(settings, OutputSettings(logs=False))
    encoding = (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "")
    # NO_COLOR (no-color.org) and a dumb terminal: attention rows in reverse video, not red.
    color = "NO_COLOR" not in os.environ and os.environ.get("TERM", "dumb") != "dumb"
    run_watch(
        ticker,
        sys.stdin,
        sys.stdout,
        describe_locations(ticker.collector),
        settings.interval,
        ticks,
        Options(latency=latency, ascii=ascii_only or encoding != "utf8"),
        color,
        # TERM=dumb (Emacs' shell, a CI log) knows no cursor addressing nor alternate screen: plain
        # lines there. An unset TERM is not taken as dumb: `heroku run` may not pass it on.
        terminal=sys.stdout.isatty() and os.environ.get("TERM") != "dumb",
    )


@main.command()
def doctor() -> None:
    """Check the connection, permissions, detected systems and queues; say what to fix.

    Exit status 0 when all is well, 1 otherwise.
    """
    from queue_metrics.doctor import checkup_all

    settings = load_settings()
    output = Output(passwords(settings.locations()))
    result = checkup_all(settings, lambda notice: output.err([notice], level="info"))
    # The problems may quote a server's error reply: the password goes, as from stderr. The
    # other lines (the table's names among them) are printed as they are (see `Output`).
    output.out(output.hide_secrets(line) if line.startswith("Problem: ") else line for line in result.lines)
    if not result.healthy:
        raise SystemExit(NOTHING_READ)


@main.command()
def config() -> None:
    """Print the settings in effect (the Redis password is never shown)."""
    settings = load_settings()
    output_settings = load_output_settings(settings)
    # Printed as made: the URL is shown by `describe_redis_url` and the outputs by their
    # `describe`, which leave out passwords and header values; the rest is the user's own names.
    output = Output()
    lines: List[str] = []
    for field, value in settings._asdict().items():
        if field == "redis_url":
            value = describe_redis_url(value)
        if field == "datastores":
            lines.extend(f"datastore.{location.label}={describe(location)}" for location in settings.locations())
            continue
        if field == "rabbitmq_api_url" and value:
            from queue_metrics.datastores.rabbitmq.locations import describe_amqp_url

            value = describe_amqp_url(value)  # without its credentials
        if field == "system_settings":
            for system, own in value:
                if own is None:  # a system with no settings of its own (`rabbitmq`)
                    continue
                lines.extend(f"{system}.{name}={own_value!r}" for name, own_value in own._asdict().items())
            continue
        lines.append(f"{field}={value!r}")
    output.out(lines + output_settings.describe())


@main.command()
@click.option("--ticks", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--interval", type=float, default=1.0, show_default=True)
def demo(ticks: int, interval: float) -> None:
    """Start a private redis-server, enqueue Sidekiq, RQ and Celery jobs, print a few ticks."""
    from queue_metrics.demo import DemoError, run_demo

    output = Output()
    try:
        run_demo(ticks, interval, output.out, output.err)
    except DemoError as error:
        output.err([str(error)])
        raise SystemExit(NOTHING_READ) from None


@main.command()
@click.option(
    "--for",
    "target",
    type=click.Choice(["prometheus", "datadog", "grafana"]),
    required=True,
    help="Prometheus alerting rules (YAML), Datadog monitors (JSON) or a Grafana dashboard (JSON).",
)
@click.option(
    "--latency",
    type=float,
    default=30.0,
    show_default=True,
    help="Alert when the oldest job has waited longer (seconds).",
)
@click.option("--latency-for", default="5m", show_default=True, help="... for this long (e.g. 30s, 5m, 1h).")
@click.option(
    "--absent",
    default="5m",
    show_default=True,
    help="Alert when no tick came for this long (the collector stopped or hangs).",
)
@click.option(
    "--running-age", type=float, default=600.0, show_default=True, help="Alert when a job has run longer (seconds)."
)
@click.option(
    "--due-age",
    type=float,
    default=60.0,
    show_default=True,
    help="Alert when a due job has not entered its queue for longer (seconds).",
)
@click.option("--due-for", default="1m", show_default=True, help="... for this long (e.g. 30s, 5m, 1h).")
@click.option(
    "--no-consumer-for",
    default="2m",
    show_default=True,
    help="Alert when a queue has jobs and no consumer for this long.",
)
@click.option("--errors-for", default="5m", show_default=True, help="Alert when every tick had errors for this long.")
@click.option(
    "--down-for", default="2m", show_default=True, help="Alert when the datastores could not be read for this long."
)
@click.option(
    "--failed-window", default="15m", show_default=True, help="Alert when dead or failed jobs grew within this window."
)
@click.option("--failed-growth", type=float, default=0.0, show_default=True, help="... by more than this many jobs.")
@click.option(
    "--failed-ratio",
    type=float,
    default=0.05,
    show_default=True,
    help="Alert when more than this share of Sidekiq's jobs failed within --failed-window.",
)
def alerts(target: str, **options: object) -> None:
    """Print alert rules (Prometheus, Datadog) or a Grafana dashboard on our metric names.

    The metric prefix is QUEUE_METRICS_PREFIX's.
    """
    from queue_metrics.alerts import Thresholds, render
    from queue_metrics.errors import ConfigError

    prefix = load_settings().prefix
    output = Output()
    try:
        text = render(target, Thresholds(**options), prefix)  # type: ignore[arg-type]
    except ConfigError as error:
        output.err([str(error)], level="usage error")
        raise SystemExit(USAGE_ERROR) from None
    output.out(text.splitlines())
