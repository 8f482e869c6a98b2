"""Settings: a typed, frozen view of the environment, built from a mapping passed in.

Only the CLI hands `os.environ` to `Settings.from_env`; everything else receives a `Settings`,
so tests build one from a plain dict. Each queue system parses the settings it owns itself
(`SystemSpec.settings_from_env`); the helpers below are shared.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple, Optional, Tuple

from queue_metrics.datastores import DEFAULT_SOURCE, Location, all_locations
from queue_metrics.errors import ConfigError
from queue_metrics.setting_values import boolean

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

OUTPUT_FORMATS = ("librato", "json", "table")

# Librato metric and source names: these characters only.
NAME_CHARS = re.compile(r"^[A-Za-z0-9.:_-]+$")
MAX_PREFIX_LENGTH = 60
MAX_SOURCE_LENGTH = 255

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0
# Seconds for one walk through the whole keyspace looking for queues no registry lists: a
# queue that appears is found within two walks, and reported at the next tick, so within
# 2 * 15 + 30 = 60 s with the defaults.
DEFAULT_DISCOVERY_INTERVAL = 15.0


class Settings(NamedTuple):
    """Everything the loop is told, built from an environment mapping (`from_env`).

    Typed and frozen as a NamedTuple, as are every system's and output's settings: `dataclasses`
    imports `inspect`, 1.2 MB of the web dyno's memory for nothing the loop needs (BENCHMARKS.md).
    """

    # The Redis a reader reads: in the settings of the whole process, the first Redis datastore
    # (`datastores`); each Redis reader is handed settings with its own URL here.
    redis_url: str = DEFAULT_REDIS_URL
    # Which variable the URL came from (None: the built-in default), for error messages.
    redis_url_var: Optional[str] = None
    interval: float = DEFAULT_INTERVAL
    # Socket connect and read timeout; always shorter than the interval.
    timeout: float = DEFAULT_TIMEOUT
    # None: detect the backends from their registry keys on every tick.
    backends: Optional[Tuple[str, ...]] = None
    prefix: str = "queue"
    source: Optional[str] = None
    output_format: str = "librato"
    discovery_interval: float = DEFAULT_DISCOVERY_INTERVAL
    tls_verify: bool = False
    tls_ca_file: Optional[str] = None
    # Figures beyond size and latency (retries, workers, held messages...): QUEUE_METRICS_EXTRAS.
    extras: bool = True
    # (system name, that system's own settings) for every system in `systems.SYSTEMS`.
    system_settings: Tuple[Tuple[str, Any], ...] = ()
    # Every datastore to read, in the order of the naming rule (`datastores.Location`); empty:
    # the one Redis of `redis_url`.
    datastores: Tuple[Location, ...] = ()
    # The RabbitMQ management API (QUEUE_METRICS_RABBITMQ_API_URL); None: CloudAMQP's, on the AMQP
    # URL's host.
    rabbitmq_api_url: Optional[str] = None
    # Verify an https:// management API's certificate: on unless QUEUE_METRICS_TLS_VERIFY says
    # false. Unlike Heroku's Redis, CloudAMQP serves publicly trusted certificates, and every
    # request carries the user's password.
    api_tls_verify: bool = True

    def locations(self) -> Tuple[Location, ...]:
        """The datastores to read: those the environment named, else the one of `redis_url`."""
        if self.datastores:
            return self.datastores
        return (Location("redis", "redis", self.redis_url, self.redis_url_var or DEFAULT_SOURCE),)

    def of(self, system: str) -> Any:
        """The settings `system` owns; None when they were not parsed (its defaults apply)."""
        return dict(self.system_settings).get(system)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Build settings from an environment mapping; raise ConfigError on the first bad value."""
        from queue_metrics.systems import SYSTEMS  # not at import time: the build imports this module

        values = {name: value for name, value in env.items() if value != ""}

        locations = all_locations(values)
        if "DYNO" in values and all(location.source == DEFAULT_SOURCE for location in locations):
            # On a dyno, the default (a Redis on localhost) is never the app's: say what to set,
            # once (exit 2: the supervisor does not restart it until the config changes).
            raise ConfigError(
                "no datastore URL is set: set REDIS_URL (or a HEROKU_REDIS_<COLOR>_URL, REDIS_PROVIDER, "
                "QUEUE_METRICS_REDIS_URL), CLOUDAMQP_URL or DATABASE_URL to where your jobs live"
            )
        first_redis = next((location for location in locations if location.kind == "redis"), None)
        redis_url, redis_url_var = DEFAULT_REDIS_URL, None
        if first_redis is not None:
            redis_url = first_redis.url
            redis_url_var = None if first_redis.source == DEFAULT_SOURCE else first_redis.source

        interval = _positive_number(values, "QUEUE_METRICS_INTERVAL", DEFAULT_INTERVAL)
        # A tick must give up on a silent Redis before the next one is due.
        default_timeout = min(DEFAULT_TIMEOUT, interval / 2)
        timeout = _positive_number(values, "QUEUE_METRICS_TIMEOUT", default_timeout)
        if timeout >= interval:
            raise ConfigError(
                f"QUEUE_METRICS_TIMEOUT must be shorter than QUEUE_METRICS_INTERVAL ({_show_number(interval)} s)"
            )

        tls_ca_file = values.get("QUEUE_METRICS_TLS_CA_FILE")
        tls_verify = boolean(values, "QUEUE_METRICS_TLS_VERIFY", default=tls_ca_file is not None)
        rabbitmq_api_url = values.get("QUEUE_METRICS_RABBITMQ_API_URL", "").strip() or None
        if rabbitmq_api_url is not None:
            from queue_metrics.datastores.rabbitmq.locations import check_api_url

            check_api_url(rabbitmq_api_url)

        return cls(
            redis_url=redis_url,
            redis_url_var=redis_url_var,
            interval=interval,
            timeout=timeout,
            backends=_backends(
                values.get("QUEUE_METRICS_BACKENDS"), tuple(dict.fromkeys(spec.name for spec in SYSTEMS))
            ),
            prefix=_name(values, "QUEUE_METRICS_PREFIX", "queue", MAX_PREFIX_LENGTH),
            source=_name(values, "QUEUE_METRICS_SOURCE", None, MAX_SOURCE_LENGTH),
            output_format=_choice(values, "QUEUE_METRICS_FORMAT", OUTPUT_FORMATS, "librato"),
            discovery_interval=_positive_number(values, "QUEUE_METRICS_DISCOVERY_INTERVAL", DEFAULT_DISCOVERY_INTERVAL),
            tls_verify=tls_verify,
            tls_ca_file=tls_ca_file,
            extras=boolean(values, "QUEUE_METRICS_EXTRAS", default=True),
            # Per name, the first row's: `celery` on Redis parses Celery's settings, and the
            # same name on RabbitMQ owns none of its own.
            system_settings=tuple(
                (spec.name, spec.settings_from_env(values))
                for spec in {spec.name: spec for spec in reversed(SYSTEMS)}.values()
            ),
            datastores=locations,
            rabbitmq_api_url=rabbitmq_api_url,
            api_tls_verify=boolean(values, "QUEUE_METRICS_TLS_VERIFY", default=True),
        )


# What opens a PEM certificate (or OpenSSL's "TRUSTED CERTIFICATE"): a CA file without one holds
# no certificate OpenSSL reads as a CA (a DER file, a key, a wrong path's other file).
PEM_CERTIFICATE_MARKS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----")
# More than any CA bundle (the system's is ~200 kB); a file past it is not read further.
MAX_CA_FILE_BYTES = 1 << 22


def check_tls_ca_file(settings: Settings) -> None:
    """ConfigError unless QUEUE_METRICS_TLS_CA_FILE, when set, is a readable PEM certificate file.

    Checked once when the command starts, not in `Settings.from_env` (which reads no file, so
    that settings are built from any mapping): otherwise the connection finds out at every tick
    and the failure reads like a Redis one. OpenSSL itself loads the file only when a rediss://
    URL (of any datastore) verifies with it: `ssl` costs megabytes of the dyno's memory, which only TLS needs.
    """
    variable, path = "QUEUE_METRICS_TLS_CA_FILE", settings.tls_ca_file
    if path is None:
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_CA_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{variable}: no such file {path!r}") from None
    except IsADirectoryError:
        raise ConfigError(f"{variable}: {path!r} is a directory, not a CA certificate file") from None
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path!r} ({(error.strerror or 'error').lower()})") from None
    if not any(mark in head for mark in PEM_CERTIFICATE_MARKS):
        raise ConfigError(f"{variable}: {path!r} is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)")
    # Any datastore's TLS URL, not only the first one's: a second Redis may be the one on TLS.
    locations = settings.locations()
    rediss = settings.tls_verify and any(location.url.startswith("rediss://") for location in locations)
    # A RabbitMQ's management API is https:// unless QUEUE_METRICS_RABBITMQ_API_URL says http://.
    https_api = settings.api_tls_verify and any(location.kind == "rabbitmq" for location in locations)
    https_api = https_api and not (settings.rabbitmq_api_url or "https:").lower().startswith("http:")
    if rediss or https_api:
        import ssl

        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, ValueError) as error:
            reason = getattr(error, "reason", None)
            detail = f" ({reason})" if reason else ""
            raise ConfigError(f"{variable}: {path!r} holds no certificate OpenSSL can load{detail}") from None


def _show_number(value: float) -> str:
    return f"{value:g}"


def _positive_number(values: Mapping[str, str], name: str, default: float) -> float:
    if name not in values:
        return default
    text = values[name].strip()
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {text!r}")
    return number


def _choice(values: Mapping[str, str], name: str, choices: Tuple[str, ...], default: str) -> str:
    word = values.get(name, default).strip().lower()
    if word not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {values[name]!r}")
    return word


def _name(values: Mapping[str, str], name: str, default, max_length: int):
    if name not in values:
        return default
    text = values[name].strip()
    if not NAME_CHARS.match(text) or len(text) > max_length:
        raise ConfigError(f"{name} may hold only letters, digits and . : _ - (at most {max_length}), got {text!r}")
    return text


def _backends(text: Optional[str], names: Tuple[str, ...]) -> Optional[Tuple[str, ...]]:
    if text is None or text.strip().lower() == "auto":
        return None
    chosen = []
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word not in names:
            raise ConfigError(
                f"QUEUE_METRICS_BACKENDS: unknown backend {word!r} (choose from {', '.join(names)}, or auto)"
            )
        if word not in chosen:
            chosen.append(word)
    if not chosen:
        raise ConfigError("QUEUE_METRICS_BACKENDS names no backend")
    return tuple(chosen)
