"""A TCP proxy that delays every chunk by a fixed time in each direction and counts round trips.

Usage: python tests/benchmarks/proxy.py TARGET_PORT DELAY_MS
Prints "<proxy port> <control port>" on stdout, then serves until killed. On the control port,
the line "stats" answers one JSON line {"round_trips", "bytes_up", "bytes_down", "connections"}
and "reset" zeroes the counters.

A round trip is counted each time a client sends after having received (or for the first
time): one request/response exchange, however many commands it pipelines.
"""

from __future__ import annotations

import asyncio
import json
import sys

STATS = {"round_trips": 0, "bytes_up": 0, "bytes_down": 0, "connections": 0}


async def pump(reader, writer, delay, upstream: bool, state: dict) -> None:
    """Forward chunks in order, each `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await pending.get()
            if data is None:
                writer.close()
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if upstream:
                STATS["bytes_up"] += len(data)
                if state["last"] != "up":
                    STATS["round_trips"] += 1
                state["last"] = "up"
            else:
                STATS["bytes_down"] += len(data)
                state["last"] = "down"
            pending.put_nowait((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    finally:
        pending.put_nowait((0, None))
        try:
            await sender
        except (ConnectionError, OSError):
            pass


async def main(target_port: int, delay_ms: float) -> None:
    delay = delay_ms / 1000.0

    async def handle(client_reader, client_writer):
        STATS["connections"] += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        state = {"last": None}
        await asyncio.gather(
            pump(client_reader, server_writer, delay, True, state),
            pump(server_reader, client_writer, delay, False, state),
        )

    async def control(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip() == b"reset":
                for key in STATS:
                    STATS[key] = 0
            writer.write((json.dumps(STATS) + "\n").encode())
            await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    control_server = await asyncio.start_server(control, "127.0.0.1", 0)
    print(proxy.sockets[0].getsockname()[1], control_server.sockets[0].getsockname()[1], flush=True)
    await asyncio.gather(proxy.serve_forever(), control_server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
