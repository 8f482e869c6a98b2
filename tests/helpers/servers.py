"""Private redis-server processes for the tests: their own ports, so the machine's shared
Redis on 6379 is never touched, and killable, pausable and restartable for fault injection; and
a TLS proxy in front of a real server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Iterator, List, Optional, Tuple

REDIS_SERVER = shutil.which("redis-server")


def self_signed_certificate(directory) -> "tuple[str, str]":
    """A certificate for localhost and 127.0.0.1, and its key (PEM files in `directory`), made by
    openssl for real TLS in the tests."""
    cert, key = os.path.join(str(directory), "cert.pem"), os.path.join(str(directory), "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class RedisServer:
    """One redis-server on a free port. `extra` adds config arguments (ACLs, TLS, ...)."""

    def __init__(
        self, extra: Optional[List[str]] = None, port: Optional[int] = None, tls_port: Optional[int] = None
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed: run tests/run, which installs it")
        self.port = port or free_port()
        self.tls_port = tls_port
        self.extra = list(extra or [])
        self.directory = tempfile.mkdtemp(prefix="qm-redis-")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        arguments = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
        ]
        if self.tls_port:
            arguments += ["--tls-port", str(self.tls_port)]
        self.process = subprocess.Popen(arguments + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port if self.port else self.tls_port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def tls_proxy(directory, upstream: int) -> Iterator[Tuple[int, str]]:
    """TLS (a self-signed certificate for 127.0.0.1) in front of a real server on `upstream`
    (the RabbitMQ management API, its AMQP port): yields the TLS port and the certificate."""
    cert, key = self_signed_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.close()

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            server = socket.create_connection(("127.0.0.1", upstream))
            threading.Thread(target=pump, args=(client, server), daemon=True).start()
            threading.Thread(target=pump, args=(server, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], cert
    finally:
        listener.close()
