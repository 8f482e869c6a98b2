"""The collector's own HTTP/1.1 (the OTLP POST, the RabbitMQ API's GET), against real sockets: a
scripted server answers each request with bytes we choose (the shapes real servers send), and the
client must read the status, and reuse the connection only when the answer was read to its end."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from typing import List

import pytest

from queue_metrics.http import BodyTooLarge, HttpConnection, MalformedAnswer, gunzipped, parse_status_line


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
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,  # a GET
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


def test_get_reads_bodies_of_known_length_chunked_and_gzip_on_one_connection():
    packed = gzip.compress(b'{"items": []}')
    server = ScriptedServer(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\n[1,\r\n2\r\n2]\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed,
        ]
    )
    try:
        connection = HttpConnection("127.0.0.1", server.port, "http", 5.0)
        deadline = time.monotonic() + 5
        answers = [connection.get(f"/api/{n}", {"Accept-Encoding": "gzip"}, deadline, 1000) for n in range(3)]
        connection.close()
    finally:
        server.close()
    assert [(answer.status, answer.reusable) for answer in answers] == [(200, True)] * 3
    assert [answers[0].body, answers[1].body] == [b"[]", b"[1,2]"]
    assert answers[2].fields["content-encoding"] == "gzip" and gunzipped(answers[2].body, 100) == b'{"items": []}'
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /api/0 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
    with pytest.raises(BodyTooLarge):
        gunzipped(packed, 5)


def test_get_gives_up_at_its_deadline_and_refuses_a_body_too_large():
    # 90 bytes never come; the server keeps the connection open (it waits for a second request).
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, b""])
    try:
        connection = HttpConnection("127.0.0.1", server.port, "http", 5.0)
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.get("/", {}, started + 0.5, 1000)
        assert time.monotonic() - started < 2
        connection.close()
    finally:
        server.close()
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100])
    try:
        with pytest.raises(BodyTooLarge):
            HttpConnection("127.0.0.1", server.port, "http", 5.0).get("/", {}, time.monotonic() + 5, 99)
    finally:
        server.close()
