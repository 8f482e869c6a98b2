"""Redis URLs: checking them and showing them without their password.

A Redis URL on Heroku carries the password (`rediss://:p4ss@host:port`). Nothing here returns the
raw URL text, and only `passwords_of` returns the password (to keep it out of error
lines); messages name the host, port and database only. The user name (`default` on Redis Cloud
and Upstash) is no secret: it is often a queue's name too, and is never hidden.
"""

from __future__ import annotations

from typing import Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.errors import RedisURLError

SCHEMES = ("redis", "rediss", "unix")
EXPECTED_FORM = "redis://[:password@]host[:port][/db] or rediss://... or unix:///path"
# Shorter strings are not hidden: hiding every "ab" would garble the lines and protect nothing.
MIN_HIDDEN_LENGTH = 3


def check_redis_url(url: str) -> None:
    """Raise RedisURLError unless `url` is a Redis URL redis-py can connect with."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RedisURLError(f"is not a valid Redis URL (expected {EXPECTED_FORM})") from None
    if parts.scheme in ("redis", "rediss") and "@" in parts.path + parts.query + parts.fragment:
        # A raw / ? or # in the password ends the host part early (`redis://:pa/ss@host` has the
        # host "" and the path "/ss@host"); no database number or ?db= holds an '@'. The
        # message must not quote what was taken for the host or the path: it is the password.
        raise RedisURLError(
            "has an '@' after its host part: a password holding / ? # or @ must be percent-encoded "
            "(/ as %2F, ? as %3F, # as %23, @ as %40)"
        )
    try:
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


def passwords_of(url: str, shortest: int = MIN_HIDDEN_LENGTH) -> Tuple[str, ...]:
    """The URL's password, as written and percent-decoded (as it is sent to Redis), longest
    first: text never to show in an error line. Never the user name: it is no secret."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return (url,) if len(url) >= shortest else ()
    if not password:
        return ()
    forms = {form for form in (password, unquote(password)) if len(form) >= shortest}
    return tuple(sorted(forms, key=len, reverse=True))
