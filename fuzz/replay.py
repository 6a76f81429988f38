"""Replay inputs through a harness without libFuzzer: to debug a reproducer, or to measure
what the corpus covers with coverage.py.

Usage::

    .venv/bin/python fuzz/replay.py <target> [FILE_OR_DIR ...]

With no paths, replays ``fuzz/corpus/<target>/`` and ``fuzz/regressions/<target>/``. The
first input that breaks the harness raises with its traceback, after its path is printed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ))

from harnesses import TARGETS  # noqa: E402 - the path is set just above


def inputs(paths: list[Path]) -> list[Path]:
    """The files named, and the files in the directories named, sorted."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.paths or [
        d for d in (FUZZ / "corpus" / args.target, FUZZ / "regressions" / args.target) if d.is_dir()
    ]
    test_one_input = importlib.import_module(f"harnesses.{args.target}").test_one_input
    files = inputs(paths)
    for path in files:
        try:
            test_one_input(path.read_bytes())
        except BaseException:
            print(f"{args.target}: {path} breaks the harness", file=sys.stderr)
            raise
    print(f"{args.target}: {len(files)} inputs passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
