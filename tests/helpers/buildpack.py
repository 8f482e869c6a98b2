"""Running the buildpack as Heroku and the CNB lifecycle do: no network, and dynos with no Python."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

BUILDPACK = Path(__file__).resolve().parent.parent.parent
PYENV_ROOT = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
OLDEST_SUPPORTED = (3, 9)
# Builds run with no network at all: nothing may be downloaded.
NO_NETWORK = ["unshare", "-n"]
# Every Python of this machine, for dynos and run images that have none: whole installations are
# covered with an empty tmpfs (pyenv's interpreters and their libpython, Debian's standard library)
# and interpreter binaries outside them with /dev/null. Shared libraries that are not Python's
# (libssl, libffi, ...) stay, as they do in Heroku's run images.
PYTHON_TREES = (
    PYENV_ROOT,
    "/usr/lib/python3*",
    "/usr/local/lib/python3*",
    "/usr/lib/python2*",
    "/usr/local/lib/python2*",
)
PYTHON_BINARIES = (
    "/usr/bin/python*",
    "/usr/local/bin/python*",
    "/usr/libexec/python*",
    "/bin/python*",
    "/usr/lib/*-linux-gnu/libpython*",
    "/usr/local/lib/libpython*",
)


def pythons_on_this_machine() -> List[Tuple[Tuple[int, int], str]]:
    """((major, minor), executable) of every CPython 3 found here: on PATH, in the system
    directories and under pyenv, each asked for its own version (pyenv's shims are skipped)."""
    candidates = set()
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidates.update(glob.glob(os.path.join(directory, "python3*")))
    candidates.update(glob.glob(os.path.join(PYENV_ROOT, "versions", "*", "bin", "python3")))
    found = {}
    for candidate in sorted(candidates):
        if "shims" in candidate or not os.access(candidate, os.X_OK):
            continue
        result = subprocess.run(
            [candidate, "-c", "import sys; print(*sys.version_info[:2], sys.executable)"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode == 0:
            major, minor, executable = result.stdout.split(maxsplit=2)
            found[os.path.realpath(executable.strip())] = (int(major), int(minor))
    return sorted((version, executable) for executable, version in found.items())


def oldest_supported_python() -> str:
    """The oldest Python this machine has that the collector supports (at worst, this one)."""
    supported = [executable for version, executable in pythons_on_this_machine() if version >= OLDEST_SUPPORTED]
    return supported[0] if supported else os.path.realpath(sys.executable)


def python_probes() -> List[str]:
    """Commands that must all fail inside the namespace for the check to mean anything."""
    return ["python3 -c 1", "python -c 1", *(f"{executable} -c 1" for _, executable in pythons_on_this_machine())]


def run(command, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)


def hidden_paths() -> List[str]:
    trees = sorted({path for pattern in PYTHON_TREES for path in glob.glob(pattern) if os.path.isdir(path)})
    binaries = sorted(
        {
            path
            for pattern in PYTHON_BINARIES
            for path in glob.glob(pattern)
            if os.path.isfile(path)
            and not os.path.islink(path)
            and not any(path.startswith(tree + "/") for tree in trees)
        }
    )
    return trees + binaries


def hide_python_script() -> str:
    """Shell that, run inside `unshare -m --propagation private`, hides every Python (see above)."""
    script = ""
    for path in hidden_paths():
        if os.path.isdir(path):
            script += f"mount -t tmpfs -o size=1m,mode=0755 none {path} && "
        else:
            script += f"mount --bind /dev/null {path} && "
    assert script, "found no Python to hide"
    return script


def without_python(command: str) -> List[str]:
    """argv running bash `command` in a mount namespace where no Python exists."""
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "bash",
        "-c",
        hide_python_script() + 'exec bash -c "$0"',
        command,
    ]


def python_is_hidden() -> bool:
    """True when every probe fails inside the namespace (so the hiding itself is tested)."""
    probes = " ; ".join(f"{probe} >/dev/null 2>&1 && echo RAN" for probe in python_probes())
    result = run(without_python(probes + "; true"))
    return result.returncode == 0 and "RAN" not in result.stdout
