"""The event router: registration, validation, dispatch, the error mapping, hooks, limits."""

from __future__ import annotations

import itertools
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import marshmallow
import pytest
from marshmallow import fields

from mlsockets.auth import ANONYMOUS, Principal
from mlsockets.events import (
    ERROR_CODES,
    ErrorBudget,
    ErrorInfo,
    EventRouter,
    Outcome,
    RateLimiter,
    TokenBucket,
    error_for,
    on,
)
from mlsockets.exceptions import (
    ConfigurationError,
    Forbidden,
    MLSocketsError,
    ProtocolError,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)
from mlsockets.formatters.envelope import ClientEnvelope, EnvelopeError
from mlsockets.typing import UserId

SECRET = "db password is hunter2"


class FakeConnection:
    """The little of a hub connection that handlers and hooks look at."""

    def __init__(self, conn_id: str = "c1", principal: Principal = ANONYMOUS) -> None:
        self.id = conn_id
        self.principal = principal


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MessageSchema(marshmallow.Schema):
    text = fields.Str(required=True, validate=marshmallow.validate.Length(max=5))
    room = fields.Str(load_default="lobby")


class NotSubscribed(MLSocketsError):
    code = "not_subscribed"

    def __init__(self, channel: str) -> None:
        super().__init__(f"not subscribed to {channel}")
        self.message = f"not subscribed to {channel}"


@pytest.fixture
def router() -> EventRouter:
    return EventRouter()


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection()


def send(
    router: EventRouter, conn: FakeConnection, event: str, data: object = None, msg_id: int = 1
) -> Outcome:
    return router.dispatch(conn, ClientEnvelope(event, data, msg_id))


def raising(exc: Exception) -> Callable[[Any, Any], object]:
    def handler(conn: Any, data: Any) -> object:
        raise exc

    return handler


# -- registration ----------------------------------------------------------------------------


class TestRegistration:
    def test_decorator_registers_and_returns_the_function(self, router: EventRouter) -> None:
        def handler(conn: Any, data: Any) -> object:
            return None

        assert router.on("chat.send")(handler) is handler
        assert "chat.send" in router
        assert router.events == ("chat.send",)

    def test_add(self, router: EventRouter) -> None:
        router.add("a", lambda conn, data: 1)
        router.add("b", lambda conn, data: 2, MessageSchema)
        assert router.events == ("a", "b")
        assert "c" not in router
        assert 1 not in router

    @pytest.mark.parametrize("event", ["mls.ping", "mls.custom", "mls."])
    def test_system_prefix_is_reserved(self, router: EventRouter, event: str) -> None:
        with pytest.raises(ValueError, match="reserved"):
            router.add(event, lambda conn, data: None)
        assert event not in router

    def test_prefix_lookalikes_are_allowed(self, router: EventRouter) -> None:
        router.add("mls", lambda conn, data: None)
        router.add("mlsx.ping", lambda conn, data: None)
        router.add("MLS.ping", lambda conn, data: None)

    @pytest.mark.parametrize("event", ["", "e" * 129, None, 7])
    def test_invalid_event_names(self, router: EventRouter, event: Any) -> None:
        with pytest.raises(ValueError, match="1 to 128 characters"):
            router.add(event, lambda conn, data: None)

    def test_longest_event_name(self, router: EventRouter) -> None:
        router.add("e" * 128, lambda conn, data: None)

    def test_duplicate_event(self, router: EventRouter) -> None:
        def handler(conn: Any, data: Any) -> object:
            return None

        router.add("a", handler)
        with pytest.raises(ValueError, match="'a' already has a handler"):
            router.add("a", handler)
        with pytest.raises(ValueError, match="already has a handler"):
            router.on("a")(lambda conn, data: None)

    def test_handler_must_be_callable(self, router: EventRouter) -> None:
        with pytest.raises(TypeError, match="not callable"):
            router.add("a", "handler")  # type: ignore[arg-type]
        assert "a" not in router

    @pytest.mark.parametrize("schema", [dict, {"text": fields.Str()}, "MessageSchema", fields.Str])
    def test_schema_must_be_a_marshmallow_schema(self, router: EventRouter, schema: Any) -> None:
        with pytest.raises(TypeError, match="marshmallow Schema"):
            router.add("a", lambda conn, data: None, schema)
        assert "a" not in router

    def test_schema_class_is_instantiated_once_at_registration(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        class Counted(marshmallow.Schema):
            instances: ClassVar[int] = 0
            n = fields.Int()

            def __init__(self, **kwargs: Any) -> None:
                type(self).instances += 1
                super().__init__(**kwargs)

        router.add("a", lambda conn, data: data, Counted)
        assert Counted.instances == 1
        for i in range(3):
            assert send(router, conn, "a", {"n": str(i)}).data == {"n": i}
        assert Counted.instances == 1


# -- dispatch --------------------------------------------------------------------------------


class TestDispatch:
    def test_handler_gets_the_connection_and_data(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        calls: list[tuple[object, object]] = []

        @router.on("chat.send")
        def handler(c: FakeConnection, data: object) -> object:
            calls.append((c, data))
            return None

        send(router, conn, "chat.send", {"text": "hi"})
        assert calls == [(conn, {"text": "hi"})]

    @pytest.mark.parametrize("value", [None, 0, "ok", [1, 2], {"id": 9, "nested": {"a": []}}])
    def test_return_value_is_the_ack_data(
        self, router: EventRouter, conn: FakeConnection, value: object
    ) -> None:
        router.add("e", lambda c, data: value)
        outcome = send(router, conn, "e")
        assert outcome == Outcome(data=value)
        assert outcome.ok and outcome.error is None

    def test_handler_runs_without_an_id_too(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        router.add("e", lambda c, data: "ack")
        outcome = router.dispatch(conn, ClientEnvelope("e", None, None))
        assert outcome.data == "ack"

    def test_unknown_event(self, router: EventRouter, conn: FakeConnection) -> None:
        outcome = send(router, conn, "nope")
        assert not outcome.ok
        assert outcome.error == ErrorInfo("unknown_event", "unknown event 'nope'")
        assert outcome.data is None

    def test_system_events_are_unknown_to_the_router(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        error = send(router, conn, "mls.ping").error
        assert error is not None and error.code == "unknown_event"

    def test_schema_validates_and_loads(self, router: EventRouter, conn: FakeConnection) -> None:
        router.add("chat.send", lambda c, data: data, MessageSchema)
        assert send(router, conn, "chat.send", {"text": "hi"}).data == {
            "text": "hi",
            "room": "lobby",
        }

    def test_schema_instance_is_used_as_is(self, router: EventRouter, conn: FakeConnection) -> None:
        router.add("chat.send", lambda c, data: data, MessageSchema(only=("text",)))
        assert send(router, conn, "chat.send", {"text": "hi"}).data == {"text": "hi"}

    def test_invalid_data_gives_field_messages(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        called: list[object] = []
        router.add("chat.send", lambda c, data: called.append(data), MessageSchema)
        outcome = send(router, conn, "chat.send", {"text": "too long", "x": 1})
        assert outcome.error == ErrorInfo(
            "invalid",
            "invalid data",
            {"text": ["Longer than maximum length 5."], "x": ["Unknown field."]},
        )
        assert called == []

    def test_missing_field(self, router: EventRouter, conn: FakeConnection) -> None:
        router.add("chat.send", lambda c, data: None, MessageSchema)
        error = send(router, conn, "chat.send", {}).error
        assert error is not None
        assert error.fields == {"text": ["Missing data for required field."]}

    @pytest.mark.parametrize("data", [None, "text", [1], 3])
    def test_data_of_the_wrong_type(
        self, router: EventRouter, conn: FakeConnection, data: object
    ) -> None:
        router.add("chat.send", lambda c, data: None, MessageSchema)
        error = send(router, conn, "chat.send", data).error
        assert error == ErrorInfo("invalid", "invalid data", {"_schema": ["Invalid input type."]})

    def test_handler_raising_marshmallow_validation_error(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        router.add("a", raising(marshmallow.ValidationError("room is full")))
        router.add("b", raising(marshmallow.ValidationError("taken", field_name="name")))
        router.add("c", raising(marshmallow.ValidationError({"name": ["taken"]})))
        assert send(router, conn, "a").error == ErrorInfo(
            "invalid", "invalid data", {"_schema": ["room is full"]}
        )
        assert send(router, conn, "b").error == ErrorInfo(
            "invalid", "invalid data", {"name": ["taken"]}
        )
        assert send(router, conn, "c").error == ErrorInfo(
            "invalid", "invalid data", {"name": ["taken"]}
        )

    def test_handler_raising_our_validation_error(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        router.add("a", raising(ValidationError("bad room", {"room": ["unknown"]})))
        router.add("b", raising(ValidationError("bad room")))
        assert send(router, conn, "a").error == ErrorInfo(
            "invalid", "bad room", {"room": ["unknown"]}
        )
        assert send(router, conn, "b").error == ErrorInfo("invalid", "bad room", None)

    def test_unauthorized_and_forbidden(self, router: EventRouter, conn: FakeConnection) -> None:
        router.add("a", raising(Unauthorized()))
        router.add("b", raising(Unauthorized("log in first")))
        router.add("c", raising(Forbidden()))
        router.add("d", raising(Forbidden("admins only")))
        assert send(router, conn, "a").error == ErrorInfo("unauthorized", "authentication required")
        assert send(router, conn, "b").error == ErrorInfo("unauthorized", "log in first")
        assert send(router, conn, "c").error == ErrorInfo("forbidden", "forbidden")
        assert send(router, conn, "d").error == ErrorInfo("forbidden", "admins only")

    @pytest.mark.parametrize(
        "exc", [RuntimeError(SECRET), KeyError(SECRET), ValueError(SECRET), ZeroDivisionError()]
    )
    def test_handler_exception_is_internal_without_detail(
        self,
        router: EventRouter,
        conn: FakeConnection,
        caplog: pytest.LogCaptureFixture,
        exc: Exception,
    ) -> None:
        router.add("chat.send", raising(exc))
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            outcome = send(router, conn, "chat.send", {"text": "hi"})
        assert outcome.error == ErrorInfo("internal", "internal error")
        assert SECRET not in repr(outcome)
        (record,) = caplog.records
        assert record.name == "mlsockets.events"
        assert record.levelno == logging.ERROR
        assert "'chat.send'" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[1] is exc
        assert "Traceback" in caplog.text and "handler" in caplog.text

    def test_exception_in_a_schema_is_internal(
        self, router: EventRouter, conn: FakeConnection, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken(marshmallow.Schema):
            n = fields.Int()

            @marshmallow.post_load
            def explode(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
                raise RuntimeError(SECRET)

        router.add("a", lambda c, data: data, Broken)
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            assert send(router, conn, "a", {"n": 1}).error == ErrorInfo(
                "internal", "internal error"
            )
        assert len(caplog.records) == 1

    def test_base_exceptions_are_not_swallowed(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        def handler(c: Any, data: Any) -> object:
            raise KeyboardInterrupt

        router.add("a", handler)
        with pytest.raises(KeyboardInterrupt):
            send(router, conn, "a")

    def test_client_errors_are_not_logged(
        self, router: EventRouter, conn: FakeConnection, caplog: pytest.LogCaptureFixture
    ) -> None:
        router.add("a", raising(Forbidden()))
        router.add("b", lambda c, data: None, MessageSchema)
        with caplog.at_level(logging.DEBUG, logger="mlsockets.events"):
            send(router, conn, "a")
            send(router, conn, "b", {})
            send(router, conn, "c")
        assert caplog.records == []


# -- the error mapping -----------------------------------------------------------------------


class TestErrorFor:
    def test_too_many_requests_is_rate_limited(self) -> None:
        assert error_for(TooManyRequests()) == ErrorInfo("rate_limited", "too many requests")
        assert error_for(TooManyRequests("slow down", 3.0)) == ErrorInfo(
            "rate_limited", "slow down"
        )

    def test_envelope_error_is_bad_envelope(self) -> None:
        assert error_for(EnvelopeError("missing 'event'")) == ErrorInfo(
            "bad_envelope", "missing 'event'"
        )

    def test_error_with_a_client_code(self) -> None:
        assert error_for(NotSubscribed("room:1")) == ErrorInfo(
            "not_subscribed", "not subscribed to room:1"
        )

    def test_coded_error_without_message_attribute_uses_str(self) -> None:
        class InvalidChannel(MLSocketsError):
            code = "invalid_channel"

        assert error_for(InvalidChannel("bad name")) == ErrorInfo("invalid_channel", "bad name")

    def test_coded_error_with_fields(self) -> None:
        class Invalid(MLSocketsError):
            code = "invalid"
            fields = {"channel": ["too long"]}

        assert error_for(Invalid("no")) == ErrorInfo("invalid", "no", {"channel": ["too long"]})

    def test_every_code_but_internal_can_be_raised(self) -> None:
        for code in ERROR_CODES - {"internal"}:
            exc = type("Coded", (MLSocketsError,), {"code": code})("m")
            assert error_for(exc) == ErrorInfo(code, "m")

    @pytest.mark.parametrize(
        "exc",
        [
            type("Internal", (MLSocketsError,), {"code": "internal"})(SECRET),
            type("Made", (MLSocketsError,), {"code": "made_up"})(SECRET),
            type("NotOurs", (Exception,), {"code": "forbidden", "message": SECRET})(SECRET),
            ProtocolError(SECRET, 1002),  # an int code is a close code, not an error code
            MLSocketsError(SECRET),
        ],
    )
    def test_other_errors_are_internal(
        self, exc: Exception, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            assert error_for(exc) == ErrorInfo("internal", "internal error")
        (record,) = caplog.records
        assert record.exc_info is not None and record.exc_info[1] is exc

    def test_logs_outside_an_except_block_with_the_traceback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        try:
            raise RuntimeError(SECRET)
        except RuntimeError as caught:
            exc = caught
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            error_for(exc)
        assert caplog.records[0].getMessage() == "unhandled RuntimeError"
        assert "Traceback" in caplog.text and SECRET in caplog.text

    def test_error_codes(self) -> None:
        assert ERROR_CODES == {
            "bad_envelope",
            "unknown_event",
            "invalid",
            "unauthorized",
            "forbidden",
            "rate_limited",
            "internal",
            "invalid_channel",
            "not_subscribed",
        }


# -- autodiscovery ---------------------------------------------------------------------------

_names = itertools.count()


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module with a unique name on a temporary sys.path entry; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(source: str) -> str:
        name = f"mlsockets_test_events_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


HANDLERS = """
    import marshmallow
    from mlsockets.events import on

    class Msg(marshmallow.Schema):
        text = marshmallow.fields.Str(required=True)

    @on("chat.send", schema=Msg)
    def send(conn, data):
        return {"echo": data["text"]}

    @on("chat.typing")
    @on("chat.idle")
    def typing(conn, data):
        return "typing"

    def not_marked(conn, data):
        return None

    class NotAFunction:
        __mlsockets_events__ = "ignored"

    VALUE = 3
"""


class TestMarkAndAutodiscover:
    def test_on_only_marks(self) -> None:
        router = EventRouter()

        @on("a")
        def handler(conn: Any, data: Any) -> object:
            return 1

        assert handler(None, None) == 1
        assert router.events == ()

    def test_on_checks_the_event_name_at_once(self) -> None:
        with pytest.raises(ValueError, match="reserved"):
            on("mls.ping")
        with pytest.raises(ValueError, match="1 to 128"):
            on("")

    def test_registers_marked_functions(
        self, make_module: Callable[[str], str], conn: FakeConnection
    ) -> None:
        name = make_module(HANDLERS)
        router = EventRouter()
        assert router.autodiscover(name) == ["chat.send", "chat.idle", "chat.typing"]
        assert set(router.events) == {"chat.send", "chat.typing", "chat.idle"}
        assert send(router, conn, "chat.send", {"text": "hi"}).data == {"echo": "hi"}
        error = send(router, conn, "chat.send", {}).error
        assert error is not None and error.code == "invalid"
        assert send(router, conn, "chat.idle").data == "typing"
        assert "not_marked" not in router

    def test_several_modules_and_several_routers(self, make_module: Callable[[str], str]) -> None:
        first = make_module(HANDLERS)
        second = make_module(
            """
            from mlsockets.events import on

            @on("room.join")
            def join(conn, data):
                return None
            """
        )
        one, two = EventRouter(), EventRouter()
        one.autodiscover(first, second)
        two.autodiscover(second)
        assert "room.join" in one and "chat.send" in one
        assert two.events == ("room.join",)

    def test_autodiscover_twice_is_harmless(self, make_module: Callable[[str], str]) -> None:
        name = make_module(HANDLERS)
        router = EventRouter()
        router.autodiscover(name)
        assert router.autodiscover(name) == []
        assert len(router.events) == 3

    def test_reexported_handlers_are_registered_once(
        self, make_module: Callable[[str], str]
    ) -> None:
        original = make_module(HANDLERS)
        reexport = make_module(f"from {original} import send, typing\n")
        router = EventRouter()
        router.autodiscover(original, reexport)
        assert len(router.events) == 3

    def test_conflicting_handlers(self, make_module: Callable[[str], str]) -> None:
        first = make_module(HANDLERS)
        second = make_module(
            """
            from mlsockets.events import on

            @on("chat.send")
            def other(conn, data):
                return None
            """
        )
        with pytest.raises(ValueError, match="'chat.send' already has a handler"):
            EventRouter().autodiscover(first, second)

    def test_missing_module(self) -> None:
        with pytest.raises(ConfigurationError, match="'mlsockets_no_such_module'") as info:
            EventRouter().autodiscover("mlsockets_no_such_module")
        assert isinstance(info.value.__cause__, ImportError)

    def test_module_that_fails_to_import(self, make_module: Callable[[str], str]) -> None:
        name = make_module("import os\nraise RuntimeError('boom')\n")
        with pytest.raises(ConfigurationError, match=f"'{name}': boom") as info:
            EventRouter().autodiscover(name)
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_module_with_a_syntax_error(self, make_module: Callable[[str], str]) -> None:
        name = make_module("def broken(:\n")
        with pytest.raises(ConfigurationError, match=f"cannot import event module '{name}'"):
            EventRouter().autodiscover(name)

    def test_module_marking_a_reserved_event(self, make_module: Callable[[str], str]) -> None:
        name = make_module("from mlsockets.events import on\non('mls.ping')(print)\n")
        with pytest.raises(ConfigurationError, match="reserved"):
            EventRouter().autodiscover(name)

    def test_nothing_to_discover(self) -> None:
        assert EventRouter().autodiscover() == []


# -- hooks -----------------------------------------------------------------------------------


class TestHooks:
    def test_connect_hooks_run_in_order(self, router: EventRouter, conn: FakeConnection) -> None:
        calls: list[tuple[str, object]] = []

        @router.on_connect
        def first(c: Any) -> None:
            calls.append(("first", c))

        def second(c: Any) -> None:
            calls.append(("second", c))

        assert router.on_connect(second) is second
        router.run_connect(conn)
        assert calls == [("first", conn), ("second", conn)]

    def test_no_hooks(self, router: EventRouter, conn: FakeConnection) -> None:
        router.run_connect(conn)
        router.run_disconnect(conn)

    @pytest.mark.parametrize("exc", [Unauthorized("who are you"), Forbidden("banned")])
    def test_connect_hook_refuses(
        self, router: EventRouter, conn: FakeConnection, exc: Exception
    ) -> None:
        later: list[object] = []

        @router.on_connect
        def refuse(c: Any) -> None:
            raise exc

        router.on_connect(later.append)
        with pytest.raises(type(exc)) as info:
            router.run_connect(conn)
        assert info.value is exc
        assert later == []

    def test_connect_hook_deciding_on_the_principal(self, router: EventRouter) -> None:
        @router.on_connect
        def signed_in_only(c: FakeConnection) -> None:
            if c.principal.is_anonymous:
                raise Unauthorized()

        router.run_connect(FakeConnection(principal=Principal(user_id=UserId("7"))))
        with pytest.raises(Unauthorized):
            router.run_connect(FakeConnection())

    def test_other_connect_hook_errors_propagate(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        router.on_connect(raising_hook(RuntimeError("bug")))
        with pytest.raises(RuntimeError, match="bug"):
            router.run_connect(conn)

    def test_disconnect_hooks_run_in_order_despite_errors(
        self, router: EventRouter, conn: FakeConnection, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[str] = []
        router.on_disconnect(lambda c: calls.append("first"))
        bad = router.on_disconnect(raising_hook(RuntimeError(SECRET)))
        router.on_disconnect(raising_hook(Forbidden()))
        router.on_disconnect(lambda c: calls.append("last"))
        with caplog.at_level(logging.ERROR, logger="mlsockets.events"):
            router.run_disconnect(conn)
        assert calls == ["first", "last"]
        assert [r.name for r in caplog.records] == ["mlsockets.events"] * 2
        assert repr(bad) in caplog.records[0].getMessage()
        assert caplog.records[0].exc_info is not None

    def test_connect_and_disconnect_hooks_are_separate(
        self, router: EventRouter, conn: FakeConnection
    ) -> None:
        calls: list[str] = []
        router.on_connect(lambda c: calls.append("connect"))
        router.on_disconnect(lambda c: calls.append("disconnect"))
        router.run_connect(conn)
        router.run_disconnect(conn)
        assert calls == ["connect", "disconnect"]


def raising_hook(exc: Exception) -> Callable[[Any], object]:
    def hook(conn: Any) -> object:
        raise exc

    return hook


# -- rate limiting and the error budget ------------------------------------------------------


class TestTokenBucket:
    def test_burst_then_refused(self) -> None:
        bucket = TokenBucket(rate=1.0, burst=3, clock=FakeClock())
        assert [bucket.allow() for _ in range(5)] == [True, True, True, False, False]

    def test_refills_at_the_rate(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
        assert bucket.allow() and bucket.allow() and not bucket.allow()
        clock.now += 0.25  # half a token
        assert not bucket.allow()
        clock.now += 0.25  # the other half
        assert bucket.allow()
        assert not bucket.allow()

    def test_refused_attempts_cost_nothing(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
        assert bucket.allow()
        for _ in range(10):
            assert not bucket.allow()
        clock.now += 1.0
        assert bucket.allow()

    def test_refill_is_capped_at_the_burst(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(rate=100.0, burst=3, clock=clock)
        clock.now += 3600
        assert [bucket.allow() for _ in range(4)] == [True, True, True, False]

    def test_a_clock_going_back_adds_nothing(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
        assert bucket.allow()
        clock.now -= 50
        assert not bucket.allow()
        clock.now += 1
        assert bucket.allow()

    def test_default_clock_is_monotonic(self) -> None:
        bucket = TokenBucket(1.0, 1)
        assert bucket.allow()

    @pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (1, 0)])
    def test_invalid_arguments(self, rate: float, burst: int) -> None:
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, FakeClock())

    def test_rate_limiter_is_the_token_bucket(self) -> None:
        assert RateLimiter is TokenBucket


class TestErrorBudget:
    def test_limit_within_the_window(self) -> None:
        budget = ErrorBudget(limit=3, window=10.0, clock=FakeClock())
        assert [budget.record() for _ in range(5)] == [True, True, True, False, False]

    def test_old_errors_leave_the_window(self) -> None:
        clock = FakeClock()
        budget = ErrorBudget(limit=2, window=10.0, clock=clock)
        assert budget.record()
        clock.now += 6
        assert budget.record()
        clock.now += 5  # the first one is now 11 s old
        assert budget.record()
        clock.now += 0.5
        assert not budget.record()  # three within 10 s

    def test_errors_exactly_a_window_old_no_longer_count(self) -> None:
        clock = FakeClock()
        budget = ErrorBudget(limit=1, window=10.0, clock=clock)
        assert budget.record()
        clock.now += 10.0
        assert budget.record()

    def test_spread_out_errors_never_exhaust_it(self) -> None:
        clock = FakeClock()
        budget = ErrorBudget(limit=1, window=1.0, clock=clock)
        for _ in range(100):
            assert budget.record()
            clock.now += 1.5

    def test_zero_limit_refuses_the_first(self) -> None:
        assert ErrorBudget(0, 1.0, FakeClock()).record() is False

    def test_memory_is_bounded(self) -> None:
        budget = ErrorBudget(limit=3, window=60.0, clock=FakeClock())
        for _ in range(1000):
            budget.record()
        assert len(budget._times) == 4

    def test_default_clock_is_monotonic(self) -> None:
        assert ErrorBudget(1, 60.0).record()

    @pytest.mark.parametrize(("limit", "window"), [(-1, 1.0), (1, 0.0), (1, -1.0)])
    def test_invalid_arguments(self, limit: int, window: float) -> None:
        with pytest.raises(ValueError):
            ErrorBudget(limit, window, FakeClock())
