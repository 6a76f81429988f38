#!/usr/bin/env python3
"""Fuzz target `envelope_msgpack`: input layout and invariants in harnesses/envelope_msgpack.py.

Run: `fuzz/run.py envelope_msgpack [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("envelope_msgpack")
