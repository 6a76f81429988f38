"""ManualClock and ManualScheduler: timers run only inside advance(), in due order."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from mlsockets.scheduling import ManualClock, ManualScheduler, Scheduler, Timer


class Recorder:
    """Callbacks that record their name and the scheduler's time when they ran."""

    def __init__(self, scheduler: ManualScheduler) -> None:
        self.scheduler = scheduler
        self.calls: list[tuple[str, float]] = []

    def cb(self, name: str) -> Callable[[], None]:
        return lambda: self.calls.append((name, self.scheduler.clock()))


@pytest.fixture
def scheduler() -> ManualScheduler:
    return ManualScheduler()


@pytest.fixture
def rec(scheduler: ManualScheduler) -> Recorder:
    return Recorder(scheduler)


class TestManualClock:
    def test_starts_at_zero_or_given_time(self) -> None:
        assert ManualClock()() == 0.0
        clock = ManualClock(12.5)
        assert clock() == clock.now == 12.5

    def test_advance_moves_forward(self) -> None:
        clock = ManualClock()
        clock.advance(1.5)
        clock.advance(0)
        assert clock() == 1.5

    @pytest.mark.parametrize("bad", [-0.001, -1, math.nan])
    def test_advance_refuses_going_back_or_nan(self, bad: float) -> None:
        clock = ManualClock()
        with pytest.raises(ValueError, match="seconds must be a number >= 0"):
            clock.advance(bad)
        assert clock() == 0.0

    def test_advancing_the_clock_alone_runs_no_timer(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        scheduler.call_later(1, rec.cb("a"))
        scheduler.clock.advance(5)
        assert rec.calls == []
        # The timer is overdue: the next advance runs it, at its due time.
        assert scheduler.advance(0) == 1
        assert rec.calls == [("a", 1.0)]
        assert scheduler.clock() == 5.0


class TestManualScheduler:
    def test_is_a_scheduler(self, scheduler: ManualScheduler) -> None:
        as_protocol: Scheduler = scheduler
        timer: Timer = as_protocol.call_later(1, lambda: None)
        timer.cancel()

    def test_timer_runs_at_its_due_time_not_before(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        timer = scheduler.call_later(5, rec.cb("a"))
        assert timer.due == 5.0 and timer.pending
        assert scheduler.advance(4.999) == 0
        assert rec.calls == []
        assert scheduler.advance(0.001) == 1
        assert rec.calls == [("a", 5.0)]
        assert (timer.pending, timer.cancelled) == (False, False)

    def test_callback_sees_its_due_time_and_clock_ends_at_target(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        scheduler.call_later(2, rec.cb("a"))
        scheduler.call_later(7, rec.cb("b"))
        assert scheduler.advance(10) == 2
        assert rec.calls == [("a", 2.0), ("b", 7.0)]
        assert scheduler.clock() == 10.0

    def test_due_order_then_scheduling_order(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        scheduler.call_later(3, rec.cb("late"))
        scheduler.call_later(1, rec.cb("tie-1"))
        scheduler.call_later(1, rec.cb("tie-2"))
        scheduler.call_later(0.5, rec.cb("early"))
        scheduler.call_later(1, rec.cb("tie-3"))
        scheduler.advance(3)
        assert [name for name, _ in rec.calls] == ["early", "tie-1", "tie-2", "tie-3", "late"]

    def test_delay_is_relative_to_the_current_time(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        scheduler.advance(10)
        timer = scheduler.call_later(2, rec.cb("a"))
        assert timer.due == 12.0
        scheduler.advance(2)
        assert rec.calls == [("a", 12.0)]

    def test_zero_delay_never_runs_inline(self, scheduler: ManualScheduler, rec: Recorder) -> None:
        scheduler.call_later(0, rec.cb("a"))
        assert rec.calls == []
        assert scheduler.advance() == 1
        assert rec.calls == [("a", 0.0)]

    def test_cancelled_timer_does_not_run(self, scheduler: ManualScheduler, rec: Recorder) -> None:
        timer = scheduler.call_later(1, rec.cb("a"))
        scheduler.call_later(2, rec.cb("b"))
        timer.cancel()
        timer.cancel()  # idempotent
        assert timer.cancelled and not timer.pending
        assert scheduler.pending == 1
        assert scheduler.advance(5) == 1
        assert rec.calls == [("b", 2.0)]

    def test_cancel_after_running_is_a_no_op(self, scheduler: ManualScheduler) -> None:
        timer = scheduler.call_later(1, lambda: None)
        scheduler.advance(1)
        timer.cancel()
        assert not timer.cancelled and not timer.pending

    def test_a_callback_can_cancel_a_timer_due_at_the_same_time(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        victim: list[Timer] = []
        scheduler.call_later(1, lambda: victim[0].cancel())
        victim.append(scheduler.call_later(1, rec.cb("victim")))
        assert scheduler.advance(1) == 1
        assert rec.calls == []

    def test_timers_scheduled_by_callbacks_run_within_the_same_advance(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        def chain() -> None:
            rec.calls.append(("chain", scheduler.clock()))
            scheduler.call_later(1, rec.cb("inside"))  # due at 3: inside the window
            scheduler.call_later(5, rec.cb("outside"))  # due at 7: after it

        scheduler.call_later(2, chain)
        assert scheduler.advance(4) == 2
        assert rec.calls == [("chain", 2.0), ("inside", 3.0)]
        assert scheduler.pending == 1
        assert scheduler.next_due() == 7.0

    def test_exception_propagates_and_later_timers_stay_pending(
        self, scheduler: ManualScheduler, rec: Recorder
    ) -> None:
        def boom() -> None:
            raise RuntimeError("boom")

        scheduler.call_later(1, boom)
        scheduler.call_later(2, rec.cb("after"))
        with pytest.raises(RuntimeError, match="boom"):
            scheduler.advance(10)
        assert scheduler.clock() == 1.0
        assert scheduler.pending == 1
        assert scheduler.advance(0) == 0  # "after" is due at 2, the clock is at 1
        scheduler.advance(9)
        assert rec.calls == [("after", 2.0)]

    def test_next_due_skips_cancelled_timers(self, scheduler: ManualScheduler) -> None:
        assert scheduler.next_due() is None
        first = scheduler.call_later(1, lambda: None)
        scheduler.call_later(4, lambda: None)
        assert scheduler.next_due() == 1.0
        first.cancel()
        assert scheduler.next_due() == 4.0
        scheduler.advance(4)
        assert scheduler.next_due() is None
        assert scheduler.pending == 0

    @pytest.mark.parametrize("bad", [-1, math.nan])
    def test_refuses_negative_or_nan_delay(self, scheduler: ManualScheduler, bad: float) -> None:
        with pytest.raises(ValueError, match="delay must be"):
            scheduler.call_later(bad, lambda: None)
        assert scheduler.pending == 0

    @pytest.mark.parametrize("bad", [-1, math.nan])
    def test_refuses_negative_or_nan_advance(self, scheduler: ManualScheduler, bad: float) -> None:
        with pytest.raises(ValueError, match="seconds must be"):
            scheduler.advance(bad)

    def test_injected_clock_is_shared(self) -> None:
        clock = ManualClock(100.0)
        scheduler = ManualScheduler(clock)
        assert scheduler.clock is clock
        seen: list[float] = []
        scheduler.call_later(5, lambda: seen.append(clock()))
        scheduler.advance(10)
        assert seen == [105.0]
        assert clock() == 110.0
