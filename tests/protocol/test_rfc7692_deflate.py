"""RFC 7692 permessage-deflate: negotiation, the codec, and compressed frames in a Protocol."""

from __future__ import annotations

import random
import string
import tracemalloc
import zlib
from types import ModuleType

import pytest

from mlsockets.exceptions import InvalidHandshake, PayloadTooBig, ProtocolError
from mlsockets.protocol.connection import Ping, Protocol, Side, State
from mlsockets.protocol.deflate import (
    EXTENSION_NAME,
    DeflateConfig,
    PerMessageDeflate,
    _split_outside_quotes,
    accept_response,
    client_offer,
    negotiate_server,
    parse_extensions,
)


def raw_deflate(data: bytes, *, level: int = 6) -> bytes:
    """``data`` compressed as one message per section 7.2.1, with zlib used directly."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def negotiated_pair(
    client_config: DeflateConfig, server_config: DeflateConfig, **kwargs: object
) -> tuple[Protocol, Protocol]:
    """A (client, server) pair whose codecs come from a full negotiation."""
    negotiated = negotiate_server(client_offer(client_config), server_config)
    assert negotiated is not None
    response, server_codec = negotiated
    client_codec = accept_response(response, client_config)
    assert client_codec is not None
    client = Protocol(Side.CLIENT, deflate=client_codec, **kwargs)  # type: ignore[arg-type]
    server = Protocol(Side.SERVER, deflate=server_codec, **kwargs)  # type: ignore[arg-type]
    return client, server


def random_text(size: int, seed: int = 0) -> str:
    """Text that deflate cannot shrink much by itself (little repetition inside it)."""
    letters = bytes(ord(string.ascii_letters[i % 52]) for i in range(256))
    return random.Random(seed).randbytes(size).translate(letters).decode()


def assert_failed(wire: ModuleType, protocol: Protocol, code: int) -> None:
    (close,) = wire.sent(protocol)
    assert wire.close_frame_code(close) == code
    assert protocol.failure is not None and protocol.failure.code == code
    assert protocol.close_expected()


class TestRFC6455Section9_1ExtensionHeader:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("", []),
            ("foo", [("foo", [])]),
            ("foo, bar; baz=1; qux", [("foo", []), ("bar", [("baz", "1"), ("qux", None)])]),
            (
                ' permessage-deflate ; client_max_window_bits = "10" , x ',
                [("permessage-deflate", [("client_max_window_bits", "10")]), ("x", [])],
            ),
            ('a; b="1\\0"', [("a", [("b", "10")])]),
            ("a,, b ,", [("a", []), ("b", [])]),
        ],
    )
    def test_parse(self, header: str, expected: list[object]) -> None:
        assert parse_extensions(header) == expected

    @pytest.mark.parametrize(
        "header",
        [
            "a b",
            "; a",
            "a;",
            "a; =1",
            "a; b=",
            "a; b=c d",
            "a; b==c",
            'a; b="unterminated',
            'a; b="c d"',
            'a; b=""',
            'a; b="x,y"',
            "\u00e9",
        ],
    )
    def test_syntax_errors(self, header: str) -> None:
        with pytest.raises(InvalidHandshake) as info:
            parse_extensions(header)
        assert info.value.status == 400

    @pytest.mark.parametrize(
        "header",
        [
            "permessage-deflate; a" + " " * 131072 + "x",  # found by review of the fuzz target
            "permessage-deflate; a =" + " " * 131072 + "@",
        ],
    )
    def test_whitespace_runs_fail_in_linear_time(self, header: str) -> None:
        # A parameter followed by a long run of whitespace and junk backtracked quadratically
        # (a 64 KiB header line cost over a minute of CPU); at 128 KiB the old pattern would
        # outlast the test timeout by minutes.
        with pytest.raises(InvalidHandshake):
            parse_extensions(header)

    def test_separators_inside_quotes_do_not_split(self) -> None:
        assert _split_outside_quotes('a="x,y", b', ",") == ['a="x,y"', " b"]
        assert _split_outside_quotes('a="x\\";y"; b', ";") == ['a="x\\";y"', " b"]
        assert _split_outside_quotes("a\\;b", ";") == ["a\\", "b"]


class TestRFC7692Section7DeflateConfig:
    def test_defaults(self) -> None:
        config = DeflateConfig()
        assert (config.server_max_window_bits, config.client_max_window_bits) == (15, None)
        assert not config.server_no_context_takeover and not config.client_no_context_takeover
        assert (config.level, config.mem_level, config.threshold) == (6, 8, 64)

    def test_extremes_are_valid(self) -> None:
        DeflateConfig(server_max_window_bits=8, client_max_window_bits=8, level=0, mem_level=1)
        DeflateConfig(client_max_window_bits=15, level=9, mem_level=9, threshold=0)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"server_max_window_bits": 7}, "server_max_window_bits"),
            ({"server_max_window_bits": 16}, "server_max_window_bits"),
            ({"client_max_window_bits": 7}, "client_max_window_bits"),
            ({"client_max_window_bits": 16}, "client_max_window_bits"),
            ({"level": -1}, "level"),
            ({"level": 10}, "level"),
            ({"mem_level": 0}, "mem_level"),
            ({"mem_level": 10}, "mem_level"),
            ({"threshold": -1}, "threshold"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, int], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            DeflateConfig(**kwargs)  # type: ignore[arg-type]


class TestRFC7692Section7_1Negotiation:
    """Server side: negotiate_server answers the client's offers."""

    @pytest.mark.parametrize(
        ("offer", "config", "response", "codec"),
        [
            # codec: (local_nct, remote_nct, local_bits, remote_bits)
            ("permessage-deflate", DeflateConfig(), "", (False, False, 15, 15)),
            (
                "permessage-deflate; client_max_window_bits",
                DeflateConfig(),
                "",
                (False, False, 15, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=10",
                DeflateConfig(),
                "; client_max_window_bits=10",
                (False, False, 15, 10),
            ),
            (
                'permessage-deflate; client_max_window_bits="10"',
                DeflateConfig(),
                "; client_max_window_bits=10",
                (False, False, 15, 10),
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                DeflateConfig(),
                "; server_max_window_bits=10",
                (False, False, 10, 15),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                DeflateConfig(),
                "; server_max_window_bits=15",
                (False, False, 15, 15),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                DeflateConfig(),
                "; server_no_context_takeover",
                (True, False, 15, 15),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                DeflateConfig(),
                "; client_no_context_takeover",
                (False, True, 15, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=8; server_max_window_bits=9; "
                "client_no_context_takeover; server_no_context_takeover",
                DeflateConfig(),
                "; server_no_context_takeover; client_no_context_takeover; "
                "server_max_window_bits=9; client_max_window_bits=8",
                (True, True, 9, 8),
            ),
            # The server's own limits.
            (
                "permessage-deflate",
                DeflateConfig(server_max_window_bits=10),
                "; server_max_window_bits=10",
                (False, False, 10, 15),
            ),
            (
                "permessage-deflate; server_max_window_bits=12",
                DeflateConfig(server_max_window_bits=10),
                "; server_max_window_bits=10",
                (False, False, 10, 15),
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                DeflateConfig(server_max_window_bits=10),
                "; server_max_window_bits=9",
                (False, False, 9, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                DeflateConfig(client_max_window_bits=10),
                "; client_max_window_bits=10",
                (False, False, 15, 10),
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                DeflateConfig(client_max_window_bits=10),
                "; client_max_window_bits=10",
                (False, False, 15, 10),
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                DeflateConfig(client_max_window_bits=10),
                "; client_max_window_bits=9",
                (False, False, 15, 9),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                DeflateConfig(client_max_window_bits=15),
                "",
                (False, False, 15, 15),
            ),
            # Section 7.1.2.2: a client that did not offer client_max_window_bits is not limited.
            (
                "permessage-deflate",
                DeflateConfig(client_max_window_bits=10),
                "",
                (False, False, 15, 15),
            ),
            (
                "permessage-deflate",
                DeflateConfig(server_no_context_takeover=True),
                "; server_no_context_takeover",
                (True, False, 15, 15),
            ),
            (
                "permessage-deflate",
                DeflateConfig(client_no_context_takeover=True),
                "; client_no_context_takeover",
                (False, True, 15, 15),
            ),
        ],
    )
    def test_accepted(
        self,
        offer: str,
        config: DeflateConfig,
        response: str,
        codec: tuple[bool, bool, int, int],
    ) -> None:
        result = negotiate_server(offer, config)
        assert result is not None
        value, deflate = result
        assert value == EXTENSION_NAME + response
        assert (
            deflate.local_no_context_takeover,
            deflate.remote_no_context_takeover,
            deflate.local_max_window_bits,
            deflate.remote_max_window_bits,
        ) == codec

    def test_codec_settings_come_from_the_config(self) -> None:
        result = negotiate_server(
            "permessage-deflate", DeflateConfig(level=1, mem_level=4, threshold=7)
        )
        assert result is not None
        _, deflate = result
        assert (deflate.level, deflate.mem_level, deflate.threshold) == (1, 4, 7)

    @pytest.mark.parametrize("header", [None, "", "x-webkit-deflate-frame", "foo; bar=1, baz"])
    def test_nothing_to_accept(self, header: str | None) -> None:
        assert negotiate_server(header, DeflateConfig()) is None

    def test_other_extensions_are_skipped(self) -> None:
        result = negotiate_server("x-foo; a=1, permessage-deflate", DeflateConfig())
        assert result is not None and result[0] == "permessage-deflate"

    @pytest.mark.parametrize(
        "invalid",
        [
            "server_max_window_bits",
            "server_max_window_bits=7",
            "server_max_window_bits=16",
            "server_max_window_bits=08",
            "server_max_window_bits=abc",
            "client_max_window_bits=16",
            "client_max_window_bits=010",
            "server_no_context_takeover=true",
            "client_no_context_takeover=1",
            "unknown_parameter",
            "server_no_context_takeover; server_no_context_takeover",
            "client_max_window_bits; client_max_window_bits=10",
        ],
    )
    def test_invalid_offer_is_declined_for_a_later_valid_one(self, invalid: str) -> None:
        # Section 7.1: an offer with an unknown or bad parameter is declined, not fatal.
        header = f"permessage-deflate; {invalid}, permessage-deflate; client_no_context_takeover"
        result = negotiate_server(header, DeflateConfig())
        assert result is not None
        assert result[0] == "permessage-deflate; client_no_context_takeover"
        assert negotiate_server(f"permessage-deflate; {invalid}", DeflateConfig()) is None

    def test_first_valid_offer_wins(self) -> None:
        header = "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        result = negotiate_server(header, DeflateConfig())
        assert result is not None and result[0] == "permessage-deflate; server_max_window_bits=10"

    def test_unparsable_header(self) -> None:
        with pytest.raises(InvalidHandshake):
            negotiate_server("permessage-deflate; a b", DeflateConfig())


class TestRFC7692Section7_1ClientSide:
    def test_default_offer(self) -> None:
        assert client_offer(DeflateConfig()) == "permessage-deflate; client_max_window_bits"

    def test_full_offer(self) -> None:
        config = DeflateConfig(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=10,
            client_max_window_bits=12,
        )
        assert client_offer(config) == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=12"
        )

    @pytest.mark.parametrize("header", [None, ""])
    def test_declined(self, header: str | None) -> None:
        assert accept_response(header, DeflateConfig()) is None

    def test_plain_acceptance(self) -> None:
        codec = accept_response("permessage-deflate", DeflateConfig(level=2, threshold=0))
        assert codec is not None
        assert not codec.local_no_context_takeover and not codec.remote_no_context_takeover
        assert (codec.local_max_window_bits, codec.remote_max_window_bits) == (15, 15)
        assert (codec.level, codec.mem_level, codec.threshold) == (2, 8, 0)

    def test_server_parameters_are_applied(self) -> None:
        header = (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=9"
        )
        codec = accept_response(header, DeflateConfig())
        assert codec is not None
        assert codec.local_no_context_takeover and codec.remote_no_context_takeover
        assert (codec.local_max_window_bits, codec.remote_max_window_bits) == (9, 10)

    def test_own_no_context_takeover(self) -> None:
        codec = accept_response(
            "permessage-deflate", DeflateConfig(client_no_context_takeover=True)
        )
        assert codec is not None and codec.local_no_context_takeover

    def test_client_max_window_bits_omitted_by_the_server(self) -> None:
        # Section 7.1.2.2: the server MAY omit it; the client then keeps its offered limit.
        codec = accept_response("permessage-deflate", DeflateConfig(client_max_window_bits=10))
        assert codec is not None and codec.local_max_window_bits == 10
        codec = accept_response(
            "permessage-deflate; client_max_window_bits=9", DeflateConfig(client_max_window_bits=10)
        )
        assert codec is not None and codec.local_max_window_bits == 9

    @pytest.mark.parametrize(
        ("header", "config", "message"),
        [
            ("permessage-deflate, permessage-deflate", DeflateConfig(), "unexpected extensions"),
            ("x-webkit-deflate-frame", DeflateConfig(), "unexpected extensions"),
            ("permessage-deflate; foo", DeflateConfig(), "unsupported parameter"),
            ("permessage-deflate; client_max_window_bits", DeflateConfig(), "needs a value"),
            (
                "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
                DeflateConfig(),
                "repeated",
            ),
            ("permessage-deflate; server_max_window_bits=16", DeflateConfig(), "invalid"),
            (
                "permessage-deflate",
                DeflateConfig(server_no_context_takeover=True),
                "ignored server_no_context_takeover",
            ),
            (
                "permessage-deflate",
                DeflateConfig(server_max_window_bits=10),
                "server_max_window_bits larger",
            ),
            (
                "permessage-deflate; server_max_window_bits=11",
                DeflateConfig(server_max_window_bits=10),
                "server_max_window_bits larger",
            ),
            (
                "permessage-deflate; client_max_window_bits=11",
                DeflateConfig(client_max_window_bits=10),
                "client_max_window_bits larger",
            ),
            ('permessage-deflate; a="', DeflateConfig(), "unterminated"),
        ],
    )
    def test_invalid_response(self, header: str, config: DeflateConfig, message: str) -> None:
        # RFC 6455 section 9.1: the client must fail the connection.
        with pytest.raises(InvalidHandshake, match=message):
            accept_response(header, config)

    @pytest.mark.parametrize(
        ("client_config", "server_config"),
        [
            (DeflateConfig(), DeflateConfig()),
            (DeflateConfig(client_max_window_bits=9), DeflateConfig(server_max_window_bits=11)),
            (
                DeflateConfig(server_max_window_bits=10, server_no_context_takeover=True),
                DeflateConfig(client_max_window_bits=12, client_no_context_takeover=True),
            ),
        ],
    )
    def test_negotiation_round_trip_gives_mirror_codecs(
        self, client_config: DeflateConfig, server_config: DeflateConfig
    ) -> None:
        negotiated = negotiate_server(client_offer(client_config), server_config)
        assert negotiated is not None
        response, server_codec = negotiated
        client_codec = accept_response(response, client_config)
        assert client_codec is not None
        assert client_codec.local_max_window_bits == server_codec.remote_max_window_bits
        assert client_codec.remote_max_window_bits == server_codec.local_max_window_bits
        assert client_codec.local_no_context_takeover == server_codec.remote_no_context_takeover
        assert client_codec.remote_no_context_takeover == server_codec.local_no_context_takeover


class TestRFC7692Section7_2_3Examples:
    @pytest.mark.parametrize(
        "payload",
        [
            "f248cdc9c90700",  # 7.2.3.1: one compressed block
            "000500faff48656c6c6f00",  # 7.2.3.3: a block with no compression
            "f348cdc9c9070000",  # 7.2.3.4: a block with BFINAL set
            "f24805000000ffffcac9c90700",  # 7.2.3.5: two blocks in one message
        ],
    )
    def test_hello(self, payload: str) -> None:
        codec = PerMessageDeflate()
        assert codec.decompress(bytes.fromhex(payload), True, 100) == b"Hello"
        # The codec stays usable for the next message.
        assert codec.decompress(bytes.fromhex("f248cdc9c90700"), True, 100) == b"Hello"

    def test_7_2_3_1_compressor_output(self) -> None:
        assert PerMessageDeflate().compress(b"Hello") == bytes.fromhex("f248cdc9c90700")

    def test_7_2_3_2_sharing_the_lz77_window(self) -> None:
        sender, receiver = PerMessageDeflate(), PerMessageDeflate()
        first, second = sender.compress(b"Hello"), sender.compress(b"Hello")
        assert second == bytes.fromhex("f200110000")
        assert receiver.decompress(first, True, 10) == receiver.decompress(second, True, 10)

    def test_7_2_3_6_empty_message(self) -> None:
        assert PerMessageDeflate().compress(b"") == b"\x00"
        assert PerMessageDeflate().decompress(b"\x00", True, 0) == b""

    def test_fragmented_example_through_a_protocol(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        data = wire.client_frame(
            wire.TEXT, bytes.fromhex("f248cd"), fin=False, rsv1=True
        ) + wire.client_frame(wire.CONT, bytes.fromhex("c9c90700"))
        assert wire.feed(server, data) == ["Hello"]

    def test_single_frame_example_through_a_protocol(self, wire: ModuleType) -> None:
        client = wire.client(deflate=PerMessageDeflate())
        assert wire.feed(client, bytes.fromhex("c107f248cdc9c90700")) == ["Hello"]

    def test_bfinal_message_followed_by_another(self, wire: ModuleType) -> None:
        # A sender that flushes with BFINAL blocks (section 7.2.3.4) ends the deflate stream
        # with every message; the next message must not inflate to nothing.
        client = wire.client(deflate=PerMessageDeflate())
        data = bytes.fromhex("c108f348cdc9c9070000") + bytes.fromhex("c108f348cdc9c9070000")
        assert wire.feed(client, data) == ["Hello", "Hello"]


class TestRFC7692Section7_2Codec:
    def test_fragment_keeps_the_sync_flush_tail(self) -> None:
        codec = PerMessageDeflate()
        first = codec.compress(b"Hel", fin=False)
        assert first.endswith(b"\x00\x00\xff\xff")
        last = codec.compress(b"lo", fin=True)
        receiver = PerMessageDeflate()
        assert receiver.decompress(first, False, 10) + receiver.decompress(last, True, 10) == (
            b"Hello"
        )

    def test_local_no_context_takeover_resets_the_compressor(self) -> None:
        codec = PerMessageDeflate(local_no_context_takeover=True)
        assert (
            codec.compress(b"Hello") == codec.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")
        )

    def test_remote_no_context_takeover_resets_the_decompressor(self) -> None:
        codec = PerMessageDeflate(remote_no_context_takeover=True)
        assert codec.decompress(bytes.fromhex("f248cdc9c90700"), True, 10) == b"Hello"
        # 7.2.3.2's second message refers back to the first: without the window it is invalid.
        with pytest.raises(ProtocolError) as info:
            codec.decompress(bytes.fromhex("f200110000"), True, 10)
        assert info.value.code == 1007

    def test_limit(self) -> None:
        payload = raw_deflate(bytes(1000))
        assert PerMessageDeflate().decompress(payload, True, 1000) == bytes(1000)
        with pytest.raises(PayloadTooBig):
            PerMessageDeflate().decompress(payload, True, 999)

    def test_invalid_data(self) -> None:
        with pytest.raises(ProtocolError, match="invalid compressed data") as info:
            PerMessageDeflate().decompress(b"\xff\xff\xff", True, 100)
        assert info.value.code == 1007

    def test_repr(self) -> None:
        assert repr(
            PerMessageDeflate(local_max_window_bits=9, remote_no_context_takeover=True)
        ) == (
            "PerMessageDeflate(local_no_context_takeover=False, remote_no_context_takeover=True, "
            "local_max_window_bits=9, remote_max_window_bits=15)"
        )


class TestRFC7692Section6Framing:
    @pytest.mark.parametrize("size", [64, 1000, 70000])
    def test_round_trip_both_directions(self, wire: ModuleType, size: int) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig())
        text = random_text(size, seed=size)
        data = text.encode() * 2
        for sender, receiver in ((client, server), (server, client)):
            sender.send_text(text)
            sender.send_binary(data)
            out = sender.data_to_send()
            assert [(f.rsv1, f.opcode) for f in wire.read_frames(out)] == [
                (True, wire.TEXT),
                (True, wire.BINARY),
            ]
            assert len(out) < len(text) + len(data)
            receiver.receive_data(out)
            assert receiver.events_received() == [text, data]

    def test_threshold(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(threshold=100), DeflateConfig(threshold=100))
        server.send_text("a" * 99)
        server.send_text("a" * 100)
        out = server.data_to_send()
        assert [f.rsv1 for f in wire.read_frames(out)] == [False, True]
        client.receive_data(out)
        assert client.events_received() == ["a" * 99, "a" * 100]

    def test_default_threshold_leaves_small_messages_alone(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig())
        client.send_text("hi")
        (frame,) = wire.read_frames(client.data_to_send())
        assert not frame.rsv1 and frame.payload == b"hi"

    def test_empty_message_compressed(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(threshold=0), DeflateConfig(threshold=0))
        client.send_binary(b"")
        client.send_text("")
        out = client.data_to_send()
        assert all(f.rsv1 and f.payload == b"\x00" for f in wire.read_frames(out))
        server.receive_data(out)
        assert server.events_received() == [b"", ""]

    def test_fragmented_compressed_messages_both_directions(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig())
        for sender, receiver in ((client, server), (server, client)):
            # Fragmented messages are compressed whatever their size.
            sender.send_text("Hel", fin=False)
            sender.send_ping(b"!")
            sender.send_continuation("l", fin=False)
            sender.send_continuation("o" * 100, fin=True)
            sender.send_binary(b"\x00" * 10, fin=False)
            sender.send_continuation(b"", fin=True)
            out = sender.data_to_send()
            frames = wire.read_frames(out)
            assert [(f.fin, f.rsv1, f.opcode) for f in frames] == [
                (False, True, wire.TEXT),
                (True, False, wire.PING),
                (False, False, wire.CONT),
                (True, False, wire.CONT),
                (False, True, wire.BINARY),
                (True, False, wire.CONT),
            ]
            receiver.receive_data(out)
            assert receiver.events_received() == [
                Ping(b"!"),
                "Hell" + "o" * 100,
                b"\x00" * 10,
            ]
            (pong,) = wire.sent(receiver)
            assert pong.opcode == wire.PONG and not pong.rsv1

    def test_hand_split_compressed_message(self, wire: ModuleType) -> None:
        text = random_text(3000).encode()
        payload = raw_deflate(text)
        server = wire.server(deflate=PerMessageDeflate())
        data = (
            wire.client_frame(wire.TEXT, payload[:10], fin=False, rsv1=True)
            + wire.client_frame(wire.CONT, payload[10:1000], fin=False)
            + wire.client_frame(wire.CONT, payload[1000:])
        )
        assert wire.feed_bytewise(server, data[:-1]) == []
        assert wire.feed(server, data[-1:]) == [text.decode()]

    def test_uncompressed_fragmented_message(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        data = wire.client_frame(wire.TEXT, b"plain ", fin=False) + wire.client_frame(
            wire.CONT, b"text"
        )
        assert wire.feed(server, data) == ["plain text"]

    def test_rsv1_on_a_continuation(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        data = wire.client_frame(
            wire.TEXT, raw_deflate(b"a"), fin=False, rsv1=True
        ) + wire.client_frame(wire.CONT, raw_deflate(b"b"), rsv1=True)
        assert wire.feed(server, data) == []
        assert_failed(wire, server, 1002)
        assert server.failure is not None and "continuation" in server.failure.reason

    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_rsv1_on_a_control_frame(self, wire: ModuleType, opcode: int) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        assert wire.feed(server, wire.client_frame(opcode, b"", rsv1=True)) == []
        assert_failed(wire, server, 1002)

    @pytest.mark.parametrize("flag", ["rsv2", "rsv3"])
    def test_rsv2_rsv3_even_with_deflate(self, wire: ModuleType, flag: str) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        data = wire.client_frame(wire.TEXT, raw_deflate(b"a"), rsv1=True, **{flag: True})
        assert wire.feed(server, data) == []
        assert_failed(wire, server, 1002)

    def test_invalid_deflate_data(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        assert wire.feed(server, wire.client_frame(wire.BINARY, b"\xff\xff", rsv1=True)) == []
        assert_failed(wire, server, 1007)

    def test_invalid_utf8_inside_compressed_text(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate())
        data = wire.client_frame(wire.TEXT, raw_deflate(b"ok \xff"), rsv1=True)
        assert wire.feed(server, data) == []
        assert_failed(wire, server, 1007)

    def test_compressed_and_plain_messages_interleave(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig())
        messages = [random_text(200, seed=1), "x", random_text(200, seed=1), "", "y" * 500]
        for message in messages:
            client.send_text(message)
        assert wire.transfer(client, server) == messages


class TestRFC7692Section7_1_1ContextTakeover:
    """Verified by compressed sizes: a shared window makes a repeated message almost free."""

    def sizes(self, sender: Protocol, receiver: Protocol, message: str) -> list[int]:
        sizes = []
        for _ in range(3):
            sender.send_text(message)
            out = sender.data_to_send()
            sizes.append(len(out))
            receiver.receive_data(out)
            assert receiver.events_received() == [message]
        return sizes

    def test_with_context_takeover(self) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig())
        message = random_text(2000)
        first, second, third = self.sizes(server, client, message)
        assert second < first / 10 and third < first / 10
        first, second, third = self.sizes(client, server, message)
        assert second < first / 10 and third < first / 10

    def test_server_no_context_takeover_requested_by_the_client(self) -> None:
        client, server = negotiated_pair(
            DeflateConfig(server_no_context_takeover=True), DeflateConfig()
        )
        message = random_text(2000)
        first, second, third = self.sizes(server, client, message)
        assert first == second == third
        first, second, _ = self.sizes(client, server, message)
        assert second < first / 10

    def test_server_no_context_takeover_by_server_choice(self) -> None:
        client, server = negotiated_pair(
            DeflateConfig(), DeflateConfig(server_no_context_takeover=True)
        )
        assert client.deflate is not None and client.deflate.remote_no_context_takeover
        first, second, _ = self.sizes(server, client, random_text(2000))
        assert first == second

    def test_client_no_context_takeover_requested_by_the_server(self) -> None:
        client, server = negotiated_pair(
            DeflateConfig(), DeflateConfig(client_no_context_takeover=True)
        )
        message = random_text(2000)
        first, second, third = self.sizes(client, server, message)
        assert first == second == third
        first, second, _ = self.sizes(server, client, message)
        assert second < first / 10

    def test_client_no_context_takeover_by_client_choice(self) -> None:
        client, server = negotiated_pair(
            DeflateConfig(client_no_context_takeover=True), DeflateConfig()
        )
        first, second, _ = self.sizes(client, server, random_text(2000))
        assert first == second


class TestRFC7692Section7_1_2WindowBits:
    def test_8_bit_windows_end_to_end(self, wire: ModuleType) -> None:
        config = DeflateConfig(server_max_window_bits=8, client_max_window_bits=8)
        offer = client_offer(config)
        negotiated = negotiate_server(offer, config)
        assert negotiated is not None
        response, server_codec = negotiated
        assert response == (
            "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"
        )
        client_codec = accept_response(response, config)
        assert client_codec is not None
        assert client_codec.local_max_window_bits == client_codec.remote_max_window_bits == 8
        client, server = wire.pair(client_deflate=client_codec, server_deflate=server_codec)
        rng = random.Random(8)
        # Repetitions at distances both inside and beyond a 256-byte window.
        block = rng.randbytes(100)
        messages = [block * 30, rng.randbytes(300) * 5, block + rng.randbytes(2000) + block]
        for sender, receiver in ((client, server), (server, client)):
            for message in messages * 3:
                sender.send_binary(message)
            sender.send_text("Hel", fin=False)
            sender.send_continuation("lo" * 200, fin=True)
            assert wire.transfer(sender, receiver) == [*messages * 3, "Hel" + "lo" * 200]

    @pytest.mark.parametrize("bits", [9, 12, 15])
    def test_other_windows(self, wire: ModuleType, bits: int) -> None:
        config = DeflateConfig(server_max_window_bits=bits, client_max_window_bits=bits)
        client, server = negotiated_pair(config, config)
        assert client.deflate is not None and client.deflate.local_max_window_bits == bits
        message = random.Random(bits).randbytes(1 << bits) * 3
        for sender, receiver in ((client, server), (server, client)):
            sender.send_binary(message)
            assert wire.transfer(sender, receiver) == [message]


class TestRFC6455Section10_4CompressedSizeLimits:
    def test_inflating_to_exactly_the_limit(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        data = wire.client_frame(wire.BINARY, raw_deflate(bytes(1000)), rsv1=True)
        assert wire.feed(server, data) == [bytes(1000)]

    def test_inflating_past_the_limit(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        data = wire.client_frame(wire.BINARY, raw_deflate(bytes(1001)), rsv1=True)
        assert wire.feed(server, data) == []
        assert_failed(wire, server, 1009)
        assert isinstance(server.failure, PayloadTooBig)

    def test_compression_bomb_is_never_inflated(self, wire: ModuleType) -> None:
        bomb = raw_deflate(bytes(4 << 20), level=9)  # 4 MiB of zeros in about 4 KB
        assert len(bomb) < 8192
        data = wire.client_frame(wire.BINARY, bomb, rsv1=True)
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=64 * 1024)
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            server.receive_data(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            if not tracing:
                tracemalloc.stop()
        assert server.events_received() == []
        assert_failed(wire, server, 1009)
        # Inflating stopped at the limit: far less than the 4 MiB the bomb expands to.
        assert peak < 1 << 20

    def test_bomb_across_fragments(self, wire: ModuleType) -> None:
        codec = PerMessageDeflate()
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        first = wire.client_frame(
            wire.BINARY, codec.compress(bytes(600), False), fin=False, rsv1=True
        )
        assert wire.feed(server, first) == []
        assert server.data_to_send() == b""
        second = wire.client_frame(wire.CONT, codec.compress(bytes(401), True))
        assert wire.feed(server, second) == []
        assert_failed(wire, server, 1009)

    def test_fragments_inflating_to_the_limit(self, wire: ModuleType) -> None:
        codec = PerMessageDeflate()
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        data = wire.client_frame(
            wire.BINARY, codec.compress(bytes(600), False), fin=False, rsv1=True
        ) + wire.client_frame(wire.CONT, codec.compress(bytes(400), True))
        assert wire.feed(server, data) == [bytes(1000)]

    def test_compressed_frame_too_big_on_the_wire(self, wire: ModuleType) -> None:
        # A compressed payload may exceed the limit a little (stored blocks), not by more.
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        header = wire.client_frame(wire.BINARY, rsv1=True, length=1000 + 1024 + 1)[:8]
        assert wire.feed(server, header) == []
        assert_failed(wire, server, 1009)

    def test_incompressible_message_at_the_limit(self, wire: ModuleType) -> None:
        # Stored blocks make the payload bigger than the message; it is still accepted.
        message = random.Random(0).randbytes(1000)
        payload = raw_deflate(message, level=0)
        assert len(payload) > 1000
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        assert wire.feed(server, wire.client_frame(wire.BINARY, payload, rsv1=True)) == [message]

    def test_compressed_continuation_too_big_on_the_wire(self, wire: ModuleType) -> None:
        server = wire.server(deflate=PerMessageDeflate(), max_message_size=1000)
        first = wire.client_frame(wire.BINARY, raw_deflate(b"a"), fin=False, rsv1=True)
        header = wire.client_frame(wire.CONT, length=2024)[:8]
        assert wire.feed(server, first + header) == []
        assert_failed(wire, server, 1009)

    def test_no_limit(self, wire: ModuleType) -> None:
        client, server = negotiated_pair(DeflateConfig(), DeflateConfig(), max_message_size=None)
        client.send_binary(bytes(3 << 20))
        assert wire.transfer(client, server) == [bytes(3 << 20)]
        assert server.state is State.OPEN
