"""A copy of the build's Python for run images without one (heroku-24, heroku-26, Fir).

Only what the run image lacks is copied: a shared library the run image has (OpenSSL, zlib,
libffi, ...) is left to it, so the stack's security updates reach the collector without a
redeploy. The run image's packages come from Heroku's published lists (run-images/<stack>.txt);
a library's package is asked of dpkg on the build image. The standard library is precompiled
with unchecked-hash pycs, so no dyno boot recompiles or rewrites it.
"""

from __future__ import annotations

import compileall
import hashlib
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

RUN_IMAGES_DIR = Path(__file__).resolve().parent / "run-images"
# Left out: unused by the collector, and most of the standard library's size.
STDLIB_LEFT_OUT = (
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "config-*",
    "venv",
    "__phello__",
    "distutils",
    # extension modules that would pull in X11, Tcl/Tk, readline, curses, SQLite or dbm
    "_tkinter*",
    "_sqlite3*",
    "_curses*",
    "readline*",
    "_dbm*",
    "_gdbm*",
    "_test*",
    "_ctypes_test*",
    "_xxtestfuzz*",
    "xxlimited*",
    "nis*",
    "ossaudiodev*",
    "_xxsubinterpreters*",
)
# The C library and the dynamic loader: in every run image, and a copy would break the dyno's own.
C_LIBRARY = re.compile(r"^(ld-linux|libc|libm|libpthread|libdl|librt|libutil|linux-vdso|libresolv)[.-]")
# Bumped when the bundle's layout changes, so a cached bundle of an older layout is rebuilt.
BUNDLE_FORMAT = "2"


class BundleError(RuntimeError):
    pass


class Bundle(NamedTuple):
    python_version: str
    copied: Tuple[str, ...]  # sonames copied into lib/
    left_to_run_image: Tuple[str, ...]  # sonames the run image provides
    size_bytes: int


def normalize_package(name: str) -> str:
    """`libssl3t64:amd64` -> `libssl3`: Ubuntu 24.04 renamed libraries for 64-bit time_t (the
    `t64` suffix) with the same sonames, and dpkg names a package with its architecture."""
    name = name.split(":", 1)[0].strip()
    return name[:-3] if name.endswith("t64") else name


def run_image_packages(stack: str) -> Optional[FrozenSet[str]]:
    """The run image's packages, or None when this buildpack has no list for the stack."""
    if not re.fullmatch(r"[a-z0-9.-]+", stack or ""):
        return None
    listing = RUN_IMAGES_DIR / f"{stack}.txt"
    if not listing.is_file():
        return None
    return frozenset(
        normalize_package(line)
        for line in listing.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def packages_owning(paths: Iterable[Path]) -> Dict[Path, str]:
    """The dpkg package of each file, for the files dpkg knows (merged /usr: /lib/x is /usr/lib/x)."""
    owners: Dict[Path, str] = {}
    for path in paths:
        candidates = {str(path), str(path.resolve())}
        candidates |= {"/usr" + name for name in candidates if not name.startswith("/usr/")}
        try:
            result = subprocess.run(["dpkg-query", "-S", *sorted(candidates)], capture_output=True, text=True)
        except OSError:
            return owners  # no dpkg: every library counts as one the run image may lack
        for line in result.stdout.splitlines():
            package, _, _ = line.partition(": ")
            if package and not line.startswith("diversion"):
                owners[path] = normalize_package(package.split(",")[0])
                break
    return owners


def resolved_libraries(binaries: Iterable[Path], library_path: Optional[Path] = None) -> Dict[str, Optional[Path]]:
    """soname -> file `ldd` resolves for the binaries (None: not found), less the C library's."""
    env = {"PATH": "/usr/bin:/bin"}
    if library_path is not None:
        env["LD_LIBRARY_PATH"] = str(library_path)
    found: Dict[str, Optional[Path]] = {}
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
        for line in result.stdout.splitlines():
            match = re.match(r"^\s*(\S+)\s+=>\s+(not found|/\S+)", line)
            if match and not C_LIBRARY.match(match.group(1)):
                where = None if match.group(2) == "not found" else Path(match.group(2))
                found.setdefault(match.group(1), where)
    return found


def elf_files(root: Path) -> List[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF"
    )


def bundle_key(stack: str) -> str:
    """What a cached bundle depends on: this interpreter, the stack's list and this code."""
    digest = hashlib.sha256()
    for part in (BUNDLE_FORMAT, sys.version, str(Path(sys.executable).resolve()), stack, Path(__file__).read_text()):
        digest.update(part.encode() + b"\0")
    listing = RUN_IMAGES_DIR / f"{stack}.txt"
    if listing.is_file():
        digest.update(listing.read_bytes())
    return digest.hexdigest()[:20]


def tree_size(root: Path) -> int:
    return sum(path.lstat().st_size for path in root.rglob("*") if path.is_file() or path.is_symlink())


def bundle_python(destination: Path, stack: str) -> Bundle:
    """Copy this interpreter, its standard library and the shared libraries the run image lacks."""
    packages = run_image_packages(stack)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    executable = Path(sys.executable).resolve()
    (destination / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(executable, destination / "bin" / "python3")
    library_dir = destination / "lib"
    stdlib_copy = library_dir / version
    shutil.copytree(
        stdlib, stdlib_copy, symlinks=False, ignore=shutil.ignore_patterns(*STDLIB_LEFT_OUT), dirs_exist_ok=True
    )
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    if dynload.is_dir() and not (stdlib_copy / "lib-dynload").is_dir():
        shutil.copytree(dynload, stdlib_copy / "lib-dynload", ignore=shutil.ignore_patterns(*STDLIB_LEFT_OUT))
    libraries = resolved_libraries([destination / "bin" / "python3", *sorted(stdlib_copy.rglob("*.so"))])
    missing = sorted(soname for soname, path in libraries.items() if path is None)
    if missing:
        raise BundleError(f"this build's Python needs {', '.join(missing)}, which the build image lacks")
    owners = packages_owning(path for path in libraries.values() if path is not None)
    copied, left = [], []
    for soname, path in sorted(libraries.items()):
        assert path is not None
        owner = owners.get(path)
        if packages is not None and owner is not None and owner in packages:
            left.append(soname)
        else:
            shutil.copy2(path.resolve(), library_dir / soname)
            copied.append(soname)
    strip_debug_symbols(destination)
    compile_tree(stdlib_copy)
    return Bundle(sys.version.split()[0], tuple(copied), tuple(left), tree_size(destination))


def strip_debug_symbols(root: Path) -> None:
    """Debug symbols are most of an unstripped interpreter's size and of no use on a dyno. Heroku's
    build images have binutils' strip; without it the bundle is only bigger."""
    strip = shutil.which("strip")
    if strip is None:
        return
    for path in elf_files(root):
        subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True)


def compile_tree(root: Path) -> None:
    """Bytecode checked against nothing at import: the slug's files never change after the build."""
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    try:
        compileall.compile_dir(str(root), quiet=2, workers=0, invalidation_mode=mode)
    except (OSError, ImportError, NotImplementedError):  # no process pool here: one process will do
        compileall.compile_dir(str(root), quiet=2, workers=1, invalidation_mode=mode)


def check_bundle(destination: Path, stack: str) -> List[str]:
    """What would go wrong with this bundle on the stack's run image: one line per problem."""
    packages = run_image_packages(stack)
    if packages is None:
        return []
    problems = []
    library_dir = destination / "lib"
    binaries = elf_files(destination)
    for soname, path in sorted(resolved_libraries(binaries, library_dir).items()):
        if path is None:
            problems.append(f"{soname} is needed but not found")
            continue
        if library_dir in path.parents:
            continue
        owner = packages_owning([path]).get(path)
        if owner not in packages:
            problems.append(f"{soname} ({owner or 'no package'}) is not in the {stack} run image and not bundled")
    copies = sorted(path for path in library_dir.glob("*.so*") if path.is_file())
    system_copies = packages_owning(
        Path("/usr/lib") / sysconfig.get_config_var("MULTIARCH") / path.name
        for path in copies
        if sysconfig.get_config_var("MULTIARCH")
    )
    for path, owner in sorted(system_copies.items()):
        if owner in packages:
            problems.append(
                f"{path.name} is copied, but the {stack} run image has it ({owner}): "
                "the copy would miss the stack's security updates"
            )
    return problems
