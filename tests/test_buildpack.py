"""The buildpack, run for real: bin/detect, bin/compile into a temporary build dir, then a fake
dyno (HOME=<build dir>, bash sourcing every .profile.d script, then exec'ing a web command)
against a real redis-server holding jobs."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.collect import sidekiq

BUILDPACK = Path(__file__).resolve().parent.parent
OLDEST_PYTHON = "/root/.pyenv/versions/3.9.18/bin/python3.9"
# Every python binary on this machine, hidden from the "no Python at run time" dyno.
PYTHON_GLOBS = ("/usr/bin/python*", "/usr/local/bin/python*", "/root/.pyenv/versions/*/bin/python*",
                "/root/.pyenv/shims/python*", "/usr/libexec/python*")


def run(command, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)


def compile_app(tmp_path: Path, stack: str, config: dict, app_files=()) -> subprocess.CompletedProcess:
    build, cache, env = tmp_path / "build", tmp_path / "cache", tmp_path / "env"
    for directory in (build, cache, env):
        directory.mkdir(exist_ok=True)
    for name in app_files:
        (build / name).write_text("")
    for name, value in config.items():
        (env / name).write_text(value)
    detect = run([str(BUILDPACK / "bin" / "detect"), str(build)])
    assert detect.returncode == 0 and detect.stdout.strip() == "queue-metrics"
    environment = {**os.environ, "STACK": stack}
    result = run([str(BUILDPACK / "bin" / "compile"), str(build), str(cache), str(env)], env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


DYNO_SCRIPT = 'for script in "$HOME"/.profile.d/*.sh; do source "$script"; done; {extra} exec sleep 600'


class Dyno:
    """bash sourcing .profile.d, then exec'ing a long-running web command, as a dyno starts."""

    def __init__(self, build: Path, dyno: str, env: dict, source_twice=False, hide_python=False) -> None:
        extra = 'for script in "$HOME"/.profile.d/*.sh; do source "$script"; done;' if source_twice else ""
        script = DYNO_SCRIPT.format(extra=extra)
        command = ["bash", "-c", script]
        if hide_python:
            command = ["unshare", "-m", "--propagation", "private", "bash", "-c",
                       hide_python_script() + 'exec bash -c "$0"', script]
        self.build = build
        self.process = subprocess.Popen(
            command, cwd=build, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env={"PATH": os.environ["PATH"], "HOME": str(build), "DYNO": dyno, **env})
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
        return [pid for pid, cmdline in self.processes() if "queue_metrics.cli" in cmdline]

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


def hide_python_script() -> str:
    import glob
    binaries = sorted({path for pattern in PYTHON_GLOBS for path in glob.glob(pattern)
                       if os.path.isfile(path) and not os.path.islink(path)})
    assert binaries, "found no python binary to hide"
    return "".join(f"mount --bind /dev/null {path} && " for path in binaries)


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
    line = dyno.wait_for(lambda line: bool(line), timeout=5, stream="stderr")
    assert line == "queue-metrics: not started: set REDIS_URL (or QUEUE_METRICS_REDIS_URL) to the Redis your queues use\n"
    time.sleep(1.0)
    assert dyno.processes() == [] and dyno.read_line(0.2, "stderr") == ""


def test_sourcing_leaks_no_variables_or_functions(system_python_build, jobs, tmp_path):
    build, _ = system_python_build
    # PIPESTATUS is bash's own, set by the pipelines of this very check.
    names = 'compgen -v | grep -vx "PIPESTATUS\\|before\\|after"; compgen -A function'
    script = (f'before=$({names}); source "$HOME/.profile.d/queue-metrics.sh"; after=$({names}); '
              '[[ $before == "$after" ]] && echo same || diff <(echo "$before") <(echo "$after")')
    for name in ("web.1", "worker.1"):
        output = tmp_path / f"{name}.out"
        with open(output, "w") as handle:  # a file, not a pipe: the collector keeps writing to it
            subprocess.run(["bash", "-c", script], stdout=handle, stderr=subprocess.STDOUT, timeout=30,
                           env={"PATH": os.environ["PATH"], "HOME": str(build), "DYNO": name,
                                "REDIS_URL": jobs, "QUEUE_METRICS_INTERVAL": "0.5"})
        assert output.read_text().splitlines()[0] == "same", output.read_text()
    leftover = Dyno.__new__(Dyno)
    leftover.build = build
    for pid, _ in leftover.processes():
        os.kill(pid, signal.SIGTERM)


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


def test_python_app_uses_the_apps_python_isolated_from_its_packages(tmp_path, jobs, dynos):
    """heroku/python ran too: /app/.heroku/python exists, with its own (here: broken) redis."""
    if not os.path.exists(OLDEST_PYTHON):
        pytest.fail(f"{OLDEST_PYTHON} is missing: this test runs the collector on the oldest supported Python")
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("requirements.txt",))
    assert "Interpreter at run time: the app's Python (/app/.heroku/python): requirements.txt" in result.stdout
    build = tmp_path / "build"
    # What heroku/python leaves behind, with packages of the app's that must not shadow ours.
    run([OLDEST_PYTHON, "-m", "venv", "--without-pip", str(build / ".heroku" / "python")])
    site = next((build / ".heroku" / "python" / "lib").glob("python3.*/site-packages"))
    (site / "redis").mkdir()
    (site / "redis" / "__init__.py").write_text("raise ImportError('the app pinned an incompatible redis')\n")
    (build / "click.py").write_text("raise ImportError('an app module named click')\n")
    dyno = dynos(build, "web.1", dyno_env(jobs))
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == Path(OLDEST_PYTHON).resolve()


def test_no_python_at_run_time_uses_the_bundled_one(tmp_path, jobs, dynos):
    """heroku-24 Ruby app: no python on the dyno at all (hidden by a mount namespace)."""
    result = compile_app(tmp_path, "heroku-24", {"REDIS_URL": jobs}, app_files=("Gemfile",))
    assert "Interpreter at run time: a copy of this build's Python" in result.stdout
    build = tmp_path / "build"
    probe = run(["unshare", "-m", "--propagation", "private", "bash", "-c",
                 hide_python_script() + "python3 -c 'print(1)'; /usr/bin/python3 -c 'print(1)'"])
    assert "1" not in probe.stdout, "python is still runnable inside the namespace"
    dyno = dynos(build, "web.1", dyno_env(jobs), hide_python=True)
    dyno.wait_for(lambda line: "sample#queue.sidekiq.default.size=2" in line, timeout=15)
    (collector,) = dyno.collectors()
    assert Path(f"/proc/{collector}/exe").resolve() == (build / ".queue-metrics" / "python" / "bin" / "python3")


def test_rebuild_uses_the_cache(tmp_path, redis_server):
    compile_app(tmp_path, "heroku-22", {"REDIS_URL": redis_server.url})
    again = compile_app(tmp_path, "heroku-22", {"REDIS_URL": redis_server.url})
    assert "Using cached packages" in again.stdout
    assert (tmp_path / "build" / ".queue-metrics" / "lib" / "redis" / "__init__.py").is_file()


def test_build_without_pip_fetches_hashed_wheels(tmp_path, redis_server):
    no_pip = tmp_path / "no-pip"
    run([sys.executable, "-m", "venv", "--without-pip", str(no_pip)])
    env_path = f"{no_pip / 'bin'}:{os.environ['PATH']}"
    build, cache, env = tmp_path / "build", tmp_path / "cache", tmp_path / "env"
    for directory in (build, cache, env):
        directory.mkdir()
    result = run([str(BUILDPACK / "bin" / "compile"), str(build), str(cache), str(env)],
                 env={**os.environ, "PATH": env_path, "STACK": "heroku-22"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no pip in this build image" in result.stdout
    assert "No Redis URL config var" in result.stderr
    probe = run(["/usr/bin/python3", "-I", "-S", "-c",
                 "import sys; sys.path.insert(0, sys.argv[1]); import redis, click; print(redis.__version__)",
                 str(build / ".queue-metrics" / "lib")])
    assert probe.stdout.strip() == "5.2.1", probe.stderr


def test_shellcheck():
    scripts = [str(path) for path in (BUILDPACK / "bin").iterdir()] + [
        str(BUILDPACK / "profile.d" / "queue-metrics.sh"), str(BUILDPACK / "lib" / "output.sh"),
        str(BUILDPACK / "tests" / "run"), str(BUILDPACK / ".ci" / "run")]
    assert shutil.which("shellcheck"), "shellcheck is not installed: run tests/run"
    result = run(["shellcheck", "-x", *scripts], cwd=BUILDPACK)
    assert result.returncode == 0, result.stdout


def test_profile_d_knows_the_same_redis_url_variables_as_the_collector():
    from queue_metrics.config import REDIS_URL_VARS

    hook = (BUILDPACK / "profile.d" / "queue-metrics.sh").read_text()
    line = next(line for line in hook.splitlines() if "REDIS_TLS_URL" in line)
    assert [name for name in REDIS_URL_VARS if "${" + name + ":-}" in line] == list(REDIS_URL_VARS)
