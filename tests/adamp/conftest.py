"""The reference release ``adamp==0.3.0``, fetched from PyPI at test time.

The tests compare our optimizers with the reference's numbers, so the reference must be the
released code itself: its sdist is downloaded with pip (cached in ``.cache/reference`` at the
repository root, which git ignores), checked against its published hash, extracted, and
imported as ``adamp_reference`` so that it never shadows our ``adamp``. A failed download
fails the tests that need it: a comparison that silently did not run proves nothing.
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

import pytest

import adamp

REFERENCE = "adamp==0.3.0"
SDIST = "adamp-0.3.0.tar.gz"
SDIST_SHA256 = "f9cf4b1b641624f4e74a9afb2bb71e698c0b821000a74e0eb1c3a8a5a9793f5d"
"""sha256 of the sdist as published on PyPI."""
MODULE_NAME = "adamp_reference"

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "reference"


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
        pytest.fail(f"could not download the reference release {REFERENCE}: {exc}", pytrace=False)
    if result.returncode != 0 or not sdist.is_file():
        pytest.fail(
            f"could not download the reference release {REFERENCE} with pip "
            f"(exit status {result.returncode}); the differential tests need it.\n"
            f"command: {' '.join(command)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}",
            pytrace=False,
        )
    digest = _sha256(sdist)
    if digest != SDIST_SHA256:
        pytest.fail(f"{sdist} has sha256 {digest}, not the published {SDIST_SHA256}", pytrace=False)
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
        pytest.fail(f"{sdist} holds no adamp/__init__.py", pytrace=False)
    return package


def _import(package: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        MODULE_NAME, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """The reference release's ``adamp`` package (``reference.AdamP``, ``reference.SGDP``)."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE_DIR / ".lock"):  # concurrent test runs share the cache
        package = _extract(_download(CACHE_DIR), CACHE_DIR)
    module = _import(package)
    assert module.AdamP is not adamp.AdamP
    assert Path(module.__file__).resolve().is_relative_to(CACHE_DIR)
    assert Path(sys.modules["adamp"].__file__).resolve().is_relative_to(REPO_ROOT / "adamp")
    return module
