"""Runs one harness under atheris / libFuzzer: the only module of fuzz/ that imports atheris.

The harness module is imported inside ``atheris.instrument_imports()`` so that every mlsockets
module it loads is instrumented for coverage. Nothing may import mlsockets before that.
"""

from __future__ import annotations

import importlib
import sys

import atheris


def main(target: str) -> None:
    """Fuzz ``harnesses.<target>``; libFuzzer reads its flags and corpus dirs from argv."""
    with atheris.instrument_imports(include=["mlsockets"]):
        harness = importlib.import_module(f"harnesses.{target}")
    atheris.Setup(sys.argv, harness.test_one_input)
    atheris.Fuzz()
