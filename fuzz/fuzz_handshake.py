#!/usr/bin/env python3
"""Fuzz target `handshake`: input layout and invariants in harnesses/handshake.py.

Run: `fuzz/run.py handshake [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("handshake")
