"""Usage (the buildpack's shell scripts run it with the build image's python3, PYTHONPATH=<buildpack>/lib):

python3 -m buildpack install BUILD_DIR ENV_DIR DEST [--cache DIR] [--stack STACK] [--interpreter KIND] [--cnb]
    Installs the collector, its packages (from the wheels shipped in vendor/wheels), the
    `queue-metrics` command and the supervisor into DEST, and a copy of this Python when the
    dyno will have none. Each line printed is `info:`, `note:`, `warning:` or `error:` and its
    text; the exit status is 1 when nothing usable was installed.
python3 -m buildpack bundle DEST [--stack STACK]
    Only the bundled Python, into DEST.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from buildpack.bundle import (
    Bundle,
    BundleError,
    bundle_key,
    bundle_python,
    check_bundle,
    compile_tree,
    run_image_packages,
    tree_size,
)
from buildpack.interpreter import Choice, choose_interpreter
from buildpack.wheels import WheelError, install_wheels
from queue_metrics.datastores import DEFAULT_SOURCE, all_locations
from queue_metrics.errors import ConfigError

BUILDPACK_DIR = Path(__file__).resolve().parent.parent.parent
REQUIREMENTS = BUILDPACK_DIR / "lib" / "runtime-requirements.txt"
WHEELS_DIR = BUILDPACK_DIR / "vendor" / "wheels"
COLLECTOR = BUILDPACK_DIR / "lib" / "queue_metrics"
TRUE_WORDS = ("1", "true", "yes", "on")


def read_env_dir(env_dir: Path) -> Dict[str, str]:
    """Config vars as Heroku (ENV_DIR) and the CNB platform (<platform>/env) hand them over: one
    file per variable."""
    values = {}
    if env_dir.is_dir():
        for entry in env_dir.iterdir():
            if entry.is_file():
                values[entry.name] = entry.read_text(errors="replace").strip()
    return values


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def counted(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def config_lines(config: Dict[str, str], cnb: bool) -> Iterator[str]:
    if cnb:
        yield "info:Process type queue-metrics runs the collector: heroku ps:scale queue-metrics=1"
    else:
        yield f"info:The collector will start on dyno {config.get('QUEUE_METRICS_DYNO') or 'web.1'}"
    try:
        found = [location for location in all_locations(config) if location.source != DEFAULT_SOURCE]
    except ConfigError as error:
        # A build never fails over a setting: the collector says the same line when it starts.
        yield f"warning:{error}: the collector will not start until it is fixed"
    else:
        if not found:
            yield (
                "warning:No datastore URL config var is set (REDIS_URL, a HEROKU_REDIS_<COLOR>_URL, REDISCLOUD_URL, "
                "CLOUDAMQP_URL, DATABASE_URL, ...): the collector will not start until one is. "
                "Fix: heroku config:set REDIS_URL=..."
            )
    if config.get("QUEUE_METRICS_DISABLED", "").strip().lower() in TRUE_WORDS:
        yield (
            "warning:QUEUE_METRICS_DISABLED is set: the collector will not start. "
            "Fix: heroku config:unset QUEUE_METRICS_DISABLED"
        )


def choice_lines(choice: Choice) -> Iterator[str]:
    yield f"info:Interpreter at run time: {choice.reason}"
    for note in choice.notes:
        yield f"info:{note}"
    for warning in choice.warnings:
        for line in warning:
            yield f"warning:{line}"


def install_collector(lib_dir: Path) -> List[str]:
    installed = install_wheels(REQUIREMENTS, WHEELS_DIR, lib_dir)
    shutil.copytree(COLLECTOR, lib_dir / "queue_metrics", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(lib_dir / "bin", ignore_errors=True)
    return installed


def install_commands(dest: Path) -> None:
    for source, folder in (("queue-metrics", "bin"), ("queue-metrics-supervisor", "libexec")):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUILDPACK_DIR / "bin" / source, dest / folder / source)
        (dest / folder / source).chmod(0o755)


def cached_bundle(dest: Path, stack: str, cache: Optional[Path]) -> Bundle:
    """Bundle into dest, reusing (or filling) cache/python-<key> when a cache dir is given."""
    if cache is None:
        return bundle_python(dest, stack)
    key = bundle_key(stack)
    cached = cache / f"python-{key}"
    if not cached.is_dir():
        for old in cache.iterdir():  # older bundles, and what older versions of this buildpack cached
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        partial = cache / f"python-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        bundle = bundle_python(partial, stack)
        (partial / "bundle-info").write_text(
            "\n".join([bundle.python_version, " ".join(bundle.copied), " ".join(bundle.left_to_run_image)]) + "\n"
        )
        partial.rename(cached)
    version, copied, left = ((cached / "bundle-info").read_text().split("\n") + ["", ""])[:3]
    shutil.copytree(cached, dest, symlinks=True, ignore=shutil.ignore_patterns("bundle-info"))
    return Bundle(version, tuple(copied.split()), tuple(left.split()), tree_size(dest))


def install(arguments: argparse.Namespace) -> Iterator[str]:
    build_dir, dest = Path(arguments.build_dir), Path(arguments.dest)
    config = read_env_dir(Path(arguments.env_dir))
    stack = arguments.stack
    if arguments.interpreter:
        choice = Choice(
            arguments.interpreter, f"a copy of this build's Python ({stack or 'this stack'} has no Python at run time)"
        )
    else:
        choice = choose_interpreter(build_dir, stack, config)
    yield from choice_lines(choice)
    yield from config_lines(config, arguments.cnb)
    shutil.rmtree(dest, ignore_errors=True)
    lib_dir = dest / "lib"
    installed = install_collector(lib_dir)
    yield f"info:Installed the collector with {', '.join(installed)} (shipped in this buildpack, hash-checked)"
    install_commands(dest)
    (dest / "interpreter").write_text(choice.kind + "\n")
    if choice.kind == "bundled":
        cache = Path(arguments.cache) if arguments.cache else None
        reused = False
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            reused = (cache / f"python-{bundle_key(stack)}").is_dir()
        bundle = cached_bundle(dest / "python", stack, cache)
        problems = check_bundle(dest / "python", stack)
        if problems:
            if cache is not None:
                shutil.rmtree(cache / f"python-{bundle_key(stack)}", ignore_errors=True)
            raise BundleError("the bundled Python would not run on this stack: " + "; ".join(problems))
        yield (
            f"info:Bundled Python {bundle.python_version}{' (from the build cache)' if reused else ''}: "
            f"{counted(len(bundle.copied), 'library', 'libraries')} copied ({', '.join(bundle.copied) or 'none'}), "
            f"{len(bundle.left_to_run_image)} left to the run image's packages (security updates reach them)"
        )
        if run_image_packages(stack) is None:
            yield (
                f"warning:This buildpack has no package list for stack {stack or '(unknown)'!r}: the bundled "
                "Python carries its own copies of every library, which the stack's security updates will not reach. "
                "Fix: update queue-metrics (heroku buildpacks), then redeploy."
            )
    if choice.kind != "app":
        # The dyno's interpreter is this build's (bundled) or the same stack's (system): compiled now,
        # nothing is compiled or written at boot.
        compile_tree(lib_dir)
    total = tree_size(dest)
    python_size = tree_size(dest / "python") if choice.kind == "bundled" else 0
    detail = f"collector and packages {megabytes(total - python_size)}"
    if choice.kind == "bundled":
        detail += f", Python {megabytes(python_size)}"
    yield f"info:Added {megabytes(total)} to the slug ({detail})"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m buildpack", usage=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser("install")
    install_parser.add_argument("build_dir")
    install_parser.add_argument("env_dir")
    install_parser.add_argument("dest")
    install_parser.add_argument("--cache")
    install_parser.add_argument("--stack", default=os.environ.get("STACK", ""))
    install_parser.add_argument("--interpreter", choices=("bundled",))
    install_parser.add_argument("--cnb", action="store_true")
    bundle_parser = commands.add_parser("bundle")
    bundle_parser.add_argument("dest")
    bundle_parser.add_argument("--stack", default=os.environ.get("STACK", ""))
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "install":
            for line in install(arguments):
                print(line, flush=True)
        else:
            bundle = bundle_python(Path(arguments.dest), arguments.stack)
            print(f"info:Bundled Python {bundle.python_version} in {megabytes(bundle.size_bytes)}")
    except (BundleError, WheelError, OSError, ValueError) as error:
        print(f"error:{error}", flush=True)
        return 1
    except Exception as error:  # noqa: BLE001 - any failure of this step must become one readable line
        print(f"error:unexpected {type(error).__name__}: {error}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
