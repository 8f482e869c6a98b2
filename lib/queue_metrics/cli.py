"""The `queue-metrics` command. The only module that reads `os.environ` or writes to stdout/stderr."""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional, Sequence

import click

from queue_metrics import __version__
from queue_metrics.config import ConfigError, Settings
from queue_metrics.format import json_line, librato_lines, table_lines
from queue_metrics.loop import StopRequested, StopSignals, run_forever
from queue_metrics.outputs import Outputs, OutputSettings
from queue_metrics.redis_url import describe_redis_url, secrets_of
from queue_metrics.sample import TickReport

USAGE_ERROR = 2
NOTHING_READ = 1
PROGRAM = "queue-metrics"


class Output:
    """Writes whole lines, flushed at once, with every secret and control character removed."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self._secrets = tuple(secrets)

    def clean(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line.replace("\r", "\\r").replace("\n", "\\n")

    def out(self, lines: List[str]) -> None:
        if lines:
            sys.stdout.write("".join(self.clean(line) + "\n" for line in lines))
            sys.stdout.flush()

    def err(self, messages: Sequence[str], level: str = "error") -> None:
        if messages:
            sys.stderr.write("".join(f"{PROGRAM}: {level}: {self.clean(m)}\n" for m in messages))
            sys.stderr.flush()


def load_settings(output_format: Optional[str] = None, interval: Optional[float] = None) -> Settings:
    env = dict(os.environ)
    if output_format:
        env["QUEUE_METRICS_FORMAT"] = output_format
    if interval is not None:
        env["QUEUE_METRICS_INTERVAL"] = repr(interval)
    try:
        return Settings.from_env(env)
    except ConfigError as error:
        # The message names the variable, never its value when that value is a URL.
        Output(_env_secrets(env)).err([f"{error}"], level="usage error")
        raise SystemExit(USAGE_ERROR)


def load_output_settings(settings: Settings) -> OutputSettings:
    """QUEUE_METRICS_OUTPUTS and the StatsD/OTLP settings; a usage error (exit 2) on a bad one."""
    env = dict(os.environ)
    try:
        return OutputSettings.from_env(env, settings.interval, settings.prefix)
    except ConfigError as error:
        Output(_env_secrets(env)).err([f"{error}"], level="usage error")
        raise SystemExit(USAGE_ERROR)


def _env_secrets(env) -> List[str]:
    secrets: List[str] = []
    for name, value in env.items():
        if name.endswith("_URL") and "://" in value:
            secrets.extend(secrets_of(value))
    return secrets


def render(report: TickReport, settings: Settings, now: float, dropped: Optional[int] = None) -> List[str]:
    if settings.output_format == "json":
        return [json_line(report, time=round(now, 3), source=settings.source, dropped=dropped)]
    if settings.output_format == "table":
        return table_lines(report)
    return librato_lines(report, settings.prefix, settings.source, dropped=dropped)


class Ticker:
    """Builds the client lazily (nothing at import time) and turns ticks into output."""

    def __init__(self, settings: Settings, output_settings: Optional[OutputSettings] = None,
                 whole_first_walk: bool = False) -> None:
        from queue_metrics.collector import FIRST_WALK_SECONDS, Collector  # imports redis: only when used
        from queue_metrics.connection import connect

        output_settings = output_settings or OutputSettings()
        self.settings = settings
        self.output = Output([*secrets_of(settings.redis_url), *output_settings.secrets()])
        self.outputs = Outputs(output_settings, settings.prefix, settings.source, self.output.err)
        self.collector = Collector(settings, connect(settings),
                                   first_walk_seconds=float("inf") if whole_first_walk else FIRST_WALK_SECONDS)

    def tick(self) -> TickReport:
        return self.collector.tick()

    def idle(self, deadline: float) -> None:
        """Between ticks: the keyspace walk, at its own pace, until the next tick is due."""
        self.collector.walk(deadline)

    def emit(self, report: TickReport) -> None:
        self.output.err(report.errors)
        now = time.time()
        # What the network outputs dropped since the last tick; None when only the logs are on.
        dropped = self.outputs.take_dropped()
        if self.outputs.logs:
            self.output.out(render(report, self.settings, now, dropped))
        self.outputs.send(report, now, dropped)


format_option = click.option(
    "--format", "output_format", type=click.Choice(["librato", "json", "table"]), default=None,
    help="Output format (default: QUEUE_METRICS_FORMAT, else librato; `once` on a terminal: table).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROGRAM)
def main() -> None:
    """Queue size and latency of Sidekiq, RQ and Celery, read from Redis, printed as log metrics.

    Settings come from QUEUE_METRICS_* environment variables; the Redis URL from
    QUEUE_METRICS_REDIS_URL or the usual Heroku add-on variables (REDIS_URL, ...).
    """


@main.command()
@format_option
def once(output_format: Optional[str]) -> None:
    """Read every queue once, print the metrics, exit (1 if Redis could not be read)."""
    if output_format is None and "QUEUE_METRICS_FORMAT" not in os.environ and sys.stdout.isatty():
        output_format = "table"
    settings = load_settings(output_format)
    ticker = Ticker(settings, load_output_settings(settings), whole_first_walk=True)
    report = ticker.tick()
    ticker.emit(report)
    ticker.outputs.wait()
    if not report.redis_ok:
        raise SystemExit(NOTHING_READ)


@main.command()
@format_option
@click.option("--interval", type=float, default=None,
              help="Seconds between ticks (default: QUEUE_METRICS_INTERVAL, else 30).")
def run(output_format: Optional[str], interval: Optional[float]) -> None:
    """Print the metrics now and then every interval, until SIGTERM or SIGINT."""
    settings = load_settings(output_format, interval)
    output_settings = load_output_settings(settings)
    stop = StopSignals()
    stop.install()
    try:
        ticker = Ticker(settings, output_settings)
        ticker.output.err([
            f"reading {describe_redis_url(settings.redis_url)} every {settings.interval:g} s "
            f"(backends: {','.join(settings.backends) if settings.backends else 'auto'}; "
            f"outputs: {','.join(output_settings.names)})"
        ], level="info")
        run_forever(ticker.tick, ticker.emit, settings.interval, stop, idle=ticker.idle)
    except StopRequested:
        pass
    except BrokenPipeError:
        # Whoever read our output is gone; nothing left to report to.
        _silence_stdout()
    finally:
        stop.restore()


@main.command()
def doctor() -> None:
    """Check the connection, permissions, detected systems and queues; say what to fix.

    Exit status 0 when all is well, 1 otherwise.
    """
    from queue_metrics.connection import connect
    from queue_metrics.doctor import checkup

    settings = load_settings()
    output = Output(secrets_of(settings.redis_url))
    result = checkup(settings, connect(settings))
    output.out(result.lines)
    if not result.healthy:
        raise SystemExit(NOTHING_READ)


@main.command()
def config() -> None:
    """Print the settings in effect (the Redis password is never shown)."""
    settings = load_settings()
    output_settings = load_output_settings(settings)
    output = Output([*secrets_of(settings.redis_url), *output_settings.secrets()])
    lines: List[str] = []
    for field, value in vars(settings).items():
        if field == "redis_url":
            value = describe_redis_url(value)
        if field == "system_settings":
            for system, own in value:
                lines.extend(f"{system}.{name}={own_value!r}" for name, own_value in vars(own).items())
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
        raise SystemExit(NOTHING_READ)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
