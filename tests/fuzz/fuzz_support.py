"""Support for tests/fuzz: the fuzz harnesses (fuzz/harnesses/) and where they live.

The harnesses live outside the package (fuzz/ is not installed), so fuzz/ is put on
``sys.path`` once, here, the way ``fuzz/run.py`` and the targets find them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ) not in sys.path:
    sys.path.insert(0, str(FUZZ))


def harness(target: str) -> Callable[[bytes], None]:
    """The ``test_one_input`` of ``fuzz/harnesses/<target>.py``."""
    module = importlib.import_module(f"harnesses.{target}")
    function: Callable[[bytes], None] = module.test_one_input
    return function
