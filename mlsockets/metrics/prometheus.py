"""The Prometheus backend: the only module that imports prometheus_client.

Installed by :func:`mlsockets.metrics.enable`; the rest of mlsockets never calls it directly.
:data:`DEFINITIONS` is the list of every metric (docs/metrics.md documents each one, and a
test checks that the page names them all).

Counters are folded from :data:`mlsockets.metrics.COUNTS` by difference: the backend remembers
what it already added and adds what is new, so folding often costs nothing extra and counting
never waits for it. In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the process
starts) each process writes its values to files in that directory and a scrape, answered by
any process, sums them: gauges use ``livesum``, so a dead worker's open connections and relay
state stop counting once :func:`mark_process_dead` ran for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from weakref import WeakKeyDictionary

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from mlsockets.exceptions import ConfigurationError
from mlsockets.metrics import MULTIPROC_ENV, Counts, RelaySource

__all__ = ["DEFINITIONS", "MAX_EVENT_LABELS", "Definition", "Prometheus", "mark_process_dead"]

#: Distinct event names the handler histogram labels; later ones are counted as ``other``
#: (each label value costs a time series per bucket, and event names come from clients'
#: choice of handler names only through the app's router, but a cap keeps a mistake cheap).
MAX_EVENT_LABELS = 64
OTHER = "other"

#: Relay states always exported (0 when no relay is in them), so queries need no ``or``.
RELAY_STATES = ("idle", "connecting", "connected", "reconnecting", "closed")

_HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_PUBLISH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


@dataclass(frozen=True, slots=True)
class Definition:
    """One metric: its Prometheus type, full name (counters end in ``_total``), help, labels."""

    kind: Literal["counter", "gauge", "histogram"]
    name: str
    help: str
    labels: tuple[str, ...] = ()


DEFINITIONS = (
    Definition("gauge", "mlsockets_connections_open", "WebSocket connections open now"),
    Definition("counter", "mlsockets_connections_total", "WebSocket connections opened"),
    Definition(
        "counter",
        "mlsockets_handshakes_total",
        "WebSocket handshakes by the HTTP status they were answered with",
        ("status",),
    ),
    Definition("counter", "mlsockets_messages_received_total", "WebSocket messages received"),
    Definition(
        "counter",
        "mlsockets_messages_sent_total",
        "WebSocket messages sent (a broadcast counts one per receiver)",
    ),
    Definition(
        "counter",
        "mlsockets_bytes_received_total",
        "Bytes read from WebSocket connections, frame headers included",
    ),
    Definition(
        "counter",
        "mlsockets_bytes_sent_total",
        "Bytes written to WebSocket connections, frame headers included",
    ),
    Definition(
        "counter",
        "mlsockets_error_replies_total",
        "Error replies and mls.error events sent to clients, by error code",
        ("code",),
    ),
    Definition(
        "counter",
        "mlsockets_slow_consumer_disconnects_total",
        "Connections dropped with 1008 because their send queue overflowed",
    ),
    Definition(
        "counter",
        "mlsockets_close_codes_sent_total",
        "Close frames sent, by close code",
        ("code",),
    ),
    Definition(
        "counter",
        "mlsockets_close_codes_received_total",
        "Connection ends by the close code received (1006: closed without a Close frame)",
        ("code",),
    ),
    Definition(
        "histogram",
        "mlsockets_event_handler_seconds",
        "Time to validate and run an event handler, by event",
        ("event",),
    ),
    Definition(
        "gauge",
        "mlsockets_relay_state",
        "Cluster relays (one per process) in each state",
        ("state",),
    ),
    Definition(
        "counter",
        "mlsockets_relay_reconnects_total",
        "Successful reconnections of the cluster relay to Redis",
    ),
    Definition(
        "counter",
        "mlsockets_relay_disconnects_total",
        "Connections to Redis the cluster relay lost",
    ),
    Definition(
        "counter",
        "mlsockets_relay_published_total",
        "Relay messages published to the other processes",
    ),
    Definition(
        "histogram",
        "mlsockets_publish_seconds",
        "Time of one publish to the other processes, by source",
        ("source",),
    ),
    Definition(
        "counter",
        "mlsockets_publish_failures_total",
        "Publishes to the other processes that raised, by source",
        ("source",),
    ),
    Definition(
        "counter",
        "mlsockets_broadcast_dropped_total",
        "Deliveries a broadcaster lost (undecodable relay messages, full queues), by broadcaster",
        ("broadcaster",),
    ),
)

_Metric = Counter | Gauge | Histogram


def _build(definition: Definition, registry: CollectorRegistry) -> _Metric:
    if definition.kind == "counter":
        return Counter(definition.name, definition.help, definition.labels, registry=registry)
    if definition.kind == "gauge":
        # livesum: in multiprocess mode, the sum over the processes alive now.
        return Gauge(
            definition.name,
            definition.help,
            definition.labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
    buckets = _HANDLER_BUCKETS if "handler" in definition.name else _PUBLISH_BUCKETS
    return Histogram(
        definition.name, definition.help, definition.labels, registry=registry, buckets=buckets
    )


class Prometheus:
    """The backend (see :class:`mlsockets.metrics.Backend`); one per process.

    Raises:
        ConfigurationError: ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a writable
            directory.
    """

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir is not None and not (
            os.path.isdir(self.multiprocess_dir) and os.access(self.multiprocess_dir, os.W_OK)
        ):
            raise ConfigurationError(
                f"{MULTIPROC_ENV}={self.multiprocess_dir!r} is not a writable directory"
            )
        self.registry = CollectorRegistry()
        self.metrics: dict[str, _Metric] = {d.name: _build(d, self.registry) for d in DEFINITIONS}
        self._last: dict[tuple[object, ...], int] = {}
        self._relay_last: WeakKeyDictionary[RelaySource, dict[str, int]] = WeakKeyDictionary()
        self._events: set[str] = set()

    def _counter(self, name: str) -> Counter:
        metric = self.metrics[name]
        assert isinstance(metric, Counter)
        return metric

    def _histogram(self, name: str) -> Histogram:
        metric = self.metrics[name]
        assert isinstance(metric, Histogram)
        return metric

    def _gauge(self, name: str) -> Gauge:
        metric = self.metrics[name]
        assert isinstance(metric, Gauge)
        return metric

    # -- folding -----------------------------------------------------------------------------

    def _add(self, name: str, value: int, *label: object) -> None:
        """Add what ``value`` (a monotonic count) grew by since the last fold."""
        key = (name, *label)
        delta = value - self._last.get(key, 0)
        if delta > 0:
            self._last[key] = value
            counter = self._counter(name)
            (counter.labels(*label) if label else counter).inc(delta)

    def fold(self, counts: Counts, relays: Iterable[RelaySource]) -> None:
        """See :meth:`mlsockets.metrics.Backend.fold` (the caller holds the fold lock)."""
        self._gauge("mlsockets_connections_open").set(counts.opened - counts.closed)
        self._add("mlsockets_connections_total", counts.opened)
        self._add("mlsockets_messages_received_total", counts.messages_in)
        self._add("mlsockets_messages_sent_total", counts.messages_out)
        self._add("mlsockets_bytes_received_total", counts.bytes_in)
        self._add("mlsockets_bytes_sent_total", counts.bytes_out)
        self._add("mlsockets_slow_consumer_disconnects_total", counts.slow_consumers)
        labelled = (
            ("mlsockets_handshakes_total", counts.handshakes),
            ("mlsockets_error_replies_total", counts.errors),
            ("mlsockets_close_codes_sent_total", counts.close_sent),
            ("mlsockets_close_codes_received_total", counts.close_received),
            ("mlsockets_broadcast_dropped_total", counts.dropped),
            ("mlsockets_publish_failures_total", counts.publish_failures),
        )
        for name, by_label in labelled:
            for label, value in list(by_label.items()):
                self._add(name, value, str(label))
        self._fold_relays(relays)

    def _fold_relays(self, relays: Iterable[RelaySource]) -> None:
        states = dict.fromkeys(RELAY_STATES, 0)
        totals = {"reconnects": 0, "disconnects": 0, "published": 0, "failures": 0, "dropped": 0}
        for relay in relays:
            state = str(relay.state)
            states[state] = states.get(state, 0) + 1
            stats = relay.stats
            now = {
                "reconnects": max(stats.connects - 1, 0),
                "disconnects": stats.disconnects,
                "published": stats.published,
                "failures": stats.publish_failures,
                "dropped": stats.dropped,
            }
            last = self._relay_last.get(relay, {})
            for key, value in now.items():
                totals[key] += max(value - last.get(key, 0), 0)
            self._relay_last[relay] = now
        gauge = self._gauge("mlsockets_relay_state")
        for state, count in states.items():
            gauge.labels(state).set(count)
        for name, key, label in (
            ("mlsockets_relay_reconnects_total", "reconnects", None),
            ("mlsockets_relay_disconnects_total", "disconnects", None),
            ("mlsockets_relay_published_total", "published", None),
            ("mlsockets_publish_failures_total", "failures", "redis"),
            ("mlsockets_broadcast_dropped_total", "dropped", "redis"),
        ):
            if totals[key]:
                counter = self._counter(name)
                (counter.labels(label) if label else counter).inc(totals[key])

    # -- observations ------------------------------------------------------------------------

    def observe_handler(self, event: str, seconds: float) -> None:
        events = self._events
        if event not in events:
            if len(events) >= MAX_EVENT_LABELS:
                event = OTHER
            else:
                events.add(event)
        self._histogram("mlsockets_event_handler_seconds").labels(event).observe(seconds)

    def observe_publish(self, source: str, seconds: float) -> None:
        self._histogram("mlsockets_publish_seconds").labels(source).observe(seconds)

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> tuple[str, bytes]:
        """Every process's metrics in multiprocess mode, else this process's."""
        if self.multiprocess_dir is not None:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return CONTENT_TYPE_LATEST, generate_latest(registry)
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def process_exit(self, pid: int) -> None:
        if self.multiprocess_dir is not None:
            _multiprocess.mark_process_dead(pid, self.multiprocess_dir)  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int) -> None:
    """Remove process ``pid``'s live gauges from the multiprocess totals."""
    _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
