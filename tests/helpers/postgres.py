"""PostgreSQL for the tests: a fresh database per test on the machine's server (127.0.0.1:5432,
trust authentication), and private clusters of our own (initdb on a free port, as the `postgres`
user) for what the machine's server cannot show: password methods, TLS, a connection limit."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from typing import Iterator, List, Optional

from helpers.servers import free_port, self_signed_certificate, wait_for_port

MACHINE = "127.0.0.1"
MACHINE_PORT = 5432
ADMIN = "postgres"


def bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def psql(sql: str, database: str = "postgres", port: int = MACHINE_PORT, host: str = MACHINE) -> str:
    """Runs `sql` as the admin (trust on the machine's server; the socket on a private cluster)."""
    done = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            ADMIN,
            "-d",
            database,
        ],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def make_database(prefix: str = "qm") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE DATABASE {name}")
    return name


def drop_database(name: str) -> None:
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def url(database: str, user: str = ADMIN, password: str = "", port: int = MACHINE_PORT, query: str = "") -> str:
    credentials = f"{user}:{password}@" if password else f"{user}@"
    return f"postgres://{credentials}{MACHINE}:{port}/{database}{'?' + query if query else ''}"


def our_sessions(database: str, port: int = MACHINE_PORT) -> int:
    """Sessions of the collector (application_name queue-metrics) on `database`."""
    return int(
        psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
            "AND application_name = 'queue-metrics'",
            port=port,
        )
    )


class PrivateCluster:
    """A PostgreSQL cluster of the test's own: `auth` is pg_hba's method for TCP logins
    (scram-sha-256, md5, password), `tls` turns on TLS with a self-signed certificate for
    127.0.0.1, `max_connections` caps sessions."""

    def __init__(self, auth: str = "scram-sha-256", tls: bool = False, max_connections: int = 20) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="qm-pg-")
        shutil.chown(self.directory, ADMIN, ADMIN)
        data = os.path.join(self.directory, "data")
        encryption = "md5" if auth == "md5" else "scram-sha-256"
        self._as_admin(
            [os.path.join(bin_dir(), "initdb"), "-D", data, "-U", ADMIN, "--auth-local=trust", f"--auth-host={auth}"]
        )
        settings = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.directory}'",
            f"max_connections = {max_connections}",
            "superuser_reserved_connections = 0",
            f"password_encryption = '{encryption}'",
            "fsync = off",
        ]
        self.cert: Optional[str] = None
        if tls:
            cert, key = self_signed_certificate(self.directory)
            for path in (cert, key):
                shutil.chown(path, ADMIN, ADMIN)
            os.chmod(key, 0o600)
            settings += ["ssl = on", f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'"]
            self.cert = cert
        with open(os.path.join(data, "postgresql.conf"), "a") as conf:
            conf.write("\n".join(settings) + "\n")
        self._as_admin(
            [os.path.join(bin_dir(), "pg_ctl"), "-D", data, "-l", os.path.join(self.directory, "log"), "-w", "start"]
        )
        self.data = data
        wait_for_port(self.port)

    def _as_admin(self, command: List[str]) -> None:
        subprocess.run(["runuser", "-u", ADMIN, "--", *command], check=True, capture_output=True)

    def sql(self, sql: str, database: str = "postgres") -> str:
        return psql(sql, database=database, port=self.port, host=self.directory)

    def add_user(self, name: str, password: str) -> None:
        self.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")

    def url(self, user: str, password: str, database: str = "postgres", query: str = "") -> str:
        return url(database, user, password, self.port, query)

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                ADMIN,
                "--",
                os.path.join(bin_dir(), "pg_ctl"),
                "-D",
                self.data,
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def private_cluster(**options: object) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(**options)  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()


class Pooler:
    """PgBouncer in transaction mode in front of the machine's server, as a pooled URL puts it
    (Heroku's connection pooling, the pgbouncer buildpack): its default settings, which refuse
    startup parameters other than the few it tracks; one server connection, which every client
    shares, transaction by transaction."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="qm-pgbouncer-")
        with open(os.path.join(self.directory, "users.txt"), "w") as users:
            users.write(f'"{ADMIN}" ""\n')
        with open(os.path.join(self.directory, "pgbouncer.ini"), "w") as ini:
            ini.write(
                f"[databases]\n* = host={MACHINE} port={MACHINE_PORT}\n"
                f"[pgbouncer]\nlisten_addr = {MACHINE}\nlisten_port = {self.port}\nauth_type = trust\n"
                f"auth_file = {self.directory}/users.txt\npool_mode = transaction\ndefault_pool_size = 1\n"
                f"logfile = {self.directory}/log\nunix_socket_dir =\n"
            )
        shutil.chown(self.directory, ADMIN, ADMIN)
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(os.path.join(self.directory, name), ADMIN, ADMIN)
        self._process = subprocess.Popen(
            ["pgbouncer", "-u", ADMIN, os.path.join(self.directory, "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def pooler() -> Iterator[Pooler]:
    bouncer = Pooler()
    try:
        yield bouncer
    finally:
        bouncer.stop()
