"""Which Python the dyno runs the collector with.

What the build can know: whether heroku/python already ran (it leaves `.heroku/python` in the build
dir) and the stack. What it cannot know: whether heroku/python runs after this buildpack (a Ruby
or Node app may keep `.python-version`, `pyproject.toml` or `requirements.txt` for tooling and never
be built by it). So the app's Python is chosen only when it is already built; otherwise the run
image's python3 where the stack has one (heroku-22), else a bundled copy of the build's Python. At
dyno start, `queue-metrics` runs the chosen interpreter if present, else any other that exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Tuple

INTERPRETERS = ("app", "system", "bundled")
# Run images that have /usr/bin/python3 (heroku/base-images package lists: heroku-22 ships
# python3.10; heroku-24 and heroku-26 ship no Python in the run image).
STACKS_WITH_PYTHON = ("heroku-20", "heroku-22")
# What heroku/python leaves in the build dir when it ran before this buildpack.
APP_PYTHON = Path(".heroku") / "python" / "bin" / "python3"
# Files that may mean heroku/python builds the app after us (or only that the repo has Python tooling).
PYTHON_APP_FILES = (
    "requirements.txt",
    "Pipfile",
    "Pipfile.lock",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "setup.py",
    "runtime.txt",
    ".python-version",
)


class Choice(NamedTuple):
    kind: str
    reason: str
    notes: Tuple[str, ...] = ()
    warnings: Tuple[Tuple[str, ...], ...] = ()


def choose_interpreter(build_dir: Path, stack: str, config: Mapping[str, str]) -> Choice:
    app_built = (build_dir / APP_PYTHON).exists()
    system_python = stack in STACKS_WITH_PYTHON
    requested = config.get("QUEUE_METRICS_PYTHON", "").strip().lower()
    warnings: Tuple[Tuple[str, ...], ...] = ()
    if requested and requested not in INTERPRETERS:
        warnings += (
            (
                f"QUEUE_METRICS_PYTHON={requested!r} is not one of {', '.join(INTERPRETERS)}: ignored.",
                "Fix: heroku config:unset QUEUE_METRICS_PYTHON (or set it to one of those), then redeploy.",
            ),
        )
        requested = ""
    if requested == "bundled":
        return Choice("bundled", "QUEUE_METRICS_PYTHON=bundled: a copy of this build's Python", warnings=warnings)
    if requested == "system":
        if system_python:
            return Choice(
                "system", f"QUEUE_METRICS_PYTHON=system: the run image's /usr/bin/python3 ({stack})", warnings=warnings
            )
        warnings += (
            (
                f"QUEUE_METRICS_PYTHON=system, but the {stack or 'unknown'} run image has no python3: "
                "bundling a copy of this build's Python instead.",
                "Fix: heroku config:unset QUEUE_METRICS_PYTHON",
            ),
        )
        return Choice(
            "bundled",
            f"a copy of this build's Python ({stack or 'this stack'} has no Python at run time)",
            warnings=warnings,
        )
    if requested == "app":
        if app_built or system_python:
            where = "" if app_built else "; the run image's python3 if heroku/python does not run after this buildpack"
            return Choice(
                "app", f"QUEUE_METRICS_PYTHON=app: the app's Python (/app/.heroku/python){where}", warnings=warnings
            )
        warnings += (
            (
                "QUEUE_METRICS_PYTHON=app, but heroku/python has not built this app yet and the "
                f"{stack or 'unknown'} run image has no python3: the collector runs only if heroku/python "
                "builds the app after this buildpack.",
                "Fix: heroku config:unset QUEUE_METRICS_PYTHON (a Python is then bundled), or add "
                "heroku/python after queue-metrics (heroku buildpacks).",
            ),
        )
        return Choice("app", "QUEUE_METRICS_PYTHON=app: the app's Python (/app/.heroku/python)", warnings=warnings)
    if app_built:
        return Choice("app", "the app's Python (/app/.heroku/python), installed by heroku/python", warnings=warnings)
    if system_python:
        return Choice("system", f"the run image's /usr/bin/python3 ({stack} ships one)", warnings=warnings)
    notes: Tuple[str, ...] = ()
    found = [name for name in PYTHON_APP_FILES if (build_dir / name).exists()]
    if found:
        notes = (
            f"{found[0]} is here but heroku/python has not run yet: if it runs after this buildpack, "
            "list queue-metrics after it to leave the bundled Python out of the slug.",
        )
    return Choice(
        "bundled",
        f"a copy of this build's Python ({stack or 'this stack'} has no Python at run time)",
        notes=notes,
        warnings=warnings,
    )
