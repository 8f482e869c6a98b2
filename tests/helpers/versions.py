"""One virtual environment per rq or Celery release the README says is supported, for
tests/test_versions.py: built once under tests/.versions/<release>/ (`python -m venv` and a pip
install of exact pins, the release's redis client of its time included), reused while its pins
are the same. A release that pip cannot install fails the test: nothing is skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, Optional, Tuple

HELPERS = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HELPERS)
LIB = os.path.join(os.path.dirname(TESTS), "lib")
VERSIONS_DIR = os.path.join(TESTS, ".versions")

# The oldest and newest of each supported range, with the clients each was released with.
RELEASES: Dict[str, Tuple[str, ...]] = {
    "rq-1.15.1": ("rq==1.15.1", "redis==4.6.0"),
    "rq-3.0.0": ("rq==3.0.0", "redis==8.2.0"),
    "celery-5.2.7": ("celery[redis]==5.2.7", "kombu==5.2.4", "redis==4.3.6"),
    "celery-5.7.0": ("celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.2.0"),
}
PIP_TIMEOUT = 600


def release_venv(release: str) -> str:
    """The bin directory of `release`'s virtual environment, built on first use."""
    pins = "\n".join(RELEASES[release]) + "\n"
    home = os.path.join(VERSIONS_DIR, release)
    marker = os.path.join(home, "pins.txt")
    if _read(marker) != pins:
        # Built where it stays (a virtual environment's scripts name their own path); the pins
        # are written last, so one cut short is built again.
        shutil.rmtree(home, ignore_errors=True)
        _run([sys.executable, "-m", "venv", home], f"python -m venv for {release}")
        _run(
            [os.path.join(home, "bin", "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + list(RELEASES[release]),
            f"pip install {' '.join(RELEASES[release])}",
        )
        with open(marker, "w") as file:
            file.write(pins)
    return os.path.join(home, "bin")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def _run(command, what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, f"{what} failed:\n{result.stderr[-3000:]}"


def driver_env(**env: str) -> Dict[str, str]:
    """The environment of a release's processes: its own site-packages only, the test helpers and
    the collector's stamp hook importable."""
    base = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**base, "PYTHONPATH": os.pathsep.join((HELPERS, LIB)), **env}


def drive(release: str, action: str, url: str, plan: dict, **env: str) -> dict:
    """Runs tests/helpers/version_driver.py with the release's Python; its JSON answer."""
    python = os.path.join(release_venv(release), "python")
    result = subprocess.run(
        [python, os.path.join(HELPERS, "version_driver.py"), action, url],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=120,
        env=driver_env(**env),
    )
    assert result.returncode == 0, f"{release} {action} failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)
