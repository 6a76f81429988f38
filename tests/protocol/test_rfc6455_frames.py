"""RFC 6455 section 5 vocabulary: opcodes, headers, masking, Close payloads and codes."""

from __future__ import annotations

import random
from types import ModuleType

import pytest

from mlsockets.exceptions import ProtocolError
from mlsockets.protocol import frames
from mlsockets.protocol.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    CloseCode,
    Opcode,
    _apply_mask_py,
    apply_mask,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
    serialize_header,
)


class TestSection5_2BaseFraming:
    def test_opcode_values(self) -> None:
        assert [int(op) for op in Opcode] == [0x0, 0x1, 0x2, 0x8, 0x9, 0xA]
        assert DATA_OPCODES == {Opcode.CONT, Opcode.TEXT, Opcode.BINARY}
        assert CONTROL_OPCODES == {Opcode.CLOSE, Opcode.PING, Opcode.PONG}

    @pytest.mark.parametrize(
        ("length", "expected"),
        [
            (0, "8100"),
            (125, "817d"),
            (126, "817e007e"),
            (65535, "817effff"),
            (65536, "817f0000000000010000"),
            (2**32, "817f0000000100000000"),
        ],
    )
    def test_serialize_header_uses_the_shortest_length_encoding(
        self, length: int, expected: str
    ) -> None:
        assert serialize_header(Opcode.TEXT, length).hex() == expected

    def test_serialize_header_flags(self) -> None:
        assert serialize_header(Opcode.BINARY, 3, fin=False) == b"\x02\x03"
        assert serialize_header(Opcode.TEXT, 3, rsv1=True) == b"\xc1\x03"
        assert serialize_header(Opcode.PING, 3, masked=True) == b"\x89\x83"
        assert serialize_header(Opcode.BINARY, 300, masked=True) == b"\x82\xfe\x01\x2c"

    @pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
    def test_serialize_frame_matches_hand_encoding(self, wire: ModuleType, size: int) -> None:
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert serialize_frame(Opcode.BINARY, payload) == wire.frame(wire.BINARY, payload)
        assert serialize_frame(Opcode.BINARY, payload, mask=wire.MASK) == wire.client_frame(
            wire.BINARY, payload
        )
        assert serialize_frame(Opcode.TEXT, payload, fin=False, rsv1=True) == wire.frame(
            wire.TEXT, payload, fin=False, rsv1=True
        )


class TestSection5_3ClientToServerMasking:
    def test_section_5_7_example(self) -> None:
        # A single-frame masked text message containing "Hello".
        assert apply_mask(b"Hello", b"\x37\xfa\x21\x3d").hex() == "7f9f4d5158"
        assert _apply_mask_py(b"Hello", b"\x37\xfa\x21\x3d").hex() == "7f9f4d5158"

    @pytest.mark.parametrize("length", [*range(71), 4096])
    def test_python_fallback_equals_apply_mask(self, wire: ModuleType, length: int) -> None:
        rng = random.Random(length)
        for _ in range(8):
            data = rng.randbytes(length)
            mask = rng.randbytes(4)
            expected = wire.xor(data, mask)
            assert _apply_mask_py(data, mask) == expected
            assert apply_mask(data, mask) == expected

    def test_accepts_any_buffer(self, wire: ModuleType) -> None:
        data = bytes(range(37))
        expected = wire.xor(data, wire.MASK)
        for view in (bytearray(data), memoryview(data)):
            assert _apply_mask_py(view, wire.MASK) == expected
            assert apply_mask(view, wire.MASK) == expected

    def test_masking_twice_restores_the_data(self) -> None:
        data = random.Random(7).randbytes(1000)
        assert apply_mask(apply_mask(data, b"abcd"), b"abcd") == data
        assert _apply_mask_py(b"", b"abcd") == b""
        assert apply_mask(b"", b"abcd") == b""

    @pytest.mark.skipif(not frames.SPEEDUPS, reason="the C extension was not built")
    def test_c_extension_is_used_and_checks_the_mask(self) -> None:
        assert apply_mask is not _apply_mask_py
        with pytest.raises(ValueError, match="4 bytes"):
            apply_mask(b"data", b"abc")


class TestSection5_5_1ClosePayload:
    def test_empty_body_means_no_status(self) -> None:
        assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")

    def test_code_and_reason(self, wire: ModuleType) -> None:
        assert parse_close(wire.close_body(1001, "bye \u00e9")) == (1001, "bye \u00e9")
        assert parse_close(wire.close_body(4000)) == (4000, "")

    def test_one_byte_body_is_a_protocol_error(self) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close(b"\x03")
        assert info.value.code == 1002

    def test_reason_must_be_utf8(self, wire: ModuleType) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close(wire.close_body(1000) + b"\xff")
        assert info.value.code == 1007

    def test_serialize(self, wire: ModuleType) -> None:
        assert serialize_close(1000) == wire.close_body(1000)
        assert serialize_close(CloseCode.GOING_AWAY, "bye") == wire.close_body(1001, "bye")
        assert serialize_close(CloseCode.NO_STATUS_RCVD, "ignored") == b""

    def test_reason_truncated_to_123_bytes(self) -> None:
        body = serialize_close(1000, "a" * 200)
        assert len(body) == 125
        assert body[2:] == b"a" * 123

    def test_truncation_never_splits_a_utf8_sequence(self) -> None:
        # 100 two-byte characters: 123 bytes would end in the middle of the 62nd one.
        body = serialize_close(1000, "\u00e9" * 100)
        assert len(body) == 2 + 122
        assert body[2:].decode() == "\u00e9" * 61
        # A four-byte character straddling the limit is dropped whole.
        body = serialize_close(1000, "a" * 121 + "\U0001f600" + "b")
        assert body[2:].decode() == "a" * 121


class TestSection7_4CloseCodes:
    @pytest.mark.parametrize(
        "code", [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
    )
    def test_valid_on_the_wire(self, code: int) -> None:
        assert is_valid_close_code(code)

    @pytest.mark.parametrize(
        "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
    )
    def test_invalid_on_the_wire(self, code: int) -> None:
        assert not is_valid_close_code(code)

    def test_registry_values(self) -> None:
        assert CloseCode.NORMAL_CLOSURE == 1000
        assert CloseCode.NO_STATUS_RCVD == 1005
        assert CloseCode.ABNORMAL_CLOSURE == 1006
        assert CloseCode.MESSAGE_TOO_BIG == 1009
        assert CloseCode.TLS_HANDSHAKE == 1015
