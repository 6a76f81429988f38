"""Envelopes: parsing what clients send, building what the server sends."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from mlsockets.formatters.base import JSON, MSGPACK, Formatter
from mlsockets.formatters.envelope import (
    MAX_EVENT_LENGTH,
    MAX_ID,
    ClientEnvelope,
    EnvelopeError,
    error_envelope,
    event_envelope,
    parse_client,
    reply_envelope,
)


class TestParseClient:
    def test_event_only(self) -> None:
        assert parse_client({"event": "chat.send"}) == ClientEnvelope("chat.send", None, None)

    def test_event_data_and_id(self) -> None:
        envelope = parse_client({"event": "chat.send", "data": {"text": "hi"}, "id": 7})
        assert envelope == ClientEnvelope("chat.send", {"text": "hi"}, 7)
        assert (envelope.event, envelope.data, envelope.id) == ("chat.send", {"text": "hi"}, 7)

    @pytest.mark.parametrize("data", [None, 0, "", [], {}, [1, {"a": None}], b"raw"])
    def test_data_is_any_value(self, data: object) -> None:
        assert parse_client({"event": "e", "data": data}).data == data

    @pytest.mark.parametrize("msg_id", [0, 1, MAX_ID])
    def test_id_bounds(self, msg_id: int) -> None:
        assert parse_client({"event": "e", "id": msg_id}).id == msg_id

    def test_longest_event(self) -> None:
        event = "e" * MAX_EVENT_LENGTH
        assert parse_client({"event": event}).event == event

    def test_system_events_are_parsed(self) -> None:
        # The hub handles them; the router answers unknown_event for the rest.
        assert parse_client({"event": "mls.subscribe", "data": {"channel": "a"}}).event == (
            "mls.subscribe"
        )
        assert parse_client({"event": "mls.nonsense"}).event == "mls.nonsense"

    def test_any_mapping_is_accepted(self) -> None:
        assert parse_client(MappingProxyType({"event": "e"})).event == "e"

    def test_envelope_is_frozen(self) -> None:
        envelope = parse_client({"event": "e"})
        with pytest.raises(AttributeError):
            envelope.event = "other"  # type: ignore[misc]
        assert not hasattr(envelope, "__dict__")

    @pytest.mark.parametrize(
        ("obj", "kind"),
        [
            ([], "an array"),
            ("event", "a string"),
            (None, "null"),
            (1, "a number"),
            (1.5, "a number"),
            (True, "a boolean"),
            (b"{}", "binary data"),
            ({1, 2}, "set"),
        ],
    )
    def test_not_an_object(self, obj: object, kind: str) -> None:
        with pytest.raises(EnvelopeError, match=f"^an envelope must be an object, not {kind}$"):
            parse_client(obj)

    def test_missing_event(self) -> None:
        with pytest.raises(EnvelopeError, match="^missing 'event'$"):
            parse_client({"data": 1})

    @pytest.mark.parametrize(
        ("event", "kind"), [(1, "a number"), (None, "null"), (["e"], "an array")]
    )
    def test_event_not_a_string(self, event: object, kind: str) -> None:
        with pytest.raises(EnvelopeError, match=f"^'event' must be a string, not {kind}$"):
            parse_client({"event": event})

    def test_empty_event(self) -> None:
        with pytest.raises(EnvelopeError, match="^'event' must not be empty$"):
            parse_client({"event": ""})

    def test_event_too_long(self) -> None:
        with pytest.raises(EnvelopeError, match="longer than 128 characters"):
            parse_client({"event": "e" * (MAX_EVENT_LENGTH + 1)})

    @pytest.mark.parametrize("msg_id", [True, False, -1, MAX_ID + 1, 1.0, "1", None, [1]])
    def test_bad_id(self, msg_id: object) -> None:
        with pytest.raises(EnvelopeError, match=r"'id' must be an integer from 0 to 2\*\*53-1"):
            parse_client({"event": "e", "id": msg_id})

    def test_one_extra_key(self) -> None:
        with pytest.raises(EnvelopeError, match=r"^unexpected keys: 'channel' \(allowed: "):
            parse_client({"event": "e", "channel": "room"})

    def test_many_extra_keys_are_summarized(self) -> None:
        obj: dict[object, object] = {"event": "e"}
        obj.update({f"k{i}": i for i in range(8)})
        with pytest.raises(EnvelopeError, match="'k0', 'k1', 'k2', 'k3', 'k4' and 3 more"):
            parse_client(obj)

    def test_long_extra_keys_are_truncated(self) -> None:
        with pytest.raises(EnvelopeError) as info:
            parse_client({"event": "e", "x" * 1000: 1})
        assert len(str(info.value)) < 100

    def test_bytes_keys_are_not_str_keys(self) -> None:  # msgpack can decode these
        with pytest.raises(EnvelopeError, match="unexpected keys: b'event'"):
            parse_client({"event": "e", b"event": "e"})
        with pytest.raises(EnvelopeError, match="missing 'event'"):
            parse_client({b"event": "e"})

    def test_error_is_a_value_error_with_the_bad_envelope_code(self) -> None:
        with pytest.raises(ValueError) as info:
            parse_client([])
        assert isinstance(info.value, EnvelopeError)
        assert info.value.code == "bad_envelope"
        assert info.value.message == str(info.value)
        assert (info.value.id, info.value.event) == (None, None)

    def test_error_keeps_a_valid_id_to_reply_to(self) -> None:
        with pytest.raises(EnvelopeError) as info:
            parse_client({"event": "", "id": 3})
        assert (info.value.id, info.value.event) == (3, None)

    def test_error_keeps_a_valid_event_to_name(self) -> None:
        with pytest.raises(EnvelopeError) as info:
            parse_client({"event": "chat.send", "id": -1})
        assert (info.value.id, info.value.event) == (None, "chat.send")

    def test_error_for_extra_keys_keeps_both(self) -> None:
        with pytest.raises(EnvelopeError) as info:
            parse_client({"event": "chat.send", "id": 4, "extra": 1})
        assert (info.value.id, info.value.event) == (4, "chat.send")

    def test_id_problem_is_reported_before_event_problem(self) -> None:
        with pytest.raises(EnvelopeError, match="'id'"):
            parse_client({"id": "x"})


class TestBuilders:
    def test_event_without_channel(self) -> None:
        envelope = event_envelope("chat.message", {"text": "hi"})
        assert envelope == {"event": "chat.message", "data": {"text": "hi"}}
        assert "channel" not in envelope

    def test_event_data_defaults_to_null(self) -> None:
        assert event_envelope("tick") == {"event": "tick", "data": None}

    def test_event_with_channel_in_wire_order(self) -> None:
        envelope = event_envelope("chat.message", {"t": 1}, "room:lobby")
        assert list(envelope.items()) == [
            ("event", "chat.message"),
            ("channel", "room:lobby"),
            ("data", {"t": 1}),
        ]

    def test_reply(self) -> None:
        assert reply_envelope(7, {"ok": True}) == {"reply": 7, "data": {"ok": True}}
        assert reply_envelope(0, None) == {"reply": 0, "data": None}

    def test_error_reply(self) -> None:
        assert error_envelope(7, "invalid", "invalid data", {"name": ["required"]}) == {
            "reply": 7,
            "error": {
                "code": "invalid",
                "message": "invalid data",
                "fields": {"name": ["required"]},
            },
        }

    def test_error_reply_to_id_zero(self) -> None:
        assert error_envelope(0, "forbidden", "no")["reply"] == 0

    @pytest.mark.parametrize("fields", [None, {}, MappingProxyType({})])
    def test_error_omits_empty_fields(self, fields: dict[str, object] | None) -> None:
        assert error_envelope(1, "forbidden", "no", fields) == {
            "reply": 1,
            "error": {"code": "forbidden", "message": "no"},
        }

    def test_error_reply_does_not_name_the_event(self) -> None:
        envelope = error_envelope(1, "internal", "internal error", event="chat.send")
        assert envelope == {"reply": 1, "error": {"code": "internal", "message": "internal error"}}

    def test_error_without_id_is_an_mls_error_event(self) -> None:
        assert error_envelope(None, "unknown_event", "unknown event 'x'", event="x") == {
            "event": "mls.error",
            "data": {"code": "unknown_event", "message": "unknown event 'x'", "event": "x"},
        }

    def test_error_without_id_or_event(self) -> None:
        assert error_envelope(None, "bad_envelope", "missing 'event'") == {
            "event": "mls.error",
            "data": {"code": "bad_envelope", "message": "missing 'event'"},
        }

    def test_error_without_id_with_fields(self) -> None:
        fields = MappingProxyType({"text": ["too long"]})
        envelope = error_envelope(None, "invalid", "invalid data", fields, "chat.send")
        assert envelope["data"] == {
            "code": "invalid",
            "message": "invalid data",
            "fields": {"text": ["too long"]},
            "event": "chat.send",
        }


@pytest.mark.parametrize("formatter", [JSON, MSGPACK], ids=["json", "msgpack"])
class TestOverTheWire:
    def test_client_envelope_round_trip(self, formatter: Formatter) -> None:
        message = formatter.encode({"event": "chat.send", "data": {"text": "é"}, "id": MAX_ID})
        assert parse_client(formatter.decode(message)) == ClientEnvelope(
            "chat.send", {"text": "é"}, MAX_ID
        )

    def test_server_envelopes_encode(self, formatter: Formatter) -> None:
        for envelope in (
            event_envelope("e", [1], "c"),
            reply_envelope(1, {"a": 1}),
            error_envelope(None, "invalid", "m", {"f": ["x"]}, "e"),
        ):
            assert formatter.decode(formatter.encode(envelope)) == envelope
