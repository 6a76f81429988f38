#!/usr/bin/env python3
"""Fuzz target `relay`: input layout and invariants in harnesses/relay.py.

Run: `fuzz/run.py relay [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("relay")
