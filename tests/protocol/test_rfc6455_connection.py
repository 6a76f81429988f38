"""RFC 6455 sections 5-8 through the sans-I/O Protocol: bytes in, events and bytes out."""

from __future__ import annotations

import logging
import random
import tracemalloc
from types import ModuleType

import pytest

from mlsockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from mlsockets.protocol.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Ping,
    Pong,
    Protocol,
    Side,
    State,
)


def assert_failed(wire: ModuleType, protocol: Protocol, code: int) -> None:
    """The connection was failed (section 7.1.7): one Close frame with ``code`` went out."""
    (close,) = wire.sent(protocol)
    assert wire.close_frame_code(close) == code
    assert close.masked is (protocol.side is Side.CLIENT)
    assert protocol.failure is not None and protocol.failure.code == code
    assert protocol.close_sent is not None and protocol.close_sent.code == code
    assert protocol.state is State.CLOSING
    assert protocol.close_expected()


class TestSection5_7Examples:
    """The example frames of section 5.7, byte for byte."""

    def test_single_frame_unmasked_text(self) -> None:
        client = Protocol(Side.CLIENT)
        client.receive_data(bytes.fromhex("810548656c6c6f"))
        assert client.events_received() == ["Hello"]

    def test_single_frame_masked_text(self) -> None:
        server = Protocol(Side.SERVER)
        server.receive_data(bytes.fromhex("818537fa213d7f9f4d5158"))
        assert server.events_received() == ["Hello"]

    def test_fragmented_unmasked_text(self) -> None:
        client = Protocol(Side.CLIENT)
        client.receive_data(bytes.fromhex("010348656c"))
        assert client.events_received() == []
        client.receive_data(bytes.fromhex("80026c6f"))
        assert client.events_received() == ["Hello"]

    def test_unmasked_ping_and_masked_pong(self, wire: ModuleType) -> None:
        client = wire.client()
        client.receive_data(bytes.fromhex("890548656c6c6f"))
        assert client.events_received() == [Ping(b"Hello")]
        # The automatic Pong is the example's masked Pong (our mask_source returns 37fa213d).
        assert client.data_to_send() == bytes.fromhex("8a8537fa213d7f9f4d5158")

    def test_256_bytes_binary_in_one_unmasked_frame(self) -> None:
        client = Protocol(Side.CLIENT)
        client.receive_data(bytes.fromhex("827e0100") + bytes(256))
        assert client.events_received() == [bytes(256)]

    def test_64kib_binary_in_one_unmasked_frame(self) -> None:
        client = Protocol(Side.CLIENT)
        client.receive_data(bytes.fromhex("827f0000000000010000") + bytes(65536))
        assert client.events_received() == [bytes(65536)]


class TestSection5_1Masking:
    def test_server_requires_masked_frames(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.frame(wire.TEXT, b"hi")) == []
        assert_failed(wire, server, 1002)

    def test_client_refuses_masked_frames(self, wire: ModuleType) -> None:
        client = wire.client()
        assert wire.feed(client, wire.client_frame(wire.TEXT, b"hi")) == []
        assert_failed(wire, client, 1002)

    def test_server_sends_unmasked_frames(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_text("hi")
        assert server.data_to_send() == b"\x81\x02hi"

    def test_client_masks_with_a_fresh_key_per_frame(self, wire: ModuleType) -> None:
        keys = iter([b"\x01\x02\x03\x04", b"\xff\xfe\xfd\xfc"])
        client = Protocol(Side.CLIENT, mask_source=lambda n: next(keys))
        client.send_text("hi")
        client.send_binary(b"\x00\x00")
        assert client.data_to_send() == (
            b"\x81\x82\x01\x02\x03\x04" + wire.xor(b"hi", b"\x01\x02\x03\x04")
        ) + (b"\x82\x82\xff\xfe\xfd\xfc\xff\xfe")

    def test_default_mask_source(self, wire: ModuleType) -> None:
        client = Protocol(Side.CLIENT)
        client.send_binary(b"payload")
        (sent,) = wire.sent(client)
        assert sent.masked and sent.payload == b"payload"


class TestSection5_2Opcodes:
    def test_every_opcode(self, wire: ModuleType) -> None:
        server = wire.server()
        data = b"".join(
            [
                wire.client_frame(wire.TEXT, "caf\u00e9".encode()),
                wire.client_frame(wire.BINARY, b"\x00\xff"),
                wire.client_frame(wire.TEXT, b"a", fin=False),
                wire.client_frame(wire.CONT, b"b"),
                wire.client_frame(wire.PING, b"p"),
                wire.client_frame(wire.PONG, b"q"),
                wire.client_frame(wire.CLOSE, wire.close_body(1000, "done")),
            ]
        )
        assert wire.feed(server, data) == [
            "caf\u00e9",
            b"\x00\xff",
            "ab",
            Ping(b"p"),
            Pong(b"q"),
            Close(1000, "done"),
        ]

    @pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes_fail_with_1002(self, wire: ModuleType, opcode: int) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(opcode, b"x")) == []
        assert_failed(wire, server, 1002)
        assert "reserved opcode" in server.failure.reason


class TestSection5_2ReservedBits:
    @pytest.mark.parametrize(
        "flags", [{"rsv1": True}, {"rsv2": True}, {"rsv3": True}, {"rsv1": True, "rsv3": True}]
    )
    @pytest.mark.parametrize("opcode", [0x1, 0x2])
    def test_data_frame_without_extension(
        self, wire: ModuleType, opcode: int, flags: dict[str, bool]
    ) -> None:
        # Section 5.2: nonzero RSV bits without a negotiated extension fail the connection.
        server = wire.server()
        assert wire.feed(server, wire.client_frame(opcode, b"x", **flags)) == []
        assert_failed(wire, server, 1002)

    @pytest.mark.parametrize("flag", ["rsv1", "rsv2", "rsv3"])
    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_control_frame(self, wire: ModuleType, opcode: int, flag: str) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(opcode, b"", **{flag: True})) == []
        assert_failed(wire, server, 1002)

    def test_rsv2_on_a_continuation(self, wire: ModuleType) -> None:
        server = wire.server()
        server.receive_data(wire.client_frame(wire.BINARY, b"a", fin=False))
        assert wire.feed(server, wire.client_frame(wire.CONT, b"b", rsv2=True)) == []
        assert_failed(wire, server, 1002)


class TestSection5_2PayloadLength:
    @pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
    def test_7_16_and_64_bit_lengths(self, wire: ModuleType, size: int) -> None:
        payload = random.Random(size).randbytes(size)
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.BINARY, payload)) == [payload]
        client = wire.client()
        assert wire.feed(client, wire.frame(wire.BINARY, payload)) == [payload]

    @pytest.mark.parametrize("size", [125, 126, 65536])
    def test_sent_lengths(self, wire: ModuleType, size: int) -> None:
        server = wire.server(max_message_size=None)
        server.send_binary(bytes(size))
        assert server.data_to_send() == wire.frame(wire.BINARY, bytes(size))

    def test_64_bit_length_with_the_most_significant_bit_set(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=None)
        header = wire.client_frame(wire.BINARY, length=1 << 63)[:10]
        assert wire.feed(server, header) == []
        assert_failed(wire, server, 1002)
        assert server.failure.reason == "invalid frame length"

    @pytest.mark.parametrize("size", [5, 300, 70000])
    def test_header_and_mask_split_across_reads(self, wire: ModuleType, size: int) -> None:
        # Extended lengths and masking keys arriving one byte at a time are waited for.
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        data = wire.client_frame(wire.BINARY, payload)
        header_size = len(data) - size
        server = wire.server()
        for i in range(header_size):
            server.receive_data(data[i : i + 1])
        assert server.events_received() == []
        assert wire.feed(server, data[header_size:]) == [payload]
        assert server.data_to_send() == b""


class TestSection5_4Fragmentation:
    def test_text_reassembly_with_an_interleaved_ping(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"Hel", fin=False)) == []
        # Section 5.4: control frames may be injected in the middle of a fragmented message.
        assert wire.feed(server, wire.client_frame(wire.PING, b"!")) == [Ping(b"!")]
        assert wire.sent(server) == [wire.WireFrame(True, False, wire.PONG, False, b"!")]
        assert wire.feed(server, wire.client_frame(wire.CONT, b"l", fin=False)) == []
        assert wire.feed(server, wire.client_frame(wire.CONT, b"o")) == ["Hello"]

    def test_binary_reassembly(self, wire: ModuleType) -> None:
        client = wire.client()
        data = (
            wire.frame(wire.BINARY, b"\x00", fin=False)
            + wire.frame(wire.CONT, b"", fin=False)
            + wire.frame(wire.PONG, b"")
            + wire.frame(wire.CONT, b"\x01\x02")
        )
        assert wire.feed(client, data) == [Pong(b""), b"\x00\x01\x02"]

    def test_multibyte_character_split_across_fragments(self, wire: ModuleType) -> None:
        euro = "\u20ac".encode()
        server = wire.server()
        data = (
            wire.client_frame(wire.TEXT, euro[:1], fin=False)
            + wire.client_frame(wire.CONT, euro[1:2], fin=False)
            + wire.client_frame(wire.CONT, euro[2:])
        )
        assert wire.feed(server, data) == ["\u20ac"]

    def test_empty_fragments(self, wire: ModuleType) -> None:
        server = wire.server()
        data = wire.client_frame(wire.TEXT, b"", fin=False) + wire.client_frame(wire.CONT, b"")
        assert wire.feed(server, data) == [""]

    def test_continuation_without_a_message(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.CONT, b"x")) == []
        assert_failed(wire, server, 1002)

    @pytest.mark.parametrize("opcode", [0x1, 0x2])
    def test_new_data_frame_inside_a_fragmented_message(
        self, wire: ModuleType, opcode: int
    ) -> None:
        server = wire.server()
        server.receive_data(wire.client_frame(wire.TEXT, b"a", fin=False))
        assert wire.feed(server, wire.client_frame(opcode, b"b")) == []
        assert_failed(wire, server, 1002)
        assert "inside a fragmented message" in server.failure.reason

    def test_messages_after_a_fragmented_one(self, wire: ModuleType) -> None:
        server = wire.server()
        data = (
            wire.client_frame(wire.BINARY, b"a", fin=False)
            + wire.client_frame(wire.CONT, b"b")
            + wire.client_frame(wire.TEXT, b"c", fin=False)
            + wire.client_frame(wire.CONT, b"d")
            + wire.client_frame(wire.TEXT, b"e")
        )
        assert wire.feed(server, data) == [b"ab", "cd", "e"]

    @pytest.mark.parametrize(("opcode", "fragment"), [(0x1, b""), (0x2, b""), (0x2, b"x")])
    def test_many_small_fragments_hold_only_their_bytes(
        self, wire: ModuleType, opcode: int, fragment: bytes
    ) -> None:
        # Found while fuzzing: each fragment took a list slot (and an object), so endless empty
        # continuation frames grew memory without limit, below any message size limit.
        server = wire.server(max_message_size=1 << 20)
        count = 50_000
        batch = wire.client_frame(wire.CONT, fragment, fin=False) * 1000
        tracemalloc.start()
        try:
            server.receive_data(wire.client_frame(opcode, b"", fin=False))
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(count // 1000):
                server.receive_data(batch)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # A list of fragments held 8 bytes per empty one (400 KB here), 42 per 1-byte one.
        assert held < 64 * 1024 + 2 * len(fragment) * count
        assert wire.feed(server, wire.client_frame(wire.CONT, b"")) == [
            fragment * count if opcode == 0x2 else ""
        ]


class TestSection5_4SendingFragments:
    def test_text_fragments(self, wire: ModuleType) -> None:
        client, server = wire.pair()
        client.send_text("Hel", fin=False)
        client.send_ping(b"mid")  # control frames may be interleaved (section 5.4)
        client.send_continuation("l", fin=False)
        client.send_continuation(b"o", fin=True)
        assert [(f.fin, f.opcode, f.payload) for f in wire.read_frames(client.data_to_send())] == [
            (False, wire.TEXT, b"Hel"),
            (True, wire.PING, b"mid"),
            (False, wire.CONT, b"l"),
            (True, wire.CONT, b"o"),
        ]
        client.send_text("Hel", fin=False)
        client.send_continuation("lo", fin=True)
        assert wire.transfer(client, server) == ["Hello"]

    def test_binary_fragments(self, wire: ModuleType) -> None:
        client, server = wire.pair()
        server.send_binary(bytearray(b"\x01"), fin=False)
        server.send_continuation(b"", fin=False)
        server.send_continuation(b"\x02", fin=True)
        frames = wire.read_frames(server.data_to_send())
        assert [(f.fin, f.opcode) for f in frames] == [
            (False, wire.BINARY),
            (False, wire.CONT),
            (True, wire.CONT),
        ]
        server.send_binary(memoryview(b"\x01"), fin=False)
        server.send_continuation(b"\x02", fin=True)
        assert wire.transfer(server, client) == [b"\x01\x02"]

    def test_continuation_without_a_started_message(self) -> None:
        protocol = Protocol(Side.SERVER)
        with pytest.raises(InvalidState, match="no fragmented message"):
            protocol.send_continuation(b"x", fin=True)
        protocol.send_text("a")
        with pytest.raises(InvalidState):
            protocol.send_continuation(b"x", fin=True)

    def test_new_message_while_one_is_in_progress(self) -> None:
        protocol = Protocol(Side.SERVER)
        protocol.send_text("a", fin=False)
        with pytest.raises(InvalidState, match="in progress"):
            protocol.send_binary(b"b")
        with pytest.raises(InvalidState, match="in progress"):
            protocol.send_text("b")
        protocol.send_continuation("c", fin=True)
        protocol.send_text("d")


class TestSection5_5ControlFrames:
    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_payload_longer_than_125_bytes(self, wire: ModuleType, opcode: int) -> None:
        server = wire.server()
        # Refused at the header: the 126-byte payload never has to arrive.
        header = wire.client_frame(opcode, bytes(126))[:8]
        assert wire.feed(server, header) == []
        assert_failed(wire, server, 1002)

    def test_payload_of_125_bytes(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.PING, bytes(125))) == [Ping(bytes(125))]

    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_fragmented_control_frame(self, wire: ModuleType, opcode: int) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(opcode, b"", fin=False)) == []
        assert_failed(wire, server, 1002)

    @pytest.mark.parametrize("method", ["send_ping", "send_pong"])
    def test_sending_more_than_125_bytes(self, method: str) -> None:
        protocol = Protocol(Side.SERVER)
        getattr(protocol, method)(bytes(125))
        with pytest.raises(ValueError, match="125"):
            getattr(protocol, method)(bytes(126))


class TestSection5_5_2Ping:
    def test_auto_pong_echoes_the_payload(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.PING, b"abc")) == [Ping(b"abc")]
        assert server.data_to_send() == b"\x8a\x03abc"

    def test_auto_pong_disabled(self, wire: ModuleType) -> None:
        server = wire.server(auto_pong=False)
        assert wire.feed(server, wire.client_frame(wire.PING, b"abc")) == [Ping(b"abc")]
        assert server.data_to_send() == b""

    def test_no_pong_once_closing(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_close()
        server.data_to_send()
        assert wire.feed(server, wire.client_frame(wire.PING, b"abc")) == [Ping(b"abc")]
        assert server.data_to_send() == b""

    def test_send_ping(self, wire: ModuleType) -> None:
        client, server = wire.pair()
        client.send_ping(b"hb")
        client.send_ping()
        assert wire.transfer(client, server) == [Ping(b"hb"), Ping(b"")]
        assert wire.transfer(server, client) == [Pong(b"hb"), Pong(b"")]


class TestSection5_5_3Pong:
    def test_unsolicited_pong(self, wire: ModuleType) -> None:
        client, server = wire.pair()
        server.send_pong(b"beat")
        server.send_pong()
        assert server.data_to_send() == b"\x8a\x04beat\x8a\x00"
        client.send_pong(bytearray(b"x"))
        assert wire.transfer(client, server) == [Pong(b"x")]
        assert server.data_to_send() == b""


class TestSection7_1_2ClosingHandshake:
    def test_peer_initiates_and_we_echo_the_code(self, wire: ModuleType) -> None:
        server = wire.server()
        assert server.close_code is None
        events = wire.feed(server, wire.client_frame(wire.CLOSE, wire.close_body(1001, "away")))
        assert events == [Close(1001, "away")]
        (echo,) = wire.sent(server)
        assert wire.close_frame_code(echo) == 1001
        assert not echo.masked
        assert server.state is State.CLOSED
        assert server.close_expected()
        assert server.close_code == 1001
        assert server.close_rcvd == Close(1001, "away")
        assert server.close_sent == Close(1001, "away")
        assert server.failure is None

    def test_empty_close_is_1005_and_echoed_empty(self, wire: ModuleType) -> None:
        client = wire.client()
        assert wire.feed(client, wire.frame(wire.CLOSE)) == [Close(1005, "")]
        assert client.data_to_send() == b"\x88\x80" + wire.MASK
        assert client.close_code == 1005
        assert client.state is State.CLOSED

    def test_one_byte_close_payload(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.CLOSE, b"\x03")) == []
        assert_failed(wire, server, 1002)
        assert server.close_rcvd is None

    def test_we_initiate(self, wire: ModuleType) -> None:
        client, server = wire.pair()
        client.send_close(1000, "bye")
        assert client.state is State.CLOSING
        assert not client.close_expected()
        assert client.close_code is None
        assert wire.transfer(client, server) == [Close(1000, "bye")]
        assert server.state is State.CLOSED and server.close_expected()
        assert wire.transfer(server, client) == [Close(1000, "bye")]
        assert client.state is State.CLOSED and client.close_expected()
        assert client.close_sent == Close(1000, "bye")
        assert client.close_rcvd == Close(1000, "bye")
        # The initiator does not answer the echo.
        assert client.data_to_send() == b""

    def test_send_close_is_a_no_op_once_closing(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_close(1001)
        server.send_close(1000)
        (close,) = wire.sent(server)
        assert wire.close_frame_code(close) == 1001
        assert server.close_sent == Close(1001, "")

    def test_send_close_without_status(self) -> None:
        server = Protocol(Side.SERVER)
        server.send_close(1005)
        assert server.data_to_send() == b"\x88\x00"

    def test_data_still_arrives_while_closing(self, wire: ModuleType) -> None:
        # Section 7.1.2: after sending Close we keep reading until the peer's Close.
        server = wire.server()
        server.send_close()
        data = wire.client_frame(wire.TEXT, b"late") + wire.client_frame(
            wire.CLOSE, wire.close_body(1000)
        )
        assert wire.feed(server, data) == ["late", Close(1000, "")]
        assert server.state is State.CLOSED

    def test_frames_after_close_are_ignored(self, wire: ModuleType) -> None:
        server = wire.server()
        data = wire.client_frame(wire.CLOSE, wire.close_body(1000)) + wire.client_frame(
            wire.TEXT, b"after"
        )
        assert wire.feed(server, data) == [Close(1000, "")]
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"later")) == []
        server.data_to_send()
        assert server.data_to_send() == b""

    @pytest.mark.parametrize(
        "send", [lambda p: p.send_text("x"), lambda p: p.send_binary(b"x"), lambda p: p.send_ping()]
    )
    def test_sending_after_close_raises(self, send: object) -> None:
        closing = Protocol(Side.SERVER)
        closing.send_close()
        with pytest.raises(InvalidState, match="CLOSING"):
            send(closing)  # type: ignore[operator]
        closed = Protocol(Side.SERVER)
        closed.receive_eof()
        with pytest.raises(InvalidState, match="CLOSED"):
            send(closed)  # type: ignore[operator]

    def test_continuation_and_pong_after_close_raise(self) -> None:
        protocol = Protocol(Side.SERVER)
        protocol.send_text("a", fin=False)
        protocol.send_close()
        with pytest.raises(InvalidState):
            protocol.send_continuation("b", fin=True)
        with pytest.raises(InvalidState):
            protocol.send_pong(b"")


class TestSection7_4CloseCodes:
    @pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
    def test_invalid_codes_fail_with_1002(self, wire: ModuleType, code: int) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.CLOSE, wire.close_body(code))) == []
        assert_failed(wire, server, 1002)
        assert server.failure.reason == f"invalid close code {code}"

    @pytest.mark.parametrize("code", [*range(1000, 1004), *range(1007, 1015), 3000, 4999])
    def test_valid_codes_are_echoed(self, wire: ModuleType, code: int) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.CLOSE, wire.close_body(code, "r"))) == [
            Close(code, "r")
        ]
        (echo,) = wire.sent(server)
        assert wire.close_frame_code(echo) == code
        assert server.failure is None

    def test_close_reason_must_be_utf8(self, wire: ModuleType) -> None:
        server = wire.server()
        body = wire.close_body(1000) + b"\xc3"
        assert wire.feed(server, wire.client_frame(wire.CLOSE, body)) == []
        assert_failed(wire, server, 1007)


class TestSection7_1_5ClosedWithoutHandshake:
    def test_eof_is_1006(self) -> None:
        protocol = Protocol(Side.CLIENT)
        protocol.receive_data(b"\x81")  # half a frame is dropped
        protocol.receive_eof()
        assert protocol.close_code == 1006
        assert protocol.close_rcvd == Close(1006, "")
        assert protocol.state is State.CLOSED
        assert protocol.close_expected()
        assert protocol.events_received() == []
        protocol.receive_data(b"\x05Hello")
        assert protocol.events_received() == []

    def test_eof_after_the_closing_handshake_keeps_the_code(self, wire: ModuleType) -> None:
        server = wire.server()
        server.receive_data(wire.client_frame(wire.CLOSE, wire.close_body(1000)))
        server.receive_eof()
        server.receive_eof()
        assert server.close_code == 1000

    def test_eof_twice(self) -> None:
        protocol = Protocol(Side.SERVER)
        protocol.receive_eof()
        protocol.receive_eof()
        assert protocol.close_code == 1006


class TestSection7_1_7FailTheConnection:
    def test_adapter_fails_the_connection(self, wire: ModuleType) -> None:
        server = wire.server()
        server.fail(1011, "pong timeout")
        (close,) = wire.sent(server)
        assert close.payload == wire.close_body(1011, "pong timeout")
        assert server.close_expected()
        assert server.failure is None  # not a peer error
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"ignored")) == []

    def test_failing_while_closing_sends_nothing_more(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_close()
        server.data_to_send()
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"\xff")) == []
        assert server.data_to_send() == b""
        assert server.failure is not None and server.failure.code == 1007
        assert server.close_expected()
        assert server.close_sent == Close(1000, "")

    def test_input_after_a_failure_is_discarded(self, wire: ModuleType) -> None:
        server = wire.server()
        data = (
            wire.client_frame(wire.TEXT, b"ok")
            + wire.client_frame(0x3)
            + wire.client_frame(wire.TEXT, b"never")
        )
        assert wire.feed(server, data) == ["ok"]
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"never")) == []
        assert_failed(wire, server, 1002)

    def test_failure_in_a_fragmented_message_drops_it(self, wire: ModuleType) -> None:
        server = wire.server()
        data = wire.client_frame(wire.BINARY, b"a", fin=False) + wire.client_frame(
            wire.CONT, b"b", fin=False
        )
        server.receive_data(data[:3])  # leaves a partial frame buffered
        server.receive_data(data[3:] + wire.client_frame(wire.CONT, fin=False, rsv2=True))
        assert server.events_received() == []
        assert_failed(wire, server, 1002)


class TestSection8_1Utf8:
    def test_invalid_utf8_in_a_single_frame(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"ok \xff")) == []
        assert_failed(wire, server, 1007)

    def test_surrogates_are_invalid(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"\xed\xa0\x80")) == []
        assert_failed(wire, server, 1007)

    def test_fails_fast_inside_a_fragmented_message(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.TEXT, b"valid", fin=False)) == []
        assert server.data_to_send() == b""
        # The Close with 1007 goes out as soon as the frame holding the invalid byte arrives,
        # before the final frame.
        assert wire.feed(server, wire.client_frame(wire.CONT, b"ok\xffok", fin=False)) == []
        assert_failed(wire, server, 1007)
        assert wire.feed(server, wire.client_frame(wire.CONT, b"end")) == []
        assert server.data_to_send() == b""

    def test_truncated_sequence_at_the_end_of_a_message(self, wire: ModuleType) -> None:
        server = wire.server()
        data = wire.client_frame(wire.TEXT, b"a", fin=False) + wire.client_frame(
            wire.CONT, "\u20ac".encode()[:2]
        )
        assert wire.feed(server, data) == []
        assert_failed(wire, server, 1007)

    def test_binary_is_not_validated(self, wire: ModuleType) -> None:
        server = wire.server()
        data = wire.client_frame(wire.BINARY, b"\xff", fin=False) + wire.client_frame(
            wire.CONT, b"\xfe"
        )
        assert wire.feed(server, data) == [b"\xff\xfe"]

    def test_send_text_encodes_str_and_passes_bytes(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_text("\u00e9")
        server.send_text(b"\xc3\xa9")
        assert server.data_to_send() == b"\x81\x02\xc3\xa9" * 2


class TestSection10_4MessageSizeLimit:
    def test_default_limit(self) -> None:
        assert Protocol().max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 1 << 20

    def test_single_frame_at_the_limit(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=1000)
        assert wire.feed(server, wire.client_frame(wire.BINARY, bytes(1000))) == [bytes(1000)]

    def test_single_frame_over_the_limit_fails_at_the_header(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=1000)
        # Only the header and the masking key: the payload never has to arrive.
        header = wire.client_frame(wire.BINARY, bytes(1001))[:8]
        assert len(header) == 8
        assert wire.feed(server, header) == []
        assert_failed(wire, server, 1009)
        assert isinstance(server.failure, PayloadTooBig)

    def test_huge_declared_length(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, wire.client_frame(wire.TEXT, length=1 << 40)[:14]) == []
        assert_failed(wire, server, 1009)

    def test_across_fragments(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=1000)
        server.receive_data(wire.client_frame(wire.TEXT, b"a" * 600, fin=False))
        server.receive_data(wire.client_frame(wire.CONT, b"a" * 400, fin=False))
        assert server.data_to_send() == b""
        # The next header alone pushes the message over the limit.
        assert wire.feed(server, wire.client_frame(wire.CONT, b"a")[:6]) == []
        assert_failed(wire, server, 1009)

    def test_fragments_summing_to_the_limit(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=1000)
        data = wire.client_frame(wire.BINARY, bytes(600), fin=False) + wire.client_frame(
            wire.CONT, bytes(400)
        )
        assert wire.feed(server, data) == [bytes(1000)]

    def test_no_limit(self, wire: ModuleType) -> None:
        server = wire.server(max_message_size=None)
        big = bytes(DEFAULT_MAX_MESSAGE_SIZE + 1)
        data = wire.client_frame(wire.BINARY, big[:10], fin=False) + wire.client_frame(
            wire.CONT, big[10:]
        )
        assert wire.feed(server, data) == [big]

    def test_limit_applies_to_the_peer_not_to_us(self, wire: ModuleType) -> None:
        client, server = wire.pair(max_message_size=10)
        client.send_binary(bytes(11))
        assert wire.transfer(client, server) == []
        assert_failed(wire, server, 1009)


class TestSection5_2IncrementalParsing:
    STREAM_FRAMES = [
        (0x1, "h\u00e9llo".encode(), {}),
        (0x2, bytes(range(256)) * 2, {}),
        (0x1, b"fr", {"fin": False}),
        (0x9, b"ping", {}),
        (0x0, "ag\u20ac".encode(), {"fin": False}),
        (0x0, b"ment", {}),
        (0xA, b"", {}),
        (0x2, bytes(70000), {}),
        (0x8, b"\x03\xe8bye", {}),
    ]
    EXPECTED = [
        "h\u00e9llo",
        bytes(range(256)) * 2,
        Ping(b"ping"),
        "frag\u20acment",
        Pong(b""),
        bytes(70000),
        Close(1000, "bye"),
    ]

    def stream(self, wire: ModuleType) -> bytes:
        return b"".join(
            wire.client_frame(op, payload, **kw) for op, payload, kw in self.STREAM_FRAMES
        )

    def test_all_at_once(self, wire: ModuleType) -> None:
        server = wire.server()
        assert wire.feed(server, self.stream(wire)) == self.EXPECTED

    def test_byte_by_byte_gives_the_same_events_and_output(self, wire: ModuleType) -> None:
        data = self.stream(wire)
        # One byte per call through every small frame, the 64-bit header, the masking key and
        # the first 100 payload bytes of the 70000-byte frame; then the rest in one call.
        split = data.index(b"\x82\xff") + 14 + 100
        whole, bytewise = wire.server(), wire.server()
        events = wire.feed_bytewise(bytewise, data[:split])
        assert events == wire.feed(whole, data[:split]) == self.EXPECTED[:5]
        assert bytewise.data_to_send() == whole.data_to_send() == b"\x8a\x04ping"
        rest = data[split:]
        assert wire.feed(bytewise, rest) == wire.feed(whole, rest) == self.EXPECTED[5:]
        assert bytewise.data_to_send() == whole.data_to_send() == b"\x88\x05\x03\xe8bye"

    def test_random_chunks(self, wire: ModuleType) -> None:
        data = self.stream(wire)
        rng = random.Random(1)
        for _ in range(5):
            server = wire.server()
            events = []
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 3000)
                server.receive_data(bytearray(data[pos : pos + step]))
                events.extend(server.events_received())
                pos += step
            assert events == self.EXPECTED

    def test_empty_input_is_ignored(self) -> None:
        protocol = Protocol(Side.SERVER)
        protocol.receive_data(b"")
        assert protocol.events_received() == []
        assert protocol.data_to_send() == b""

    def test_output_is_joined_in_order(self, wire: ModuleType) -> None:
        server = wire.server()
        server.send_text("a")
        assert server.data_to_send() == b"\x81\x01a"
        server.send_text("b")
        server.send_binary(b"c")
        server.send_ping(b"d")
        assert server.data_to_send() == b"\x81\x01b\x82\x01c\x89\x01d"
        assert server.data_to_send() == b""


class TestSection6SendingAndReceiving:
    @pytest.mark.parametrize("size", [0, 10, 200, 70000])
    def test_messages_both_ways(self, wire: ModuleType, size: int) -> None:
        client, server = wire.pair()
        text = "x\u00e9" * size
        data = random.Random(size).randbytes(size)
        client.send_text(text)
        client.send_binary(data)
        assert wire.transfer(client, server) == [text, data]
        server.send_binary(data)
        server.send_text(text)
        assert wire.transfer(server, client) == [data, text]

    def test_real_random_masks(self, wire: ModuleType) -> None:
        client = Protocol(Side.CLIENT)
        server = Protocol(Side.SERVER)
        for i in range(20):
            client.send_text(str(i) * i)
        assert wire.transfer(client, server) == [str(i) * i for i in range(20)]


class TestSection7_1States:
    def test_initial_state(self) -> None:
        protocol = Protocol()
        assert protocol.side is Side.SERVER
        assert protocol.state is State.OPEN
        assert not protocol.close_expected()
        assert protocol.close_code is None
        assert protocol.failure is None
        assert protocol.close_rcvd is None and protocol.close_sent is None

    def test_transitions_are_logged(
        self, wire: ModuleType, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="mlsockets.protocol")
        client, server = wire.pair()
        client.send_close()
        wire.transfer(client, server)
        wire.transfer(server, client)
        assert [r.getMessage() for r in caplog.records] == [
            "client: OPEN -> CLOSING",
            "server: OPEN -> CLOSED",
            "client: CLOSING -> CLOSED",
        ]

    def test_failures_are_logged(self, wire: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="mlsockets.protocol")
        server = wire.server()
        server.receive_data(wire.frame(wire.TEXT))
        assert "failing the connection: unmasked frame from a client (1002)" in caplog.messages

    def test_peer_errors_never_raise(self, wire: ModuleType) -> None:
        rng = random.Random(3)
        for _ in range(200):
            server = wire.server(max_message_size=4096)
            server.receive_data(rng.randbytes(rng.randint(1, 64)))
            server.events_received()
            if server.failure is not None:
                assert isinstance(server.failure, ProtocolError)
                assert server.close_expected()
