"""Usage: .venv/bin/python tests/benchmarks/run.py [--quick] [--write BENCHMARKS.md]

Measures queue-metrics side by side with the tools users would pick instead, on the same data,
in one run: a private redis-server, reached directly and through a proxy that adds 1 ms each way
and counts round trips (tests/benchmarks/proxy.py). Prints Markdown; --write also saves it.
Needs what tests/run installs, plus tests/benchmarks/requirements.txt (installed here if missing).
--quick stops at 1,000 queues.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

import redis  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.datastores.redis.connection import connect  # noqa: E402
from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402

DELAY_MS = 1.0
BACKENDS = ("sidekiq", "rq", "celery")
DEEP = 1_000_000
# An alternative gets at least one tick, then more until this many seconds are spent.
ALTERNATIVE_BUDGET = 20.0
COMMAND = ".venv/bin/python tests/benchmarks/run.py --write BENCHMARKS.md"


class Proxy:
    def __init__(self, target_port: int, delay_ms: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("proxy.py")), str(target_port), str(delay_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        port, control = self.process.stdout.readline().split()
        self.port = int(port)
        self.control = socket.create_connection(("127.0.0.1", int(control)))
        self.control_file = self.control.makefile("rwb")

    def _ask(self, word: str) -> dict:
        self.control_file.write(word.encode() + b"\n")
        self.control_file.flush()
        return json.loads(self.control_file.readline())

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict:
        return self._ask("stats")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


# ---- data --------------------------------------------------------------------------------


def populate(client, backend: str, queues: int, depth: int, label: str = "queue") -> list:
    """`queues` queues of `depth` jobs for one backend, in that system's own layout."""
    now = time.time()
    names = [f"{backend}-{label}-{index:05d}" for index in range(queues)]
    pipe = client.pipeline(transaction=False)
    for index, name in enumerate(names):
        if backend == "sidekiq":
            pipe.sadd("queues", name)
            job = json.dumps(
                {
                    "class": "HardWorker",
                    "args": [index, "x" * 20],
                    "retry": True,
                    "queue": name,
                    "jid": uuid.uuid4().hex[:24],
                    "created_at": now - 30,
                    "enqueued_at": now - 30,
                }
            )
            push(pipe, "lpush", f"queue:{name}", job, depth)
        elif backend == "rq":
            # The head job by rq itself (its hash is what RQ's own API insists on); the rest of a
            # deep queue repeats its id.
            from rq import Queue

            job = Queue(name, connection=client).enqueue("builtins.len", "x")
            push(pipe, "rpush", f"rq:queue:{name}", job.id, depth - 1)
        else:
            pipe.sadd("_kombu.binding.celery", f"{name}\x06\x16\x06\x16{name}")
            message = json.dumps(
                {
                    "body": "W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=",
                    "content-encoding": "utf-8",
                    "content-type": "application/json",
                    "headers": {
                        "lang": "py",
                        "task": "tasks.work",
                        "id": str(uuid.uuid4()),
                        "eta": None,
                        "retries": 0,
                        "run_at": datetime.fromtimestamp(now - 30, timezone.utc).isoformat(),
                    },
                    "properties": {
                        "delivery_tag": str(uuid.uuid4()),
                        "priority": 0,
                        "body_encoding": "base64",
                        "delivery_info": {"exchange": "", "routing_key": name},
                        "published_at": now - 30,
                    },
                }
            )
            push(pipe, "lpush", name, message, depth)
        if index % 500 == 0:
            pipe.execute()
    pipe.execute()
    return names


def push(pipe, command: str, key: str, value: str, count: int) -> None:
    step = 10_000
    while count > 0:
        getattr(pipe, command)(key, *([value] * min(step, count)))
        if count > step:
            pipe.execute()
        count -= step


# ---- measuring ---------------------------------------------------------------------------


def summarize(walls, cpus, stats, ticks) -> dict:
    walls_ms = sorted(w * 1000 for w in walls)
    return {
        "ticks": ticks,
        "wall_median": statistics.median(walls_ms),
        "wall_p10": walls_ms[int(0.1 * (len(walls_ms) - 1))],
        "wall_p90": walls_ms[int(0.9 * (len(walls_ms) - 1))],
        # The median tick: on this shared machine a few ticks slowed by a neighbour would move a
        # mean by more than the targets' margins. The mean is kept for the targets table.
        "cpu": statistics.median(cpus) * 1000,
        "cpu_mean": statistics.mean(cpus) * 1000,
        "round_trips": stats["round_trips"] / ticks if stats else None,
        "bytes": stats["bytes_down"] / ticks if stats else None,
    }


def time_ticks(function, ticks: int, proxy=None, budget=None) -> dict:
    """Per-tick figures after one warm-up tick; with a budget, a warm-up tick that alone takes
    over half of it is the only one measured (marked cold: it includes connecting)."""
    if proxy:
        proxy.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    function()  # warm: connections, imports, discovery
    first_wall, first_cpu = time.perf_counter() - wall, time.process_time() - cpu
    if budget and first_wall > budget / 2:
        figures = summarize([first_wall], [first_cpu], proxy.stats() if proxy else None, 1)
        figures["cold"] = True
        return figures
    if proxy:
        proxy.reset()
    walls, cpus = [], []
    spent = 0.0
    while len(walls) < ticks:
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        spent += walls[-1]
        if budget and spent > budget:
            break
    return summarize(walls, cpus, proxy.stats() if proxy else None, len(walls))


def ours(url: str, backends: str, ticks: int, proxy=None, extras: bool = True) -> dict:
    """Our collector's ticks, measured in a fresh process of its own (`--ours`): the alternatives
    measured in this one leave threads and a big heap behind, which would be counted as ours."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--ours", url, backends, str(ticks), "on" if extras else "off"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "warm"  # one tick done: connected, queues found
    if proxy:
        proxy.reset()
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait()
    figures = summarize(result["walls"], result["cpus"], proxy.stats() if proxy else None, len(result["walls"]))
    figures["own_round_trips"] = max(result["round_trips"])
    return figures


def ours_child(url: str, backends: str, ticks: int, extras: str) -> None:
    """The `--ours` process: one warm-up tick, then `ticks` timed ones, as JSON on stdout."""
    settings = Settings.from_env(
        {"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_BACKENDS": backends, "QUEUE_METRICS_EXTRAS": extras}
    )
    collector = RedisReader(settings, connect(settings))
    report = collector.tick()
    assert report.redis_ok and not report.errors, report.errors
    print("warm", flush=True)
    sys.stdin.readline()
    walls, cpus, round_trips = [], [], []
    for _ in range(ticks):
        wall, cpu = time.perf_counter(), time.process_time()
        report = collector.tick()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert report.redis_ok and not report.errors, report.errors
        round_trips.append(report.round_trips)
    print(json.dumps({"walls": walls, "cpus": cpus, "round_trips": round_trips}), flush=True)


def rq_api(url: str):
    from rq import Queue
    from rq.job import Job

    connection = redis.Redis.from_url(url)

    def tick():
        for queue in Queue.all(connection=connection):
            _ = queue.count  # the API call is what is timed
            ids = queue.get_job_ids(0, 1)
            if ids:
                _ = Job.fetch(ids[0], connection=connection).enqueued_at

    return tick


_RQ_EXPORTER = []


def rq_exporter(url: str):
    from rq_exporter.collector import RQCollector

    # It registers a summary in prometheus_client's global registry: one collector per process.
    if not _RQ_EXPORTER:
        _RQ_EXPORTER.append(RQCollector(redis.Redis.from_url(url)))
    collector = _RQ_EXPORTER[0]
    collector.connection = redis.Redis.from_url(url)

    def tick():
        for family in collector.collect():
            list(family.samples)

    return tick


def hirefire(system: str, url: str, names: list):
    """hirefire-resource's size and latency functions, once per queue (their per-queue use)."""
    import importlib

    macro = importlib.import_module(f"hirefire_resource.macro.{system}")
    option = {"rq": "redis_url", "celery": "broker_url"}[system]

    def tick():
        for name in names:
            macro.job_queue_size(name, **{option: url})
            macro.job_queue_latency(name, **{option: url})

    return tick


def llen_loop(url: str, names: list):
    connection = redis.Redis.from_url(url)

    def tick():
        for name in names:
            connection.llen(name)

    return tick


def sidekiq_api(url: str, ticks: int, proxy) -> dict:
    process = subprocess.Popen(
        ["ruby", str(Path(__file__).with_name("sidekiq_api.rb")), url, str(ticks), str(ALTERNATIVE_BUDGET)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    process.stdout.readline()
    proxy.reset()
    process.stdin.write("go\n")
    process.stdin.flush()
    result = json.loads(process.stdout.readline())
    process.wait()
    return summarize(result["wall"], result["cpu"], proxy.stats(), len(result["wall"]))


def alternatives_for(backend: str, url: str, names: list, ticks: int, proxy, skip: set) -> dict:
    """Each alternative's figures, but for those in `skip` (None: not run at this size)."""
    if backend == "sidekiq":
        chosen = {"Sidekiq API (Ruby), as feedforce's buildpack": lambda: sidekiq_api(url, ticks, proxy)}
    elif backend == "rq":
        chosen = {
            "RQ API per queue": lambda: time_ticks(rq_api(url), ticks, proxy, ALTERNATIVE_BUDGET),
            "rq-exporter collector": lambda: time_ticks(rq_exporter(url), ticks, proxy, ALTERNATIVE_BUDGET),
            "hirefire-resource (rq)": lambda: time_ticks(hirefire("rq", url, names), ticks, proxy, ALTERNATIVE_BUDGET),
        }
    else:
        chosen = {
            "hirefire-resource (celery)": lambda: time_ticks(
                hirefire("celery", url, names), ticks, proxy, ALTERNATIVE_BUDGET
            ),
            "per-queue LLEN loop (celery-exporter style)": lambda: time_ticks(
                llen_loop(url, names), ticks, proxy, ALTERNATIVE_BUDGET
            ),
        }
    return {label: None if label in skip else measure() for label, measure in chosen.items()}


# ---- the run process ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def buildpack_launch(url: str) -> tuple:
    """Build the slug like Heroku (heroku-22: system python3) and launch as the supervisor does."""
    build = Path(tempfile.mkdtemp(prefix="qm-bench-build-"))
    for name in ("app", "cache", "env"):
        (build / name).mkdir()
    subprocess.run(
        [str(ROOT / "bin" / "compile"), str(build / "app"), str(build / "cache"), str(build / "env")],
        env={**os.environ, "STACK": "heroku-22"},
        check=True,
        capture_output=True,
    )
    # As the supervisor starts it: the slug's `queue-metrics` command, which picks the interpreter.
    return [str(build / "app" / ".queue-metrics" / "bin" / "queue-metrics"), "run"], build


def extras_cost(url: str, proxy, backend: str, queues: int, rounds: int = 3, ticks: int = 30) -> dict:
    """Ticks with QUEUE_METRICS_EXTRAS on and off, in alternating rounds (so drift in the
    machine's speed hits both alike); medians over the rounds."""
    runs: dict = {True: [], False: []}
    for _ in range(rounds):
        for extras in (False, True):
            runs[extras].append(ours(url, backend, ticks, proxy, extras))
    return {
        extras: {
            key: statistics.median(run[key] for run in results)
            for key in ("wall_median", "cpu", "round_trips", "own_round_trips", "bytes")
        }
        for extras, results in runs.items()
    }


# ---- report ------------------------------------------------------------------------------


def machine() -> list:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    ruby = subprocess.run(
        ["ruby", "-e", "require 'sidekiq'; print RUBY_VERSION, ' sidekiq ', Sidekiq::VERSION"],
        capture_output=True,
        text=True,
    ).stdout
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory: {memory} GiB",
        f"- Python {platform.python_version()}, redis-py {redis.__version__}; Redis {redis_version}; Ruby {ruby}",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Speed at the start: {machine_speed():.0f} ms of CPU for a fixed workload (`run.machine_speed`; "
        "lower is faster; compare runs by it, and by the instruction counts at the end)",
    ]


def machine_speed() -> float:
    """CPU ms of a fixed pure-Python workload (JSON and string work, as a tick does): this shared
    virtual machine's speed varies from run to run, and this says how fast it was at the time."""
    payload = json.dumps({"class": "HardJob", "args": list(range(20)), "enqueued_at": 1.5, "queue": "default"})
    started = time.process_time()
    for index in range(50_000):
        json.loads(payload)
        f"sample#queue.default.size={index}".encode()
    return (time.process_time() - started) * 1000


def fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def row(label, figures, reference=None) -> str:
    ratio = ""
    if reference:
        ratio = f"{figures['wall_median'] / reference['wall_median']:.1f}x"
    ticks = f"{figures['ticks']} (cold)" if figures.get("cold") else figures["ticks"]
    return (
        f"| {label} | {ticks} | {fmt(figures['round_trips'])} | {fmt(figures['wall_median'])} "
        f"({fmt(figures['wall_p10'])}-{fmt(figures['wall_p90'])}) | {fmt(figures['cpu'])} | "
        f"{fmt(figures['bytes'] / 1024 if figures['bytes'] is not None else None)} | {ratio} |"
    )


HEADER = (
    "| what | ticks | round trips / tick | wall ms / tick, median (p10-p90) | CPU ms / tick, median | "
    "KiB read / tick | wall vs ours |\n|---|---|---|---|---|---|---|"
)


def install_alternatives() -> None:
    missing = subprocess.run(
        [sys.executable, "-c", "import rq_exporter, hirefire_resource, prometheus_client"], capture_output=True
    ).returncode
    if missing:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "-r",
                str(Path(__file__).with_name("requirements.txt")),
            ],
            check=True,
        )


def targets(measured: dict, sizes, extras: dict, footprint: dict, impact: dict) -> list:
    """The issues' targets, checked against this run's own figures."""
    lines = ["## Targets, checked against this run", "", "| target | measured | met |", "|---|---|---|"]

    def add(target, text, met):
        lines.append(f"| {target} | {text} | {'yes' if met else '**no**'} |")

    for backend in (*BACKENDS, "mixed"):
        own = [measured[(backend, queues)]["own_round_trips"] for queues in sizes]
        add(
            f"round trips per tick at most 3, the same at {sizes[0]:,} and {sizes[-1]:,} queues ({backend})",
            f"collector's count, most in a tick: {' / '.join(str(t) for t in own)}",
            max(own) <= 3 and len(set(own)) == 1,
        )
    for queues, limit in ((1000, 20.0), (10_000, 200.0)):
        if queues not in sizes:
            continue
        for backend in (*BACKENDS, "mixed"):
            figures = measured[(backend, queues)]
            add(
                f"{queues:,} queues through the 1 ms proxy, tick CPU under {limit:g} ms ({backend})",
                f"{fmt(figures['cpu'])} ms CPU, median tick (mean {fmt(figures['cpu_mean'])}; "
                f"wall {fmt(figures['wall_median'])} ms median)",
                figures["cpu"] < limit,
            )
    for backend in BACKENDS:
        shallow = measured[(backend, "depth", 1)]["wall_median"]
        deep = measured[(backend, "depth", DEEP)]["wall_median"]
        add(
            f"tick at depth 1,000,000 within 10% of depth 1 ({backend})",
            f"{fmt(deep, 2)} ms against {fmt(shallow, 2)} ms ({(deep / shallow - 1) * 100:+.0f}%)",
            deep <= shallow * 1.1,
        )
    for backend, pair in extras.items():
        on, off = pair[True], pair[False]
        for what, key in (("wall", "wall_median"), ("CPU", "cpu")):
            add(
                f"extras on, 1,000 queues: {what} per tick within 10% of extras off ({backend})",
                f"{fmt(on[key])} ms against {fmt(off[key])} ms ({(on[key] / off[key] - 1) * 100:+.0f}%)",
                on[key] <= off[key] * 1.1,
            )
        add(
            f"extras on, 1,000 queues: no extra round trip ({backend})",
            f"{on['own_round_trips']} against {off['own_round_trips']}",
            on["own_round_trips"] <= off["own_round_trips"],
        )
    for queues, limit in sorted(footprint["targets_mb"].items()):
        result = footprint.get(queues)
        if result is None:
            continue
        ticks, rss = max(result["rss"].items())
        add(
            f"`run` resident memory at most {limit:g} MB at {queues:,} queues after {ticks:,} ticks "
            "(as deployed, everything on)",
            f"{rss:.1f} MB",
            rss <= limit,
        )
    flat = footprint[1000]["rss"]
    first_ticks, last_ticks = min(flat), max(flat)
    growth = flat[last_ticks] - flat[first_ticks]
    add(
        f"`run` resident memory flat from {first_ticks:,} to {last_ticks:,} ticks (1,000 queues; at most +0.5 MB)",
        f"{flat[first_ticks]:.1f} -> {flat[last_ticks]:.1f} MB ({growth:+.1f})",
        growth <= 0.5,
    )
    add(
        "first metric line within 120 ms of process start (as deployed, everything on, 1,000 queues)",
        f"{footprint['first_line_ms']:.0f} ms (bare interpreter {footprint['bare_ms']:.0f} ms)",
        footprint["first_line_ms"] <= 120,
    )
    for command, (alone, busy) in sorted(impact["p99"].items()):
        allowed = max(alone * 1.1, alone + 0.2)
        add(
            f"app's Redis p99 with ticks every second over {impact['queues']:,} queues within 10% or 0.2 ms "
            f"of alone ({command})",
            f"{busy:.3f} ms against {alone:.3f} ms",
            busy <= allowed,
        )
    return lines


def main() -> None:
    if sys.argv[1:2] == ["--ours"]:
        ours_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    install_alternatives()
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write")
    arguments = parser.parse_args()
    sizes = (10, 100, 1000) if arguments.quick else (10, 100, 1000, 10_000)

    server = RedisServer().start()
    proxy = Proxy(server.port, DELAY_MS)
    client = redis.Redis.from_url(server.url)
    direct, proxied = server.url, f"redis://127.0.0.1:{proxy.port}/0"
    out = [
        "# Benchmarks",
        "",
        f"Reproduce: `{COMMAND}` (after `tests/run` has set up `.venv`; `--quick` stops at 1,000 queues).",
        "",
        "Machine:",
        *machine(),
        "",
        f'Every figure below comes from one run of that command. "proxied" goes through '
        f"tests/benchmarks/proxy.py, which adds {DELAY_MS:g} ms each way (a Redis 1-2 ms away, as on "
        "Heroku) and counts round trips and bytes. Wall and CPU times are per tick after one warm-up "
        "tick (ours: 100 ticks at up to 1,000 queues, 30 at 10,000), the median tick's unless said; "
        "alternatives run one tick, then more until "
        f"{ALTERNATIVE_BUDGET:g} s are spent.",
        "",
    ]
    try:
        out += [
            '## Ours by scenario (depth 1 job per queue; "mixed" shares the queues out among the three)',
            "",
            "| backend | queues | direct: wall ms median | proxied: round trips | proxied: wall ms median (p10-p90) "
            "| CPU ms median | KiB read |",
            "|---|---|---|---|---|---|---|",
        ]
        comparisons = []
        measured = {}
        too_slow: set = set()
        for queues in sizes:
            for backend in (*BACKENDS, "mixed"):
                client.flushall()
                names = {}
                if backend == "mixed":  # the queues shared out among the three systems
                    for index, name in enumerate(BACKENDS):
                        names[name] = populate(client, name, queues // 3 + (index < queues % 3), 1)
                else:
                    names[backend] = populate(client, backend, queues, 1)
                backends = ",".join(BACKENDS) if backend == "mixed" else backend
                ticks = 100 if queues <= 1000 else 30
                fast = ours(direct, backends, ticks)
                slow = ours(proxied, backends, ticks, proxy)
                measured[(backend, queues)] = slow
                out.append(
                    f"| {backend} | {queues:,} | {fmt(fast['wall_median'])} | {fmt(slow['round_trips'])} | "
                    f"{fmt(slow['wall_median'])} ({fmt(slow['wall_p10'])}-{fmt(slow['wall_p90'])}) | "
                    f"{fmt(slow['cpu'])} | {fmt(slow['bytes'] / 1024)} |"
                )
                print(out[-1], file=sys.stderr, flush=True)
                if backend != "mixed":
                    others = alternatives_for(backend, proxied, names[backend], ticks, proxy, too_slow)
                    comparisons.append((backend, queues, slow, others))
                    for label, figures in others.items():
                        print(f"  {label}: {figures}", file=sys.stderr, flush=True)
                        # One tick took over half the budget: ten times the queues would take
                        # minutes for a single tick, so it is not run at the next size.
                        if figures is None or figures.get("cold"):
                            too_slow.add(label)

        out += ["", "## Side by side, proxied (1 ms each way), same data", ""]
        for backend, queues, mine, others in comparisons:
            out += [f"### {backend}, {queues:,} queues", "", HEADER, row("**queue-metrics**", mine)]
            out += [
                row(label, figures, mine)
                if figures is not None
                else f"| {label} | not run: a tick at the size before took {ALTERNATIVE_BUDGET / 2:g} s | | | | | |"
                for label, figures in others.items()
            ]
            out.append("")

        out += [
            "## Depth: 10 queues, one of them 1 job or 1,000,000 jobs deep (proxied)",
            "",
            "| backend | depth of the deep queue | wall ms median (p10-p90) | CPU ms median | KiB read |",
            "|---|---|---|---|---|",
        ]
        for backend in BACKENDS:
            for depth in (1, DEEP):
                client.flushall()
                populate(client, backend, 1, depth, "deep")
                populate(client, backend, 9, 1)
                figures = ours(proxied, backend, 30, proxy)
                measured[(backend, "depth", depth)] = figures
                out.append(
                    f"| {backend} | {depth:,} | {fmt(figures['wall_median'], 2)} "
                    f"({fmt(figures['wall_p10'], 2)}-{fmt(figures['wall_p90'], 2)}) | "
                    f"{fmt(figures['cpu'], 2)} | {fmt(figures['bytes'] / 1024, 2)} |"
                )
                print(out[-1], file=sys.stderr, flush=True)

        out += [
            "",
            "## Extras on and off (QUEUE_METRICS_EXTRAS), 1,000 queues, proxied",
            "",
            "Alternating rounds of 30 ticks, three of each; medians over the rounds. The data has no "
            "retries, workers or held messages: the extras' reads are there, their figures zero.",
            "",
            "| backend | extras | round trips | wall ms median | CPU ms median | KiB read |",
            "|---|---|---|---|---|---|",
        ]
        extras = {}
        for backend in BACKENDS:
            client.flushall()
            populate(client, backend, 1000, 1)
            extras[backend] = extras_cost(proxied, proxy, backend, 1000)
            for on in (False, True):
                figures = extras[backend][on]
                out.append(
                    f"| {backend} | {'on' if on else 'off'} | {figures['own_round_trips']} | "
                    f"{fmt(figures['wall_median'])} | {fmt(figures['cpu'])} | {fmt(figures['bytes'] / 1024)} |"
                )
                print(out[-1], file=sys.stderr, flush=True)
        proxy.close()
        server.close()
        # The rest runs its own servers; one at a time, so nothing else loads the machine.
        from footprint import TARGET_MB
        from footprint import section as footprint_section
        from outputs_memory import section as outputs_section
        from redis_impact import section as impact_section

        footprint_lines, footprint = footprint_section(quick=arguments.quick)
        footprint["targets_mb"] = TARGET_MB
        impact_lines, impact = impact_section(10_000, 20.0)
        out += ["", *targets(measured, sizes, extras, footprint, impact)]
        out += ["", *footprint_lines, "", *impact_lines]
        # What each output (logs, StatsD, OTLP) costs the `run` process.
        out += ["", *outputs_section(1000, 0.5)]
        # Where the memory of a tick of 10,000 queues goes, by allocation site.
        from tick_memory import section as tick_memory_section

        out += ["", *tick_memory_section(10_000, 5)]
        # CPU as instructions (callgrind): steady where this machine's CPU times are not.
        from tick_instructions import section as instructions_section

        out += ["", *instructions_section(1000)]
        out += ["", f"Speed at the end: {machine_speed():.0f} ms of CPU for the workload timed at the start."]
    finally:
        proxy.close()
        server.close()

    text = "\n".join(out) + "\n"
    print(text)
    if arguments.write:
        Path(arguments.write).write_text(text)


if __name__ == "__main__":
    main()
