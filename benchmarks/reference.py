"""Fetch the reference release ``adamp==0.3.0`` at run time and import it as ``adamp_reference``.

The reference is never vendored: it is downloaded with pip into a cache folder and loaded
under another module name, so it can run side by side with this project's ``adamp``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

REFERENCE = "adamp==0.3.0"
MODULE_NAME = "adamp_reference"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "reference"


def fetch_reference(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Download and unpack the reference sdist (once); return its ``adamp`` package folder."""
    package = cache_dir / "adamp-0.3.0" / "adamp"
    if (package / "__init__.py").exists():
        return package
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            REFERENCE,
            "-d",
            str(cache_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    archives = sorted(cache_dir.glob("adamp-0.3.0*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise RuntimeError(
            f"could not download {REFERENCE} with pip (needed to compare against the "
            f"reference release); pip said:\n{done.stderr.strip()}"
        )
    with tarfile.open(archives[0]) as archive:
        archive.extractall(cache_dir, filter="data")
    return package


def load_reference(cache_dir: Path = DEFAULT_CACHE) -> ModuleType:
    """The reference release's ``adamp`` package, imported as ``adamp_reference``."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    package = fetch_reference(cache_dir)
    spec = importlib.util.spec_from_file_location(
        MODULE_NAME, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the reference release from {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module
