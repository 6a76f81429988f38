"""Reload listeners: components that follow a configuration reload (SIGHUP on
``mlsockets serve``) register here; the server tells them once it applied a reload."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

from .schema import Settings

__all__ = ["ReloadCallback", "on_reload", "notify_reload"]

logger = logging.getLogger("mlsockets.config")

ReloadCallback = Callable[[Settings], None]

_listeners: list[Callable[[], ReloadCallback | None]] = []
_listeners_lock = threading.Lock()


def on_reload(callback: ReloadCallback) -> Callable[[], None]:
    """Call ``callback(settings)`` after each successful reload of this process's settings.

    A bound method is held weakly (its object may be collected: it is then forgotten); any
    other callable strongly. Returns a function that unregisters the callback. A callback
    that raises is logged with its traceback and does not stop the others.
    """
    ref: Callable[[], ReloadCallback | None]
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        ref = weakref.WeakMethod(callback)
    else:

        def ref() -> ReloadCallback:
            return callback

    with _listeners_lock:
        _listeners.append(ref)

    def unregister() -> None:
        with _listeners_lock:
            if ref in _listeners:
                _listeners.remove(ref)

    return unregister


def notify_reload(settings: Settings) -> int:
    """Tell every :func:`on_reload` callback about ``settings``; returns how many ran."""
    with _listeners_lock:
        refs = list(_listeners)
    ran = 0
    for ref in refs:
        callback = ref()
        if callback is None:
            with _listeners_lock:
                if ref in _listeners:
                    _listeners.remove(ref)
            continue
        try:
            callback(settings)
            ran += 1
        except Exception:
            logger.exception("a configuration reload listener failed")
    return ran
