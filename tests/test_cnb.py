"""The Cloud Native Buildpack (Heroku Fir), run exactly as the CNB lifecycle runs it for buildpack
API 0.10: bin/detect and bin/build with no arguments, the CNB_* environment, config vars as files
in <platform>/env (not in the environment), a build plan; then the declared process type started
from the layers the way the launcher does (each launch layer's bin/ on PATH), on a "run image"
with every Python of this machine hidden, reading a real redis-server."""

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

from helpers.buildpack import BUILDPACK, NO_NETWORK, hide_python_script, python_is_hidden, run
from helpers.collect import sidekiq

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test venv is Python 3.11
    pytest.fail("the CNB tests read TOML with tomllib (Python 3.11+)")

BUILDPACK_ID = "queue-metrics/queue-metrics"
# The lifecycle gives each buildpack its own layers directory, named after its id.
LAYERS_NAME = BUILDPACK_ID.replace("/", "_")


def target_env(distro_version: str, arch: str = "amd64") -> dict:
    return {
        "CNB_TARGET_OS": "linux",
        "CNB_TARGET_ARCH": arch,
        "CNB_TARGET_DISTRO_NAME": "ubuntu",
        "CNB_TARGET_DISTRO_VERSION": distro_version,
    }


class Lifecycle:
    """The directories the lifecycle sets up: /workspace (the app), /platform, /layers."""

    def __init__(self, root: Path, config: dict, distro_version: str = "24.04") -> None:
        self.root = root
        self.app = root / "workspace"
        self.platform = root / "platform"
        self.layers = root / "layers" / LAYERS_NAME
        for directory in (self.app, self.platform / "env", self.layers):
            directory.mkdir(parents=True, exist_ok=True)
        (self.app / "Gemfile").write_text("source 'https://rubygems.org'\ngem 'sidekiq'\n")
        (self.app / ".python-version").write_text("3.12\n")
        for name, value in config.items():
            (self.platform / "env" / name).write_text(value)
        self.target = target_env(distro_version)

    def base_env(self) -> dict:
        # Config vars are NOT in a buildpack's environment: only the files in <platform>/env.
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root / "home"),
            "CNB_BUILDPACK_DIR": str(BUILDPACK),
            "CNB_PLATFORM_DIR": str(self.platform),
            **self.target,
        }

    def detect(self) -> tuple:
        plan = self.root / "plan.toml"
        plan.write_text("")
        result = run(
            [str(BUILDPACK / "bin" / "detect")], cwd=self.app, env={**self.base_env(), "CNB_BUILD_PLAN_PATH": str(plan)}
        )
        return result, tomllib.loads(plan.read_text())

    def build(self, plan_entries: list) -> subprocess.CompletedProcess:
        buildpack_plan = self.root / "buildpack-plan.toml"
        buildpack_plan.write_text("".join(f'[[entries]]\nname = "{entry["name"]}"\n\n' for entry in plan_entries))
        return run(
            [*NO_NETWORK, str(BUILDPACK / "bin" / "build")],
            cwd=self.app,
            env={**self.base_env(), "CNB_LAYERS_DIR": str(self.layers), "CNB_BP_PLAN_PATH": str(buildpack_plan)},
        )

    def restore_for_rebuild(self) -> None:
        """What the lifecycle keeps for the next build: cache layers with their metadata (the
        [types] table left out); launch-only layers' contents and launch.toml are not restored."""
        for toml_file in self.layers.glob("*.toml"):
            layer = self.layers / toml_file.stem
            document = tomllib.loads(toml_file.read_text()) if toml_file.stem != "launch" else {}
            if document.get("types", {}).get("cache"):
                toml_file.write_text(toml_file.read_text().split("[metadata]", 1)[1].join(["[metadata]", ""]))
            else:
                toml_file.unlink()
                shutil.rmtree(layer, ignore_errors=True)

    def toml(self, name: str) -> dict:
        return tomllib.loads((self.layers / f"{name}.toml").read_text())


def launch(lifecycle: Lifecycle, process_type: str, env: dict) -> subprocess.Popen:
    """The launcher: the process type from launch.toml, each launch layer's bin/ first on PATH,
    in the app dir, on a machine with no Python."""
    (process,) = [entry for entry in lifecycle.toml("launch")["processes"] if entry["type"] == process_type]
    launch_bins = [
        str(lifecycle.layers / name / "bin")
        for name, types in (
            (path.stem, tomllib.loads(path.read_text()).get("types", {}))
            for path in lifecycle.layers.glob("*.toml")
            if path.stem != "launch"
        )
        if types.get("launch")
    ]
    path = ":".join([*launch_bins, "/usr/local/bin", "/usr/bin", "/bin"])
    argv = " ".join([*process["command"], *process["args"]])
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", hide_python_script() + f"exec {argv}"],
        cwd=lifecycle.app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={
            "PATH": path,
            "HOME": str(lifecycle.root / "home"),
            "CNB_LAYERS_DIR": str(lifecycle.layers.parent),
            "CNB_APP_DIR": str(lifecycle.app),
            "DYNO": "queue-metrics.1",
            **env,
        },
    )


def read_until(process: subprocess.Popen, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            line = process.stdout.readline().decode()
            if needle in line:
                return line
            if not line and process.poll() is not None:
                break
    raise AssertionError(
        f"no line with {needle!r} within {timeout} s: {process.stderr.read1(65536)!r}"
        if process.poll() is not None
        else f"no line with {needle!r} within {timeout} s"
    )


def test_buildpack_toml_serves_the_cnb_api_and_the_targets():
    document = tomllib.loads((BUILDPACK / "buildpack.toml").read_text())
    assert document["api"] == "0.10"
    assert document["buildpack"]["id"] == BUILDPACK_ID
    assert document["buildpack"]["name"] == "queue-metrics" and document["buildpack"]["version"]
    targets = {
        (target["os"], target["arch"], distro["name"], distro["version"])
        for target in document["targets"]
        for distro in target["distros"]
    }
    assert targets == {
        ("linux", arch, "ubuntu", version) for arch in ("amd64", "arm64") for version in ("24.04", "26.04")
    }
    assert "tests/" in document["publish"]["Ignore"]["files"]  # what the classic buildpack registry reads


def test_detect_passes_with_a_plan_and_classic_detect_is_unchanged(tmp_path):
    lifecycle = Lifecycle(tmp_path, {})
    result, plan = lifecycle.detect()
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert plan == {"provides": [{"name": "queue-metrics"}], "requires": [{"name": "queue-metrics"}]}
    classic = run([str(BUILDPACK / "bin" / "detect"), str(lifecycle.app)], env={"PATH": os.environ["PATH"]})
    assert classic.returncode == 0 and classic.stdout == "queue-metrics\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory, redis_server):
    lifecycle = Lifecycle(tmp_path_factory.mktemp("cnb"), {"REDIS_URL": redis_server.url})
    _, plan = lifecycle.detect()
    result = lifecycle.build(plan["requires"])
    return lifecycle, result


def test_build_writes_the_layers_and_the_process_type(built):
    lifecycle, result = built
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("-----> Installing queue-metrics")
    assert (
        "       Interpreter at run time: a copy of this build's Python (heroku-24 has no Python at run time)"
        in result.stdout
    )
    assert "       Process type queue-metrics runs the collector: heroku ps:scale queue-metrics=1" in result.stdout
    assert result.stderr == ""  # REDIS_URL was read from <platform>/env: no warning
    assert lifecycle.toml("queue-metrics") == {
        "types": {"launch": True, "build": False, "cache": False},
        "metadata": {"buildpack_version": "0.1.0", "stack": "heroku-24"},
    }
    assert lifecycle.toml("bundle-cache")["types"] == {"launch": False, "build": False, "cache": True}
    assert lifecycle.toml("launch") == {
        "processes": [{"type": "queue-metrics", "command": ["queue-metrics"], "args": ["run"], "default": False}]
    }
    layer = lifecycle.layers / "queue-metrics"
    assert (layer / "interpreter").read_text() == "bundled\n"
    for path in ("bin/queue-metrics", "python/bin/python3", "lib/queue_metrics/cli.py", "lib/redis/__init__.py"):
        assert (layer / path).is_file(), path
    assert not list(lifecycle.app.glob(".queue-metrics*")) and not (lifecycle.app / ".profile.d").exists()


def test_the_process_type_runs_from_the_layers_with_no_python_on_the_machine(built, redis_url):
    lifecycle, _ = built
    assert python_is_hidden(), "a Python is still runnable inside the namespace"
    sidekiq(redis_url, {"enqueue": {"default": 3}})
    process = launch(lifecycle, "queue-metrics", {"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "0.5"})
    try:
        line = read_until(process, ".size=", timeout=15)
        assert "sample#queue.sidekiq.default.size=3" in line
        exe = Path(f"/proc/{process.pid}/exe").resolve()
        assert exe == lifecycle.layers / "queue-metrics" / "python" / "bin" / "python3"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_rebuild_reuses_the_cached_layer(built, tmp_path):
    lifecycle, _ = built
    again = Lifecycle(tmp_path, {"REDIS_URL": "redis://127.0.0.1:1"})
    shutil.copytree(lifecycle.layers, again.layers, symlinks=True, dirs_exist_ok=True)
    again.restore_for_rebuild()
    assert not (again.layers / "queue-metrics").exists() and (again.layers / "bundle-cache").is_dir()
    result = again.build([{"name": "queue-metrics"}])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(from the build cache)" in result.stdout
    assert (again.layers / "queue-metrics" / "python" / "bin" / "python3").is_file()
    assert again.toml("bundle-cache")["types"]["cache"] is True


def test_build_on_ubuntu_26_04_names_heroku_26(tmp_path, redis_server):
    lifecycle = Lifecycle(tmp_path, {"REDIS_URL": redis_server.url}, distro_version="26.04")
    result = lifecycle.build([{"name": "queue-metrics"}])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(heroku-26 has no Python at run time)" in result.stdout
    assert lifecycle.toml("queue-metrics")["metadata"]["stack"] == "heroku-26"


def test_a_failed_build_is_a_warning_and_leaves_no_process_type(tmp_path):
    buildpack = tmp_path / "buildpack"
    shutil.copytree(BUILDPACK, buildpack, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "__pycache__"))
    for wheel in (buildpack / "vendor" / "wheels").glob("click-*.whl"):
        wheel.unlink()
    lifecycle = Lifecycle(tmp_path / "root", {})
    result = run(
        [*NO_NETWORK, str(buildpack / "bin" / "build")],
        cwd=lifecycle.app,
        env={
            **lifecycle.base_env(),
            "CNB_BUILDPACK_DIR": str(buildpack),
            "CNB_LAYERS_DIR": str(lifecycle.layers),
            "CNB_BP_PLAN_PATH": str(tmp_path / "none.toml"),
        },
    )
    assert result.returncode == 0, result.stderr
    assert " !     Cause: no wheel of click==8.1.8 with the pinned sha256" in result.stderr
    assert not (lifecycle.layers / "launch.toml").exists() and not (lifecycle.layers / "queue-metrics").exists()
