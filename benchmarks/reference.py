"""Fetch the reference release ``adamp==0.3.0`` at run time and import it as ``adamp_reference``.

The reference is never vendored: its sdist is downloaded with pip into ``.cache/reference``
(git-ignored), checked against its published hash, extracted once (atomically, under a file
lock so concurrent runs share the cache) and loaded under another module name, so it runs
side by side with this project's ``adamp``. The differential tests and the benchmarks use
this one loader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

REFERENCE = "adamp==0.3.0"
SDIST = "adamp-0.3.0.tar.gz"
SDIST_SHA256 = "f9cf4b1b641624f4e74a9afb2bb71e698c0b821000a74e0eb1c3a8a5a9793f5d"
"""sha256 of the sdist as published on PyPI."""
MODULE_NAME = "adamp_reference"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / "reference"


class ReferenceUnavailable(RuntimeError):
    """The reference release could not be downloaded, verified or extracted."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(cache: Path) -> Path:
    sdist = cache / SDIST
    if sdist.is_file() and _sha256(sdist) == SDIST_SHA256:
        return sdist
    sdist.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        REFERENCE,
        "-d",
        str(cache),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        message = f"could not download the reference release {REFERENCE}: {exc}"
        raise ReferenceUnavailable(message) from exc
    if result.returncode != 0 or not sdist.is_file():
        raise ReferenceUnavailable(
            f"could not download the reference release {REFERENCE} with pip "
            f"(exit status {result.returncode}); the comparisons need it.\n"
            f"command: {' '.join(command)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    digest = _sha256(sdist)
    if digest != SDIST_SHA256:
        raise ReferenceUnavailable(f"{sdist} has sha256 {digest}, not the published {SDIST_SHA256}")
    return sdist


def _extract(sdist: Path, cache: Path) -> Path:
    """The extracted ``adamp`` package folder (extracted once, atomically)."""
    package = cache / "adamp-0.3.0" / "adamp"
    if (package / "__init__.py").is_file():
        return package
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=cache))
    try:
        with tarfile.open(sdist) as archive:
            archive.extractall(staging, filter="data")
        target = cache / "adamp-0.3.0"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging / "adamp-0.3.0", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (package / "__init__.py").is_file():
        raise ReferenceUnavailable(f"{sdist} holds no adamp/__init__.py")
    return package


def _import(package: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        MODULE_NAME, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise ReferenceUnavailable(f"cannot import the reference release from {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module


def load_reference(cache_dir: Path = DEFAULT_CACHE) -> ModuleType:
    """The reference release's ``adamp`` package, imported as ``adamp_reference``."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        package = _extract(_download(cache_dir), cache_dir)
    return _import(package)
