"""Every Redis an app has, found in its environment with no setting.

With no setting, the variables below are read in this order, and each that holds a `redis://` or
`rediss://` URL names a datastore: the variable `REDIS_PROVIDER` names (Sidekiq's convention for
an app whose jobs live on another add-on than `REDIS_URL`), `REDIS_URL`, `REDIS_TLS_URL`, every
Heroku Key-Value Store add-on (`HEROKU_REDIS_<COLOR>_URL`, `..._TLS_URL`, by color), the other
add-ons' variables, then the queue libraries' own (`CELERY_BROKER_URL`, `BROKER_URL`,
`RQ_REDIS_URL`). Two URLs of one server and database are one datastore (`REDIS_URL` and
`REDIS_TLS_URL` of one add-on differ only in scheme and port): it keeps the first one's label and
reads through the TLS URL when there is one.

`QUEUE_METRICS_REDIS_URL` (one URL) or `QUEUE_METRICS_REDIS_URLS` (a comma list of URLs or
`label=URL` pairs) replace the search; `QUEUE_METRICS_DATASTORES` names the variables to read.
Nothing here prints or returns a URL's text in a message.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.datastores import DEFAULT_SOURCE, RESERVED_LABELS, Location
from queue_metrics.datastores.redis.url import check_redis_url
from queue_metrics.errors import ConfigError, RedisURLError

KIND = "redis"
DEFAULT_URL = "redis://localhost:6379/0"
ONE_URL_SETTING = "QUEUE_METRICS_REDIS_URL"
URLS_SETTING = "QUEUE_METRICS_REDIS_URLS"
DATASTORES_SETTING = "QUEUE_METRICS_DATASTORES"
PROVIDER_VAR = "REDIS_PROVIDER"
# The label of the one Redis QUEUE_METRICS_REDIS_URL names, and of the default.
PLAIN_LABEL = "redis"
FIRST_VARS = ("REDIS_URL", "REDIS_TLS_URL")
ADD_ON_VAR = re.compile(r"HEROKU_REDIS_[A-Z0-9_]+?(_TLS)?_URL\Z")
OTHER_ADD_ON_VARS = ("REDISCLOUD_URL", "REDISTOGO_URL", "OPENREDIS_URL", "REDISGREEN_URL")
LIBRARY_VARS = ("CELERY_BROKER_URL", "BROKER_URL", "RQ_REDIS_URL")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Variables that may name a datastore of another kind (a Celery broker on RabbitMQ).
SHARED_VARS = ("CELERY_BROKER_URL", "BROKER_URL")
# A label goes into metric names and tags: lower-case letters, digits, _ and -.
LABEL_CHARS = re.compile(r"[a-z0-9_-]{1,40}\Z")
# What a variable's name looks like: REDIS_PROVIDER's value is printed only when it is one.
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,100}\Z")


def label_of(variable: str) -> str:
    """`HEROKU_REDIS_PINK_URL` -> `heroku_redis_pink`."""
    name = variable.lower()
    return name[: -len("_url")] if name.endswith("_url") else name


def search_order(values: Mapping[str, str]) -> List[str]:
    """The variables read when no setting names the Redis, in order (those set or not)."""
    provider = values.get(PROVIDER_VAR, "").strip()
    # By color, each color's plain URL before its TLS one: the datastore keeps the first one's
    # label, `heroku_redis_pink` (the TLS one sorts first by name: `..._PINK_TLS_URL`).
    add_ons = sorted((name for name in values if ADD_ON_VAR.match(name)), key=_by_color)
    order = [provider] if provider else []
    for name in (*FIRST_VARS, *add_ons, *OTHER_ADD_ON_VARS, *LIBRARY_VARS):
        if name not in order:
            order.append(name)
    return order


def _by_color(variable: str) -> Tuple[str, bool]:
    tls = variable.endswith("_TLS_URL")
    return (variable[: -len("_TLS_URL")] if tls else variable[: -len("_URL")], tls)


def redis_locations(env: Mapping[str, str]) -> List[Location]:
    """The Redis datastores the environment names (ConfigError, naming the variable and never
    its value, on a bad one)."""
    values = {name: value.strip() for name, value in env.items() if value.strip() != ""}
    if ONE_URL_SETTING in values and URLS_SETTING in values:
        raise ConfigError(f"set {ONE_URL_SETTING} or {URLS_SETTING}, not both")
    if ONE_URL_SETTING in values:
        return [_checked(Location(KIND, PLAIN_LABEL, values[ONE_URL_SETTING], ONE_URL_SETTING), ONE_URL_SETTING)]
    if URLS_SETTING in values:
        return _distinct(_listed(values[URLS_SETTING]))
    named = _named(values.get(DATASTORES_SETTING))
    if named is not None:
        return _distinct([_variable(values, name) for name in named if _is_redis(values.get(name))])
    provider = values.get(PROVIDER_VAR)
    if provider is not None and not _is_redis(values.get(provider)):
        # Sidekiq's rule: REDIS_PROVIDER holds the name of the variable, never the URL itself.
        example = f"(e.g. {PROVIDER_VAR}=HEROKU_REDIS_PINK_URL)"
        if not VARIABLE_NAME.match(provider):
            raise ConfigError(f"{PROVIDER_VAR} must hold the name of a variable, not a URL {example}")
        what = "which is not set" if provider not in values else "which holds no redis:// or rediss:// URL"
        raise ConfigError(f"{PROVIDER_VAR} names {provider}, {what} {example}")
    # A variable named for Redis must hold a Redis URL (a usage error otherwise); a broker's may
    # hold another kind's (amqp://...), which this kind leaves alone.
    found = [
        _variable(values, name)
        for name in search_order(values)
        if name in values and (_is_redis(values[name]) or name not in SHARED_VARS)
    ]
    if not found:
        return [Location(KIND, PLAIN_LABEL, DEFAULT_URL, DEFAULT_SOURCE)]
    return _distinct(found)


def named_variables(env: Mapping[str, str]) -> Optional[Tuple[str, ...]]:
    """QUEUE_METRICS_DATASTORES as a tuple of variable names; None when unset."""
    return _named(env.get(DATASTORES_SETTING, "").strip() or None)


def _named(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    if text is None:
        return None
    names = tuple(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))
    if not names:
        raise ConfigError(f"{DATASTORES_SETTING} names no variable")
    return names


def _variable(values: Mapping[str, str], name: str) -> Location:
    check_label(label_of(name), name)
    return _checked(Location(KIND, label_of(name), values[name], name), name)


def _is_redis(value: Optional[str]) -> bool:
    return value is not None and value.lower().startswith(REDIS_SCHEMES)


def _checked(location: Location, where: str) -> Location:
    try:
        check_redis_url(location.url)
    except RedisURLError as error:
        raise ConfigError(f"{where} {error}") from None
    return location


def _listed(text: str) -> List[Location]:
    """QUEUE_METRICS_REDIS_URLS: `URL` or `label=URL`, comma separated."""
    locations = []
    for index, item in enumerate(word.strip() for word in text.split(",") if word.strip()):
        label, equals, url = item.partition("=")
        where = f"{URLS_SETTING} (item {index + 1})"
        if not equals or "://" in label or "://" not in url:
            # `label=` before any scheme is a label; an `=` inside a URL (`?db=1`) is not, nor one
            # in a URL without its scheme (`:pw@host/0?db=1`: checked, and refused, as a URL).
            label, url = (PLAIN_LABEL if index == 0 else f"{PLAIN_LABEL}_{index + 1}"), item
        else:
            label = label.strip()
            check_label(label, where)
        locations.append(_checked(Location(KIND, label, url.strip(), URLS_SETTING), where))
    if not locations:
        raise ConfigError(f"{URLS_SETTING} names no URL")
    return locations


def check_label(label: str, where: str) -> None:
    if not LABEL_CHARS.match(label):
        # Not quoted: the text before an `=` may be part of a URL (its password).
        raise ConfigError(f"{where}: a label may hold only a-z, 0-9, _ and - (at most 40)")
    if label in RESERVED_LABELS:
        raise ConfigError(f"{where}: {label!r} cannot be a label (it reads as a metric name's own part)")


def same_server(url: str) -> Tuple[object, ...]:
    """What two URLs of one datastore share: the host, database and credentials; without a
    password, the host, port and database. (With a password the ports may differ, a plain URL's
    and a TLS URL's only: `_distinct`.)"""
    parts = urlsplit(url)
    query_db = parse_qs(parts.query).get("db", ["0"])[0] or "0"
    if parts.scheme == "unix":
        return ("unix", parts.path, int(query_db))
    database = int(parts.path.lstrip("/") or query_db)
    host = (parts.hostname or "").lower()
    if parts.password:
        return (host, database, unquote(parts.username or ""), unquote(parts.password))
    return (host, parts.port or 6379, database)


def _distinct(locations: Sequence[Location]) -> List[Location]:
    """One location per server and database, in order; the first's label, a TLS URL when any;
    two labels alike are a usage error."""
    distinct: List[Location] = []
    # Per datastore in `distinct`: its server key, and the port of each scheme it came with. Two
    # URLs of one scheme on two ports are two servers, whatever their password (two Redis of one
    # machine); a redis:// and a rediss:// one may be one server's plain and TLS ports.
    ports: List[Tuple[Tuple[object, ...], Dict[str, int]]] = []
    for location in locations:
        key, parts = same_server(location.url), urlsplit(location.url)
        scheme, port = parts.scheme.lower(), parts.port or 6379
        index = next(
            (index for index, (other, seen) in enumerate(ports) if other == key and seen.get(scheme, port) == port),
            None,
        )
        if index is None:
            distinct.append(location)
            ports.append((key, {scheme: port}))
            continue
        ports[index][1][scheme] = port
        if scheme == "rediss" and not distinct[index].url.lower().startswith("rediss://"):
            distinct[index] = distinct[index]._replace(url=location.url)
    seen: Dict[str, Location] = {}
    for location in distinct:
        if location.label in seen:
            raise ConfigError(
                f"two Redis datastores have the label {location.label!r} ({seen[location.label].source} and "
                f"{location.source}): give each its own"
            )
        seen[location.label] = location
    return distinct
