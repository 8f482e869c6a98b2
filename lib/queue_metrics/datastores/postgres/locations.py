"""Every Postgres database an app's jobs may live in, found in its environment with no setting.

With no setting, `DATABASE_URL` then every `HEROKU_POSTGRESQL_<COLOR>_URL` (by color) name a
datastore each when they hold a `postgres://` or `postgresql://` URL (Rails 8 puts Solid Queue in
a database of its own: a second add-on). On Heroku `DATABASE_URL` is also one of the colors'
variables: two URLs of one host, port, database and user are one datastore, which keeps the first
one's label (`database`). A database that holds no job table costs one cheap query now and then
and prints nothing (`reader.py`).

`QUEUE_METRICS_DATABASE_URLS` (a comma list of URLs or `label=URL` pairs) replaces the search;
`QUEUE_METRICS_DATASTORES` names the variables to read. TLS follows the URL's `sslmode`
(`disable`, `prefer`, `require`, `verify-ca`, `verify-full`); without one, `require` (Heroku
Postgres accepts nothing else), except on a loopback address, where `prefer` (a local server
often has no TLS). Nothing here prints a URL's text in a message.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.datastores import RESERVED_LABELS, Location
from queue_metrics.errors import ConfigError

KIND = "postgres"
URLS_SETTING = "QUEUE_METRICS_DATABASE_URLS"
DATASTORES_SETTING = "QUEUE_METRICS_DATASTORES"
FIRST_VAR = "DATABASE_URL"
ADD_ON_VAR = re.compile(r"HEROKU_POSTGRESQL_[A-Z0-9_]+_URL\Z")
POSTGRES_SCHEMES = ("postgres://", "postgresql://")
DEFAULT_PORT = 5432
PLAIN_LABEL = "database"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A label goes into metric names and tags (as for Redis).
LABEL_CHARS = re.compile(r"[a-z0-9_-]{1,40}\Z")


class Address(NamedTuple):
    """Where one Postgres database is, and how to log in (the password is never printed)."""

    host: str
    port: int
    user: str
    password: str
    database: str
    sslmode: str

    @property
    def tls_asked(self) -> bool:
        return self.sslmode not in ("disable", "allow")

    @property
    def tls_required(self) -> bool:
        return self.sslmode in ("require", "verify-ca", "verify-full")

    @property
    def tls_verified(self) -> bool:
        return self.sslmode in ("verify-ca", "verify-full")


def is_postgres_url(value: str) -> bool:
    return value.strip().lower().startswith(POSTGRES_SCHEMES)


def label_of(variable: str) -> str:
    """`DATABASE_URL` -> `database`, `HEROKU_POSTGRESQL_PINK_URL` -> `heroku_postgresql_pink`."""
    name = variable.lower()
    return name[: -len("_url")] if name.endswith("_url") else name


def postgres_locations(env: Mapping[str, str]) -> List[Location]:
    """The Postgres datastores the environment names (ConfigError, naming the variable and never
    its value, on a bad one)."""
    values = {name: value.strip() for name, value in env.items() if value.strip() != ""}
    if URLS_SETTING in values:
        return _distinct(_listed(values[URLS_SETTING]))
    named_text = values.get(DATASTORES_SETTING)
    if named_text is not None:
        names = [word.strip() for word in named_text.split(",") if word.strip()]
    else:
        names = [FIRST_VAR, *sorted(name for name in values if ADD_ON_VAR.match(name))]
    found = [
        _checked(Location(KIND, label_of(name), values[name], name), name)
        for name in dict.fromkeys(names)
        if name in values and is_postgres_url(values[name])
    ]
    return _distinct(found)


def _listed(text: str) -> List[Location]:
    """QUEUE_METRICS_DATABASE_URLS: `URL` or `label=URL`, comma separated."""
    locations = []
    for index, item in enumerate(word.strip() for word in text.split(",") if word.strip()):
        label, equals, url = item.partition("=")
        where = f"{URLS_SETTING} (item {index + 1})"
        if not equals or "://" in label or "://" not in url:
            label, url = (PLAIN_LABEL if index == 0 else f"{PLAIN_LABEL}_{index + 1}"), item
        else:
            label = label.strip()
            if not LABEL_CHARS.match(label):
                raise ConfigError(f"{where}: a label may hold only a-z, 0-9, _ and - (at most 40)")
        if label in RESERVED_LABELS:
            raise ConfigError(f"{where}: {label!r} cannot be a label (it reads as a metric name's own part)")
        locations.append(_checked(Location(KIND, label, url.strip(), URLS_SETTING), where))
    if not locations:
        raise ConfigError(f"{URLS_SETTING} names no URL")
    return locations


def _checked(location: Location, where: str) -> Location:
    address_of(location.url, where)
    return location


def address_of(url: str, where: str = "the database URL") -> Address:
    """The parts of a `postgres://user:password@host:port/database?sslmode=...` URL; ConfigError,
    naming `where` and never the URL, when it cannot be used."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError(f"{where} is not a usable Postgres URL (its port is not a number)") from None
    if not is_postgres_url(url):
        raise ConfigError(f"{where} must start with postgres:// or postgresql://")
    query = parse_qs(parts.query)
    host = parts.hostname or unquote(query.get("host", [""])[0])
    if not host or host.startswith("/"):
        raise ConfigError(f"{where} is a Postgres URL without a host (a Unix socket is not read)")
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username or "") or unquote(query.get("user", [""])[0])
    if not user:
        raise ConfigError(f"{where} is a Postgres URL without a user")
    sslmode = query.get("sslmode", [""])[0] or default_sslmode(host)
    if sslmode not in SSL_MODES:
        raise ConfigError(f"{where} has an sslmode Postgres does not know (one of {', '.join(SSL_MODES)})")
    password = unquote(parts.password or "") or unquote(query.get("password", [""])[0])
    return Address(host, port, user, password, database or user, sslmode)


def default_sslmode(host: str) -> str:
    """`require`, as Heroku Postgres needs; `prefer` on a loopback address."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return "prefer" if loopback else "require"


def passwords_of(url: str) -> Tuple[str, ...]:
    """A URL's password, as written and decoded (an error line must hold neither)."""
    try:
        parts = urlsplit(url)
        raw = parts.password or parse_qs(parts.query).get("password", [""])[0]
    except ValueError:
        return ()
    if not raw:
        return ()
    return tuple(dict.fromkeys((raw, unquote(raw))))


def describe_postgres_url(url: str) -> str:
    """`postgres://host:5432/database`: a URL for people, without its credentials."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgres://(a URL that cannot be read)"
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown}{port}{parts.path}"


def same_database(url: str) -> Tuple[str, int, str, str]:
    address = address_of(url)
    return (address.host.lower(), address.port, address.database, address.user)


def _distinct(locations: Sequence[Location]) -> List[Location]:
    """One location per database and user, in order, keeping the first's label; two labels alike
    are a usage error."""
    seen: Dict[Tuple[str, int, str, str], Location] = {}
    for location in locations:
        seen.setdefault(same_database(location.url), location)
    labels: Dict[str, Location] = {}
    for location in seen.values():
        other: Optional[Location] = labels.get(location.label)
        if other is not None:
            raise ConfigError(
                f"two Postgres datastores have the label {location.label!r} ({other.source} and {location.source}): "
                f"give each its own"
            )
        labels[location.label] = location
    return list(seen.values())
