"""A short soak (quick scale: 500 connections, 5 s; ``make soak`` runs 10,000 for 10 minutes).

Steady broadcasts and echoes with no errors, every connection still open at the end, and the
server's fds and greenlets flat across the samples (a trend needs the long run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import checks, soak


@pytest.mark.usefixtures("loadgen")
def test_short_soak_has_no_errors_and_flat_resources(tmp_path: Path) -> None:
    result = soak.run(
        tmp_path, minutes=5 / 60, connections=500, gap_ms=50, sample_every=0.5, warmup=0.2
    )
    failures = [f for f in checks.soak(result) if "grows" not in f]  # trends: the long run
    assert failures == []
    assert result["broadcasts"] > 0
    assert result["websockets_open_at_end"] == 499  # all but the stopped echo prober
    assert len(result["samples"]) >= 5
    fds, greenlets = result["fds_range"], result["greenlets_range"]
    assert fds[1] - fds[0] <= 2, result["samples"]
    assert greenlets[1] - greenlets[0] <= 3, result["samples"]
