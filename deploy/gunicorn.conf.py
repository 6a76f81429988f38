"""gunicorn settings for an mlsockets app: ``gunicorn -c deploy/gunicorn.conf.py myapp:app``.

WebSocket settings come from MLSOCKETS_* environment variables (docs/serving.md).
"""

import multiprocessing
import os

bind = os.environ.get("MLSOCKETS_BIND", "127.0.0.1:8000")
worker_class = "mlsockets.gunicorn.GeventWebSocketWorker"
# One gevent worker serves thousands of connections; more workers use more cores. Without a
# cluster broadcaster, broadcasts reach only the worker they were emitted in.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = 10000
# Long-lived WebSockets: the worker heartbeat is separate from request time.
timeout = 30
graceful_timeout = 15  # WebSockets get 1001 and this long to finish closing
keepalive = 5

# Prometheus metrics across workers (docs/metrics.md): export PROMETHEUS_MULTIPROC_DIR, an
# empty directory, before starting gunicorn. Stale files of the last run are removed at
# start, and a worker that died (even by SIGKILL) stops counting in the live gauges.


def on_starting(server):
    from mlsockets import metrics

    metrics.clear_multiprocess_dir()


def child_exit(server, worker):
    from mlsockets import metrics

    metrics.mark_process_dead(worker.pid)
