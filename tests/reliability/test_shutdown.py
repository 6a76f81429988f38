"""SIGTERM under load on ``mlsockets serve`` and gunicorn, and gunicorn's HUP reload (quick
scale: 1,000 clients; ``make soak`` runs 5,000).

Every client gets Close 1001, every frame it received parses, none arrives after the Close,
and the server exits with status 0 within ``shutdown_grace``; on HUP a new worker takes over
while new handshakes keep succeeding.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import checks, shutdown


@pytest.mark.parametrize("gunicorn", [False, True], ids=["mlsockets-serve", "gunicorn"])
def test_sigterm_closes_every_client_with_1001(tmp_path: Path, gunicorn: bool) -> None:
    result = shutdown.sigterm(tmp_path, clients=1000, gunicorn=gunicorn, grace=10.0)
    assert checks.sigterm(result) == []
    assert result["messages_received"] > 0  # broadcasts were in flight


def test_gunicorn_hup_reload_keeps_answering(tmp_path: Path) -> None:
    result = shutdown.reload(tmp_path, clients=300)
    assert checks.reload(result) == []
