"""Prometheus metrics served by the Flask app at ``MLSOCKETS_METRICS_PATH`` (e.g. ``/metrics``).

The extension calls :func:`register_metrics_route` from ``init_app`` when the setting is set.
The view goes through :mod:`mlsockets.metrics` (the only Prometheus user is its backend), so a
scrape folds this process's counts and, in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``),
answers for every gunicorn worker. Protect the path like any internal endpoint (nginx
``allow``/``deny``, or a separate listener with ``Server(metrics_bind=...)``).
"""

from __future__ import annotations

from flask import Flask, Response

from mlsockets import metrics

__all__ = ["METRICS_ENDPOINT", "register_metrics_route"]

#: The endpoint name of the metrics route.
METRICS_ENDPOINT = "mlsockets_metrics"


def register_metrics_route(app: Flask, path: str) -> None:
    """Enable the metrics backend and serve the exposition at ``path`` (GET).

    Raises:
        ConfigurationError: prometheus-client is not installed, or
            ``PROMETHEUS_MULTIPROC_DIR`` is not a writable directory.
    """
    metrics.enable()
    app.add_url_rule(path, endpoint=METRICS_ENDPOINT, view_func=_metrics_view, methods=["GET"])


def _metrics_view() -> Response:
    content_type, body = metrics.exposition()
    return Response(body, content_type=content_type)
