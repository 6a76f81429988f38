"""The instrumentation API without servers: a leaf that costs nothing without a backend,
folding by difference, the label cap, multiprocess set-up errors, and docs/metrics.md."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from mlsockets import metrics
from mlsockets.exceptions import ConfigurationError
from mlsockets.metrics import Counts
from mlsockets.metrics.prometheus import DEFINITIONS, MAX_EVENT_LABELS, Prometheus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_backend() -> Iterator[None]:
    previous = metrics.set_backend(None)
    yield
    metrics.set_backend(previous)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_api_is_a_leaf_that_imports_no_backend() -> None:
    result = _run(
        "import sys, mlsockets.metrics as m\n"
        "m.handshake(101); m.error_reply('invalid'); m.event_handled('e', 0.1)\n"
        "m.published('redis', 0.1); m.broadcast_dropped(2, broadcaster='unix'); m.fold()\n"
        "heavy = {'prometheus_client', 'gevent', 'flask', 'redis'} & set(sys.modules)\n"
        "print(sorted(heavy), m.enabled(), m.COUNTS.handshakes, m.COUNTS.dropped)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False {101: 1} {'unix': 2}"


def test_enable_without_prometheus_client_says_what_to_install() -> None:
    result = _run(
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from mlsockets import metrics\n"
        "try:\n    metrics.enable()\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ConfigurationError metrics need prometheus-client")
    assert "pip install 'mlsockets[metrics]'" in result.stdout


def test_no_backend_makes_observations_no_ops_and_exposition_an_error(no_backend: None) -> None:
    metrics.event_handled("x", 1.0)
    metrics.published("redis", 1.0)
    metrics.fold()
    with pytest.raises(ConfigurationError, match="metrics are not enabled"):
        metrics.exposition()


def _text(backend: Prometheus) -> str:
    return generate_latest(backend.registry).decode()


def test_fold_adds_only_what_grew() -> None:
    backend, counts = Prometheus(), Counts()
    counts.opened, counts.closed, counts.messages_in = 5, 2, 10
    counts.handshakes[101] = 5
    counts.errors["invalid"] = 1
    backend.fold(counts, [])
    backend.fold(counts, [])  # nothing new: nothing added
    counts.messages_in += 4
    counts.closed += 1
    backend.fold(counts, [])
    text = _text(backend)
    assert "mlsockets_messages_received_total 14.0" in text
    assert "mlsockets_connections_open 2.0" in text
    assert 'mlsockets_handshakes_total{status="101"} 5.0' in text
    assert 'mlsockets_error_replies_total{code="invalid"} 1.0' in text
    assert 'mlsockets_relay_state{state="connected"} 0.0' in text


def test_event_labels_are_capped() -> None:
    backend = Prometheus()
    for i in range(MAX_EVENT_LABELS + 10):
        backend.observe_handler(f"event.{i}", 0.001)
    backend.observe_handler("event.0", 0.001)  # a known one keeps its label
    text = _text(backend)
    labels = set(re.findall(r'mlsockets_event_handler_seconds_count\{event="([^"]+)"\}', text))
    assert len(labels) == MAX_EVENT_LABELS + 1
    assert 'mlsockets_event_handler_seconds_count{event="other"} 10.0' in text
    assert 'mlsockets_event_handler_seconds_count{event="event.0"} 2.0' in text


def test_multiprocess_dir_must_be_a_writable_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR=.*missing"):
        Prometheus()


def test_clear_multiprocess_dir_removes_stale_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    metrics.clear_multiprocess_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_gunicorn_without_multiprocess_dir_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(metrics, "_under_gunicorn", False)
    monkeypatch.setattr(metrics, "_warned_per_worker", False)
    metrics.enable()
    caplog.set_level(logging.WARNING, logger="mlsockets.metrics")
    metrics.gunicorn_worker()
    metrics.gunicorn_worker()
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlsockets.metrics"]
    assert len(warnings) == 1
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in warnings[0]
    assert "each gunicorn worker counts its own metrics" in warnings[0]


def test_docs_list_every_registered_metric() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    registered = set()
    for family in Prometheus().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        registered.add(name)
    assert registered == {d.name for d in DEFINITIONS}
    missing = sorted(name for name in registered if f"`{name}`" not in page)
    assert not missing, f"docs/metrics.md does not document {missing}"
