"""What Redis refuses, said as it is: ACL users limited by key patterns (NOPERM on a key, not on a
command), a server at `maxclients`, an INFO that fails for another reason than an ACL, and jobs
that wait while no worker runs. Real redis-servers, real producers and workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import redis
from rq import Queue

from helpers.collect import HELPERS, by_queue, make_collector, sidekiq
from helpers.process import command_env, queue_metrics
from helpers.producers import fill_three_systems
from helpers.workers import system_figures, wait_for, worker_process
from queue_metrics import errors
from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import connect, describe_error, round_trip
from queue_metrics.datastores.redis.resp import pack_commands
from queue_metrics.errors import RedisUnavailable, ReplyError, ServerClosed, describe_reply_error

PASSWORD = "s3cret-refusals"


def limited_user(server, name: str, *rules: str) -> str:
    """A Redis ACL user with these rules, made by the admin; its URL."""
    admin = redis.Redis.from_url(server.url)
    admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", *rules)
    admin.close()
    return f"redis://{name}:{PASSWORD}@127.0.0.1:{server.port}/0"


# ---- NOPERM: on a command, or on a key (texts as Redis answers them)


@pytest.mark.parametrize(
    "text, denied",
    [
        # redis-server 7.0 (the one the tests run), and 6.x
        ("NOPERM this user has no permissions to access one of the keys used as arguments", "key"),
        ("NOPERM this user has no permissions to run the 'smembers' command", "command"),
        ("NOPERM this user has no permissions to run the 'config|get' command or its subcommand", "command"),
        # Redis 7.2 and later, and Valkey
        ("NOPERM No permissions to access a key", "key"),
        ("NOPERM User keys-reader has no permissions to run the 'info' command", "command"),
        ("NOPERM User command has no permissions to access a key", "key"),
        ("NOPERM this user has no permissions to access one of the channels used as arguments", None),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
    ],
)
def test_a_noperm_reply_says_whether_a_key_or_a_command_was_denied(text, denied):
    assert errors.permission_denied(ReplyError(text)) == denied


def test_real_redis_denies_the_key_not_the_command_to_a_key_pattern_user(make_server):
    server = make_server()
    url = limited_user(server, "rqonly", "~rq:*", "+@read")
    reader = redis.Redis.from_url(url, protocol=2)
    with pytest.raises(redis.exceptions.NoPermissionError) as key_denied:
        reader.smembers("queues")
    with pytest.raises(redis.exceptions.NoPermissionError) as command_denied:
        reader.info("server")
    reader.close()
    assert errors.permission_denied(ReplyError(f"NOPERM {key_denied.value}")) == "key"
    assert errors.permission_denied(ReplyError(f"NOPERM {command_denied.value}")) == "command"


def test_a_denied_key_is_not_told_to_grant_read_commands():
    key = ReplyError("NOPERM this user has no permissions to access one of the keys used as arguments")
    assert "+@read" not in describe_reply_error(key)
    assert describe_reply_error(key, patterns=("queue:*",)) == (
        "this Redis user may not read its key (NOPERM): add the key pattern ~queue:* to its ACL "
        "(ACL SETUSER <user> ~queue:*)"
    )
    command = ReplyError("NOPERM this user has no permissions to run the 'lindex' command")
    assert describe_reply_error(command).startswith("this Redis user may not run LINDEX (NOPERM): grant it +@read")


def test_a_user_limited_to_rq_keys_gets_a_line_for_each_system_it_cannot_read(make_server):
    server = make_server()
    fill_three_systems(server.url)
    url = limited_user(server, "rqonly", "~rq:*", "+@read")

    report = make_collector(url).tick()
    assert {sample.backend for sample in report.samples} == {"rq"}
    assert set(by_queue(report, "rq")) == {"default", "low"}
    (sidekiq_line,) = [line for line in report.errors if line.startswith("sidekiq")]
    assert sidekiq_line.startswith('sidekiq registry "queues": this Redis user may not read it (NOPERM)')
    assert "~queues ~queue:* " in sidekiq_line and "QUEUE_METRICS_BACKENDS" in sidekiq_line
    celery_lines = [line for line in report.errors if line.startswith("celery")]
    assert celery_lines and all("~*_kombu.binding.* ~unacked ~celery*" in line for line in celery_lines)
    assert celery_lines[0].startswith('celery registry "_kombu.binding.celery": this Redis user may not read it')
    (resque_line,) = [line for line in report.errors if line.startswith("resque")]
    assert resque_line.startswith('resque registry "resque:queues": this Redis user may not read it (NOPERM)')
    (dramatiq_line,) = [line for line in report.errors if line.startswith("dramatiq")]
    assert dramatiq_line.startswith('dramatiq "dramatiq:__heartbeats__": this Redis user may not read it (NOPERM)')
    assert "~dramatiq:* " in dramatiq_line
    assert len(report.errors) == 3 + len(celery_lines)
    assert not [line for line in report.errors if "+@read" in line]

    once = queue_metrics("once", env={"REDIS_URL": url}, timeout=60)
    assert "sample#queue.rq.default.size=2" in once.stdout
    assert f"sample#queue.collector.errors={len(report.errors)}" in once.stdout
    assert 'queue-metrics: error: sidekiq registry "queues": this Redis user may not read it' in once.stderr
    assert PASSWORD not in once.stdout + once.stderr

    # The way out for an app that uses RQ only: no line about the systems left out.
    assert make_collector(url, QUEUE_METRICS_BACKENDS="rq").tick().errors == ()


def test_a_user_that_reads_the_registries_but_not_the_queues_is_told_the_queue_key_pattern(make_server):
    server = make_server()
    fill_three_systems(server.url)
    url = limited_user(server, "registries", "~queues", "~rq:queues", "+@read")
    errors = make_collector(url, QUEUE_METRICS_BACKENDS="sidekiq,rq").tick().errors
    assert 'sidekiq queue "default": this Redis user may not read its key (NOPERM): add the key pattern ~queue:* ' in (
        "\n".join(errors)
    )
    assert 'rq queue "default": this Redis user may not read its key (NOPERM): add the key pattern ~rq:queue:* ' in (
        "\n".join(errors)
    )
    assert not [line for line in errors if "+@read" in line]


def test_doctor_says_a_system_is_not_readable_by_this_user_and_names_the_key_patterns(make_server):
    server = make_server()
    fill_three_systems(server.url)
    url = limited_user(server, "rqonly", "~rq:*", "+@read")
    doctor = queue_metrics("doctor", env={"REDIS_URL": url}, timeout=60)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert "rq: in use: the 'rq:queues' set names 2 queue(s)" in lines
    assert 'sidekiq: not readable by this user (NOPERM on "queues"): it may be in use; see the problem below' in lines
    assert [line for line in lines if line.startswith("celery: not readable by this user (NOPERM on ")]
    # (No BullMQ keys here: its walk, which any user may run, rightly finds none.)
    assert not [
        line for line in lines if ("not detected" in line and not line.startswith("bullmq:")) or "+@read" in line
    ]
    assert [line for line in lines if line.startswith("Problem: sidekiq registry") and "~queues ~queue:*" in line]
    # The probe key is outside the user's patterns: the commands themselves are allowed.
    assert [line for line in lines if line.startswith("Read commands allowed: SMEMBERS, LLEN")]
    assert PASSWORD not in doctor.stdout + doctor.stderr


# ---- maxclients: the server's last words before it closes


def holding(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.exceptions.ConnectionError:
        return False


MAXCLIENTS_LINE = (
    "Redis at redis://127.0.0.1:{port}/0 refused the connection: it has reached its maximum number of clients "
    "(maxclients)"
)


@pytest.mark.parametrize("password", [None, "pw-at-maxclients"])
def test_a_server_at_maxclients_is_said_in_words_by_once_and_doctor(make_server, password):
    server = make_server(extra=["--maxclients", "1"] + (["--requirepass", password] if password else []))
    url = f"redis://:{password}@127.0.0.1:{server.port}/0" if password else server.url
    holder = redis.Redis.from_url(url)
    # The one connection the server allows (once it has seen the port probe of make_server leave).
    wait_for(lambda: holding(holder), "the one connection the server allows", timeout=10)
    try:
        expected = MAXCLIENTS_LINE.format(port=server.port)
        collector = make_collector(url)
        for _ in range(3):
            (line,) = collector.tick().errors
            assert line.startswith(expected), line
        once = queue_metrics("once", env={"REDIS_URL": url}, timeout=30)
        assert once.returncode == 1
        (stderr_line,) = once.stderr.splitlines()
        assert stderr_line.startswith(f"queue-metrics: error: {expected}")
        assert "close idle connections" in stderr_line and "reset by peer" not in stderr_line
        doctor = queue_metrics("doctor", env={"REDIS_URL": url}, timeout=30)
        assert doctor.returncode == 1
        assert "not allowed for this user" not in doctor.stdout
        assert f"Problem: {expected}" in doctor.stdout
        for output in (once.stdout, once.stderr, doctor.stdout, doctor.stderr):
            assert not password or password not in output
    finally:
        holder.close()
    # Once a connection is free again, the next tick reads as ever.
    wait_for(lambda: collector.tick().redis_ok, "a tick once the held connection is closed", timeout=10)


def test_doctor_tells_the_real_reason_info_failed(make_server):
    server = make_server(extra=["--rename-command", "INFO", ""])
    doctor = queue_metrics("doctor", env={"REDIS_URL": server.url}, timeout=30)
    (line,) = [line for line in doctor.stdout.splitlines() if line.startswith("Server: ")]
    assert line.startswith("Server: version unknown (INFO answered: ERR unknown command 'INFO'")
    assert "not allowed" not in doctor.stdout
    url = limited_user(make_server(), "noinfo", "~*", "+@read")  # INFO is not in +@read
    doctor = queue_metrics("doctor", env={"REDIS_URL": url}, timeout=30)
    assert "Server: version unknown (INFO is not allowed for this user, which is fine)" in doctor.stdout


# ---- jobs waiting and no worker running


def doctor_problems(url: str) -> list:
    doctor = queue_metrics("doctor", env={"REDIS_URL": url}, timeout=60)
    return [line for line in doctor.stdout.splitlines() if line.startswith("Problem: ")]


def test_doctor_says_jobs_wait_and_no_worker_runs(make_server):
    server = make_server()
    fill_three_systems(server.url)  # Sidekiq 4 jobs, RQ 3, Celery 6; no worker of any
    problems = doctor_problems(server.url)
    assert (
        "Problem: sidekiq: 4 jobs are waiting and no Sidekiq process is running (is the worker dyno scaled to 0?)"
        in problems
    )
    assert "Problem: rq: 3 jobs are waiting and no rq worker is running (is the worker dyno scaled to 0?)" in problems
    assert not [line for line in problems if "celery" in line and "worker" in line]


def test_doctor_says_nothing_of_the_sort_while_real_workers_run(make_server):
    server = make_server()
    client = redis.Redis.from_url(server.url)
    sidekiq(server.url, {"enqueue": {"default": 2}})
    Queue("default", connection=client).enqueue("rq_jobs.quick")
    # Workers of other queues: the jobs still wait, but a worker runs.
    sidekiq_command = ["sidekiq", "-r", os.path.join(HELPERS, "sidekiq_jobs.rb"), "-c", "1", "-q", "critical"]
    rq_command = [os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "--url", server.url, "--path", HELPERS]
    with worker_process(sidekiq_command, {"REDIS_URL": server.url}), worker_process(rq_command + ["low"], {}):
        wait_for(lambda: client.scard("processes") == 1, "the Sidekiq process to beat", timeout=60)
        wait_for(lambda: client.scard("rq:workers") == 1, "the rq worker to register", timeout=60)
        problems = doctor_problems(server.url)
    client.close()
    assert not [line for line in problems if "no Sidekiq process" in line or "no rq worker" in line], problems


# ---- workers this Redis user cannot see are unknown, not absent


def recommended_patterns(line: str) -> list:
    """The key patterns a refusal line tells to grant (`ACL SETUSER <user> ~a ~b`)."""
    return re.search(r"ACL SETUSER <user> ((?:~[^\s)]+ ?)+)", line).group(1).split()


def test_doctor_with_the_recommended_acl_user_claims_no_missing_sidekiq_process(make_server):
    """Sidekiq's heartbeat hashes are named `<hostname>:<pid>:<nonce>`, outside the key patterns
    the refusal line names: with just those, the processes are unknown (and said why), never 0."""
    server = make_server()
    client = redis.Redis.from_url(server.url)
    sidekiq(server.url, {"enqueue": {"default": 2}})
    errors = make_collector(limited_user(server, "rqonly", "~rq:*", "+@read")).tick().errors
    (refusal,) = [line for line in errors if line.startswith("sidekiq registry")]
    patterns = recommended_patterns(refusal)
    assert "~processes" in patterns and "~*:*:*" not in patterns, refusal
    assert "heartbeat hashes" in refusal and "~*:*:*" in refusal, refusal
    url = limited_user(server, "sidekiq-reader", *patterns, "+@read")
    sidekiq_command = ["sidekiq", "-r", os.path.join(HELPERS, "sidekiq_jobs.rb"), "-c", "1", "-q", "critical"]
    with worker_process(sidekiq_command, {"REDIS_URL": server.url}):
        wait_for(lambda: client.scard("processes") == 1, "the Sidekiq process to beat", timeout=60)
        # The app uses Sidekiq only: the other systems left out, as the refusal lines say.
        env = {"REDIS_URL": url, "QUEUE_METRICS_BACKENDS": "sidekiq"}
        doctor = queue_metrics("doctor", env=env, timeout=60)
        once = queue_metrics("once", "--format", "json", env=env, timeout=60)
        # The pattern the line names for the processes: with it, the process is seen.
        wider = limited_user(server, "sidekiq-all", *patterns, "~*:*:*", "+@read")
        seen = make_collector(wider, QUEUE_METRICS_BACKENDS="sidekiq").tick()
    client.close()
    assert "no Sidekiq process is running" not in doctor.stdout, doctor.stdout
    (problem,) = [line for line in doctor.stdout.splitlines() if line.startswith("Problem: ")]
    assert problem.startswith("Problem: sidekiq process heartbeat hashes: 1 cannot be read"), problem
    assert "~*:*:*" in problem and "processes, busy threads" in problem and "unknown" in problem, problem
    (system,) = json.loads(once.stdout)["systems"]
    assert "processes" not in system and "busy" not in system and system["retry"] == 0, system
    assert seen.errors == () and system_figures(seen, "sidekiq")["processes"].value == 1


def test_doctor_claims_no_missing_worker_when_the_worker_sets_are_refused(make_server):
    server = make_server()
    fill_three_systems(server.url)
    url = limited_user(server, "queues-only", "~queues", "~queue:*", "~rq:queues", "~rq:queue:*", "~rq:job:*", "+@read")
    report = make_collector(url, QUEUE_METRICS_BACKENDS="sidekiq,rq").tick()
    assert {figure.name for system in report.systems for figure in system.figures}.isdisjoint(
        {"processes", "workers", "busy"}
    ), report.systems
    doctor = queue_metrics("doctor", env={"REDIS_URL": url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq"}, timeout=60)
    assert "is running" not in doctor.stdout, doctor.stdout
    assert 'Problem: sidekiq registry "processes"' in doctor.stdout
    assert 'Problem: rq registry "rq:workers"' in doctor.stdout


# ---- a close is told with the server's words only when they are its reason


def kill_when_blocked(admin: redis.Redis, command: str) -> None:
    """CLIENT KILL the connection that waits in `command` (a blocking pop), once it does."""
    wait_for(
        lambda: any(entry["cmd"] == command for entry in admin.client_list(_type="normal")),
        f"a connection blocked in {command}",
        timeout=10,
    )
    (blocked,) = [entry for entry in admin.client_list(_type="normal") if entry["cmd"] == command]
    admin.client_kill_filter(_id=blocked["id"])


def test_a_connection_lost_mid_batch_does_not_quote_an_earlier_error_as_the_reason(make_server):
    """A Redis without LPOS answers a batch's LPOS with an error, then the connection is lost
    (here killed while the batch's last command waits): that error is no reason for the close."""
    server = make_server(extra=["--rename-command", "LPOS", ""])
    settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": server.url, "QUEUE_METRICS_TIMEOUT": "10"})
    connection = connect(settings)
    assert round_trip(connection, [pack_commands([("LLEN", "celery")])], 1) == [0]  # mid-tick, not fresh
    admin = redis.Redis.from_url(server.url)
    killer = threading.Thread(target=kill_when_blocked, args=(admin, "blpop"))
    killer.start()
    try:
        with pytest.raises(RedisUnavailable) as lost:
            batch = [("LPOS", "celery", '{"body": "job-payload-bytes"}'), ("BLPOP", "nothing", 0)]
            round_trip(connection, [pack_commands(batch)], 2)
    finally:
        killer.join()
        admin.close()
    assert not isinstance(lost.value, ServerClosed), lost.value
    message = describe_error(lost.value, settings)
    assert message.startswith(f"lost the connection to Redis at {server.url}"), message
    assert "saying" not in message and "LPOS" not in message and "job-payload-bytes" not in message


# A test host of our own: an address on the loopback device of a network namespace the test
# makes itself (`unshare --net`), so Redis sees a client that is not 127.0.0.1 while nothing leaves
# the namespace.
TEST_HOST = "10.231.0.1"


def test_a_server_in_protected_mode_is_told_in_its_own_words(tmp_path):
    """Redis in protected mode (no password, a client not on loopback) answers DENIED as its first
    reply and closes: that is the reason, said as Redis says it."""
    url = f"redis://{TEST_HOST}:6399/0"
    script = f"""
set -e
ip link set lo up
ip addr add {TEST_HOST}/32 dev lo
redis-server --bind {TEST_HOST} --port 6399 --protected-mode yes --save '' --appendonly no --dir {tmp_path} >/dev/null &
for _ in $(seq 100); do (echo > /dev/tcp/{TEST_HOST}/6399) 2>/dev/null && break; sleep 0.05; done
status=0
"{sys.executable}" -m queue_metrics once || status=$?
kill %1
exit "$status"
"""
    env = command_env(REDIS_URL=url)
    namespace = ["unshare", "--net", "bash", "-c", script]
    result = subprocess.run(namespace, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("queue-metrics: error: ")]
    assert line.startswith(
        f"queue-metrics: error: Redis at {url} closed the connection, saying: DENIED Redis is running in protected mode"
    ), line
