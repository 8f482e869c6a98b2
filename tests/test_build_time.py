"""The build-time package (lib/buildpack), function by function: the interpreter decision for
every combination of app, buildpack order and stack; the shipped wheels; the run images' lists
and the bundle check against them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.buildpack import BUILDPACK

sys.path.insert(0, str(BUILDPACK / "lib"))

from buildpack.bundle import bundle_python, check_bundle, normalize_package, run_image_packages  # noqa: E402
from buildpack.interpreter import STACKS_WITH_PYTHON, choose_interpreter  # noqa: E402
from buildpack.wheels import WheelError, install_wheels, parse_requirements, sha256_of  # noqa: E402

STACKS = ("heroku-22", "heroku-24", "heroku-26")
REQUIREMENTS = BUILDPACK / "lib" / "runtime-requirements.txt"
WHEELS = BUILDPACK / "vendor" / "wheels"


def app(tmp_path: Path, files=(), heroku_python_ran=False) -> Path:
    for name in files:
        (tmp_path / name).write_text("")
    if heroku_python_ran:
        (tmp_path / ".heroku" / "python" / "bin").mkdir(parents=True)
        (tmp_path / ".heroku" / "python" / "bin" / "python3").write_text("")
    return tmp_path


# Every combination: (files in the repo, heroku/python ran before us) x stack -> what the dyno runs.
# "heroku/python after us" looks, at build time, exactly like "no heroku/python": the dyno then has
# both, and runs the chosen one (tested end to end in test_buildpack.py).
@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(
    "files, ran, expected_on_22, expected_later",
    [
        ((), False, "system", "bundled"),  # Ruby/Node app
        (("Gemfile", ".python-version", "requirements.txt"), False, "system", "bundled"),  # tooling files only
        (("requirements.txt",), False, "system", "bundled"),  # heroku/python after us
        (("requirements.txt",), True, "app", "app"),  # heroku/python before us
        (("Gemfile",), True, "app", "app"),  # heroku/python before us, any app
    ],
)
def test_every_combination_ends_in_an_interpreter_the_dyno_has(
    tmp_path, stack, files, ran, expected_on_22, expected_later
):
    choice = choose_interpreter(app(tmp_path, files, ran), stack, {})
    assert choice.kind == (expected_on_22 if stack == "heroku-22" else expected_later)
    assert choice.warnings == ()
    if files and not ran and choice.kind == "bundled":
        assert "list queue-metrics after it to leave the bundled Python out of the slug" in choice.notes[0]


def test_unknown_stack_gets_a_bundled_python(tmp_path):
    assert choose_interpreter(app(tmp_path), "", {}).kind == "bundled"
    assert choose_interpreter(app(tmp_path), "heroku-99", {}).kind == "bundled"


@pytest.mark.parametrize(
    "stack, ran, kind, warned",
    [
        ("heroku-24", False, "bundled", False),
        ("heroku-24", True, "bundled", False),
    ],
)
def test_requested_bundled(tmp_path, stack, ran, kind, warned):
    choice = choose_interpreter(app(tmp_path, (), ran), stack, {"QUEUE_METRICS_PYTHON": "bundled"})
    assert (choice.kind, bool(choice.warnings)) == (kind, warned)


def test_requested_system_where_there_is_none_bundles_and_says_so(tmp_path):
    choice = choose_interpreter(app(tmp_path), "heroku-24", {"QUEUE_METRICS_PYTHON": "system"})
    assert choice.kind == "bundled"
    assert "heroku-24 run image has no python3" in choice.warnings[0][0]
    assert choice.warnings[0][1] == "Fix: heroku config:unset QUEUE_METRICS_PYTHON"
    assert choose_interpreter(app(tmp_path), "heroku-22", {"QUEUE_METRICS_PYTHON": "system"}).kind == "system"


def test_requested_app_without_heroku_python_warns_with_the_fix(tmp_path):
    choice = choose_interpreter(app(tmp_path), "heroku-26", {"QUEUE_METRICS_PYTHON": "app"})
    assert choice.kind == "app"
    assert "runs only if heroku/python builds the app after this buildpack" in choice.warnings[0][0]
    assert choice.warnings[0][1].startswith("Fix: heroku config:unset QUEUE_METRICS_PYTHON")
    # heroku-22 falls back to the run image's python3 at dyno start: nothing to warn about.
    assert choose_interpreter(app(tmp_path), "heroku-22", {"QUEUE_METRICS_PYTHON": "app"}).warnings == ()


def test_a_bad_requested_value_is_ignored_with_a_warning(tmp_path):
    choice = choose_interpreter(app(tmp_path), "heroku-24", {"QUEUE_METRICS_PYTHON": "pypy"})
    assert choice.kind == "bundled"
    assert choice.warnings[0][0] == "QUEUE_METRICS_PYTHON='pypy' is not one of app, system, bundled: ignored."


def test_the_run_image_lists_agree_with_the_interpreter_decision():
    """Heroku's package lists: heroku-22's run image has python3, heroku-24's and heroku-26's none."""
    for stack in STACKS:
        packages = run_image_packages(stack)
        assert packages is not None and "libc6" in packages and "libssl3" in packages
        assert ("python3" in packages) == (stack in STACKS_WITH_PYTHON), stack
    assert run_image_packages("heroku-99") is None and run_image_packages("../etc/passwd") is None


@pytest.mark.parametrize(
    "name, normalized",
    [
        ("libssl3t64:amd64", "libssl3"),
        ("libssl3", "libssl3"),
        ("zlib1g:arm64", "zlib1g"),
        ("libgdbm6t64", "libgdbm6"),
        ("libbz2-1.0", "libbz2-1.0"),
    ],
)
def test_package_names_compare_across_the_64_bit_time_rename(name, normalized):
    assert normalize_package(name) == normalized


def test_the_shipped_wheels_are_the_pinned_ones():
    pins = parse_requirements(REQUIREMENTS.read_text())
    assert [pin.name for pin in pins] == ["redis", "click", "async-timeout"]
    shipped = {sha256_of(wheel): wheel.name for wheel in WHEELS.glob("*.whl")}
    assert sorted(shipped) == sorted(pin.sha256 for pin in pins)
    assert all(name.endswith("-py3-none-any.whl") for name in shipped.values())


def test_wheels_install_with_their_metadata(tmp_path):
    assert install_wheels(REQUIREMENTS, WHEELS, tmp_path) == ["redis==5.2.1", "click==8.1.8", "async-timeout==5.0.1"]
    assert (tmp_path / "redis" / "__init__.py").is_file() and (tmp_path / "redis-5.2.1.dist-info" / "RECORD").is_file()


def test_an_unhashed_requirement_is_refused(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("redis==5.2.1\n")
    with pytest.raises(WheelError, match="unpinned or unhashed requirement: redis==5.2.1"):
        install_wheels(requirements, WHEELS, tmp_path / "target")


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    shutil.copytree(WHEELS, wheels)
    redis_wheel = next(wheels.glob("redis-*.whl"))
    redis_wheel.write_bytes(redis_wheel.read_bytes()[:-1])
    with pytest.raises(WheelError, match="no wheel of redis==5.2.1 with the pinned sha256"):
        install_wheels(REQUIREMENTS, wheels, tmp_path / "target")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("bundle") / "python"
    bundle_python(destination, "heroku-24")
    return destination


def test_a_clean_bundle_passes_its_check(bundle):
    assert check_bundle(bundle, "heroku-24") == []


def test_the_check_finds_a_copied_system_library(bundle, tmp_path):
    """A copy of OpenSSL in the slug would never get the stack's security updates."""
    planted = tmp_path / "python"
    shutil.copytree(bundle, planted, symlinks=True)
    libssl = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    path = next(line.split(" => ")[1] for line in libssl.splitlines() if "libssl.so.3 " in line)
    shutil.copy2(path, planted / "lib" / "libssl.so.3")
    problems = check_bundle(planted, "heroku-24")
    assert len(problems) == 1 and problems[0].startswith("libssl.so.3 is copied, but the heroku-24 run image has it")


def test_the_check_finds_a_library_the_run_image_lacks(bundle, tmp_path):
    broken = tmp_path / "python"
    shutil.copytree(bundle, broken, symlinks=True)
    (libpython,) = (broken / "lib").glob("libpython3*.so*")
    libpython.unlink()
    problems = check_bundle(broken, "heroku-24")
    assert problems and all(libpython.name in problem for problem in problems)
    assert "not in the heroku-24 run image and not bundled" in problems[0] or "not found" in problems[0]


def test_the_installed_package_holds_every_module(tmp_path):
    """`pip install` of this repository (the plain command, anywhere) gets every module of
    lib/queue_metrics, each datastore kind's included."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    # Built from a copy: a `build/` directory left in the checkout would hand setuptools old files.
    source_tree = tmp_path / "source"
    shutil.copytree(root / "lib", source_tree / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source_tree / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run([*pip, "-w", str(tmp_path), str(source_tree)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("queue_metrics-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    source = {
        str(path.relative_to(root / "lib"))
        for path in (root / "lib" / "queue_metrics").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert source <= shipped, sorted(source - shipped)
