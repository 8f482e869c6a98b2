"""Build-time decisions and steps for bin/compile, run by the build image's python3.

Usage (bin/compile runs these with PYTHONPATH=<buildpack>/lib):
    python3 -m queue_metrics.build plan BUILD_DIR ENV_DIR INSTALL_DIR
        Chooses the interpreter the dyno will run (writes INSTALL_DIR/interpreter), prints the
        Heroku-style details and warnings.
    python3 -m queue_metrics.build fetch REQUIREMENTS TARGET WHEEL_CACHE
        Installs pinned, hashed pure-Python wheels into TARGET without pip (build images may
        have no pip); downloads land in WHEEL_CACHE so a rebuild downloads nothing.
    python3 -m queue_metrics.build bundle-python DEST
        Copies this interpreter, its standard library and the shared libraries it needs into
        DEST, for run images without Python (heroku-24 and later).

Standard library only: this runs before any package is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from queue_metrics.config import REDIS_URL_VARS

# Files that make heroku/python build the app, which then has /app/.heroku/python at run time.
PYTHON_APP_FILES = ("requirements.txt", "Pipfile", "Pipfile.lock", "pyproject.toml", "poetry.lock",
                    "uv.lock", "setup.py", "runtime.txt", ".python-version")
# Run images that still ship /usr/bin/python3 (heroku-24 removed it).
STACKS_WITH_PYTHON = ("cedar-14", "heroku-16", "heroku-18", "heroku-20", "heroku-22")
INTERPRETERS = ("app", "system", "bundled")
INTERPRETER_FILE = "interpreter"
# PyPI's simple index in its JSON form (PEP 691): the API pip itself uses.
PYPI_SIMPLE = "https://pypi.org/simple/{name}/"
PYPI_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
# Left out of a bundled interpreter: unused by the collector, and most of the standard library's size.
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
                   "site-packages", "dist-packages", "__pycache__", "config-*",
                   # extension modules that would pull in X11, Tcl/Tk, readline or SQLite
                   "_tkinter*", "_sqlite3*", "_curses*", "readline*", "_dbm*", "_gdbm*", "_test*",
                   "_ctypes_test*", "_xxtestfuzz*", "xxlimited*", "nis*", "ossaudiodev*")
# The C library is in every run image; copying it would break the dyno's own.
SYSTEM_LIBRARIES = re.compile(r"^(ld-linux|libc|libm|libpthread|libdl|librt|libutil|linux-vdso)[.-]")


class BuildError(RuntimeError):
    pass


def read_env_dir(env_dir: Path) -> Dict[str, str]:
    """Config vars as Heroku hands them to a build: one file per variable."""
    values = {}
    if env_dir.is_dir():
        for entry in env_dir.iterdir():
            if entry.is_file():
                values[entry.name] = entry.read_text(errors="replace").strip()
    return values


def choose_interpreter(build_dir: Path, stack: str, config: Mapping[str, str]) -> Tuple[str, str]:
    """Which Python the dyno will run the collector with, and why (one line)."""
    requested = config.get("QUEUE_METRICS_PYTHON", "").strip().lower()
    if requested:
        if requested not in INTERPRETERS:
            raise BuildError(f"QUEUE_METRICS_PYTHON must be one of {', '.join(INTERPRETERS)}, got {requested!r}")
        return requested, f"QUEUE_METRICS_PYTHON={requested}"
    if (build_dir / ".heroku" / "python" / "bin").is_dir():
        return "app", "the app's Python (/app/.heroku/python), installed by heroku/python"
    found = [name for name in PYTHON_APP_FILES if (build_dir / name).exists()]
    if found:
        return "app", f"the app's Python (/app/.heroku/python): {found[0]} makes this a heroku/python app"
    if stack in STACKS_WITH_PYTHON:
        return "system", f"the run image's /usr/bin/python3 ({stack} ships one)"
    return "bundled", (f"a copy of this build's Python {sys.version_info.major}.{sys.version_info.minor} "
                       f"({stack or 'this stack'} has no Python at run time)")


def plan(build_dir: Path, env_dir: Path, install_dir: Path, stack: str) -> List[str]:
    """Decide, record the decision for the dyno, and return the lines to show the user."""
    config = read_env_dir(env_dir)
    kind, reason = choose_interpreter(build_dir, stack, config)
    install_dir.mkdir(parents=True, exist_ok=True)
    (install_dir / INTERPRETER_FILE).write_text(kind + "\n")
    lines = [f"info:Interpreter at run time: {reason}"]
    dyno = config.get("QUEUE_METRICS_DYNO") or "web.1"
    lines.append(f"info:The collector will start on dyno {dyno}")
    if not any(config.get(name) for name in REDIS_URL_VARS):
        lines.append("warning:No Redis URL config var (REDIS_URL, REDIS_TLS_URL, QUEUE_METRICS_REDIS_URL, ...) "
                     "is set: the collector will not start until one is.")
    if config.get("QUEUE_METRICS_DISABLED", "").lower() in ("1", "true", "yes", "on"):
        lines.append("warning:QUEUE_METRICS_DISABLED is set: the collector will not start.")
    return lines


def parse_requirements(text: str) -> List[Tuple[str, str, str]]:
    """(name, version, sha256) of each `name==version --hash=sha256:...` line."""
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s]+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if not match:
            raise BuildError(f"unpinned or unhashed requirement: {line}")
        pins.append((match.group(1), match.group(2), match.group(3)))
    return pins


def fetch(requirements: Path, target: Path, wheel_cache: Path) -> List[str]:
    """Install the pinned wheels into `target`; each is verified against its hash."""
    wheel_cache.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    installed = []
    for name, version, digest in parse_requirements(requirements.read_text()):
        wheel = _cached_wheel(wheel_cache, digest) or _download_wheel(name, version, digest, wheel_cache)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        installed.append(f"{name}=={version}")
    return installed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_wheel(wheel_cache: Path, digest: str) -> Optional[Path]:
    for candidate in wheel_cache.glob("*.whl"):
        if _sha256(candidate) == digest:
            return candidate
    return None


def _download_wheel(name: str, version: str, digest: str, wheel_cache: Path) -> Path:
    request = urllib.request.Request(PYPI_SIMPLE.format(name=name), headers={"Accept": PYPI_SIMPLE_JSON})
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    for file in index.get("files", []):
        if file.get("hashes", {}).get("sha256") == digest and file["filename"].endswith(".whl"):
            with urllib.request.urlopen(file["url"], timeout=120) as response:
                data = response.read()
            if hashlib.sha256(data).hexdigest() != digest:
                raise BuildError(f"{file['filename']} does not match its pinned hash")
            destination = wheel_cache / Path(file["filename"]).name
            destination.write_bytes(data)
            return destination
    raise BuildError(f"PyPI has no wheel of {name}=={version} with the pinned hash")


def bundle_python(destination: Path) -> List[str]:
    """Copy this interpreter so it runs from `destination` on a run image without Python."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    executable = Path(sys.executable).resolve()
    (destination / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(executable, destination / "bin" / "python3")
    library_dir = destination / "lib"
    shutil.copytree(stdlib, library_dir / version, symlinks=False,
                    ignore=shutil.ignore_patterns(*STDLIB_LEFT_OUT), dirs_exist_ok=True)
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    if dynload.is_dir() and not (library_dir / version / "lib-dynload").is_dir():
        shutil.copytree(dynload, library_dir / version / "lib-dynload",
                        ignore=shutil.ignore_patterns(*STDLIB_LEFT_OUT))
    binaries = [executable, *sorted((library_dir / version / "lib-dynload").glob("*.so"))]
    copied = []
    for soname, library in shared_libraries(binaries):
        if not (library_dir / soname).exists():
            shutil.copy2(library, library_dir / soname)
            copied.append(soname)
    return copied


def shared_libraries(binaries: Iterable[Path]) -> List[Tuple[str, Path]]:
    """(soname, file) of the shared libraries `ldd` resolves for the binaries, less the C library's."""
    found: Dict[str, Path] = {}
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            match = re.search(r"^\s*(\S+)\s+=>\s+(/\S+)", line)
            if match and not SYSTEM_LIBRARIES.match(match.group(1)):
                found.setdefault(match.group(1), Path(match.group(2)).resolve())
    return sorted(found.items())


def main(arguments: List[str]) -> int:
    try:
        if arguments[:1] == ["plan"] and len(arguments) == 4:
            for line in plan(Path(arguments[1]), Path(arguments[2]), Path(arguments[3]),
                             os.environ.get("STACK", "")):
                print(line)
        elif arguments[:1] == ["fetch"] and len(arguments) == 4:
            for name in fetch(Path(arguments[1]), Path(arguments[2]), Path(arguments[3])):
                print(f"info:Installed {name}")
        elif arguments[:1] == ["bundle-python"] and len(arguments) == 2:
            copied = bundle_python(Path(arguments[1]))
            print(f"info:Bundled Python {sys.version.split()[0]} with {len(copied)} shared libraries")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (BuildError, OSError, ValueError) as error:
        print(f"error:{error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
