"""A short libFuzzer run of every target (fuzz/run.py), as ``make test`` runs it.

Each target replays its committed corpus and regressions, then mutates for
:data:`SECONDS` seconds. The targets run side by side (each is its own process, and each
stops on its own clock), so the whole module takes a few seconds more than one target. A
crash fails the target's test with the reproducer's path and libFuzzer's report.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_support import FUZZ
from harnesses import TARGETS

SECONDS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, str, Path]]]:
    """Start every target, wait for all; yield target -> (status, output, output dir)."""
    started: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    try:
        for target in TARGETS:
            out = tmp_path_factory.mktemp(f"fuzz-{target}")
            cmd = [sys.executable, str(FUZZ / "run.py"), target, str(SECONDS), "--out", str(out)]
            started[target] = (
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                out,
            )
        results = {}
        for target, (process, out) in started.items():
            output, _ = process.communicate(timeout=50)
            results[target] = (process.returncode, output, out)
        yield results
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_clean(runs: dict[str, tuple[int, str, Path]], target: str) -> None:
    status, output, out = runs[target]
    assert status == 0, f"fuzz target {target} failed (reproducer path below):\n{output}"
    log = (out / f"fuzz-{target}.log").read_text()
    # The committed corpus was read and replayed (INITED follows the replay), then the run
    # ended on its clock having executed at least the corpus.
    corpus = re.search(r"seed corpus: files: (\d+)", log)
    assert corpus is not None and int(corpus.group(1)) > 0, log[-2000:]
    assert re.search(r"#\d+\s+INITED", log), log[-2000:]
    done = re.search(r"#(\d+)\s+DONE", log)
    assert done is not None and int(done.group(1)) >= int(corpus.group(1)), log[-2000:]
