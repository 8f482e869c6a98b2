"""The command line without click: settings from `os.environ`, lines to stdout and stderr.

With `cli.py` this is the only code that reads `os.environ` or writes to stdout/stderr. The
loop as deployed starts here (`python -m queue_metrics run`, or `main(["run"])` from the
supervisor) and imports neither click nor redis-py: the process lives inside a customer's web
dyno, and those two cost more memory and start-up than the collector itself (BENCHMARKS.md).
Every other command goes to the click CLI.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, List, Optional, Sequence, Set, Tuple

from queue_metrics.config import ConfigError, Settings, check_tls_ca_file
from queue_metrics.datastores import passwords
from queue_metrics.datastores.redis.url import passwords_of
from queue_metrics.errors import WarningNotice, no_consumer, no_consumer_more
from queue_metrics.loop import StopRequested, StopSignals, run_forever
from queue_metrics.outputs import Outputs, OutputSettings
from queue_metrics.outputs.format import json_line, librato_line_stream, table_lines
from queue_metrics.sample import TickReport, sections

USAGE_ERROR = 2
NOTHING_READ = 1
PROGRAM = "queue-metrics"
LINES_PER_WRITE = 256


class Output:
    """Writes whole lines, flushed at once, control characters escaped.

    `secrets` (the Redis password, OTLP header values) are removed from the lines on stderr, and
    from the tick's error messages, only: those may quote foreign text (a server's error reply,
    an exception), so this is the last line of defence behind the places that never put a
    password into a message. Metric lines (log lines, JSON, table; and so StatsD and OTLP) are
    never rewritten: a queue, prefix or figure name is the user's own data, even when it is
    spelled like the password (nothing is revealed that the user did not write there), and
    the user name is no secret at all (`default` on Redis Cloud and Upstash, like the queue).
    """

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        # Longest first: a secret that holds another is hidden whole.
        self._secrets = tuple(sorted(set(secrets), key=len, reverse=True))

    def hide_secrets(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def one_line(line: str) -> str:
        return line.replace("\r", "\\r").replace("\n", "\\n")

    def out(self, lines: Iterable[str]) -> None:
        # Whole lines, a few hundred at a time, as they are made: ten thousand queues' lines are
        # never one string, nor all in memory at once.
        batch: List[str] = []
        written = False
        for line in lines:
            batch.append(self.one_line(line) + "\n")
            if len(batch) == LINES_PER_WRITE:
                sys.stdout.write("".join(batch))
                batch, written = [], True
        if batch:
            sys.stdout.write("".join(batch))
            written = True
        if written:
            sys.stdout.flush()

    def err(self, messages: Sequence[str], level: str = "error") -> None:
        if messages:
            sys.stderr.write("".join(f"{PROGRAM}: {level}: {self.one_line(self.hide_secrets(m))}\n" for m in messages))
            sys.stderr.flush()


def load_settings(output_format: Optional[str] = None, interval: Optional[float] = None) -> Settings:
    env = dict(os.environ)
    if output_format:
        env["QUEUE_METRICS_FORMAT"] = output_format
    if interval is not None:
        env["QUEUE_METRICS_INTERVAL"] = repr(interval)
    try:
        settings = Settings.from_env(env)
        check_tls_ca_file(settings)
        return settings
    except ConfigError as error:
        # The message names the variable, never its value when that value is a URL.
        Output(_env_secrets(env)).err([f"{error}"], level="usage error")
        raise SystemExit(USAGE_ERROR) from None


def load_output_settings(settings: Settings) -> OutputSettings:
    """QUEUE_METRICS_OUTPUTS and the StatsD/OTLP settings; a usage error (exit 2) on a bad one."""
    env = dict(os.environ)
    try:
        return OutputSettings.from_env(env, settings.interval, settings.prefix)
    except ConfigError as error:
        Output(_env_secrets(env)).err([f"{error}"], level="usage error")
        raise SystemExit(USAGE_ERROR) from None


def _env_secrets(env) -> List[str]:
    """The passwords of every URL in the environment, for a usage error's line: the messages
    never quote a URL, and this holds if one ever did."""
    secrets: List[str] = []
    for value in env.values():
        if "://" in value:
            # A list of URLs too (QUEUE_METRICS_REDIS_URLS: `label=URL,...`).
            for item in value.split(","):
                secrets.extend(passwords_of(item.partition("=")[2] if "=" in item.split("://")[0] else item))
    return secrets


def render(report: TickReport, settings: Settings, now: float, dropped: Optional[int] = None) -> Iterable[str]:
    if settings.output_format == "json":
        return [json_line(report, time=round(now, 3), source=settings.source, dropped=dropped)]
    if settings.output_format == "table":
        return table_lines(report)
    return librato_line_stream(report, settings.prefix, settings.source, dropped=dropped)


# Warnings of queues no worker listens to, at most, in one tick (the last one counts the rest).
MAX_UNLISTENED_LINES = 5


class UnlistenedWarnings:
    """Queues that hold jobs while no worker listens to them (`consumers` 0), each said once as a
    warning: again only after it changed (a worker came, or the queue emptied) and came back. A
    datastore that could not be read this tick keeps what was said of it."""

    def __init__(self) -> None:
        self._said: Set[Tuple[str, str, str]] = set()

    def new(self, report: TickReport) -> List[str]:
        said: Set[Tuple[str, str, str]] = set()
        lines = []
        for section, samples, _ in sections(report):
            label = section.label if section is not None else ""
            if section is not None and not section.ok:
                said.update(key for key in self._said if key[0] == label)
                continue
            for sample in samples:
                if sample.size <= 0 or not any(
                    figure.name == "consumers" and figure.value == 0 for figure in sample.figures
                ):
                    continue
                key = (label, sample.backend, sample.queue)
                said.add(key)
                if key not in self._said:
                    line = no_consumer(sample.backend, sample.queue, sample.size)
                    lines.append(f"{label}: {line}" if len(report.datastores) > 1 else line)
        self._said = said
        if len(lines) > MAX_UNLISTENED_LINES:
            # Workers scaled to zero leave every queue unlistened: a few lines, then the count.
            more = len(lines) - MAX_UNLISTENED_LINES + 1
            lines = [*lines[: MAX_UNLISTENED_LINES - 1], no_consumer_more(more)]
        return lines


class Ticker:
    """Builds the client lazily (nothing at import time) and turns ticks into output."""

    def __init__(
        self, settings: Settings, output_settings: Optional[OutputSettings] = None, whole_first_walk: bool = False
    ) -> None:
        from queue_metrics.collector import Collector  # nothing at import time

        output_settings = output_settings or OutputSettings()
        self.settings = settings
        self.output = Output([*passwords(settings.locations()), *output_settings.secrets()])
        self.outputs = Outputs(output_settings, settings.prefix, settings.source, self.output.err)
        # `run` says once each queue that holds jobs no worker listens to (doctor says it too).
        self.unlistened: Optional[UnlistenedWarnings] = None
        # `once` walks the keyspace whole before it reports, `run` one step in its first tick and
        # the rest between ticks; either says so on stderr when the walk takes a while.
        self.collector = Collector(
            settings,
            whole_first_walk=whole_first_walk,
            announce=lambda notice: self.output.err(
                [notice], level="warning" if isinstance(notice, WarningNotice) else "info"
            ),
        )

    def tick(self) -> TickReport:
        try:
            return self.collector.tick()
        except Exception as error:  # noqa: BLE001 (the loop outlives a defect; the line says what)
            self.collector.reset()
            message = f"the tick failed unexpectedly ({type(error).__name__}: {error}); trying again next tick"
            return TickReport((), (message[:300],), (), 0.0, False)

    def idle(self, deadline: float) -> None:
        """Between ticks: the keyspace walk, at its own pace, until the next tick is due."""
        self.collector.idle(deadline)

    def emit(self, report: TickReport) -> None:
        if report.errors:
            # The messages go to stderr and into JSON's "errors": the same text in both, without
            # a password that a server's error reply or an exception may have quoted.
            report = report._replace(errors=tuple(self.output.hide_secrets(error) for error in report.errors))
        self.output.err(report.errors)
        if self.unlistened is not None:
            self.output.err(self.unlistened.new(report), level="warning")
        now = time.time()
        # What the network outputs dropped since the last tick; None when only the logs are on.
        dropped = self.outputs.take_dropped()
        if self.outputs.logs:
            self.output.out(render(report, self.settings, now, dropped))
        self.outputs.send(report, now, dropped)


def run_loop(settings: Settings, output_settings: OutputSettings) -> None:
    """Print the metrics now and then every interval, until SIGTERM or SIGINT."""
    stop = StopSignals()
    stop.install()
    ticker: Optional[Ticker] = None
    try:
        try:
            ticker = Ticker(settings, output_settings)
        except ConfigError as error:
            # The Prometheus endpoint's port is taken (or its host unknown): one line, exit 2.
            Output().err([f"{error}"], level="usage error")
            raise SystemExit(USAGE_ERROR) from None
        ticker.unlistened = UnlistenedWarnings()
        ticker.output.err(
            [
                f"reading {describe_locations(ticker.collector)} every {settings.interval:g} s "
                f"(backends: {','.join(settings.backends) if settings.backends else 'auto'}; "
                f"outputs: {','.join(output_settings.names)})"
            ],
            level="info",
        )
        run_forever(ticker.tick, ticker.emit, settings.interval, stop, idle=ticker.idle)
    except StopRequested:
        pass
    except BrokenPipeError:
        # Whoever read our output is gone; nothing left to report to.
        _silence_stdout()
    finally:
        if ticker is not None:
            ticker.outputs.close()
        stop.restore()


def describe_locations(collector) -> str:
    """`redis (rediss://host:port/0, from REDIS_URL), ...`: every datastore read, no password."""
    return ", ".join(
        f"{datastore.location.label} ({datastore.describe()}, from {datastore.location.source})"
        for datastore in collector.datastores
    )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
