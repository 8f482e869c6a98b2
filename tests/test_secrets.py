"""Passwords and names: a Redis user name is no secret and a name is never rewritten, while no
output (log lines, JSON, table, StatsD, OTLP, Prometheus, `config`, `doctor`, `watch`, `alerts`)
nor stderr ever shows the password, in error situations too. Real redis-servers with ACL users,
as Redis Cloud and Upstash hand them out (`redis[s]://default:<password>@host:port`)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest
import redis
from rq import Queue

from helpers.collect import collect, sidekiq
from helpers.process import lines_of, queue_metrics, start
from helpers.receivers import OtlpReceiver, UdpListener, by_queue, points
from helpers.servers import free_port, self_signed_certificate

PASSWORD = "Pa55w0rdSecretQ"


def url_of(server, user: str, password: str = PASSWORD, port=None) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{port or server.port}/0"


@pytest.fixture
def acl_server(make_server):
    """Sidekiq queues `default` and one named like the password, RQ queues `default` and `queue`;
    then the `default` user gets the password, and a user `queue` the same one."""
    server = make_server()
    sidekiq(server.url, {"enqueue": {"default": 3, PASSWORD: 2}})
    client = redis.Redis.from_url(server.url)
    Queue("default", connection=client).enqueue("builtins.len", "a")
    Queue("queue", connection=client).enqueue("builtins.len", "b")
    client.execute_command("ACL", "SETUSER", "queue", "on", f">{PASSWORD}", "~*", "&*", "+@all")
    client.execute_command("ACL", "SETUSER", "limited", "on", f">{PASSWORD}", "~*", "-@all")
    client.execute_command("ACL", "SETUSER", "default", f">{PASSWORD}")  # last: this connection is in
    client.close()
    return server


def table_rows(stdout: str) -> list:
    """The (system, queue, size) rows of every system's block of the table."""
    rows = []
    starts = None
    for line in lines_of(stdout):
        if line.startswith("SYSTEM "):
            starts = [line.index(word) for word in ("QUEUE", "SIZE")]
            continue
        if starts is None:
            continue  # doctor's lines before the table
        if ":" in line.split("  ")[0]:
            break  # the systems' figures after the blocks
        # Each row's columns stand under the header's: a name of another length breaks that.
        assert line[starts[0] - 2 : starts[0]] == "  ", line
        rows.append(tuple(line.split()[:3]))
    return rows


@pytest.mark.parametrize("user", ["default", "queue"])
def test_user_names_and_a_name_equal_to_the_password_print_unchanged(acl_server, user):
    env = {"REDISCLOUD_URL": url_of(acl_server, user), "QUEUE_METRICS_PREFIX": "queue"}
    names = {("sidekiq", "default"): 3, ("sidekiq", PASSWORD): 2, ("rq", "default"): 1, ("rq", "queue"): 1}

    librato = queue_metrics("once", env=env)
    assert librato.returncode == 0 and librato.stderr == "", librato.stderr
    # A queue named exactly like the password is the user's own data, printed as it is: the
    # user named it so; it reveals nothing they have not already written into their queues.
    for (system, queue), size in names.items():
        assert f"sample#queue.{system}.{queue}.size={size} " in librato.stdout
    assert "***" not in librato.stdout

    document = json.loads(queue_metrics("once", "--format", "json", env=env).stdout)
    assert {(q["backend"], q["queue"]): q["size"] for q in document["queues"]} == names
    assert "***" not in json.dumps(document)

    table = queue_metrics("once", "--format", "table", env=env)
    assert table.returncode == 0, table.stderr
    assert sorted(table_rows(table.stdout)) == sorted((s, q, str(n)) for (s, q), n in names.items())

    doctor = queue_metrics("doctor", env=env)
    problems = [line for line in doctor.stdout.splitlines() if line.startswith("Problem: ")]
    # Jobs wait and no worker runs: the only problems doctor finds here.
    assert problems and all("is running (is the worker dyno scaled to 0?)" in line for line in problems), doctor.stdout
    assert ("sidekiq", PASSWORD, "2") in table_rows(doctor.stdout)
    assert "***" not in doctor.stdout

    config = queue_metrics("config", env=env)
    assert "prefix='queue'" in config.stdout and PASSWORD not in config.stdout + config.stderr
    assert f"redis_url='redis://127.0.0.1:{acl_server.port}/0'" in config.stdout


def test_a_figure_name_equal_to_the_password_prints_unchanged(make_server):
    server = make_server()
    sidekiq(server.url, {"enqueue": {"default": 1}})
    redis.Redis.from_url(server.url).execute_command("ACL", "SETUSER", "default", ">latency")
    result = queue_metrics("once", env={"REDIS_URL": url_of(server, "default", "latency")})
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=1 sample#queue.sidekiq.default.latency=" in result.stdout


def test_every_output_shows_the_same_names(acl_server):
    listener, receiver = UdpListener(), OtlpReceiver()
    try:
        result = queue_metrics(
            "once",
            env={
                "REDIS_URL": url_of(acl_server, "queue"),
                "QUEUE_METRICS_OUTPUTS": "logs,statsd,otlp",
                "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{listener.port}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            },
        )
        datagrams = b"\n".join(listener.collect(1.0)).decode()
        request = receiver.next()
    finally:
        listener.close()
        receiver.close()
    assert result.returncode == 0 and result.stderr == "", result.stderr
    expected = {("sidekiq", "default"): 3, ("sidekiq", PASSWORD): 2, ("rq", "default"): 1, ("rq", "queue"): 1}
    for (system, queue), size in expected.items():
        assert f"sample#queue.{system}.{queue}.size={size} " in result.stdout
        # `redis`: the datastore's label (REDIS_URL).
        assert f"queue.size:{size}|g|#backend:{system},queue:{queue},datastore:redis\n" in datagrams + "\n"
    assert by_queue(points(request.decoded), "queue.size") == expected


def test_an_error_reply_quoting_the_password_is_told_without_it(make_server):
    # A server that knows no AUTH quotes its arguments back: the collector's own message (what
    # JSON's "errors" and doctor's problems carry) ends where the quoted arguments begin.
    renamed = make_server(extra=["--rename-command", "AUTH", ""])
    for user, password in (("default", PASSWORD), ("queue", "ab")):
        (error,) = collect(url_of(renamed, user, password)).errors
        assert error.endswith("ERR unknown command 'AUTH'"), error
        assert password not in error.replace(user, "") and "with args" not in error


def outputs_of(env: dict, *commands) -> str:
    texts = []
    for arguments in commands:
        result = queue_metrics(*arguments, env=env)
        texts.append(result.stdout + result.stderr)
    return "\n".join(texts)


def run_briefly(env: dict) -> str:
    process = start("run", env={**env, "QUEUE_METRICS_INTERVAL": "0.3"})
    time.sleep(1.5)
    process.kill()
    out, err = process.communicate()
    return (out + err).decode()


COMMANDS = (("once",), ("once", "--format", "json"), ("once", "--format", "table"), ("doctor",), ("config",))


def test_no_output_shows_the_password_when_things_go_wrong(acl_server, make_server):
    renamed = make_server(extra=["--rename-command", "AUTH", ""])
    cases = {
        "wrong password": url_of(acl_server, "queue", PASSWORD + "x"),
        "no such user": url_of(acl_server, "nobody"),
        "NOPERM": url_of(acl_server, "limited"),
        # A server that knows no AUTH quotes the command's arguments back in its error reply.
        "AUTH quoted": url_of(renamed, "default"),
    }
    seen = {}
    for case, url in cases.items():
        env = {"REDISCLOUD_URL": url, "QUEUE_METRICS_PREFIX": "queue"}
        seen[case] = outputs_of(env, *COMMANDS) + run_briefly(env)
    assert "rejected the password" in seen["wrong password"] and "rejected the password" in seen["no such user"]
    assert "NOPERM" in seen["NOPERM"] or "permission" in seen["NOPERM"]
    assert "unknown command 'AUTH'" in seen["AUTH quoted"]
    for case, text in seen.items():
        assert PASSWORD not in text, case
        assert "Traceback" not in text, case
    json_lines = [json.loads(line) for line in seen["AUTH quoted"].splitlines() if line.startswith("{")]
    assert json_lines and all(PASSWORD not in str(document["errors"]) for document in json_lines)


# 130 characters: Redis quotes each argument of an unknown command cut at 128.
LONG_PASSWORD = hashlib.sha512(b"queue-metrics").hexdigest() + "Zq"


def test_no_part_of_a_long_password_quoted_cut_short_is_ever_shown(make_server):
    """A server without AUTH (`rename-command AUTH ""`) quotes the password cut at 128
    characters: a cut password is no longer the password, so hiding the whole one missed it."""
    renamed = make_server(extra=["--rename-command", "AUTH", ""])
    env = {"REDIS_URL": url_of(renamed, "default", LONG_PASSWORD)}
    text = outputs_of(env, *COMMANDS) + run_briefly(env)
    assert "unknown command 'AUTH'" in text
    # No prefix of 8 characters or more of the password, anywhere.
    assert [n for n in range(8, len(LONG_PASSWORD) + 1) if LONG_PASSWORD[:n] in text] == [], text


@pytest.mark.parametrize(
    "url",
    [
        f"redis://default:{PASSWORD}@host:port/0",
        f"redis://default:{PASSWORD}/x@127.0.0.1:6379/0",
        f"rediss://:{PASSWORD}?x@127.0.0.1:6379",
        f"redis://queue:{PASSWORD}@/0",
    ],
)
def test_usage_errors_never_show_the_password(url):
    text = outputs_of({"REDIS_URL": url, "QUEUE_METRICS_PREFIX": "queue"}, *COMMANDS)
    assert "usage error: REDIS_URL" in text
    assert PASSWORD not in text


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}/x@127.0.0.1:6379/0",
        "redis://:pa/ss@host",
        f"redis://default:{PASSWORD}/x@127.0.0.1",
        f"rediss://:{PASSWORD}?x@127.0.0.1:6379",
        f"redis://:{PASSWORD}#x@127.0.0.1:6379",
    ],
)
def test_a_password_with_a_raw_slash_gets_a_hint_to_percent_encode_it(url):
    result = queue_metrics("once", env={"REDIS_URL": url})
    assert result.returncode == 2
    (line,) = lines_of(result.stderr)
    assert line.startswith("queue-metrics: usage error: REDIS_URL ")
    assert "percent-encode" in line and "%2F" in line and "%40" in line
    assert PASSWORD not in line and "pa/ss" not in line and "ss@" not in line


def test_a_password_with_a_raw_at_sign_works_as_it_is(make_server):
    # urlsplit takes the userinfo up to the last '@', as redis-py does: no hint is needed.
    server = make_server(extra=["--requirepass", "p@ss-w0rd@x"])
    sidekiq(f"redis://:p%40ss-w0rd%40x@127.0.0.1:{server.port}/0", {"enqueue": {"default": 2}})
    result = queue_metrics("once", env={"REDIS_URL": f"redis://:p@ss-w0rd@x@127.0.0.1:{server.port}/0"})
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=2 " in result.stdout


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory):
    """A redis-server whose TLS port is separate from its plain one, and the certificate."""
    from helpers.servers import RedisServer

    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls-only"))
    server = RedisServer(
        tls_port=free_port(),
        extra=["--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no"],
    ).start()
    yield server, cert
    server.close()


@pytest.mark.parametrize("credentials", ["", f"default:{PASSWORD}@"])
def test_plain_redis_url_to_a_tls_port_says_so(tls_only, credentials):
    server, _ = tls_only
    for command in ("once", "doctor"):
        result = queue_metrics(command, env={"REDIS_URL": f"redis://{credentials}127.0.0.1:{server.tls_port}/0"})
        assert result.returncode == 1
        text = result.stdout + result.stderr
        assert f"Redis at redis://127.0.0.1:{server.tls_port}/0" in text
        assert "is it a TLS port? use rediss://" in text, text
        assert PASSWORD not in text


def test_a_plain_port_closed_for_other_reasons_gets_no_tls_hint(make_server):
    server = make_server()
    port = server.port
    server.stop()
    result = queue_metrics("once", env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert "connection refused" in result.stderr and "TLS" not in result.stderr


def scrape_of_a_run(env: dict) -> str:
    """A `run` with the prometheus output: its first `/metrics` body, then its stdout and stderr."""
    port = free_port()
    process = start(
        "run",
        env={
            **env,
            "QUEUE_METRICS_INTERVAL": "0.3",
            "QUEUE_METRICS_OUTPUTS": "logs,prometheus",
            "QUEUE_METRICS_PROMETHEUS_ADDRESS": f"127.0.0.1:{port}",
        },
    )
    body = ""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    body = answer.read().decode()
            except OSError:
                time.sleep(0.1)
    finally:
        process.kill()
        out, err = process.communicate()
    assert body, (out + err).decode()
    return body + (out + err).decode()


def test_the_new_commands_and_the_prometheus_output_never_show_the_password(acl_server, make_server):
    renamed = make_server(extra=["--rename-command", "AUTH", ""])
    cases = {
        "working": url_of(acl_server, "queue"),
        "wrong password": url_of(acl_server, "queue", PASSWORD + "x"),
        "AUTH quoted": url_of(renamed, "default"),
    }
    for case, url in cases.items():
        env = {"REDISCLOUD_URL": url}
        text = outputs_of(env, ("watch", "--ticks", "2", "--interval", "0.3"), ("alerts", "--for", "prometheus"))
        text += scrape_of_a_run(env)
        assert "Traceback" not in text, case
        if case == "working":
            # A queue named like the password is the user's own name: shown as it is, never masked.
            assert f'queue_size{{system="sidekiq",queue="{PASSWORD}",datastore="rediscloud"}} 2' in text
            assert f"sidekiq {PASSWORD} size=2" in text
            text = text.replace(PASSWORD, "")
        assert PASSWORD not in text, case
