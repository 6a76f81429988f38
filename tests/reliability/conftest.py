"""Fixtures for tests/reliability: the quick versions of the scenarios in benchmarks/soak/.

Each scenario starts the soak app in a subprocess (``mlsockets serve`` or gunicorn) and its
clients in others, all on 127.0.0.1; ``benchmarks.soak.procs.Processes`` kills and reaps
every one of them when the scenario ends, also on failure. ``make soak`` runs the same
scenarios at full scale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a namespace package at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.soak.procs import loadgen_binary  # noqa: E402


@pytest.fixture(scope="session")
def loadgen() -> Path:
    """The shared C load generator (built from ../shared/tools/bench on first use)."""
    try:
        return loadgen_binary()
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no load generator: {exc}")
