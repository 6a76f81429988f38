"""Slow consumers among readers of broadcasts (quick scale; ``make soak`` runs 1,000 readers).

The stalled clients' outbound queues stay under ``max_queue``, each is closed with 1008 and a
WARNING, no reading client is dropped, and the readers' delivery rate is compared with a run
without stalled clients in the same server. On a loaded shared machine only a loose rate
bound is asserted here (30% of the baseline); the full run asserts 90%.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import checks, slow


@pytest.mark.usefixtures("loadgen")
@pytest.mark.parametrize(
    ("readers", "stalled"), [(199, 1), (180, 20)], ids=["one-stalled", "ten-percent-stalled"]
)
def test_stalled_clients_are_dropped_and_readers_keep_their_rate(
    tmp_path: Path, readers: int, stalled: int
) -> None:
    result = slow.run(
        tmp_path, readers=readers, stalled=stalled, size=16384, broadcasts=400, repeats=1
    )
    assert checks.slow(result, min_ratio=0.3) == []
    assert result["close_codes"].get(slow.SLOW) == stalled
    assert "dropping slow consumer" in result["warning_example"]
