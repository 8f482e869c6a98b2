"""Settings: a typed, frozen view of the environment, built from a mapping passed in.

Only the CLI hands `os.environ` to `Settings.from_env`; everything else receives a `Settings`,
so tests build one from a plain dict.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Optional, Tuple

from queue_metrics.redis_url import RedisURLError, check_redis_url

# Searched in this order; the first one set wins. Heroku add-ons set the later ones.
REDIS_URL_VARS = (
    "QUEUE_METRICS_REDIS_URL",
    "REDIS_TLS_URL",
    "REDIS_URL",
    "REDISCLOUD_URL",
    "REDISTOGO_URL",
    "OPENREDIS_URL",
    "REDISGREEN_URL",
)
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

BACKEND_NAMES = ("sidekiq", "rq", "celery")
OUTPUT_FORMATS = ("librato", "json")

# Librato metric and source names: these characters only.
NAME_CHARS = re.compile(r"^[A-Za-z0-9.:_-]+$")
MAX_PREFIX_LENGTH = 60
MAX_SOURCE_LENGTH = 255

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_DISCOVERY_INTERVAL = 300.0

# kombu's Redis transport defaults (transport options `sep` and `priority_steps`).
KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line and names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
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
    sidekiq_namespace: str = ""
    sidekiq_queues: Tuple[str, ...] = ()
    rq_queues: Tuple[str, ...] = ()
    celery_queues: Tuple[str, ...] = ()
    celery_sep: str = KOMBU_SEP
    celery_priority_steps: Tuple[int, ...] = KOMBU_PRIORITY_STEPS
    celery_keyprefix: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Build settings from an environment mapping; raise ConfigError on the first bad value."""
        values = {name: value for name, value in env.items() if value != ""}

        redis_url, redis_url_var = DEFAULT_REDIS_URL, None
        for name in REDIS_URL_VARS:
            if name in values:
                redis_url, redis_url_var = values[name].strip(), name
                break
        try:
            check_redis_url(redis_url)
        except RedisURLError as error:
            raise ConfigError(f"{redis_url_var or 'the default Redis URL'} {error}") from None

        interval = _positive_number(values, "QUEUE_METRICS_INTERVAL", DEFAULT_INTERVAL)
        # A tick must give up on a silent Redis before the next one is due.
        default_timeout = min(DEFAULT_TIMEOUT, interval / 2)
        timeout = _positive_number(values, "QUEUE_METRICS_TIMEOUT", default_timeout)
        if timeout >= interval:
            raise ConfigError(
                f"QUEUE_METRICS_TIMEOUT must be shorter than QUEUE_METRICS_INTERVAL "
                f"({_show_number(interval)} s)"
            )

        tls_ca_file = values.get("QUEUE_METRICS_TLS_CA_FILE")
        tls_verify = _boolean(values, "QUEUE_METRICS_TLS_VERIFY", default=tls_ca_file is not None)

        return cls(
            redis_url=redis_url,
            redis_url_var=redis_url_var,
            interval=interval,
            timeout=timeout,
            backends=_backends(values.get("QUEUE_METRICS_BACKENDS")),
            prefix=_name(values, "QUEUE_METRICS_PREFIX", "queue", MAX_PREFIX_LENGTH),
            source=_name(values, "QUEUE_METRICS_SOURCE", None, MAX_SOURCE_LENGTH),
            output_format=_choice(values, "QUEUE_METRICS_FORMAT", OUTPUT_FORMATS, "librato"),
            discovery_interval=_positive_number(
                values, "QUEUE_METRICS_DISCOVERY_INTERVAL", DEFAULT_DISCOVERY_INTERVAL
            ),
            tls_verify=tls_verify,
            tls_ca_file=tls_ca_file,
            sidekiq_namespace=values.get("QUEUE_METRICS_SIDEKIQ_NAMESPACE", ""),
            sidekiq_queues=_name_list(values.get("QUEUE_METRICS_SIDEKIQ_QUEUES")),
            rq_queues=_name_list(values.get("QUEUE_METRICS_RQ_QUEUES")),
            celery_queues=_name_list(values.get("QUEUE_METRICS_CELERY_QUEUES")),
            celery_sep=_escaped(values.get("QUEUE_METRICS_CELERY_SEP"), KOMBU_SEP),
            celery_priority_steps=_priority_steps(values.get("QUEUE_METRICS_CELERY_PRIORITY_STEPS")),
            celery_keyprefix=values.get("QUEUE_METRICS_CELERY_KEYPREFIX", ""),
        )


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


def _boolean(values: Mapping[str, str], name: str, default: bool) -> bool:
    if name not in values:
        return default
    word = values[name].strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {values[name]!r}")


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
        raise ConfigError(
            f"{name} may hold only letters, digits and . : _ - (at most {max_length}), got {text!r}"
        )
    return text


def _backends(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    if text is None or text.strip().lower() == "auto":
        return None
    chosen = []
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word not in BACKEND_NAMES:
            raise ConfigError(
                f"QUEUE_METRICS_BACKENDS: unknown backend {word!r} "
                f"(choose from {', '.join(BACKEND_NAMES)}, or auto)"
            )
        if word not in chosen:
            chosen.append(word)
    if not chosen:
        raise ConfigError("QUEUE_METRICS_BACKENDS names no backend")
    return tuple(chosen)


def _name_list(text: Optional[str]) -> Tuple[str, ...]:
    if text is None:
        return ()
    return tuple(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))


def _escaped(text: Optional[str], default: str) -> str:
    """Config vars cannot easily hold control characters, so accept `\\x06\\x16` spelled out."""
    if text is None:
        return default
    try:
        decoded = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        raise ConfigError(f"QUEUE_METRICS_CELERY_SEP is not a valid escaped string: {text!r}") from None
    if not decoded:
        raise ConfigError("QUEUE_METRICS_CELERY_SEP must not be empty")
    return decoded


def _priority_steps(text: Optional[str]) -> Tuple[int, ...]:
    if text is None:
        return KOMBU_PRIORITY_STEPS
    try:
        steps = sorted({int(word) for word in text.split(",") if word.strip()})
    except ValueError:
        raise ConfigError(
            f"QUEUE_METRICS_CELERY_PRIORITY_STEPS must be a comma list of whole numbers, got {text!r}"
        ) from None
    if not steps or steps[0] < 0:
        raise ConfigError("QUEUE_METRICS_CELERY_PRIORITY_STEPS needs whole numbers from 0 up")
    return tuple(steps)
