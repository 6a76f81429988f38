"""Fixtures for tests/protocol: ``wire`` exposes the hand-written byte helpers of helpers.py.

tests/ has no ``__init__.py``, so a bare ``import helpers`` could pick up another directory's
helpers.py; the module is loaded once by path under a unique name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_HELPERS_NAME = "mlsockets_tests_protocol_helpers"


def _load_helpers() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        _HELPERS_NAME, Path(__file__).with_name("helpers.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_HELPERS_NAME] = module
    spec.loader.exec_module(module)
    return module


_helpers = _load_helpers()


@pytest.fixture(scope="session")
def wire() -> ModuleType:
    """The helpers module: frame builders, a hand parser, Protocol pairs, HTTP parsing."""
    return _helpers
