"""Monkey-patching, done once, before the application is imported (never at import time)."""

from __future__ import annotations

__all__ = ["patch"]


def patch() -> None:
    """``gevent.monkey.patch_all()``; a no-op when the process is already patched."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
