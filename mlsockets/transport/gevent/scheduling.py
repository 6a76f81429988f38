"""Timers for the hub (presence grace periods) on the gevent loop: no greenlet per timer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent import get_hub

__all__ = ["GeventScheduler", "GeventTimer"]

logger = logging.getLogger("mlsockets.transport")


class GeventTimer:
    """A pending call; :meth:`cancel` is idempotent."""

    __slots__ = ("_watcher",)

    def __init__(self, watcher: Any) -> None:
        self._watcher = watcher

    def cancel(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            self._watcher = None
            watcher.stop()
            watcher.close()


class GeventScheduler:
    """``call_later(delay, fn)`` on the hub's libev loop; ``fn`` runs in a new greenlet so it
    may block, and its exceptions are logged, never raised into the loop."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> GeventTimer:
        watcher = get_hub().loop.timer(max(0.0, delay))
        timer = GeventTimer(watcher)

        def fire() -> None:
            timer.cancel()
            get_hub().loop.run_callback(_spawn, fn)

        watcher.start(fire)
        return timer


def _spawn(fn: Callable[[], None]) -> None:
    def run() -> None:
        try:
            fn()
        except Exception:
            logger.exception("scheduled call failed")

    gevent.spawn_raw(run)
