"""Where each tick's figures go: the log lines (stdout), StatsD/DogStatsD, OTLP, a Prometheus
endpoint. Several at once.

`Outputs` is built once and fed every report after the log lines. Its senders never hold up the
loop; what they could not send is dropped, counted, and reported in the next tick's
`<prefix>.collector.dropped` (a counter, in every output, only when a network output is on).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from queue_metrics.errors import ConfigError
from queue_metrics.sample import TickReport

if TYPE_CHECKING:
    # Each network output is imported only when it is chosen: a dyno that prints log lines only
    # loads neither (OTLP alone brings threads, gzip and an HTTP client).
    from queue_metrics.outputs.otlp import OtlpSender, OtlpSettings
    from queue_metrics.outputs.prometheus import PrometheusOutput, PrometheusSettings
    from queue_metrics.outputs.statsd import StatsdSender, StatsdSettings

LOGS = "logs"
STATSD = "statsd"
OTLP = "otlp"
PROMETHEUS = "prometheus"
OUTPUT_NAMES = (LOGS, STATSD, OTLP, PROMETHEUS)


class OutputSettings(NamedTuple):
    logs: bool = True
    statsd: Optional[StatsdSettings] = None
    otlp: Optional[OtlpSettings] = None
    prometheus: Optional[PrometheusSettings] = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], interval: float, prefix: str = "queue") -> "OutputSettings":
        """QUEUE_METRICS_OUTPUTS and the chosen outputs' own settings; ConfigError on a bad one."""
        names = _output_names(env.get("QUEUE_METRICS_OUTPUTS", ""))
        statsd: Optional[StatsdSettings] = None
        otlp: Optional[OtlpSettings] = None
        if STATSD in names:
            from queue_metrics.outputs.statsd import StatsdSettings

            statsd = StatsdSettings.from_env(env, prefix)
        if OTLP in names:
            from queue_metrics.outputs.otlp import OtlpSettings

            otlp = OtlpSettings.from_env(env, interval)
        prometheus: Optional[PrometheusSettings] = None
        if PROMETHEUS in names:
            from queue_metrics.outputs.prometheus import PrometheusSettings

            prometheus = PrometheusSettings.from_env(env)
        return cls(logs=LOGS in names, statsd=statsd, otlp=otlp, prometheus=prometheus)

    @property
    def names(self) -> Tuple[str, ...]:
        chosen = ((LOGS, self.logs), (STATSD, self.statsd), (OTLP, self.otlp), (PROMETHEUS, self.prometheus))
        return tuple(name for name, on in chosen if on)

    def describe(self) -> List[str]:
        """`name=value` lines for the `config` command: no header value, no URL password."""
        lines = [f"outputs={','.join(self.names)}"]
        if self.statsd:
            lines.append(f"statsd={self.statsd.describe()}")
        if self.otlp:
            lines.append(f"otlp={self.otlp.describe()}")
            lines.append(f"otlp_resource={','.join(f'{k}={v}' for k, v in self.otlp.resource)}")
        if self.prometheus:
            lines.append(f"prometheus={self.prometheus.describe()}")
        return lines

    def secrets(self) -> List[str]:
        return self.otlp.secrets() if self.otlp else []


def _output_names(text: str) -> Tuple[str, ...]:
    if not text.strip():
        return (LOGS,)
    chosen: List[str] = []
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word not in OUTPUT_NAMES:
            raise ConfigError(f"QUEUE_METRICS_OUTPUTS: unknown output {word!r} (choose from {', '.join(OUTPUT_NAMES)})")
        if word not in chosen:
            chosen.append(word)
    if not chosen:
        raise ConfigError("QUEUE_METRICS_OUTPUTS names no output")
    return tuple(chosen)


Sender = Union["StatsdSender", "OtlpSender"]


class Outputs:
    """The network outputs of one process; `logs` says whether the CLI prints the log lines.

    The Prometheus endpoint starts listening here (ConfigError, one line, when it cannot), and
    serves from its own thread until `close`. It drops nothing: `dropped` stays None with it alone.
    """

    def __init__(
        self,
        settings: OutputSettings,
        prefix: str,
        source: Optional[str],
        err: Callable[[Sequence[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.logs = settings.logs
        self.senders: List[Sender] = []
        if settings.statsd:
            from queue_metrics.outputs.statsd import StatsdSender

            self.senders.append(StatsdSender(settings.statsd, prefix, source, err))
        if settings.otlp:
            from queue_metrics.outputs.otlp import OtlpSender

            self.senders.append(OtlpSender(settings.otlp, prefix, err, clock))
        self.prometheus: Optional[PrometheusOutput] = None
        if settings.prometheus:
            from queue_metrics.outputs.prometheus import PrometheusOutput

            self.prometheus = PrometheusOutput(settings.prometheus, prefix, err)

    def take_dropped(self) -> Optional[int]:
        """Data points dropped since the last call; None when only the log lines are on."""
        if not self.senders:
            return None
        return sum(sender.take_dropped() for sender in self.senders)

    def send(self, report: TickReport, now: float, dropped: Optional[int]) -> None:
        for sender in self.senders:
            sender.send(report, now, dropped)
        if self.prometheus is not None:
            self.prometheus.send(report, now, dropped)

    def wait(self) -> None:
        """Let requests under way finish (each within its timeout), for a command that exits."""
        for sender in self.senders:
            sender.wait()

    def close(self) -> None:
        """Stop serving (the Prometheus endpoint's thread ends, its port is freed)."""
        if self.prometheus is not None:
            self.prometheus.close()
