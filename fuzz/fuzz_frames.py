#!/usr/bin/env python3
"""Fuzz target `frames`: input layout and invariants in harnesses/frames.py.

Run: `fuzz/run.py frames [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("frames")
