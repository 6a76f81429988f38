#!/usr/bin/env python3
"""Fuzz target `envelope_json`: input layout and invariants in harnesses/envelope_json.py.

Run: `fuzz/run.py envelope_json [seconds]`, or this script with libFuzzer flags and corpus dirs.
"""

from _engine import main

if __name__ == "__main__":
    main("envelope_json")
