"""The reference release ``adamp==0.3.0``, fetched from PyPI at test time.

The tests compare our optimizers with the reference's numbers, so the reference must be the
released code itself: ``benchmarks.reference`` downloads its sdist with pip (cached in
``.cache/reference``), checks its published hash, extracts it and imports it as
``adamp_reference`` so that it never shadows our ``adamp``. A failed download fails the
tests that need it: a comparison that silently did not run proves nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

import adamp
from benchmarks.reference import DEFAULT_CACHE, REPO_ROOT, ReferenceUnavailable, load_reference


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """The reference release's ``adamp`` package (``reference.AdamP``, ``reference.SGDP``)."""
    try:
        module = load_reference()
    except ReferenceUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    assert module.AdamP is not adamp.AdamP
    assert Path(module.__file__).resolve().is_relative_to(DEFAULT_CACHE)
    assert Path(sys.modules["adamp"].__file__).resolve().is_relative_to(REPO_ROOT / "adamp")
    return module
