"""Every RabbitMQ an app's jobs live in, found in its environment with no setting, and where
its management HTTP API is.

With no setting, these variables are read in this order, and each that holds an `amqp://` or
`amqps://` URL names a datastore: `CLOUDAMQP_URL` (the Heroku add-on), `RABBITMQ_URL`,
`AMQP_URL`, then Celery's own `CELERY_BROKER_URL` and `BROKER_URL` (which may hold a Redis URL
instead: the Redis kind reads those). Two URLs of one broker, virtual host and user are one
datastore (an app that sets `CELERY_BROKER_URL=$CLOUDAMQP_URL`): it keeps the first one's label.
`QUEUE_METRICS_AMQP_URL` replaces the search; `QUEUE_METRICS_DATASTORES` names the variables.

The management API is CloudAMQP's: `https://<the AMQP URL's host>/api/`, with the AMQP URL's
user and password; `QUEUE_METRICS_RABBITMQ_API_URL` names another (a self-hosted broker's
`http://host:15672/api/`), which uses the AMQP URL's credentials unless it has its own. The
virtual host is the AMQP URL's path, percent-decoded (none: `/`).

Standard library only, nothing done at import time; no message quotes a URL's text.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlsplit

from queue_metrics.datastores import RESERVED_LABELS, Location
from queue_metrics.errors import ConfigError

KIND = "rabbitmq"
ONE_URL_SETTING = "QUEUE_METRICS_AMQP_URL"
API_URL_SETTING = "QUEUE_METRICS_RABBITMQ_API_URL"
DATASTORES_SETTING = "QUEUE_METRICS_DATASTORES"
# The label of the one RabbitMQ QUEUE_METRICS_AMQP_URL names.
PLAIN_LABEL = "amqp"
SEARCH_ORDER = ("CLOUDAMQP_URL", "RABBITMQ_URL", "AMQP_URL", "CELERY_BROKER_URL", "BROKER_URL")
AMQP_SCHEMES = ("amqp://", "amqps://")
AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
DEFAULT_VHOST = "/"


class ApiAddress(NamedTuple):
    """Where one RabbitMQ datastore's management API is, and what to ask it."""

    scheme: str  # http, https
    host: str
    port: Optional[int]
    # The API's path, ending in `/`: `/api/`.
    path: str
    user: str
    password: str
    vhost: str

    def describe(self) -> str:
        """`https://host/api/ vhost "/"`: for people, without credentials."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{shown}{port}{self.path} (vhost {self.vhost!r})"

    def queues_path(self) -> str:
        return f"{self.path}queues/{quote(self.vhost, safe='')}"

    def bindings_path(self) -> str:
        return f"{self.path}bindings/{quote(self.vhost, safe='')}"


def is_amqp_url(value: str) -> bool:
    return value.strip().lower().startswith(AMQP_SCHEMES)


def label_of(variable: str) -> str:
    """`CLOUDAMQP_URL` -> `cloudamqp`, `CELERY_BROKER_URL` -> `celery_broker`; `RABBITMQ_URL`
    -> `rabbitmq_url` (`rabbitmq` is the name of a queue system's metrics)."""
    name = variable.lower()
    label = name[: -len("_url")] if name.endswith("_url") else name
    return name if label in RESERVED_LABELS else label


def rabbitmq_locations(env: Mapping[str, str]) -> List[Location]:
    """The RabbitMQ datastores the environment names (ConfigError, naming the variable and never
    its value, on a bad one)."""
    values = {name: value.strip() for name, value in env.items() if value.strip() != ""}
    if ONE_URL_SETTING in values:
        return [_checked(Location(KIND, PLAIN_LABEL, values[ONE_URL_SETTING], ONE_URL_SETTING))]
    text = values.get(DATASTORES_SETTING)
    if text is not None:
        names = [word.strip() for word in text.split(",") if word.strip()]
    else:
        names = list(SEARCH_ORDER)
    found = [
        _checked(Location(KIND, label_of(name), values[name], name))
        for name in dict.fromkeys(names)
        if name in values and is_amqp_url(values[name])
    ]
    return _distinct(found)


def _checked(location: Location) -> Location:
    check_amqp_url(location.url, location.source)
    return location


def check_amqp_url(url: str, where: str) -> None:
    """ConfigError, naming `where` and never the URL, unless `url` is an AMQP URL we can use."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise ConfigError(f"{where} is not a usable AMQP URL (its port is not a number)") from None
    if parts.scheme.lower() not in AMQP_PORTS:
        raise ConfigError(f"{where} must start with amqp:// or amqps://")
    if not parts.hostname:
        raise ConfigError(f"{where} is an AMQP URL without a host")


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names: its path, percent-decoded; none: `/`."""
    path = urlsplit(url).path
    vhost = unquote(path[1:] if path.startswith("/") else path)
    return vhost or DEFAULT_VHOST


def passwords_of(url: str) -> Tuple[str, ...]:
    """A URL's password, as written and decoded (an error line must hold neither)."""
    try:
        raw = urlsplit(url).password
    except ValueError:
        return ()
    if not raw:
        return ()
    return tuple(dict.fromkeys((raw, unquote(raw))))


def describe_amqp_url(url: str) -> str:
    """`amqps://host:5671/vhost`: an AMQP URL (or the API's) for people, without its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.lower()}://{shown}{port}{parts.path}"


def api_address(url: str, api_url: Optional[str]) -> ApiAddress:
    """The management API of the broker `url` names: `api_url` (QUEUE_METRICS_RABBITMQ_API_URL)
    when set, else CloudAMQP's `https://<host>/api/`; credentials the API URL's own, else the
    AMQP URL's (percent-decoded); the vhost the AMQP URL's."""
    amqp = urlsplit(url)
    user, password = unquote(amqp.username or ""), unquote(amqp.password or "")
    if not api_url:
        return ApiAddress("https", amqp.hostname or "", None, "/api/", user, password, vhost_of(url))
    api = urlsplit(api_url)
    if api.username is not None:
        user, password = unquote(api.username), unquote(api.password or "")
    path = api.path or "/api/"
    return ApiAddress(
        api.scheme.lower(),
        api.hostname or "",
        api.port,
        path if path.endswith("/") else path + "/",
        user,
        password,
        vhost_of(url),
    )


def check_api_url(api_url: str) -> None:
    """ConfigError, naming the variable and never its value, unless it is an http(s) URL."""
    try:
        parts = urlsplit(api_url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise ConfigError(f"{API_URL_SETTING} is not a usable URL (its port is not a number)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{API_URL_SETTING} must be an http:// or https:// URL with a host (http://host:15672/api/)")


def same_broker(url: str) -> Tuple[str, str, str]:
    """What two URLs of one datastore share: the host, the vhost and the user."""
    parts = urlsplit(url)
    return ((parts.hostname or "").lower(), vhost_of(url), unquote(parts.username or ""))


def _distinct(locations: Sequence[Location]) -> List[Location]:
    seen: Dict[Tuple[str, str, str], Location] = {}
    for location in locations:
        seen.setdefault(same_broker(location.url), location)
    return list(seen.values())
