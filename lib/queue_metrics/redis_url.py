"""Redis URLs: checking them and showing them without their secrets.

A Redis URL on Heroku carries the password (`rediss://:p4ss@host:port`). Nothing here ever
returns the password or the raw URL text; messages name the host, port and database only.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.errors import RedisURLError

SCHEMES = ("redis", "rediss", "unix")
EXPECTED_FORM = "redis://[:password@]host[:port][/db] or rediss://... or unix:///path"


def check_redis_url(url: str) -> None:
    """Raise RedisURLError unless `url` is a Redis URL redis-py can connect with."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise RedisURLError(f"is not a valid Redis URL (expected {EXPECTED_FORM})") from None
    if parts.scheme not in SCHEMES:
        raise RedisURLError("is not a Redis URL: it must start with redis://, rediss:// or unix://")
    query_db = parse_qs(parts.query).get("db", [""])[0]
    if query_db and not query_db.isdigit():
        raise RedisURLError("has a ?db= that is not a number")
    if parts.scheme == "unix":
        if not parts.path:
            raise RedisURLError("is a unix:// URL without a socket path")
        return
    if not parts.hostname:
        raise RedisURLError(f"has no host (expected {EXPECTED_FORM})")
    if port is not None and not 0 < port < 65536:
        raise RedisURLError("has a port outside 1-65535")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise RedisURLError("has a database that is not a number (expected /0, /1, ...)")


def describe_redis_url(url: str) -> str:
    """`rediss://host:port/db` without user or password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or 6379
        database = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0] or "0"
        return f"{parts.scheme}://{host}:{port}/{database}"
    except ValueError:
        return "an unparsable Redis URL"


def secrets_of(url: str) -> tuple:
    """The password and user of a URL: strings that must never reach the output."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    # Both as written in the URL and percent-decoded, as redis-py sends it.
    found = {form for secret in (parts.password, parts.username) if secret for form in (secret, unquote(secret))}
    return tuple(sorted(secret for secret in found if len(secret) >= 3))
