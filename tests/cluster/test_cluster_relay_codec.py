"""The relay message codec, channel naming and reconnection backoff (pure: no Redis)."""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys

import pytest
from cluster_support import ROOT

from mlsockets.broadcast.base import Channel, ConnectionTarget, Everyone, Tag, Target, User
from mlsockets.broadcast.relay import (
    RELAY_VERSION,
    ReconnectBackoff,
    RelayChannels,
    RelayError,
    RelayInbox,
    RelayMessage,
    UnsupportedVersion,
    decode,
    encode,
)
from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters import msgpack as msgpack_module
from mlsockets.formatters.base import MSGPACK
from mlsockets.typing import ConnectionId, NodeId

ENVELOPE = {"event": "chat.message", "channel": "room:lobby", "data": {"text": "héllo"}}


class TestRelayMessage:
    @pytest.mark.parametrize(
        "target",
        [Channel("room:lobby"), User("7"), ConnectionTarget("abc"), Tag("staff"), Everyone()],
    )
    def test_round_trip(self, target: Target) -> None:
        message = RelayMessage(NodeId("n1"), target, ENVELOPE, ConnectionId("c9"))
        assert decode(encode(message)) == message

    def test_wire_form_is_versioned_compact_json(self) -> None:
        data = encode(RelayMessage(NodeId("n1"), Channel("room:lobby"), ENVELOPE))
        assert json.loads(data) == {
            "v": RELAY_VERSION,
            "origin": "n1",
            "target": ["channel", "room:lobby"],
            "envelope": ENVELOPE,
            "skip": None,
        }
        assert b" " not in data.replace(b"h\xc3\xa9llo", b"")  # compact, UTF-8 as is
        assert "héllo".encode() in data

    def test_a_newer_version_is_reported_with_its_origin(self) -> None:
        data = json.dumps({"v": 2, "origin": "new-node", "whatever": 1})
        with pytest.raises(UnsupportedVersion) as info:
            decode(data)
        assert (info.value.version, info.value.origin) == (2, "new-node")
        assert isinstance(info.value, RelayError)

    @pytest.mark.parametrize(
        "data",
        [
            b"\xff",
            b"[]",
            b"not json",
            json.dumps({"v": True, "origin": "n"}),
            json.dumps({"v": 1, "origin": "n", "target": ["everyone", None], "envelope": {}}),
            json.dumps(
                {"v": 1, "origin": "", "target": ["everyone", None],
                 "envelope": {"event": "x"}, "skip": None}
            ),
            json.dumps(
                {"v": 1, "origin": "n", "target": ["planet", "x"],
                 "envelope": {"event": "x"}, "skip": None}
            ),
            json.dumps(
                {"v": 1, "origin": "n", "target": ["user", 7],
                 "envelope": {"event": "x"}, "skip": None}
            ),
            json.dumps(
                {"v": 1, "origin": "n", "target": ["everyone", None],
                 "envelope": {"event": "x"}, "skip": 3}
            ),
            json.dumps(
                {"v": 1, "origin": "n", "target": ["everyone", None],
                 "envelope": {"data": 1}, "skip": None}
            ),
        ],
    )  # fmt: skip
    def test_malformed_messages_raise_relay_error(self, data: bytes | str) -> None:
        with pytest.raises(RelayError):
            decode(data)


class TestMsgpackRelayMessages:
    """Data only msgpack clients can receive travels as a msgpack relay message."""

    @pytest.mark.parametrize(
        "data",
        [b"\x00bytes", {"avatar": b"\x89PNG", "n": [1, b""]}, float("inf")],
    )
    def test_round_trip(self, data: object) -> None:
        envelope = {"event": "blob", "channel": "room:1", "data": data}
        message = RelayMessage(NodeId("n1"), Channel("room:1"), envelope, ConnectionId("c9"))
        wire = encode(message)
        assert wire[0] in (*range(0x80, 0x90), 0xDE, 0xDF)  # a msgpack map, never JSON
        assert MSGPACK.decode(wire) == {
            "v": RELAY_VERSION,
            "origin": "n1",
            "target": ["channel", "room:1"],
            "envelope": envelope,
            "skip": "c9",
        }
        assert decode(wire) == message

    def test_nan_crosses_too(self) -> None:
        wire = encode(RelayMessage(NodeId("n"), Everyone(), {"event": "x", "data": math.nan}))
        data = decode(wire).envelope["data"]
        assert isinstance(data, float) and math.isnan(data)

    def test_json_is_used_whenever_it_can_carry_the_data(self) -> None:
        wire = encode(RelayMessage(NodeId("n"), User("7"), {"event": "x", "data": "bytes"}))
        assert wire.startswith(b"{")

    @pytest.mark.parametrize("data", [{1, 2}, datetime.datetime(2026, 1, 1), "\ud800"])
    def test_what_neither_can_carry_fails_at_encode(self, data: object) -> None:
        envelope = {"event": "x", "data": data}
        with pytest.raises((TypeError, ValueError), match="as JSON .* nor msgpack"):
            encode(RelayMessage(NodeId("n"), Everyone(), envelope))

    def test_without_msgpack_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        wire = encode(RelayMessage(NodeId("n"), Everyone(), {"event": "x", "data": b"\x00"}))
        monkeypatch.setattr(msgpack_module._Lib, "module", None)
        monkeypatch.setitem(sys.modules, "msgpack", None)  # import msgpack now fails
        with pytest.raises(TypeError, match=r"pip install mlsockets\[msgpack\]"):
            encode(RelayMessage(NodeId("n"), Everyone(), {"event": "x", "data": b"\x00"}))
        with pytest.raises(RelayError, match="cannot read it"):
            decode(wire)
        # JSON relay messages do not need msgpack.
        message = RelayMessage(NodeId("n"), Everyone(), {"event": "x", "data": 1})
        assert decode(encode(message)) == message

    def test_a_newer_version_is_reported_with_its_origin(self) -> None:
        wire = MSGPACK.encode({"v": 2, "origin": "new-node", "body": b"?"})
        with pytest.raises(UnsupportedVersion) as info:
            decode(wire)
        assert (info.value.version, info.value.origin) == (2, "new-node")

    @pytest.mark.parametrize(
        "wire",
        [
            MSGPACK.encode(
                {"v": 1, "origin": "n", "target": ["everyone", None], "envelope": {"event": "x"}}
            )[:-3],  # truncated
            MSGPACK.encode({"v": 1, "origin": "n"}),  # keys missing
            MSGPACK.encode(
                {"v": 1, "origin": "n", "target": ["everyone", None],
                 "envelope": {"event": 7}, "skip": None}
            ),
            MSGPACK.encode(
                {"v": 1, "origin": "n", "target": ["user", b"7"],
                 "envelope": {"event": "x"}, "skip": None}
            ),
            b"\x81\x01\x02",  # an int key
            b"\x81\xa1v\xc7\x01\x05x",  # an extension type
            b"\x91\x01",  # a msgpack array: not a map, read as (bad) JSON
            b"\xdf\xff\xff\xff\xff",  # a map claiming 4 billion entries
        ],
    )  # fmt: skip
    def test_malformed_msgpack_raises_relay_error(self, wire: bytes) -> None:
        with pytest.raises(RelayError):
            decode(wire)


class TestRelayChannels:
    def test_channels_get_their_own_redis_channel_the_rest_share_one(self) -> None:
        names = RelayChannels("app")
        assert names.for_target(Channel("room:1")) == "app:c:room:1"
        for target in (User("1"), ConnectionTarget("c"), Tag("t"), Everyone()):
            assert names.for_target(target) == "app:all"
        assert names.channel("all") != names.broadcast

    @pytest.mark.parametrize("prefix", ["", "a|b"])
    def test_invalid_prefixes(self, prefix: str) -> None:
        with pytest.raises(ConfigurationError):
            RelayChannels(prefix)


class TestReconnectBackoff:
    def test_capped_exponential_with_full_jitter(self) -> None:
        backoff = ReconnectBackoff(initial=0.1, maximum=2.0, factor=2.0)
        assert [backoff.cap(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
        assert backoff.cap(10_000) == 2.0
        assert backoff.delay(3, rand=lambda: 0.5) == pytest.approx(0.4)
        assert backoff.delay(3, rand=lambda: 0.0) == 0.0

    @pytest.mark.parametrize(
        "kwargs", [{"initial": -1}, {"initial": 3, "maximum": 2}, {"factor": 0.5}]
    )
    def test_invalid(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ConfigurationError):
            ReconnectBackoff(**kwargs)


def test_the_lazy_emitter_export_loads_no_redis_until_used() -> None:
    code = (
        "import sys, mlsockets\n"
        "emitter = mlsockets.Emitter\n"
        "assert emitter.__name__ == 'Emitter'\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('redis', 'gevent')]\n"
        "import mlsockets.broadcast.relay, mlsockets.broadcast.emitter\n"
        "assert 'redis' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=30)


class TestRelayInbox:
    def test_opens_others_messages_and_recognises_its_own(self) -> None:
        inbox = RelayInbox(NodeId("me"))
        theirs = RelayMessage(NodeId("them"), Everyone(), ENVELOPE)
        assert inbox.open(encode(theirs)) == theirs
        assert inbox.open(encode(RelayMessage(NodeId("me"), Everyone(), ENVELOPE))) is None

    def test_drops_are_raised_and_a_version_is_warned_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        inbox = RelayInbox(NodeId("me"))
        newer = json.dumps({"v": 2, "origin": "new-node"}).encode()
        for _ in range(3):
            with pytest.raises(UnsupportedVersion):
                inbox.open(newer)
        with pytest.raises(RelayError):
            inbox.open(b"not a relay message")
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 2
        assert warnings[0].startswith("dropping relay messages from new-node")
        assert warnings[1].startswith("dropping a malformed relay message")
