"""Installs the pinned, hash-checked wheels shipped inside the buildpack, with no network and no pip
(no Heroku build image has pip)."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import List, NamedTuple

# `name==version --hash=sha256:<64 hex>`, the only form lib/runtime-requirements.txt may use.
PIN_LINE = re.compile(r"([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})")


class WheelError(RuntimeError):
    pass


class Pin(NamedTuple):
    name: str
    version: str
    sha256: str


def parse_requirements(text: str) -> List[Pin]:
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN_LINE.fullmatch(line)
        if not match:
            raise WheelError(f"unpinned or unhashed requirement: {line}")
        pins.append(Pin(*match.groups()))
    return pins


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_wheel(pin: Pin, wheel_dir: Path) -> Path:
    """The shipped wheel whose content has the pinned hash (file names alone prove nothing)."""
    for candidate in sorted(wheel_dir.glob("*.whl")):
        if sha256_of(candidate) == pin.sha256:
            return candidate
    raise WheelError(f"no wheel of {pin.name}=={pin.version} with the pinned sha256 in {wheel_dir}")


def extract_pure_wheel(wheel: Path, target: Path) -> None:
    """What `pip install --target` does for a pure-Python wheel: its files, as they are, into target."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        wheel_metadata = [name for name in names if re.fullmatch(r"[^/]+\.dist-info/WHEEL", name)]
        if len(wheel_metadata) != 1:
            raise WheelError(f"{wheel.name} has no single .dist-info/WHEEL file")
        if "Root-Is-Purelib: true" not in archive.read(wheel_metadata[0]).decode("utf-8", "replace"):
            raise WheelError(f"{wheel.name} is not a pure-Python wheel")
        for name in names:
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or re.match(r"[^/]+\.data/", name):
                raise WheelError(f"{wheel.name} holds {name!r}, which a pure-Python wheel never does")
        archive.extractall(target)


def install_wheels(requirements: Path, wheel_dir: Path, target: Path) -> List[str]:
    """Install every pin of `requirements` from `wheel_dir` into `target`; returns `name==version`s."""
    target.mkdir(parents=True, exist_ok=True)
    installed = []
    for pin in parse_requirements(requirements.read_text()):
        extract_pure_wheel(find_wheel(pin, wheel_dir), target)
        installed.append(f"{pin.name}=={pin.version}")
    return installed
