"""Usage: .venv/bin/python tests/benchmarks/rabbitmq.py [--runs 3] [--sizes 10,100,1000] [--write FILE]

Celery on RabbitMQ, measured side by side through tests/benchmarks/proxy.py (1 ms each way,
counting round trips and bytes), on the machine's RabbitMQ (AMQP on 5672, its management API on
15672, admin guest/guest): for each size, a fresh vhost of Celery queues made by Celery itself
(`send_task(queue=...)`: each queue bound from a direct exchange of its own name), a few
messages each, then per tick:

- ours through the management API (`RabbitReader.tick()`, as deployed: gzip, columns, pages of 500);
- Flower's way (`flower/utils/broker.py`, `RabbitMQ.queues`): one GET of the whole
  `/api/queues/<vhost>` listing, every column, on a new connection (tornado's simple HTTP client
  sends `Connection: close` and `Accept-Encoding: gzip`), parsed with `json`;
- celery-exporter's way (`src/exporter.py`, `track_queue_metrics`): a new kombu connection per
  scrape, then per queue, one at a time, two passive declares (consumers, then length); its two
  `inspect()` broadcasts per scrape are left out (they wait a second each for worker replies);
- HireFire's way (`hirefire_resource/macro/celery.py`, `job_queue_latency`): a new kombu
  connection per call, then per queue `basic.get` and `basic.reject(requeue=True)`. It WRITES to
  the broker (the message comes back marked redelivered): only ever in this script's own vhost.
  The Celery app it builds per call is left out, so its figures are a lower bound;
- without the management API: ours (`DeclareReader.tick()`: `AmqpConnection.declare`, every queue
  in one write) beside py-amqp's passive `queue_declare` loop on a kept connection (Celery's own
  client; the loop celery-exporter makes, one declare per queue).

Each way runs in a process of its own (its CPU is its own process time): one warm-up tick, then
at least TICKS ticks (the alternatives: until BUDGET seconds are spent, at least MIN_TICKS).
Then resident memory: the `queue-metrics run` process as deployed (the buildpack's slug, as
footprint.py launches it) over 1,000 queues, API path, and our AMQP client against py-amqp in
`python -I -S` processes. The whole is run --runs times (fresh vhosts each time); every figure
is the median over the runs. Prints Markdown; --write also saves it. The vhosts are deleted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

from run import Proxy, buildpack_launch, fmt, machine_speed  # noqa: E402

from helpers.rabbitmq import ADMIN, amqp_url, api, delete_vhost, make_vhost, queues, quoted  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/rabbitmq.py --write rabbitmq.md"
DELAY_MS = 1.0
AMQP_PORT = 5672
API_PORT = 15672
SIZES = (10, 100, 1000)
MESSAGES = 3  # per queue
TICKS = 30  # ours, and any way fast enough
MIN_TICKS = 3  # the slow alternatives, at least
BUDGET = 10.0  # seconds of ticks an alternative gets (beyond MIN_TICKS)
# The `run` process as deployed: ticks at a short interval, resident memory at each checkpoint.
RUN_QUEUES = 1000
RUN_CHECKPOINTS = (20, 100, 200)
RUN_INTERVAL = 1.0
# py-amqp for the `python -I -S` processes: the venv's site-packages (amqp and vine are pure Python).
SITE_PACKAGES = next((path for path in sys.path if path.endswith("site-packages") and Path(path, "amqp").is_dir()), "")
PYTHON = "/usr/bin/python3"  # the slug's interpreter (heroku-22), as footprint.py
TARGET_CPU_MS = 20.0
TARGET_RSS_MB = 24.0
QUEUES_PER_REQUEST = 500
REPEATS = 15  # the CPU breakdown's repetitions

WAYS = {
    "ours-api": "**queue-metrics**, management API (`RabbitReader.tick`)",
    "flower": "Flower's way: whole `GET /api/queues/<vhost>`, new connection",
    "exporter": "celery-exporter's way: new connection, 2 passive declares per queue",
    "hirefire": "HireFire's way: new connection, `basic.get` + `basic.reject(requeue)` per queue (writes!)",
    "ours-amqp": "**queue-metrics** without the API: `AmqpConnection.declare`, one write",
    "pyamqp": "py-amqp `queue_declare(passive=True)` loop, kept connection",
}
API_WAYS = ("ours-api", "flower", "exporter", "hirefire")
AMQP_WAYS = ("ours-amqp", "pyamqp")


def queue_names(count: int) -> List[str]:
    return [f"bench.q{index:04d}" for index in range(count)]


# ---- the data ----------------------------------------------------------------------------


def populate(vhost: str, count: int) -> None:
    """`count` queues made by Celery itself, MESSAGES task messages each, then until the API's
    statistics show them all (the broker refreshes them every few seconds)."""
    from celery import Celery

    app = Celery("bench", broker=amqp_url(vhost))
    app.conf.task_create_missing_queues = True
    names = queue_names(count)
    with app.producer_or_acquire() as producer:
        for name in names:
            for index in range(MESSAGES):
                app.send_task("bench.work", args=(index,), queue=name, producer=producer)
    app.pool.force_close_all()
    deadline = time.monotonic() + 180
    while True:
        listed = queues(vhost)
        waiting = [name for name in names if listed.get(name, {}).get("messages_ready") != MESSAGES]
        if not waiting:
            return
        if time.monotonic() > deadline:
            shown = {name: listed.get(name, {}).get("messages_ready", "absent") for name in waiting[:3]}
            raise RuntimeError(
                f"the API's statistics never showed {len(waiting)} of {count} queues with {MESSAGES} messages: {shown}"
            )
        time.sleep(0.5)


# ---- each way's ticks, in a process of its own -------------------------------------------


def make_tick(way: str, config: Dict[str, Any]) -> Tuple[Callable[[], int], Callable[[], None]]:
    """The way's tick (returning its HTTP requests) and what closes it."""
    names = queue_names(config["queues"])
    vhost = config["vhost"]
    amqp_proxied = f"amqp://guest:guest@127.0.0.1:{config['amqp_port']}/{quoted(vhost)}"
    if way == "ours-api":
        from queue_metrics.config import Settings
        from queue_metrics.datastores.rabbitmq.locations import rabbitmq_locations
        from queue_metrics.datastores.rabbitmq.reader import RabbitReader

        env = {
            "QUEUE_METRICS_AMQP_URL": amqp_proxied,
            "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{config['http_port']}/api/",
        }
        reader = RabbitReader(Settings.from_env(env), rabbitmq_locations(env)[0])

        def ours_api() -> int:
            report = reader.tick()
            assert report.errors == () and len(report.samples) == len(names), report.errors
            assert all(sample.size == MESSAGES for sample in report.samples)
            return reader.requests

        ours_api.reader = reader  # type: ignore[attr-defined]  (cpu_breakdown reads its query)
        return ours_api, reader.close
    if way == "flower":
        import base64
        import http.client

        credentials = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        headers = {"Authorization": f"Basic {credentials}", "Accept-Encoding": "gzip", "Connection": "close"}
        wanted = set(names)

        def flower() -> int:
            connection = http.client.HTTPConnection("127.0.0.1", config["http_port"], timeout=10)
            connection.request("GET", f"/api/queues/{quoted(vhost)}", headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            if answer.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            connection.close()
            rows = [row for row in json.loads(body.decode()) if row["name"] in wanted]
            assert answer.status == 200 and len(rows) == len(names)
            return 1

        return flower, lambda: None
    if way in ("exporter", "hirefire"):
        import kombu

        def exporter() -> int:
            with kombu.Connection(amqp_proxied) as connection:
                channel = connection.default_channel
                for name in names:
                    consumers = channel.queue_declare(queue=name, passive=True).consumer_count
                    length = channel.queue_declare(queue=name, passive=True).message_count
                    assert length == MESSAGES and consumers == 0
            return 0

        def hirefire() -> int:
            with kombu.Connection(amqp_proxied) as connection:
                with connection.channel() as channel:
                    for name in names:
                        message = channel.basic_get(name)
                        assert message is not None
                        message.headers.get("run_at")
                        channel.basic_reject(message.delivery_tag, requeue=True)
            return 0

        return (exporter if way == "exporter" else hirefire), lambda: None
    if way == "ours-amqp":
        from queue_metrics.datastores.rabbitmq.declares import DeclareReader

        declares = DeclareReader(amqp_proxied, names, 10.0, 30.0, True, lambda: None)

        def ours_amqp() -> int:
            report = declares.tick()
            assert report.errors == () and [sample.size for sample in report.samples] == [MESSAGES] * len(names)
            return 0

        return ours_amqp, declares.close
    if way == "pyamqp":
        import amqp

        connection = amqp.Connection(
            f"127.0.0.1:{config['amqp_port']}", userid="guest", password="guest", virtual_host=vhost
        )
        connection.connect()
        channel = connection.channel()

        def pyamqp() -> int:
            for name in names:
                assert channel.queue_declare(name, passive=True).message_count == MESSAGES
            return 0

        return pyamqp, connection.close
    raise ValueError(way)


def child(way: str, config: Dict[str, Any]) -> None:
    """`--child`: one warm-up tick ("warm"), then on "go" the timed ticks as one JSON line."""
    tick, close = make_tick(way, config)
    tick()
    print("warm", flush=True)
    sys.stdin.readline()
    walls: List[float] = []
    cpus: List[float] = []
    requests: List[int] = []
    spent = 0.0
    while len(walls) < config["ticks"]:
        wall, cpu = time.perf_counter(), time.process_time()
        requests.append(tick())
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        spent += walls[-1]
        if config["budget"] and spent > config["budget"] and len(walls) >= MIN_TICKS:
            break
    print(json.dumps({"walls": walls, "cpus": cpus, "requests": requests}), flush=True)
    close()


def measure(way: str, vhost: str, count: int, http: Proxy, amqp: Proxy) -> Dict[str, float]:
    config = {
        "vhost": vhost,
        "queues": count,
        "http_port": http.port,
        "amqp_port": amqp.port,
        "ticks": TICKS,
        "budget": 0.0 if way.startswith("ours") else BUDGET,
    }
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", way, json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    if process.stdout.readline().strip() != "warm":
        raise RuntimeError(f"{way}: the warm-up tick failed")
    http.reset()
    amqp.reset()
    process.stdin.write("go\n")
    process.stdin.flush()
    line = process.stdout.readline()
    stats = [http.stats(), amqp.stats()]  # before the child closes its connections
    if process.wait() != 0 or not line:
        raise RuntimeError(f"{way}: the timed ticks failed")
    result = json.loads(line)
    ticks = len(result["walls"])
    return {
        "ticks": ticks,
        "wall": statistics.median(result["walls"]) * 1000,
        "cpu": statistics.median(result["cpus"]) * 1000,
        "requests": max(result["requests"]),
        "round_trips": sum(stat["round_trips"] for stat in stats) / ticks,
        "up": sum(stat["bytes_up"] for stat in stats) / ticks,
        "down": sum(stat["bytes_down"] for stat in stats) / ticks,
        "connections": sum(stat["connections"] for stat in stats) / ticks,
    }


def cpu_breakdown(vhost: str, count: int) -> Dict[str, float]:
    """Where our tick's CPU goes at `count` queues (direct, no proxy): the pages' bytes, and the
    CPU ms of gunzip, `json.loads`, the latency's counters (`counters_of`) and the whole tick;
    beside `json.loads` of Flower's whole listing. Each the median of REPEATS."""
    import base64
    import http.client

    from queue_metrics.datastores.rabbitmq.latency import counters_of
    from queue_metrics.http import HttpConnection, gunzipped

    tick, close = make_tick("ours-api", {"vhost": vhost, "queues": count, "http_port": API_PORT, "amqp_port": 0})
    reader = tick.reader  # type: ignore[attr-defined]
    for _ in range(3):
        tick()
    credentials = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Accept-Encoding": "gzip"}
    connection = HttpConnection("127.0.0.1", API_PORT, "http", 10.0)
    pages = []
    for page in range(1, math.ceil(count / QUEUES_PER_REQUEST) + 1):
        answer = connection.get(
            f"{reader.api.queues_path()}?page={page}&{reader.listing_query()}", headers, time.monotonic() + 10, 1 << 25
        )
        pages.append(answer.body)
    connection.close()
    plain = [gunzipped(body, 1 << 25) for body in pages]
    rows = [row for body in plain for row in json.loads(body)["items"]]
    whole = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=10)
    whole.request("GET", f"/api/queues/{quoted(vhost)}", headers={"Authorization": headers["Authorization"]})
    listing = whole.getresponse().read()
    whole.close()

    def cpu_ms(function: Callable[[], Any]) -> float:
        samples = []
        for _ in range(REPEATS):
            started = time.process_time()
            function()
            samples.append((time.process_time() - started) * 1000)
        return statistics.median(samples)

    figures = {
        "gzip_kib": sum(len(body) for body in pages) / 1024,
        "plain_kib": sum(len(body) for body in plain) / 1024,
        "gunzip": cpu_ms(lambda: [gunzipped(body, 1 << 25) for body in pages]),
        "json": cpu_ms(lambda: [json.loads(body) for body in plain]),
        "counters": cpu_ms(lambda: [counters_of(row) for row in rows]),
        "tick": cpu_ms(tick),
        "flower_kib": len(listing) / 1024,
        "flower_json": cpu_ms(lambda: json.loads(listing)),
    }
    close()
    return figures


# ---- resident memory ---------------------------------------------------------------------


def run_process_rss(vhost: str, checkpoints: Tuple[int, ...]) -> Dict[str, Any]:
    """The `queue-metrics run` process as deployed (footprint.py's launch and reading), with one
    RabbitMQ of RUN_QUEUES queues through the management API, ticks every RUN_INTERVAL s."""
    from footprint import run_until

    command, build = buildpack_launch("")
    env = {
        "PATH": os.environ["PATH"],
        "QUEUE_METRICS_AMQP_URL": amqp_url(vhost),
        "QUEUE_METRICS_RABBITMQ_API_URL": f"http://127.0.0.1:{API_PORT}/api/",
        "QUEUE_METRICS_INTERVAL": f"{RUN_INTERVAL:g}",
        "QUEUE_METRICS_TIMEOUT": f"{RUN_INTERVAL * 0.9:g}",
    }
    try:
        return run_until(command, env, checkpoints)
    finally:
        shutil.rmtree(build, ignore_errors=True)


RSS_LINE = "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"


def client_rss(vhost: str, count: int) -> List[Tuple[str, float]]:
    """VmRSS of `python -I -S` processes (the slug's interpreter): the collector's RabbitMQ run
    path, then our AMQP client or py-amqp imported, connected, and after 3 ticks of `count`
    passive declares. Each the median of 3 processes."""
    lib = str(ROOT / "lib")
    names = queue_names(count)
    base = (
        f"import sys; sys.path.insert(0, {lib!r}); "
        "import queue_metrics.runner, queue_metrics.datastores.rabbitmq.reader"
    )
    ours_import = "from queue_metrics.datastores.rabbitmq.declares import DeclareReader"
    ours_use = (
        f"r = DeclareReader({amqp_url(vhost)!r}, {names!r}, 10.0, 30.0, True, lambda: None)\n"
        "for _ in range(3): assert len(r.tick().samples) == len(r.queues)"
    )
    theirs_import = f"sys.path.append({SITE_PACKAGES!r}); import amqp"
    theirs_use = (
        f"c = amqp.Connection('127.0.0.1:{AMQP_PORT}', userid='guest', password='guest', virtual_host={vhost!r})\n"
        "c.connect(); ch = c.channel()\n"
        f"for _ in range(3):\n    for n in {names!r}: ch.queue_declare(n, passive=True)"
    )
    steps = (
        ("the collector's RabbitMQ run path (`-I -S`: runner, the API reader)", [base]),
        ("+ our AMQP client imported (`declares`, `amqp`)", [base, ours_import]),
        (f"+ ours connected, 3 ticks of {count:,} declares", [base, ours_import, ours_use]),
        ("+ py-amqp imported instead (`import amqp`)", [base, theirs_import]),
        (f"+ py-amqp connected, 3 x {count:,} declares", [base, theirs_import, theirs_use]),
    )
    rows = []
    for label, parts in steps:
        code = "\n".join([*parts, RSS_LINE])
        samples = [
            int(subprocess.run([PYTHON, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)
        ]
        rows.append((label, statistics.median(samples) / 1024))
    return rows


# ---- one run, and the report -------------------------------------------------------------


def one_run(sizes: Tuple[int, ...], checkpoints: Tuple[int, ...], http: Proxy, amqp: Proxy) -> Dict[Any, Any]:
    figures: Dict[Any, Any] = {"load": [os.getloadavg()[0]]}
    for count in sizes:
        vhost = make_vhost("qm-bench")
        try:
            populate(vhost, count)
            for way in (*API_WAYS[:3], *AMQP_WAYS, "hirefire"):  # HireFire last: it marks messages redelivered
                figures[f"{way}/{count}"] = measure(way, vhost, count, http, amqp)
                print(f"  {count} queues, {way}: {figures[f'{way}/{count}']}", file=sys.stderr, flush=True)
            if count == max(sizes):
                figures["breakdown"] = cpu_breakdown(vhost, count)
                print(f"  breakdown: {figures['breakdown']}", file=sys.stderr, flush=True)
        finally:
            delete_vhost(vhost)
    vhost = make_vhost("qm-bench")
    try:
        populate(vhost, RUN_QUEUES)
        figures["run"] = run_process_rss(vhost, checkpoints)
        print(f"  run process: {figures['run']}", file=sys.stderr, flush=True)
        figures["clients"] = client_rss(vhost, RUN_QUEUES)
        print(f"  clients: {figures['clients']}", file=sys.stderr, flush=True)
    finally:
        delete_vhost(vhost)
    figures["load"].append(os.getloadavg()[0])
    return figures


def median_of(runs: List[Dict[Any, Any]], key: Any) -> Dict[str, float]:
    return {field: statistics.median(run[key][field] for run in runs) for field in runs[0][key]}


def table(runs: List[Dict[Any, Any]], ways: Tuple[str, ...], count: int, reference: str) -> List[str]:
    lines = [
        "| way | ticks | HTTP requests / tick | connections opened / tick | round trips / tick | wall ms / tick "
        "| CPU ms / tick | KiB up / tick | KiB down / tick | wall vs ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ours = median_of(runs, f"{reference}/{count}")
    for way in ways:
        figures = median_of(runs, f"{way}/{count}")
        ratio = "" if way == reference else f"{figures['wall'] / ours['wall']:.1f}x"
        lines.append(
            f"| {WAYS[way]} | {figures['ticks']:.0f} | {figures['requests']:.0f} | {figures['connections']:.0f} | "
            f"{fmt(figures['round_trips'])} | {fmt(figures['wall'])} | {fmt(figures['cpu'])} | "
            f"{fmt(figures['up'] / 1024)} | {fmt(figures['down'] / 1024)} | {ratio} |"
        )
    return lines


def report(runs: List[Dict[Any, Any]], sizes: Tuple[int, ...], header: List[str]) -> List[str]:
    checkpoints = tuple(sorted(runs[0]["run"]["rss"]))
    loads = ", ".join(f"{run['load'][0]:.2f} -> {run['load'][1]:.2f}" for run in runs)
    out = [
        "## Celery on RabbitMQ: ours beside Flower, celery-exporter and HireFire (1 ms proxy)",
        "",
        f"Reproduce: `{COMMAND}` (RabbitMQ with its management plugin on 5672/15672, admin guest/guest; "
        "it makes and deletes vhosts of its own).",
        "",
        *header,
        f"- Load average (1 min) at the start and end of each run: {loads}",
        "",
        f"Per size, a fresh vhost of Celery queues made by Celery (`send_task(queue=...)`: each bound from a direct "
        f"exchange of its own name), {MESSAGES} messages each. AMQP (5672) and HTTP (15672) both go through "
        f"tests/benchmarks/proxy.py ({DELAY_MS:g} ms each way), which counts round trips and bytes. Each way runs in a "
        f"process of its own: one warm-up tick, then {TICKS} ticks (the slow alternatives: until {BUDGET:g} s are "
        f"spent, at least {MIN_TICKS}); wall and CPU (process time) are the median tick's. The script ran "
        f"{len(runs)} times (fresh vhosts each time) on a shared 2-core machine; every figure is the median over "
        "the runs. Connections opened through the proxy are counted; a TCP handshake is not delayed by it.",
        "",
        "- Ours: one GET per 500 queues (gzip, the columns it reads, Celery's plumbing filtered out by the server) on "
        "a kept connection; the bindings only when a queue is new (the warm-up tick).",
        "- Flower (`flower/utils/broker.py`): the whole listing, every column, on a new connection per call "
        "(tornado's simple client: `Connection: close`, `Accept-Encoding: gzip`), parsed with `json`; measured with "
        "`http.client`.",
        "- celery-exporter (`src/exporter.py`): per scrape a new connection, then per queue two passive declares "
        "(consumers, then length), one at a time; its two `inspect()` broadcasts per scrape (each waiting for worker "
        "replies, and publishing to the broker) are left out.",
        "- HireFire (`hirefire_resource/macro/celery.py`, `job_queue_latency`): a new connection per call, per queue "
        "`basic.get` then `basic.reject(requeue=True)`; the Celery app it builds per call is left out (a lower "
        "bound). **It writes**: each tick takes every queue's head message and puts it back marked redelivered "
        "(on quorum queues, one more delivery count each time). Measured only in this script's own vhosts.",
        "",
    ]
    for count in sizes:
        out += [f"### {count:,} queues", "", *table(runs, API_WAYS, count, "ours-api"), ""]
    largest = max(sizes)
    rss = {ticks: statistics.median(run["run"]["rss"][ticks] for run in runs) for ticks in checkpoints}
    hwm = statistics.median(run["run"]["hwm"] for run in runs)
    errors = max(run["run"]["errors"] for run in runs)
    parts = median_of(runs, "breakdown")
    out += [
        f"Where our tick's CPU goes at {largest:,} queues (direct, no proxy; CPU ms, median of {REPEATS} in the "
        f"parent process, then of the runs): the page(s) ({math.ceil(largest / QUEUES_PER_REQUEST)}) are "
        f"{fmt(parts['gzip_kib'])} KiB gzipped, {fmt(parts['plain_kib'])} KiB of JSON (the two sample lists per "
        "queue that date the counters, `lengths_age`/`msg_rates_age`, are most of it).",
        "",
        "| part | CPU ms |",
        "|---|---|",
        f"| gunzip | {fmt(parts['gunzip'])} |",
        f"| `json.loads` of the pages | {fmt(parts['json'])} |",
        f"| the latency's counters (`latency.counters_of`, every queue) | {fmt(parts['counters'])} |",
        f"| the whole tick (`RabbitReader.tick`) | {fmt(parts['tick'])} |",
        f"| beside it: `json.loads` of Flower's whole listing ({fmt(parts['flower_kib'])} KiB, every column) | "
        f"{fmt(parts['flower_json'])} |",
        "",
    ]
    out += [
        f"The `queue-metrics run` process as deployed (the buildpack's slug as footprint.py launches it: heroku-22, "
        f"/usr/bin/python3 -I -S, glibc malloc settings), one RabbitMQ of {RUN_QUEUES:,} Celery queues through the "
        f"management API (direct, no proxy), log lines, ticks every {RUN_INTERVAL:g} s (at that interval the API's "
        "sample lists cover 5 s, 2 samples each, where the default 30 s asks for 7: the deployed pages are larger, "
        "see the CPU breakdown above, which is at the default interval):",
        "",
        "| queues | resident MB after " + " / ".join(f"{ticks:,}" for ticks in checkpoints) + " ticks | peak MB "
        "| error lines |",
        "|---|---|---|---|",
        f"| {RUN_QUEUES:,} | " + " / ".join(f"{rss[ticks]:.1f}" for ticks in checkpoints) + f" | {hwm:.1f} | "
        f"{errors} |",
        "",
    ]
    ours = median_of(runs, f"ours-api/{largest}")
    needed = math.ceil(largest / QUEUES_PER_REQUEST)
    last = rss[checkpoints[-1]]
    out += [
        "Targets (issue 24):",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| {largest:,} queues through the 1 ms proxy, tick CPU under {TARGET_CPU_MS:g} ms | "
        f"{fmt(ours['cpu'])} ms (median tick, median of {len(runs)} runs) | "
        f"{'yes' if ours['cpu'] < TARGET_CPU_MS else '**no**'} |",
        f"| one HTTP request per {QUEUES_PER_REQUEST} queues per tick ({largest:,} queues: {needed}) | "
        f"{ours['requests']:.0f} | {'yes' if ours['requests'] <= needed else '**no**'} |",
        f"| `run` resident memory under {TARGET_RSS_MB:g} MB at {RUN_QUEUES:,} queues after "
        f"{checkpoints[-1]:,} ticks | {last:.1f} MB | {'yes' if last < TARGET_RSS_MB else '**no**'} |",
        "",
        "## RabbitMQ without its management API: our AMQP client beside py-amqp",
        "",
        f"Reproduce: `{COMMAND}` (the same run). Passive `queue.declare` of every queue, through the same "
        f"{DELAY_MS:g} ms proxy, on a kept connection: ours (`DeclareReader.tick()`, the reader's fallback: "
        "`AmqpConnection.declare`, every declare in one write, each on a channel of its own) beside py-amqp "
        "5.4 (Celery's client; it waits for each answer). Same data and method as above.",
        "",
    ]
    for count in sizes:
        out += [f"### {count:,} queues", "", *table(runs, AMQP_WAYS, count, "ours-amqp"), ""]
    labels = [label for label, _ in runs[0]["clients"]]
    values = [statistics.median(run["clients"][index][1] for run in runs) for index in range(len(labels))]
    out += [
        f"Resident memory (VmRSS of `{PYTHON} -I -S` processes, the slug's interpreter; median of 3 processes per "
        f"run, then of the runs), {RUN_QUEUES:,} queues, no proxy:",
        "",
        "| process | resident MB | beside the run path |",
        "|---|---|---|",
    ]
    for index, (label, value) in enumerate(zip(labels, values)):
        added = "" if index == 0 else f"{value - values[0]:+.1f}"
        out.append(f"| {label} | {value:.1f} | {added} |")
    return out


def measure_all(arguments: argparse.Namespace) -> Tuple[Tuple[int, ...], List[str], List[Dict[str, Any]]]:
    sizes = tuple(int(size) for size in arguments.sizes.split(","))
    checkpoints = (5, 20) if arguments.quick else RUN_CHECKPOINTS
    runs = 1 if arguments.quick else arguments.runs
    import amqp
    import kombu

    overview = api("GET", "overview")
    header = [
        f"- RabbitMQ {overview['rabbitmq_version']} (management rates_mode {overview['rates_mode']}), "
        f"Python {sys.version.split()[0]}, kombu {kombu.__version__}, py-amqp {amqp.__version__}",
        f"- {os.cpu_count()} cores; date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"speed at the start: {machine_speed():.0f} ms of CPU for run.py's fixed workload (lower is faster; "
        "BENCHMARKS.md's Redis runs say theirs)",
    ]
    http, amqp_proxy = Proxy(API_PORT, DELAY_MS), Proxy(AMQP_PORT, DELAY_MS)
    results: List[Dict[str, Any]] = []
    try:
        for index in range(runs):
            print(f"run {index + 1} of {runs}", file=sys.stderr, flush=True)
            results.append(one_run(sizes, checkpoints, http, amqp_proxy))
            # The raw figures, kept: the report can be made again from them (--from).
            Path(arguments.raw).write_text(json.dumps({"sizes": sizes, "header": header, "runs": results}))
    finally:
        http.close()
        amqp_proxy.close()
    header.append(f"- Speed at the end: {machine_speed():.0f} ms of CPU for the same workload")
    return sizes, header, results


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], json.loads(sys.argv[3]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES))
    parser.add_argument("--write")
    parser.add_argument("--raw", default=str(Path(tempfile.gettempdir(), "qm-bench-rabbitmq.json")))
    parser.add_argument("--from", dest="source", help="make the report again from a --raw file, measuring nothing")
    parser.add_argument("--quick", action="store_true", help="one run, the run process for 20 ticks only")
    arguments = parser.parse_args()
    if arguments.source:
        saved = json.loads(Path(arguments.source).read_text())
        sizes, header, runs = tuple(saved["sizes"]), saved["header"], saved["runs"]
        for run in runs:
            run["run"]["rss"] = {int(ticks): rss for ticks, rss in run["run"]["rss"].items()}
    else:
        sizes, header, runs = measure_all(arguments)
    text = "\n".join(report(runs, sizes, header)) + "\n"
    print(text)
    if arguments.write:
        Path(arguments.write).write_text(text)


if __name__ == "__main__":
    main()
