"""Channel authorizers: the pattern compiler and the decision procedure."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

import pytest

from mlsockets.auth import ANONYMOUS, Principal
from mlsockets.channels.authorizers import AuthResult, ChannelAuthorizers, compile_pattern
from mlsockets.channels.names import InvalidChannel
from mlsockets.exceptions import Forbidden
from mlsockets.typing import UserId

ALICE = Principal(UserId("7"), {"name": "Alice"}, frozenset({"staff"}))
BOB = Principal(UserId("8"), {"name": "Bob"})


def allow(principal: Principal, **params: str) -> bool:
    return True


def deny(principal: Principal, **params: str) -> bool:
    return False


class Calls:
    """Authorizers that record (label, params) and return a fixed verdict."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, str]]] = []

    def returning(self, label: str, verdict: object) -> Callable[..., object]:
        def fn(principal: Principal, **params: str) -> object:
            self.log.append((label, params))
            return verdict

        return fn

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.log]


@pytest.fixture
def auth() -> ChannelAuthorizers:
    return ChannelAuthorizers()


@pytest.fixture
def calls() -> Calls:
    return Calls()


class TestCompilePattern:
    @pytest.mark.parametrize(
        ("pattern", "channel", "params"),
        [
            ("lobby", "lobby", {}),
            ("private-user.{id}", "private-user.7", {"id": "7"}),
            ("private-user.{id}", "private-user.abc-DEF_9=@,;", {"id": "abc-DEF_9=@,;"}),
            ("room:{name}", "room:lobby", {"name": "lobby"}),
            ("{anything}", "lobby", {"anything": "lobby"}),
            ("presence-{a}.{b}", "presence-x.y", {"a": "x", "b": "y"}),
            ("presence-{a}.{b}", "presence-x-1.y_2", {"a": "x-1", "b": "y_2"}),
            ("org.{org}:team.{team}", "org.42:team.red", {"org": "42", "team": "red"}),
            ("{a}-{b}", "x-y-z", {"a": "x-y", "b": "z"}),  # greedy, but a full match
        ],
    )
    def test_matches(self, pattern: str, channel: str, params: dict[str, str]) -> None:
        match = compile_pattern(pattern).fullmatch(channel)
        assert match is not None
        assert match.groupdict() == params

    @pytest.mark.parametrize(
        ("pattern", "channel"),
        [
            ("lobby", "lobby2"),  # anchored at the end
            ("lobby", "xlobby"),  # and at the start
            ("private-user.{id}", "private-user."),  # a placeholder needs one char
            ("private-user.{id}", "private-user.7.8"),  # never spans a dot
            ("private-user.{id}", "private-user.7:8"),  # nor a colon
            ("private-user.{id}", "private-user:7"),  # literal dot is literal
            ("private-user.{id}", "private-userx7"),  # the dot is escaped, not "any char"
            ("room:{name}", "room:a.b"),
            ("{anything}", "room:lobby"),
            ("presence-{a}.{b}", "presence-x"),
            ("a.b", "aab"),  # "." is literal, not "any character"
        ],
    )
    def test_does_not_match(self, pattern: str, channel: str) -> None:
        assert compile_pattern(pattern).fullmatch(channel) is None

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            ("", "empty channel pattern"),
            ("user.{}", r"invalid placeholder \{\}"),
            ("user.{1id}", r"invalid placeholder \{1id\}"),
            ("user.{a-b}", r"invalid placeholder \{a-b\}"),
            ("user.{a b}", r"invalid placeholder \{a b\}"),
            ("user.{ id}", r"invalid placeholder \{ id\}"),
            ("user.{idé}", r"invalid placeholder \{idé\}"),  # ASCII identifiers only
            ("user.{class}", r"invalid placeholder \{class\}"),  # a keyword
            ("user.{id}.{id}", r"repeated placeholder \{id\}"),
            ("user.{a}{b}", "adjacent placeholders"),
            ("user.{id", "unbalanced brace"),
            ("user.id}", "unbalanced brace"),
            ("user.{{id}}", "unbalanced brace"),
            ("{a}.x}", "unbalanced brace"),
            ("room/{id}", "contains '/', which no channel name can contain"),
            ("room {id}", "contains ' '"),
            ("{id}*", "contains '*'"),
            ("a+b", r"contains '\+'"),  # regex syntax is not pattern syntax
        ],
    )
    def test_invalid_patterns(self, pattern: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            compile_pattern(pattern)

    def test_allows_a_keyword_like_name(self) -> None:
        assert compile_pattern("{class_}").groupindex == {"class_": 1}


class TestRegistration:
    def test_add_validates_the_pattern(self, auth: ChannelAuthorizers) -> None:
        with pytest.raises(ValueError, match="invalid placeholder"):
            auth.add("user.{1}", allow)
        assert len(auth) == 0

    def test_add_refuses_a_non_callable(self, auth: ChannelAuthorizers) -> None:
        with pytest.raises(TypeError, match="not callable"):
            auth.add("lobby", "allow")  # type: ignore[arg-type]

    def test_add_refuses_a_function_that_cannot_take_the_params(
        self, auth: ChannelAuthorizers
    ) -> None:
        def wrong_name(principal: Principal, user_id: str) -> bool:
            return True

        with pytest.raises(TypeError, match=r"cannot be called as fn\(principal, id=\.\.\.\)"):
            auth.add("private-user.{id}", wrong_name)

    def test_add_refuses_a_function_without_the_principal(self, auth: ChannelAuthorizers) -> None:
        with pytest.raises(TypeError, match=r"fn\(principal\)"):
            auth.add("lobby", lambda: True)

    def test_a_param_named_like_the_principal_argument_is_refused(
        self, auth: ChannelAuthorizers
    ) -> None:
        with pytest.raises(TypeError, match="multiple values"):
            auth.add("user.{principal}", lambda principal: True)

    def test_add_accepts_kwargs_partials_and_signatureless_callables(
        self, auth: ChannelAuthorizers
    ) -> None:
        def by_room(principal: Principal, room: str, strict: bool) -> bool:
            return True

        auth.add("room.{room}", allow)
        auth.add("room.{room}", functools.partial(by_room, strict=True))
        auth.add("lobby", bool)  # a builtin with no inspectable signature: trusted
        assert len(auth) == 3

    def test_decorator_registers_and_returns_the_function(self, auth: ChannelAuthorizers) -> None:
        @auth.channel("private-user.{id}", priority=3)
        def own(principal: Principal, id: str) -> bool:
            return principal.user_id == id

        assert own(ALICE, "7") is True  # unchanged, still callable directly
        assert len(auth) == 1
        assert auth.authorize(ALICE, "private-user.7").allowed
        assert not auth.authorize(ALICE, "private-user.8").allowed


class TestAuthorize:
    def test_public_channel_without_authorizer_is_allowed(self, auth: ChannelAuthorizers) -> None:
        result = auth.authorize(ANONYMOUS, "lobby")
        assert result == AuthResult(allowed=True, member_info=None, reason=None)

    @pytest.mark.parametrize("channel", ["private-x", "presence-x"])
    def test_private_and_presence_without_authorizer_are_refused(
        self, auth: ChannelAuthorizers, channel: str
    ) -> None:
        auth.add("lobby", allow)  # registered, but not matching
        auth.add("private-y", allow)
        result = auth.authorize(ALICE, channel)
        assert not result.allowed
        assert result.member_info is None
        assert result.reason == f"{channel.split('-')[0]} channel {channel!r} has no authorizer"

    def test_params_are_passed_by_keyword(self, auth: ChannelAuthorizers, calls: Calls) -> None:
        auth.add("org.{org}:team.{team}", calls.returning("t", True))
        assert auth.authorize(ALICE, "org.42:team.red").allowed
        assert calls.log == [("t", {"org": "42", "team": "red"})]

    def test_the_principal_is_passed_positionally(self, auth: ChannelAuthorizers) -> None:
        seen: list[Principal] = []

        def record(who: Principal, id: str) -> bool:
            seen.append(who)
            return True

        auth.add("private-user.{id}", record)
        auth.authorize(BOB, "private-user.8")
        assert seen == [BOB]

    def test_only_matching_authorizers_run(self, auth: ChannelAuthorizers, calls: Calls) -> None:
        auth.add("private-user.{id}", calls.returning("user", True))
        auth.add("private-room.{id}", calls.returning("room", True))
        auth.add("private-{any}", calls.returning("any", True))
        auth.add("private-user.{id}.{sub}", calls.returning("sub", True))
        assert auth.authorize(ALICE, "private-user.7").allowed
        assert calls.labels == ["user"]  # "{any}" stops at the dot; ".{sub}" needs another

    def test_descending_priority_then_registration_order(
        self, auth: ChannelAuthorizers, calls: Calls
    ) -> None:
        auth.add("room.{id}", calls.returning("p0-first", True))
        auth.add("room.{id}", calls.returning("p5", True), priority=5)
        auth.add("room.{x}", calls.returning("p0-second", True))
        auth.add("room.{id}", calls.returning("p-1", True), priority=-1)
        auth.add("room.{y}", calls.returning("p5-second", True), priority=5)
        auth.add("room.{id}", calls.returning("p10", True), priority=10)
        auth.authorize(ALICE, "room.1")
        assert calls.labels == ["p10", "p5", "p5-second", "p0-first", "p0-second", "p-1"]

    def test_all_must_allow_and_the_first_refusal_stops(
        self, auth: ChannelAuthorizers, calls: Calls
    ) -> None:
        auth.add("private-room.{id}", calls.returning("high", True), priority=2)
        auth.add("private-room.{id}", calls.returning("refuses", 0), priority=1)
        auth.add("private-room.{id}", calls.returning("never", True))
        result = auth.authorize(ALICE, "private-room.1")
        assert result == AuthResult(False, None, "not allowed to subscribe to 'private-room.1'")
        assert calls.labels == ["high", "refuses"]

    @pytest.mark.parametrize("verdict", [False, None, 0, "", [], ()])
    def test_falsy_refuses(self, auth: ChannelAuthorizers, verdict: object) -> None:
        auth.add("lobby", lambda principal: verdict)
        assert not auth.authorize(ALICE, "lobby").allowed  # even a public channel

    @pytest.mark.parametrize("verdict", [True, 1, "yes", [0], object()])
    def test_truthy_allows(self, auth: ChannelAuthorizers, verdict: object) -> None:
        auth.add("private-x", lambda principal: verdict)
        assert auth.authorize(ALICE, "private-x") == AuthResult(True)

    def test_presence_member_info_from_a_mapping(self, auth: ChannelAuthorizers) -> None:
        info = {"name": "Alice"}
        auth.add("presence-room.{id}", lambda principal, id: info)
        result = auth.authorize(ALICE, "presence-room.1")
        assert result.allowed
        assert result.member_info == {"name": "Alice"}
        assert isinstance(result.member_info, MappingProxyType)  # read-only
        info["name"] = "changed"  # a copy: the authorizer's dict is not shared
        assert result.member_info == {"name": "Alice"}

    def test_an_empty_mapping_allows(self, auth: ChannelAuthorizers) -> None:
        auth.add("presence-room.{id}", lambda principal, id: {})
        assert auth.authorize(ALICE, "presence-room.1") == AuthResult(True, {})

    def test_presence_member_info_defaults_to_empty(self, auth: ChannelAuthorizers) -> None:
        auth.add("presence-room.{id}", lambda principal, id: True)
        result = auth.authorize(ALICE, "presence-room.1")
        assert result == AuthResult(True, {})
        assert isinstance(result.member_info, MappingProxyType)

    def test_the_last_mapping_wins(self, auth: ChannelAuthorizers, calls: Calls) -> None:
        auth.add("presence-{r}", calls.returning("first", {"a": 1}), priority=9)
        auth.add("presence-{r}", calls.returning("plain", True), priority=5)
        auth.add("presence-{r}", calls.returning("last", {"b": 2}))
        auth.add("presence-{r}", calls.returning("after", "ok"), priority=-1)
        result = auth.authorize(ALICE, "presence-room")
        assert result == AuthResult(True, {"b": 2})
        assert calls.labels == ["first", "plain", "last", "after"]

    def test_a_refusal_after_a_mapping_refuses(self, auth: ChannelAuthorizers) -> None:
        auth.add("presence-{r}", lambda principal, r: {"a": 1}, priority=1)
        auth.add("presence-{r}", lambda principal, r: False)
        assert auth.authorize(ALICE, "presence-room") == AuthResult(
            False, None, "not allowed to subscribe to 'presence-room'"
        )

    @pytest.mark.parametrize("channel", ["private-x", "lobby"])
    def test_mappings_give_no_member_info_outside_presence(
        self, auth: ChannelAuthorizers, channel: str
    ) -> None:
        auth.add(channel, lambda principal: {"a": 1})
        assert auth.authorize(ALICE, channel) == AuthResult(True, None)

    def test_any_mapping_type_is_member_info(self, auth: ChannelAuthorizers) -> None:
        auth.add("presence-x", lambda principal: MappingProxyType({"k": "v"}))
        result = auth.authorize(ALICE, "presence-x")
        assert isinstance(result.member_info, Mapping)
        assert dict(result.member_info) == {"k": "v"}

    @pytest.mark.parametrize("exc", [Forbidden("banned"), RuntimeError("db down"), KeyError("x")])
    def test_exceptions_propagate_unchanged(
        self, auth: ChannelAuthorizers, calls: Calls, exc: Exception
    ) -> None:
        def boom(principal: Principal) -> bool:
            raise exc

        auth.add("private-x", boom, priority=1)
        auth.add("private-x", calls.returning("never", True))
        with pytest.raises(type(exc)) as info:
            auth.authorize(ALICE, "private-x")
        assert info.value is exc
        assert calls.log == []

    @pytest.mark.parametrize("channel", ["", "private-", "bad name", 42])
    def test_invalid_channel_names_raise(self, auth: ChannelAuthorizers, channel: str) -> None:
        auth.add("{any}", allow)
        with pytest.raises(InvalidChannel):
            auth.authorize(ALICE, channel)

    def test_a_placeholder_never_spans_separators(
        self, auth: ChannelAuthorizers, calls: Calls
    ) -> None:
        # The classic hole: "private-user.{id}" must not authorize someone else's sub-channel.
        auth.add("private-user.{id}", lambda principal, id: principal.user_id == id)
        assert auth.authorize(ALICE, "private-user.7").allowed
        assert not auth.authorize(ALICE, "private-user.7.secret").allowed  # no authorizer
        assert not auth.authorize(ALICE, "private-user.7:8").allowed

    def test_refusals_are_logged_at_debug(
        self, auth: ChannelAuthorizers, caplog: pytest.LogCaptureFixture
    ) -> None:
        auth.add("private-x", deny)
        with caplog.at_level(logging.DEBUG, logger="mlsockets.channels"):
            auth.authorize(ALICE, "private-x")
            auth.authorize(ALICE, "private-y")
        assert [r.name for r in caplog.records] == ["mlsockets.channels"] * 2
        assert "private-x refused 'private-x'" in caplog.records[0].getMessage()
        assert "no authorizer for private channel 'private-y'" in caplog.records[1].getMessage()

    def test_auth_result_is_frozen(self) -> None:
        result = AuthResult(True)
        with pytest.raises(AttributeError):
            result.allowed = False  # type: ignore[misc]
