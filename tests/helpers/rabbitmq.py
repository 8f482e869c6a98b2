"""The machine's own RabbitMQ for the tests (tests/run enables its management plugin): a fresh
vhost per test, made and removed as the admin `guest` through the management API (tests may
write; the collector never does), and the broker's own counters to compare with."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Optional

AMQP_HOST = "127.0.0.1"
API = "http://127.0.0.1:15672/api/"
ADMIN = ("guest", "guest")


def api(method: str, path: str, body: Optional[dict] = None, user: tuple = ADMIN) -> Any:
    """The management API as an admin (or `user`), JSON in and out."""
    request = urllib.request.Request(
        API + path, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        data = answer.read()
    return json.loads(data) if data else None


def quoted(vhost: str) -> str:
    return urllib.parse.quote(vhost, safe="")


def make_vhost(prefix: str = "qm") -> str:
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    api("PUT", f"vhosts/{quoted(vhost)}", {})
    api("PUT", f"permissions/{quoted(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return vhost


def delete_vhost(vhost: str) -> None:
    try:
        api("DELETE", f"vhosts/{quoted(vhost)}")
    except urllib.error.HTTPError:
        pass


def make_user(name: str, password: str, tags: str, vhost: Optional[str]) -> None:
    """A user with `tags` and, on `vhost`, the permissions '^$' '^$' '^$' (none on any queue)."""
    api("PUT", f"users/{name}", {"password": password, "tags": tags})
    if vhost is not None:
        api("PUT", f"permissions/{quoted(vhost)}/{name}", {"configure": "^$", "write": "^$", "read": "^$"})


def delete_user(name: str) -> None:
    try:
        api("DELETE", f"users/{name}")
    except urllib.error.HTTPError:
        pass


def amqp_url(vhost: str, user: str = "guest", password: str = "guest") -> str:
    return f"amqp://{user}:{password}@{AMQP_HOST}:5672/{quoted(vhost)}"


def queues(vhost: str) -> Dict[str, dict]:
    """Every queue of the vhost as the API lists it, by name (all columns)."""
    return {row["name"]: row for row in api("GET", f"queues/{quoted(vhost)}")}


def fast_statistics() -> None:
    """Queues made from now on refresh their statistics every second, not five (the broker's
    `collect_statistics_interval`, changed at run time: queues read it when they start)."""
    subprocess.run(
        ["rabbitmqctl", "eval", "application:set_env(rabbit, collect_statistics_interval, 1000)."],
        check=True,
        capture_output=True,
    )
