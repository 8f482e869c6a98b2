"""The collector's own HTTP/1.1 (the OTLP POST, the RabbitMQ API's GET), against real sockets: a scripted server answers each
request with bytes we choose (the shapes real servers send), and the client must read the status,
and reuse the connection only when the answer was read to its end."""

from __future__ import annotations

import socket
import threading
from typing import List

import pytest

from queue_metrics.http import HttpConnection, MalformedAnswer, parse_status_line


class ScriptedServer:
    """Accepts connections; answers the n-th request (over all connections) with answers[n]."""

    def __init__(self, answers: List[bytes]) -> None:
        self.answers = list(answers)
        self.requests: List[bytes] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while self.answers:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(
                    next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(
                        b":"
                    )[1]
                )
                while len(data) < length:
                    data += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + data[:length])
                data = data[length:]
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.listener.close()


def test_answers_with_a_length_keep_the_connection_and_the_request_is_well_formed():
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"HTTP/1.1 204 No Content\r\n\r\n"])
    try:
        connection = HttpConnection("127.0.0.1", server.port, "http", 5.0)
        first = connection.post("/v1/metrics?k=1", {"Content-Type": "application/x-protobuf"}, b"\x01\x02", 5.0)
        second = connection.post("/v1/metrics", {}, b"", 5.0)
        connection.close()
    finally:
        server.close()
    assert (first.status, first.reason, first.reusable) == (200, "OK", True)
    assert (second.status, second.reusable) == (204, True)
    assert server.connections == 1
    assert server.requests[0] == (
        b"POST /v1/metrics?k=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 2\r\n"
        b"Content-Type: application/x-protobuf\r\n\r\n\x01\x02" % server.port
    )


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # chunked: not read to its end
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000,  # more than we read
    ],
)
def test_other_answers_give_their_status_and_are_not_reused(answer):
    server = ScriptedServer([answer])
    try:
        connection = HttpConnection("127.0.0.1", server.port, "http", 5.0)
        got = connection.post("/", {}, b"body", 5.0)
        connection.close()
    finally:
        server.close()
    assert got.status == int(answer[9:12]) and not got.reusable


def test_a_server_that_is_not_http_or_closes_at_once():
    server = ScriptedServer([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
    try:
        with pytest.raises(MalformedAnswer, match="not HTTP/1.x"):
            HttpConnection("127.0.0.1", server.port, "http", 5.0).post("/", {}, b"", 5.0)
    finally:
        server.close()
    assert parse_status_line("HTTP/1.1 503 Service Unavailable") == (503, "Service Unavailable", True)
    with pytest.raises(MalformedAnswer):
        parse_status_line("HTTP/2 200")
