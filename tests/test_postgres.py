"""The Postgres datastore kind: found with no setting, our wire client against real PostgreSQL
servers (the machine's, and private clusters for password methods, TLS and a connection limit),
read-only sessions, and a database without job tables costing one query and printing nothing."""

from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator, List

import pytest

from helpers.postgres import drop_database, make_database, our_sessions, pooler, private_cluster, psql, url
from helpers.servers import free_port
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.datastores import all_locations
from queue_metrics.datastores.postgres.locations import address_of, postgres_locations
from queue_metrics.datastores.postgres.reader import DETECT_EVERY, PostgresReader
from queue_metrics.datastores.postgres.wire import PostgresConnection, Rows, md5_password
from queue_metrics.errors import ConfigError, PostgresError, WarningNotice, describe_postgres_error

PASSWORD = "pw-Secr3t-x9"


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database()
    yield name
    drop_database(name)


def connect(database: str, **options: object) -> PostgresConnection:
    return PostgresConnection("127.0.0.1", 5432, "postgres", "", database, 5.0, 2000, 1000, **options)  # type: ignore[arg-type]


# -- found with no setting


def test_database_urls_found_in_order_deduplicated_and_labeled():
    primary = "postgres://u:p@ec2-1.compute.amazonaws.com:5432/d1"
    env = {
        "DATABASE_URL": primary,
        "HEROKU_POSTGRESQL_PINK_URL": primary,  # the primary's own color: one datastore
        "HEROKU_POSTGRESQL_AMBER_URL": "postgresql://q:r@ec2-2.compute.amazonaws.com:5432/queue",
        "REDIS_URL": "redis://localhost:6379/0",
    }
    found = postgres_locations(env)
    assert [(location.label, location.source) for location in found] == [
        ("database", "DATABASE_URL"),
        ("heroku_postgresql_amber", "HEROKU_POSTGRESQL_AMBER_URL"),
    ]
    assert [location.kind for location in all_locations(env)] == ["redis", "postgres", "postgres"]
    # Another database engine's URL is not ours, and an app without Postgres has no datastore.
    assert postgres_locations({"DATABASE_URL": "mysql://u:p@host/db"}) == []
    assert [location.kind for location in all_locations({"REDIS_URL": "redis://h:6379"})] == ["redis"]
    listed = postgres_locations({"QUEUE_METRICS_DATABASE_URLS": f"jobs={primary},postgres://a@h2/x"})
    assert [location.label for location in listed] == ["jobs", "database_2"]


def test_sslmode_is_required_except_on_loopback_and_the_urls_own_wins():
    assert address_of("postgres://u:p@db.example.com/d").sslmode == "require"
    assert address_of("postgres://u:p@127.0.0.1/d").sslmode == "prefer"
    assert address_of("postgres://u:p@localhost/d").sslmode == "prefer"
    assert address_of("postgres://u:p@db.example.com/d?sslmode=disable").sslmode == "disable"
    address = address_of("postgresql://us%40er:p%2Fw@[::1]:6543/my%20db?sslmode=verify-full")
    assert (address.host, address.port, address.user, address.password, address.database) == (
        "::1",
        6543,
        "us@er",
        "p/w",
        "my db",
    )


@pytest.mark.parametrize(
    "value, message",
    [
        (f"postgres://u:{PASSWORD}@host:port/d", "its port is not a number"),
        (f"postgres://u:{PASSWORD}@host/d?sslmode=sometimes", "an sslmode Postgres does not know"),
        (f"postgres://:{PASSWORD}@host/d", "without a user"),
        (f"postgres://u:{PASSWORD}@/d", "without a host"),
    ],
)
def test_bad_urls_are_one_line_without_the_password(value, message):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"DATABASE_URL": value}).locations()
    assert message in str(raised.value) and "DATABASE_URL" in str(raised.value)
    assert PASSWORD not in str(raised.value)


# -- the wire client


def test_queries_in_one_write_each_answered_alone_in_a_read_only_session(database):
    connection = connect(database)
    try:
        results = connection.queries(
            [
                "SELECT 1 AS one, NULL AS nothing, 'caf\u00e9' AS word",
                "SELECT * FROM no_such_table",
                "SHOW transaction_read_only",
                "CREATE TABLE written (a int)",
                "SELECT pg_sleep(3)",
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
            ]
        )
    finally:
        connection.close()
    assert results[0] == Rows(("one", "nothing", "word"), [("1", None, "caf\u00e9")])
    assert isinstance(results[1], PostgresError) and results[1].code == "42P01"
    assert results[2] == Rows(("transaction_read_only",), [("on",)])
    assert isinstance(results[3], PostgresError) and results[3].code == "25006"  # read-only transaction
    assert isinstance(results[4], PostgresError) and results[4].code == "57014"  # statement_timeout
    assert results[5] == Rows(("current_setting", "current_setting"), [("2s", "1s")])
    assert psql("SELECT count(*) FROM pg_tables WHERE tablename = 'written'", database=database) == "0"


@pytest.mark.parametrize("auth", ["scram-sha-256", "md5", "password"])
def test_every_password_method_logs_in_and_a_wrong_password_is_said(auth):
    with contextlib.contextmanager(private_cluster)(auth=auth) as cluster:
        cluster.add_user("qm", PASSWORD)
        connection = PostgresConnection("127.0.0.1", cluster.port, "qm", PASSWORD, "postgres", 5.0, 2000, 1000)
        try:
            assert connection.queries(["SELECT current_user"]) == [Rows(("current_user",), [("qm",)])]
        finally:
            connection.close()
        with pytest.raises(PostgresError) as raised:
            PostgresConnection("127.0.0.1", cluster.port, "qm", "wrong", "postgres", 5.0, 2000, 1000)
        line = describe_postgres_error(raised.value, "postgres://127.0.0.1/postgres", "qm", 5.0)
        assert "wrong password" in line and PASSWORD not in line


def test_md5_password_is_the_protocols():
    # PostgreSQL's own pg_md5_encrypt: "md5" + md5(md5(password + user) + salt).
    assert (
        md5_password("qm", "secret", b"\x01\x02\x03\x04")
        == b"md5"
        + __import__("hashlib")
        .md5(__import__("hashlib").md5(b"secretqm").hexdigest().encode() + b"\x01\x02\x03\x04")
        .hexdigest()
        .encode()
    )


def test_tls_as_sslmode_says_and_a_server_without_it(tmp_path, database):
    with contextlib.contextmanager(private_cluster)(tls=True) as cluster:
        cluster.add_user("qm", PASSWORD)
        env = {"QUEUE_METRICS_DATABASE_URLS": cluster.url("qm", PASSWORD, query="sslmode=require")}
        report = Collector(Settings.from_env(env)).tick()
        assert report.errors == () and report.redis_ok
        verified = {
            "QUEUE_METRICS_DATABASE_URLS": cluster.url("qm", PASSWORD, query="sslmode=verify-full"),
            "QUEUE_METRICS_TLS_CA_FILE": cluster.cert,
        }
        reader = PostgresReader(Settings.from_env(verified), Settings.from_env(verified).locations()[0])
        connection = reader._connect(time.monotonic() + 5)
        assert connection.tls
        reader.close()
        # Verified against the system's CAs, the self-signed certificate fails: one warning line.
        notices: List[str] = []
        bad = {"QUEUE_METRICS_DATABASE_URLS": cluster.url("qm", PASSWORD, query="sslmode=verify-full")}
        Collector(Settings.from_env(bad), announce=notices.append).tick()
        assert len(notices) == 1 and "certificate verify failed" in notices[0] and PASSWORD not in notices[0]
    # The machine's server has no TLS: required, it is said; preferred (loopback's default), it goes on.
    with pytest.raises(PostgresError) as raised:
        PostgresConnection("127.0.0.1", 5432, "postgres", "", database, 5.0, 2000, 1000, _tls(), True)
    assert "does not support TLS" in str(raised.value)
    connection = PostgresConnection("127.0.0.1", 5432, "postgres", "", database, 5.0, 2000, 1000, _tls(), False)
    assert not connection.tls
    connection.close()


def _tls():
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_a_full_server_is_said_in_words():
    with contextlib.contextmanager(private_cluster)(max_connections=2) as cluster:
        cluster.add_user("qm", PASSWORD)
        held = [
            PostgresConnection("127.0.0.1", cluster.port, "qm", PASSWORD, "postgres", 5.0, 2000, 1000) for _ in range(2)
        ]
        try:
            with pytest.raises(PostgresError) as raised:
                PostgresConnection("127.0.0.1", cluster.port, "qm", PASSWORD, "postgres", 5.0, 2000, 1000)
        finally:
            for connection in held:
                connection.close()
    line = describe_postgres_error(raised.value, "postgres://127.0.0.1/postgres", "qm", 5.0)
    assert raised.value.code == "53300" and "connection limit" in line and "PgBouncer" in line


# -- a database without job tables


def test_a_database_without_job_tables_costs_one_query_now_and_then_and_keeps_no_connection(database):
    psql("CREATE TABLE users (id int)", database=database)
    settings = Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database)})
    notices: List[str] = []
    reader = PostgresReader(settings, settings.locations()[0], announce=notices.append)
    reports = [reader.tick() for _ in range(DETECT_EVERY + 1)]
    assert all(report.samples == () and report.errors == () and report.redis_ok for report in reports)
    # The catalog query at the first tick and again DETECT_EVERY ticks later; none in between.
    assert [report.round_trips for report in reports] == [1] + [0] * (DETECT_EVERY - 1) + [1]
    assert our_sessions(database) == 0 and notices == []


def test_a_database_that_cannot_be_reached_and_never_held_jobs_is_one_warning():
    settings = Settings.from_env(
        {
            "QUEUE_METRICS_DATABASE_URLS": f"postgres://u:{PASSWORD}@127.0.0.1:{free_port()}/d",
            "QUEUE_METRICS_TIMEOUT": "1",
        }
    )
    notices: List[str] = []
    collector = Collector(settings, announce=notices.append)
    reports = [collector.tick() for _ in range(3 * DETECT_EVERY)]
    assert all(report.errors == () for report in reports)
    (notice,) = notices
    assert isinstance(notice, WarningNotice) and "connection refused" in notice and PASSWORD not in notice


def test_the_collector_names_and_reads_a_postgres_datastore_beside_redis(database, redis_url):
    env: Dict[str, str] = {"REDIS_URL": redis_url, "DATABASE_URL": url(database)}
    report = Collector(Settings.from_env(env)).tick()
    assert [section.label for section in report.datastores] == ["redis", "database"]
    assert report.errors == ()


# -- a kept session the server closed between ticks


def test_a_session_the_server_closed_between_ticks_costs_no_tick(database):
    """The session is kept between ticks; a server (idle_session_timeout, a restart, PgBouncer's
    idle timeouts, pg_terminate_backend) may end it meanwhile. The tick finds it closed when it
    reads, and reads on a new session: no error line, no tick lost."""
    psql(
        "CREATE TABLE delayed_jobs (id bigserial, queue varchar, run_at timestamp, locked_at timestamp, "
        "failed_at timestamp); INSERT INTO delayed_jobs (queue, run_at) VALUES ('default', now())",
        database=database,
    )
    psql(f"ALTER DATABASE {database} SET idle_session_timeout = '300ms'")
    settings = Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database)})
    reader = PostgresReader(settings, settings.locations()[0])
    first = reader.tick()
    assert first.errors == () and [sample.size for sample in first.samples] == [1]
    deadline = time.monotonic() + 10
    while our_sessions(database) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_sessions(database) == 0  # the server ended it
    for _ in range(2):
        report = reader.tick()
        assert report.errors == () and report.redis_ok
        assert [(sample.queue, sample.size) for sample in report.samples] == [("default", 1)]
    reader.close()


# -- a pooled URL (PgBouncer)


def test_a_pooled_url_is_read_with_its_limits_set_per_transaction(database):
    """PgBouncer refuses startup parameters other than the few it tracks (`unsupported startup
    parameter`): through it the limits are set inside each query's own transaction (SET LOCAL,
    SET TRANSACTION READ ONLY), so they neither fail the login nor stay on the server connection
    that the app's own transactions share."""
    psql(
        "CREATE TABLE delayed_jobs (id bigserial, queue varchar, run_at timestamp, locked_at timestamp, "
        "failed_at timestamp); INSERT INTO delayed_jobs (queue, run_at) VALUES ('default', now())",
        database=database,
    )
    with contextlib.contextmanager(pooler)() as bouncer:
        settings = Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, port=bouncer.port)})
        reader = PostgresReader(settings, settings.locations()[0])
        for _ in range(2):
            report = reader.tick()
            assert report.errors == () and report.redis_ok
            assert [(sample.queue, sample.size) for sample in report.samples] == [("default", 1)]
        connection = reader._connection
        assert connection is not None
        (limits,) = connection.queries(
            [
                "SELECT current_setting('transaction_read_only'), current_setting('statement_timeout'), "
                "current_setting('TimeZone')"
            ]
        )
        assert isinstance(limits, Rows) and limits.rows == [("on", "5s", "UTC")]
        (write,) = connection.queries(["CREATE TABLE written (a int)"])
        assert isinstance(write, PostgresError) and write.code == "25006"  # read-only transaction
        reader.close()
        # The one server connection, as the app's next transaction finds it: none of ours.
        app = psql(
            "SHOW statement_timeout; SHOW transaction_read_only; SHOW lock_timeout",
            database=database,
            port=bouncer.port,
        )
        assert app.split() == ["0", "off", "0"]


def test_the_untranslated_severity_wins():
    from queue_metrics.datastores.postgres.wire import as_error

    # An ErrorResponse from a server whose lc_messages is German: `S` translated, `V` not.
    body = b"SSCHWERWIEGEND\0VFATAL\0C53300\0Mzu viele Verbindungen\0\0"
    error = as_error(body)
    assert (error.severity, error.code, error.text) == ("FATAL", "53300", "zu viele Verbindungen")
    assert as_error(b"SERROR\0C42P01\0Mno table\0\0").severity == "ERROR"  # before 9.6: no `V`


def test_doctor_says_nothing_of_tables_it_could_not_look_for():
    nowhere = f"postgres://u:{PASSWORD}@127.0.0.1:{free_port()}/d"
    settings = Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": nowhere, "QUEUE_METRICS_TIMEOUT": "1"})
    reader = PostgresReader(settings, settings.locations()[0])
    reader.tick()
    assert reader.findings() == []
