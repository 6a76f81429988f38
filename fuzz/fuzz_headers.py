#!/usr/bin/env python3
"""Fuzz target `headers`: input layout and invariants in harnesses/headers.py.

Run: `fuzz/run.py headers [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("headers")
