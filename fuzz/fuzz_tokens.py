#!/usr/bin/env python3
"""Fuzz target `tokens`: input layout and invariants in harnesses/tokens.py.

Run: `fuzz/run.py tokens [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("tokens")
