"""The buildpack, run for real: bin/detect, bin/compile into a temporary build dir, then a fake
dyno (HOME=<build dir>, bash sourcing every .profile.d script, then exec'ing a web command)
against a real redis-server holding jobs."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.buildpack import (
    BUILDPACK,
    NO_NETWORK,
    oldest_supported_python,
    python_is_hidden,
    run,
    without_python,
)
from helpers.collect import sidekiq

# The collector runs on the oldest supported Python this machine has (3.9 here).
OLDEST_PYTHON = oldest_supported_python()


def compile_app(tmp_path: Path, stack: str, config: dict, app_files=(), path=None) -> subprocess.CompletedProcess:
    """bin/detect, then bin/compile with no network at all, as Heroku runs them."""
    build, cache, env = tmp_path / "build", tmp_path / "cache", tmp_path / "env"
    for directory in (build, cache, env):
        directory.mkdir(exist_ok=True)
    for name in app_files:
        (build / name).write_text("")
    for name, value in config.items():
        (env / name).write_text(value)
    detect = run([str(BUILDPACK / "bin" / "detect"), str(build)])
    assert detect.returncode == 0 and detect.stdout.strip() == "queue-metrics"
    environment = {**os.environ, "STACK": stack, **({"PATH": path} if path else {})}
    result = run([*NO_NETWORK, str(BUILDPACK / "bin" / "compile"), str(build), str(cache), str(env)], env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


DYNO_SCRIPT = 'for script in "$HOME"/.profile.d/*.sh; do source "$script"; done; {extra} exec {command}'


class Dyno:
    """bash sourcing .profile.d, then exec'ing a long-running web command, as a dyno starts."""

    def __init__(
        self, build: Path, dyno: str, env: dict, source_twice=False, hide_python=False, command="sleep 600"
    ) -> None:
        extra = 'for script in "$HOME"/.profile.d/*.sh; do source "$script"; done;' if source_twice else ""
        script = DYNO_SCRIPT.format(extra=extra, command=command)
        command = ["bash", "-c", script]
        if hide_python:
            command = without_python(script)
        self.build = build
        self.process = subprocess.Popen(
            command,
            cwd=build,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={"PATH": os.environ["PATH"], "HOME": str(build), "DYNO": dyno, **env},
        )
        self.pgid = self.process.pid

    def read_line(self, timeout: float, stream="stdout") -> str:
        pipe = getattr(self.process, stream)
        ready, _, _ = select.select([pipe], [], [], timeout)
        if not ready:
            return ""
        return pipe.readline().decode()

    def wait_for(self, predicate, timeout: float, stream="stdout") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.read_line(max(0.0, deadline - time.monotonic()), stream)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line on the dyno's {stream} within {timeout} s")

    def processes(self, needle: str = ".queue-metrics") -> list:
        """Our processes for this dyno (the supervisor is re-parented, so find it by path)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.split(") ", 1)[1].split()[0] == "Z":
                continue
            if str(self.build) in cmdline and needle in cmdline:
                found.append((int(pid), cmdline))
        return found

    def collectors(self) -> list:
        return [pid for pid, cmdline in self.processes(needle="queue_metrics.__main__")]

    def supervisors(self) -> list:
        return [pid for pid, cmdline in self.processes() if "queue-metrics-supervisor" in cmdline]

    def terminate_all(self) -> None:
        """What Heroku does at shutdown: SIGTERM to every process of the dyno."""
        os.killpg(self.pgid, signal.SIGTERM)

    def close(self) -> None:
        for pid, _ in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


@pytest.fixture
def jobs(redis_url):
    sidekiq(redis_url, {"enqueue": {"default": 2, "mailers": 1}})
    return redis_url


@pytest.fixture(scope="module")
def system_python_build(tmp_path_factory, redis_server):
    """heroku-22: a Ruby app, the run image's /usr/bin/python3."""
    tmp = tmp_path_factory.mktemp("system")
    result = compile_app(tmp, "heroku-22", {"REDIS_URL": redis_server.url}, app_files=("Gemfile",))
    return tmp / "build", result


@pytest.fixture
def dynos():
    started = []

    def start(*args, **kwargs) -> Dyno:
        dyno = Dyno(*args, **kwargs)
        started.append(dyno)
        return dyno

    yield start
    for dyno in started:
        dyno.close()


def dyno_env(url: str, **extra) -> dict:
    return {"REDIS_URL": url, "QUEUE_METRICS_INTERVAL": "0.5", **extra}


def test_release_is_yaml():
    result = run([str(BUILDPACK / "bin" / "release"), "/tmp"])
    assert result.returncode == 0 and result.stdout.strip() == "--- {}"


def test_compile_output_and_layout(system_python_build):
    build, result = system_python_build
    assert "-----> Installing queue-metrics" in result.stdout
    assert "       Interpreter at run time: the run image's /usr/bin/python3 (heroku-22 ships one)" in result.stdout
    assert (build / ".profile.d" / "queue-metrics.sh").is_file()
    assert (build / ".queue-metrics" / "interpreter").read_text().strip() == "system"
    for package in ("queue_metrics", "redis", "click"):
        assert (build / ".queue-metrics" / "lib" / package / "__init__.py").is_file()
    assert not (build / "requirements.txt").exists()  # the app itself is left alone
    # Paths written for run time never name the build directory.
    for path in (build / ".profile.d").iterdir():
        assert str(build) not in path.read_text()


def test_metrics_reach_the_web_dynos_stdout(system_python_build, jobs, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs))
    line = dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    assert "sample#queue.sidekiq.mailers.size=1" in line
    dyno.wait_for(lambda line: line.startswith("sample#queue.collector.queues=2 "), timeout=5)
    assert len(dyno.supervisors()) == 1 and len(dyno.collectors()) == 1


def test_the_collector_runs_with_its_own_malloc_settings(system_python_build, jobs, dynos):
    """The app's own MALLOC_* config vars (Ruby apps set MALLOC_ARENA_MAX=2) tune the app's
    processes; the collector's are ours, measured in BENCHMARKS.md's footprint section."""
    build, _ = system_python_build
    dyno = dynos(build, "web.1", {**dyno_env(jobs), "MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "1"})
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    (collector,) = dyno.collectors()
    environ = dict(
        entry.split(b"=", 1) for entry in Path(f"/proc/{collector}/environ").read_bytes().split(b"\0") if b"=" in entry
    )
    assert environ[b"MALLOC_ARENA_MAX"] == b"1"
    assert environ[b"MALLOC_MMAP_THRESHOLD_"] == b"131072"
    assert environ[b"MALLOC_TRIM_THRESHOLD_"] == b"131072"


@pytest.mark.parametrize("name", ["worker.1", "run.1", "release.3", "scheduler.7", "web.2"])
def test_other_dynos_print_nothing_and_start_nothing(system_python_build, jobs, dynos, name):
    build, _ = system_python_build
    dyno = dynos(build, name, dyno_env(jobs))
    time.sleep(1.5)
    assert dyno.processes() == []
    assert dyno.read_line(0.1) == "" and dyno.read_line(0.1, "stderr") == ""


def test_queue_metrics_dyno_chooses_another_dyno(system_python_build, jobs, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "worker.1", dyno_env(jobs, QUEUE_METRICS_DYNO="worker.1"))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)


@pytest.mark.parametrize("value", ["1", "true", "TRUE"])
def test_disabled(system_python_build, jobs, dynos, value):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs, QUEUE_METRICS_DISABLED=value))
    time.sleep(1.5)
    assert dyno.processes() == [] and dyno.read_line(0.1) == ""


def test_no_redis_url_is_one_clear_line_and_nothing_started(system_python_build, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", {"QUEUE_METRICS_INTERVAL": "0.5"})
    line = dyno.wait_for(lambda line: bool(line), timeout=10, stream="stderr")
    assert line == (
        "queue-metrics: usage error: no datastore URL is set: set REDIS_URL (or a HEROKU_REDIS_<COLOR>_URL, "
        "REDIS_PROVIDER, QUEUE_METRICS_REDIS_URL), CLOUDAMQP_URL or DATABASE_URL to where your jobs live\n"
    )
    # The supervisor's own word on it, once: it does not restart the collector.
    assert "not restarting the collector until its configuration is fixed" in dyno.read_line(5, "stderr")
    time.sleep(1.0)
    assert dyno.processes() == [] and dyno.read_line(0.2, "stderr") == ""


def test_sourcing_leaks_no_variables_or_functions(system_python_build, jobs, tmp_path):
    build, _ = system_python_build
    # PIPESTATUS is bash's own, set by the pipelines of this very check.
    names = 'compgen -v | grep -vx "PIPESTATUS\\|before\\|after"; compgen -A function'
    script = (
        f'before=$({names}); source "$HOME/.profile.d/queue-metrics.sh"; after=$({names}); '
        '[[ $before == "$after" ]] && echo same || diff <(echo "$before") <(echo "$after")'
    )
    for name in ("web.1", "worker.1"):
        output = tmp_path / f"{name}.out"
        with open(output, "w") as handle:  # a file, not a pipe: the collector keeps writing to it
            subprocess.run(
                ["bash", "-c", script],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=30,
                env={
                    "PATH": os.environ["PATH"],
                    "HOME": str(build),
                    "DYNO": name,
                    "REDIS_URL": jobs,
                    "QUEUE_METRICS_INTERVAL": "0.5",
                },
            )
        # The collector started on web.1 writes to the same file, maybe before the check's line.
        assert "same" in output.read_text().splitlines(), output.read_text()
    leftover = Dyno.__new__(Dyno)
    leftover.build = build
    for pid, _ in leftover.processes():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended between the listing and the kill
            pass


def test_sourcing_twice_starts_one_loop(system_python_build, jobs, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs), source_twice=True)
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    time.sleep(1.0)
    assert len(dyno.supervisors()) == 1 and len(dyno.collectors()) == 1


def test_a_killed_collector_is_restarted(system_python_build, jobs, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    (first,) = dyno.collectors()
    os.kill(first, signal.SIGKILL)
    message = dyno.wait_for(lambda line: "restarting" in line, timeout=5, stream="stderr")
    assert message == "queue-metrics: error: the collector stopped (exit status 137); restarting it in 1 s\n"
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    (second,) = dyno.collectors()
    assert second != first


def test_sigterm_to_the_dyno_leaves_no_process(system_python_build, jobs, dynos):
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=10)
    assert dyno.processes()
    dyno.terminate_all()
    deadline = time.monotonic() + 5
    while dyno.processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dyno.processes() == []
    dyno.process.wait(timeout=5)


def fake_heroku_python(build: Path, base: str) -> Path:
    """What heroku/python leaves in the build dir: a Python at .heroku/python (here a venv)."""
    run([base, "-m", "venv", "--without-pip", str(build / ".heroku" / "python")])
    return build / ".heroku" / "python"


def test_heroku_python_before_us_the_apps_python_isolated_from_its_packages(tmp_path, jobs, dynos):
    """heroku/python ran first: /app/.heroku/python exists, with its own (here: broken) redis."""
    build = tmp_path / "build"
    build.mkdir()
    app_python = fake_heroku_python(build, OLDEST_PYTHON)
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("requirements.txt",))
    assert (
        "Interpreter at run time: the app's Python (/app/.heroku/python), installed by heroku/python" in result.stdout
    )
    assert not (build / ".queue-metrics" / "python").exists()
    # Packages of the app's that must not shadow ours.
    site = next((app_python / "lib").glob("python3.*/site-packages"))
    (site / "redis").mkdir()
    (site / "redis" / "__init__.py").write_text("raise ImportError('the app pinned an incompatible redis')\n")
    (build / "click.py").write_text("raise ImportError('an app module named click')\n")
    dyno = dynos(build, "web.1", dyno_env(jobs))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == Path(OLDEST_PYTHON).resolve()


def test_heroku_python_before_us_with_a_shared_libpython_needs_no_profile_d_order(tmp_path, jobs, dynos):
    """heroku/python's own builds need LD_LIBRARY_PATH=/app/.heroku/python/lib, which its .profile.d
    script sets, maybe after ours has started the collector. Here the app's Python is such a build
    (a relocated interpreter whose libpython is only in .heroku/python/lib), its .profile.d script
    runs after ours, and every other Python is hidden."""
    build = tmp_path / "build"
    build.mkdir()
    bundle = run(
        [
            *NO_NETWORK,
            "python3",
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv.pop(1)); from buildpack.__main__ import main; "
            "sys.exit(main(sys.argv[1:]))",
            str(BUILDPACK / "lib"),
            "bundle",
            str(build / ".heroku" / "python"),
            "--stack",
            "heroku-24",
        ]
    )
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    app_python = build / ".heroku" / "python" / "bin" / "python3"
    assert list((build / ".heroku" / "python" / "lib").glob("libpython3*.so*"))
    alone = run(without_python(f"{app_python} -c 'print(1)'"))
    assert alone.returncode != 0 and "libpython" in alone.stderr, "the app's Python must need LD_LIBRARY_PATH"
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("requirements.txt",))
    assert "the app's Python (/app/.heroku/python), installed by heroku/python" in result.stdout
    (build / ".profile.d" / "zz-python.sh").write_text(
        'export LD_LIBRARY_PATH="$HOME/.heroku/python/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n'
    )
    dyno = dynos(build, "web.1", dyno_env(jobs), hide_python=True)
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == app_python.resolve()


@pytest.mark.parametrize("stack", ["heroku-24", "heroku-26"])
def test_ruby_app_with_python_tooling_files_gets_a_bundled_python(tmp_path, jobs, dynos, stack):
    """A Sidekiq app that keeps .python-version, pyproject.toml and requirements.txt for tooling,
    built without heroku/python: the dyno has no Python at all, and metrics still flow."""
    assert python_is_hidden(), "a Python is still runnable inside the namespace"
    result = compile_app(
        tmp_path,
        stack,
        {"REDIS_URL": jobs},
        app_files=("Gemfile", ".python-version", "pyproject.toml", "requirements.txt"),
    )
    assert (
        f"Interpreter at run time: a copy of this build's Python ({stack} has no Python at run time)" in result.stdout
    )
    assert "list queue-metrics after it to leave the bundled Python out of the slug" in result.stdout
    build = tmp_path / "build"
    dyno = dynos(build, "web.1", dyno_env(jobs), hide_python=True)
    line = dyno.wait_for(lambda line: ".size=" in line, timeout=15)
    assert "sample#queue.sidekiq.default.size=2" in line
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == (build / ".queue-metrics" / "python" / "bin" / "python3")


def test_heroku_python_after_us_the_dyno_still_runs_the_chosen_python(tmp_path, jobs, dynos):
    """Our buildpack first, heroku/python after it: at build time nothing says heroku/python will
    run, so a Python is bundled; the dyno then has both and runs the bundled one it was built for."""
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("requirements.txt",))
    assert "a copy of this build's Python" in result.stdout
    build = tmp_path / "build"
    fake_heroku_python(build, OLDEST_PYTHON)
    dyno = dynos(build, "web.1", dyno_env(jobs))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == (build / ".queue-metrics" / "python" / "bin" / "python3")


def test_the_bundle_leaves_the_run_images_libraries_to_it(tmp_path, redis_server):
    """No copy of OpenSSL, zlib, libffi, ... in the slug: the stack's updates must reach them."""
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": redis_server.url}, app_files=("Gemfile",))
    python = tmp_path / "build" / ".queue-metrics" / "python"
    copied = sorted(path.name for path in (python / "lib").iterdir() if path.is_file())
    for library in ("libssl", "libcrypto", "libz.", "libffi", "liblzma", "libbz2", "libuuid", "libexpat", "libcrypt."):
        assert not [name for name in copied if name.startswith(library)], copied
    ssl_module = next((python / "lib").glob("python3.*/lib-dynload/_ssl.*.so"))
    ldd = run(["ldd", str(ssl_module)], env={"LD_LIBRARY_PATH": str(python / "lib")})
    assert re.search(r"libssl\.so\.3 => (/usr)?/lib/", ldd.stdout), ldd.stdout
    bundled = re.search(
        r"Bundled Python [0-9.]+: (\d+) librar\w+ copied \(([^)]*)\), (\d+) left to the run "
        r"image's packages",
        result.stdout,
    )
    assert bundled, result.stdout
    assert bundled.group(2).split(", ") == copied and int(bundled.group(3)) >= 5
    assert re.search(
        r"Added \d+\.\d MB to the slug \(collector and packages \d+\.\d MB, Python \d+\.\d MB\)", result.stdout
    ), result.stdout


def test_a_distro_python_like_herokus_build_image_copies_no_library(tmp_path, jobs, dynos):
    """Heroku's build images have Ubuntu's python3, as this Debian machine has /usr/bin/python3:
    every library it needs is a package of the run image, so the bundle copies none."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python3").symlink_to("/usr/bin/python3")
    result = compile_app(
        tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("Gemfile",), path=f"{tools}:{os.environ['PATH']}"
    )
    assert re.search(r"Bundled Python 3\.\d+\.\d+: 0 libraries copied \(none\), \d+ left", result.stdout), result.stdout
    build = tmp_path / "build"
    (stdlib,) = (build / ".queue-metrics" / "python" / "lib").iterdir()  # no library beside it
    assert re.fullmatch(r"python3\.\d+", stdlib.name)
    dyno = dynos(build, "web.1", dyno_env(jobs), hide_python=True)
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)


def test_the_bundled_standard_library_is_precompiled_and_never_rechecked(tmp_path, redis_server):
    compile_app(tmp_path, "heroku-24", {"REDIS_URL": redis_server.url}, app_files=("Gemfile",))
    stdlib = next((tmp_path / "build" / ".queue-metrics" / "python" / "lib").glob("python3.*"))
    sources = [path for path in stdlib.rglob("*.py") if "lib-dynload" not in path.parts]
    assert len(sources) > 300
    tag = sys.implementation.cache_tag
    missing = [path for path in sources if not (path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc").is_file()]
    assert len(missing) <= len(sources) // 100, missing[:10]  # a few files are not valid Python on purpose
    for source in (stdlib / "os.py", stdlib / "json" / "decoder.py", stdlib / "ssl.py"):
        header = (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").read_bytes()[:16]
        assert int.from_bytes(header[4:8], "little") == 0b01, "not an unchecked hash-based pyc"
    for package in ("redis", "click", "queue_metrics"):
        lib = tmp_path / "build" / ".queue-metrics" / "lib" / package
        assert (lib / "__pycache__" / f"__init__.{tag}.pyc").is_file()


def test_rebuild_reuses_the_bundle_from_the_cache(tmp_path, redis_server):
    first = compile_app(tmp_path, "heroku-24", {"REDIS_URL": redis_server.url})
    assert "(from the build cache)" not in first.stdout
    again = compile_app(tmp_path, "heroku-24", {"REDIS_URL": redis_server.url})
    assert "Bundled Python 3." in again.stdout and "(from the build cache)" in again.stdout
    assert (tmp_path / "build" / ".queue-metrics" / "python" / "bin" / "python3").is_file()
    assert (tmp_path / "build" / ".queue-metrics" / "lib" / "redis" / "__init__.py").is_file()


def test_build_with_no_network_and_no_pip(tmp_path, redis_server):
    """No build image has pip, and PyPI may be down: the wheels come from the buildpack itself."""
    no_pip = tmp_path / "no-pip"
    run([sys.executable, "-m", "venv", "--without-pip", str(no_pip)])
    result = compile_app(tmp_path, "heroku-22", {}, path=f"{no_pip / 'bin'}:{os.environ['PATH']}")
    assert "Installed the collector with redis==5.2.1, click==8.1.8, async-timeout==5.0.1" in result.stdout
    assert "No datastore URL config var is set" in result.stderr
    probe = run(
        [
            "/usr/bin/python3",
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import redis, click; print(redis.__version__)",
            str(tmp_path / "build" / ".queue-metrics" / "lib"),
        ]
    )
    assert probe.stdout.strip() == "5.2.1", probe.stderr


def test_the_slug_gets_the_collector_only(system_python_build):
    """Build-time code (interpreter choice, wheel install, bundling) stays in the buildpack."""
    build, _ = system_python_build
    lib = build / ".queue-metrics" / "lib"
    packages = sorted(path.name for path in lib.iterdir() if not path.name.endswith(".dist-info"))
    assert packages == ["async_timeout", "click", "queue_metrics", "redis"]
    assert not list(build.rglob("build.py")) and not list(build.rglob("buildpack"))
    installed = sorted(path.name for path in (build / ".queue-metrics").iterdir() if path.name != "supervisor.lock")
    assert installed == ["bin", "interpreter", "lib", "libexec"]  # the lock: the dynos of earlier tests


def test_pip_install_gets_the_collector_only(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"  # a copy: the build writes into its tree
    shutil.copytree(BUILDPACK, source, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "build", "*.egg-info"))
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ]
    )
    assert result.returncode == 0, result.stderr
    installed = {path.name for path in target.iterdir() if not path.name.endswith((".dist-info", ".egg-info"))}
    assert installed == {"queue_metrics", "bin"}
    assert not list(target.rglob("build.py")) and not list(target.rglob("run-images"))


def buildpack_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "buildpack"
    shutil.copytree(BUILDPACK, copy, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "__pycache__"))
    return copy


def compile_with(buildpack: Path, tmp_path: Path, stack="heroku-24", path=None) -> subprocess.CompletedProcess:
    build, cache, env = tmp_path / "build", tmp_path / "cache", tmp_path / "env"
    for directory in (build, cache, env):
        directory.mkdir(exist_ok=True)
    (build / "Gemfile").write_text("")
    environment = {**os.environ, "STACK": stack, **({"PATH": path} if path else {})}
    return run([*NO_NETWORK, str(buildpack / "bin" / "compile"), str(build), str(cache), str(env)], env=environment)


def assert_skipped_with_a_warning(result: subprocess.CompletedProcess, build: Path, cause: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-----> Installing queue-metrics" in result.stdout
    assert " !     queue-metrics was not installed, and this app deploys without it.\n" in result.stderr
    assert f" !     Cause: {cause}" in result.stderr, result.stderr
    assert result.stderr.count("Cause:") == 1 and "Done:" not in result.stdout
    assert not (build / ".queue-metrics").exists() and not (build / ".profile.d" / "queue-metrics.sh").exists()


def test_a_wheel_that_fails_its_hash_skips_us_and_the_deploy_goes_on(tmp_path):
    buildpack = buildpack_copy(tmp_path)
    wheel = next((buildpack / "vendor" / "wheels").glob("redis-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    result = compile_with(buildpack, tmp_path)
    assert_skipped_with_a_warning(result, tmp_path / "build", "no wheel of redis==5.2.1 with the pinned sha256")


def test_a_failing_shell_step_skips_us_and_the_deploy_goes_on(tmp_path):
    buildpack = buildpack_copy(tmp_path)
    (buildpack / "profile.d" / "queue-metrics.sh").unlink()
    result = compile_with(buildpack, tmp_path)
    assert_skipped_with_a_warning(result, tmp_path / "build", "bin/compile failed at line ")
    assert "cp: cannot stat" in result.stderr


def test_a_build_image_without_python_skips_us_with_the_fix(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "dirname", "cat", "rm", "mkdir", "cp", "sed", "unshare"):
        (tools / tool).symlink_to(shutil.which(tool))
    result = compile_with(BUILDPACK, tmp_path, path=str(tools))
    assert result.returncode == 0, result.stderr
    assert "Cause: this build image has no python3" in result.stderr
    assert "Fix: use a Heroku stack (heroku stack:set heroku-24), or add heroku/python" in result.stderr
    assert not (tmp_path / "build" / ".queue-metrics").exists()


def test_test_compile_for_heroku_ci_skips_the_bundle_and_the_hook(tmp_path):
    build, cache, env = tmp_path / "build", tmp_path / "cache", tmp_path / "env"
    for directory in (build, cache, env):
        directory.mkdir()
    result = run(
        [*NO_NETWORK, str(BUILDPACK / "bin" / "test-compile"), str(build), str(cache), str(env)],
        env={**os.environ, "STACK": "heroku-24"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-----> queue-metrics: nothing to install for Heroku CI\n       ")
    assert list(build.iterdir()) == [] and list(cache.iterdir()) == []


def test_one_off_dynos_have_the_queue_metrics_command(tmp_path, jobs, dynos):
    """`heroku run queue-metrics once` on a heroku-24 Ruby app: no Python on the dyno, the same
    interpreter and packages as the loop, and the hook itself prints and starts nothing."""
    compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("Gemfile",))
    build = tmp_path / "build"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(build), "DYNO": "run.4242", "REDIS_URL": jobs}
    script = (
        'for script in "$HOME"/.profile.d/*.sh; do source "$script"; done; queue-metrics once; queue-metrics config; '
        "queue-metrics demo --ticks 1 2>/dev/null"
    )
    result = run(without_python(script), env=env, cwd=build)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert re.search(r"^sample#queue\.sidekiq\.default\.size=2 ", result.stdout, re.M), result.stdout
    assert "redis_url_var='REDIS_URL'" in result.stdout
    # `demo`, the one command that imports redis-py: the shipped wheel (the lower end of the
    # range pyproject.toml supports) with the bundled Python.
    assert "sample#queue.rq.reports.size=4" in result.stdout
    # `heroku run queue-metrics run`: the process is the bundled Python, as on web.1.
    dyno = dynos(build, "run.4243", dyno_env(jobs), hide_python=True, command="queue-metrics run")
    dyno.wait_for(lambda line: ".size=" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == (build / ".queue-metrics" / "python" / "bin" / "python3")
    assert dyno.supervisors() == []


def test_a_dyno_with_no_python_at_all_says_so_once_and_does_not_retry(system_python_build, jobs, dynos):
    """Built for heroku-22's /usr/bin/python3, started where there is none (an image swapped under it)."""
    build, _ = system_python_build
    dyno = dynos(build, "web.1", dyno_env(jobs), hide_python=True)
    line = dyno.wait_for(lambda line: bool(line), timeout=5, stream="stderr")
    assert line.startswith("queue-metrics: error: no Python interpreter on this dyno (looked for ")
    assert line.rstrip().endswith("set QUEUE_METRICS_PYTHON=bundled and redeploy")
    time.sleep(2.5)
    assert dyno.read_line(0.2, "stderr") == "" and dyno.processes() == []


def test_the_hook_puts_the_command_on_path_once(system_python_build):
    build, _ = system_python_build
    script = (
        'source "$HOME/.profile.d/queue-metrics.sh"; source "$HOME/.profile.d/queue-metrics.sh"; '
        'echo "$PATH"; command -v queue-metrics'
    )
    result = run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(build), "DYNO": "worker.1"})
    assert result.stdout.splitlines() == [
        f"/usr/bin:/bin:{build}/.queue-metrics/bin",
        f"{build}/.queue-metrics/bin/queue-metrics",
    ]
    assert result.stderr == ""


def test_shellcheck():
    """The buildpack's shell with every optional check; the test runner's with the default ones."""
    buildpack_scripts = [str(path) for path in (BUILDPACK / "bin").iterdir()] + [
        str(BUILDPACK / "profile.d" / "queue-metrics.sh"),
        str(BUILDPACK / "lib" / "output.sh"),
    ]
    assert shutil.which("shellcheck"), "shellcheck is not installed: run tests/run"
    result = run(["shellcheck", "-x", "-o", "all", *buildpack_scripts], cwd=BUILDPACK)
    assert result.returncode == 0, result.stdout
    result = run(["shellcheck", "-x", str(BUILDPACK / "tests" / "run"), str(BUILDPACK / ".ci" / "run")], cwd=BUILDPACK)
    assert result.returncode == 0, result.stdout


def test_a_dyno_whose_jobs_live_on_a_heroku_redis_add_on_alone_starts_the_collector(system_python_build, jobs, dynos):
    """No REDIS_URL, only the add-on's own variable: the hook leaves the choice to the collector,
    which finds it."""
    build, _ = system_python_build
    dyno = dynos(build, "web.1", {"HEROKU_REDIS_PINK_URL": jobs, "QUEUE_METRICS_INTERVAL": "0.5"})
    line = dyno.wait_for(lambda line: "collector.queues" in line, timeout=10)
    assert line.startswith("sample#")
    assert len(dyno.processes(needle="queue_metrics.__main__")) == 1  # one collector, under its supervisor
