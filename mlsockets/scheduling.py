"""Timers as an injected dependency, so the domain never reads a clock or sleeps.

The domain (presence grace periods, for one) asks a :class:`Scheduler` to call a function
later and keeps the :class:`Timer` to cancel it. The gevent transport provides a scheduler
backed by greenlets; tests and deterministic tools use :class:`ManualScheduler`, whose time
moves only when :meth:`ManualScheduler.advance` is called::

    scheduler = ManualScheduler()
    timer = scheduler.call_later(5.0, callback)
    scheduler.advance(4.9)   # nothing runs
    scheduler.advance(0.1)   # callback() runs, with scheduler.clock() == 5.0

Stdlib only, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Protocol

__all__ = ["Timer", "Scheduler", "ManualClock", "ManualTimer", "ManualScheduler"]


class Timer(Protocol):
    """A pending call returned by :meth:`Scheduler.call_later`."""

    def cancel(self) -> None:
        """Prevent the call if it has not run yet; a no-op afterwards, and when repeated."""


class Scheduler(Protocol):
    """Runs functions later. Implementations decide which thread or greenlet runs them."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Call ``fn()`` once, ``delay`` seconds from now, unless the timer is cancelled.

        Exceptions raised by ``fn`` are the implementation's to report (a greenlet-backed
        scheduler logs them); they never reach the code that scheduled the call.
        """
        ...


class ManualClock:
    """A monotonic clock that moves only when told: pass it wherever a ``clock`` is injected.

    Calling the instance returns the current time, like :func:`time.monotonic`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; ``seconds`` must be >= 0 (a monotonic clock never goes back).

        This does not run any timer: use :meth:`ManualScheduler.advance` for that.
        """
        _check_duration(seconds, "seconds")
        self._now += seconds

    def _set(self, when: float) -> None:
        # Used by ManualScheduler only, with a time it knows is not in the past.
        self._now = when


class ManualTimer:
    """A timer of a :class:`ManualScheduler`.

    Attributes:
        due: the clock time at which it runs.
    """

    __slots__ = ("due", "_fn", "_cancelled", "_done")

    def __init__(self, due: float, fn: Callable[[], None]) -> None:
        self.due = due
        self._fn = fn
        self._cancelled = False
        self._done = False

    def cancel(self) -> None:
        """Prevent the call if it has not run yet; a no-op afterwards."""
        if not self._done:
            self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """True when :meth:`cancel` was called before the timer ran."""
        return self._cancelled

    @property
    def pending(self) -> bool:
        """True until the timer runs or is cancelled."""
        return not (self._cancelled or self._done)

    def _run(self) -> None:
        self._done = True
        self._fn()


class ManualScheduler:
    """A deterministic :class:`Scheduler`: timers run only inside :meth:`advance`.

    Timers run in order of due time, and timers due at the same time in the order they were
    scheduled. Before each timer runs, the clock is set to its due time, so the callback sees
    the time it was scheduled for; a callback may schedule further timers, which run in the
    same :meth:`advance` call if they fall due within it.

    Args:
        clock: the clock to read and move; a new :class:`ManualClock` at 0.0 by default.
            Share it with the code under test (``Hub(clock=scheduler.clock, ...)``) so timers
            and time-based limits agree.
    """

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock if clock is not None else ManualClock()
        # (due, sequence, timer): the sequence keeps ties in scheduling order and keeps
        # heapq from ever comparing two timers.
        self._heap: list[tuple[float, int, ManualTimer]] = []
        self._sequence = itertools.count()

    def call_later(self, delay: float, fn: Callable[[], None]) -> ManualTimer:
        """Schedule ``fn()`` at ``clock() + delay``; ``delay`` must be >= 0.

        A zero delay runs at the next :meth:`advance`, even ``advance(0)``, never inline.
        """
        _check_duration(delay, "delay")
        timer = ManualTimer(self.clock() + delay, fn)
        heapq.heappush(self._heap, (timer.due, next(self._sequence), timer))
        return timer

    def advance(self, seconds: float = 0.0) -> int:
        """Move the clock forward by ``seconds``, running every timer that falls due.

        Returns the number of callbacks run. An exception from a callback propagates (a
        test should see it): the clock then stays at that timer's due time, and timers due
        later stay pending for the next call.
        """
        _check_duration(seconds, "seconds")
        target = self.clock() + seconds
        ran = 0
        while self._heap and self._heap[0][0] <= target:
            due, _, timer = heapq.heappop(self._heap)
            if not timer.pending:
                continue  # cancelled: dropped lazily, cheaper than removing from the heap
            self.clock._set(due)
            ran += 1
            timer._run()
        self.clock._set(target)
        return ran

    @property
    def pending(self) -> int:
        """The number of timers neither run nor cancelled."""
        return sum(1 for _, _, timer in self._heap if timer.pending)

    def next_due(self) -> float | None:
        """The due time of the earliest pending timer, or None when there is none."""
        while self._heap and not self._heap[0][2].pending:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


def _check_duration(value: float, name: str) -> None:
    # NaN compares false with everything, so `value < 0` alone would let it through and
    # then poison every later comparison in the heap.
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
