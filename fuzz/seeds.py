"""Write the hand-made seed inputs of every target into ``fuzz/corpus/<target>/seed-*``.

Usage: ``.venv/bin/python fuzz/seeds.py``. The seeds are committed; rerun this after changing
an input layout. Inputs the fuzzer found later are merged next to them by ``run.py --merge``.
Frames are built by a client ``Protocol`` with an all-zero masking key, so the fuzzer sees
payloads (deflate streams included) as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ))

from harnesses import frames, handshake, tokens  # noqa: E402 - the path is set just above

from mlsockets.broadcast import relay  # noqa: E402
from mlsockets.broadcast.base import Channel  # noqa: E402
from mlsockets.formatters.msgpack import MsgpackFormatter  # noqa: E402
from mlsockets.protocol.connection import Protocol, Side  # noqa: E402
from mlsockets.protocol.frames import serialize_close  # noqa: E402
from mlsockets.tokens import make_token  # noqa: E402
from mlsockets.typing import NodeId  # noqa: E402


def _client(cfg: int) -> Protocol:
    _, codec = frames._negotiate(cfg)
    return Protocol(Side.CLIENT, deflate=codec, mask_source=bytes)


def _frames_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}

    def add(name: str, script: Callable[[Protocol], None], **options: object) -> None:
        layout = frames.seed(b"", **options)  # type: ignore[arg-type]
        client = _client(layout[0])
        script(client)
        seeds[name] = frames.seed(client.data_to_send(), **options)  # type: ignore[arg-type]

    def chat(p: Protocol) -> None:
        p.send_text('{"event":"chat.send","data":{"text":"hello hello hello hello"},"id":1}')
        p.send_binary(bytes(range(100)))
        p.send_ping(b"hb")
        p.send_text("short")
        p.send_close(1000, "bye")

    def fragmented(p: Protocol) -> None:
        p.send_text("é" * 30, fin=False)
        p.send_ping(b"mid")
        p.send_continuation("x" * 40, fin=False)
        p.send_continuation("y" * 20, fin=True)
        p.send_binary(b"\x00" * 200, fin=False)
        p.send_continuation(b"\x01" * 10, fin=True)

    def bomb(p: Protocol) -> None:
        p.send_binary(bytes(60000))

    def context(p: Protocol) -> None:
        for _ in range(3):
            p.send_text("the same text, compressed against the previous message " * 2)
        p.send_pong(b"")
        p.send_close(4000, "")

    add("chat", chat)
    add("chat-plain", chat, deflate=False, limit_index=0)
    add("chat-split", chat, window_bits=9, splits=bytes((1, 7, 100, 200)))
    add("fragmented", fragmented, client_no_context_takeover=True)
    add("fragmented-plain", fragmented, deflate=False, splits=bytes((3, 50)))
    add("bomb", bomb, limit_index=2, window_bits=None)
    add("context", context, window_bits=8, server_no_context_takeover=True)
    add("context-noctx", context, client_no_context_takeover=True, window_bits=12)
    add("server-closes", chat, splits=bytes((60,)), server_closes=True)

    def tiny_fragments(p: Protocol) -> None:
        p.send_binary(b"", fin=False)
        for _ in range(200):
            p.send_continuation(b"", fin=False)
            p.send_continuation(b"x", fin=False)
        p.send_continuation(b"", fin=True)

    add("tiny-fragments", tiny_fragments, deflate=False)
    add("tiny-fragments-deflate", tiny_fragments, limit_index=0)
    seeds["close-empty"] = frames.seed(b"\x88\x80\x00\x00\x00\x00", deflate=False)
    seeds["close-1002"] = frames.seed(b"\x88\x82\x00\x00\x00\x00" + serialize_close(1002))
    return seeds


def _handshake_seeds() -> dict[str, bytes]:
    valid = handshake.VALID_REQUEST
    return {
        "valid": handshake.seed(valid),
        "deflate": handshake.seed(
            valid + "sec-websocket-extensions: permessage-deflate; client_max_window_bits\n",
            deflate=2,
        ),
        "deflate-offers": handshake.seed(
            valid + "sec-websocket-extensions: x-foo, permessage-deflate; "
            'server_max_window_bits="10"; client_no_context_takeover, '
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9\n",
            deflate=3,
        ),
        "subprotocols": handshake.seed(
            valid + "sec-websocket-protocol: mlsockets.json.v1, mlsockets.msgpack.v1\n"
            "origin: https://example.com\n",
            subprotocol=1,
        ),
        "post": handshake.seed("POST HTTP/1.1\nupgrade: websocket\n"),
        "old-version": handshake.seed(valid.replace("13", "8")),
    }


def _headers_seeds() -> dict[str, bytes]:
    head = (
        b"Host: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    return {
        "valid": head,
        "folded": b"X-Long: one\r\n two\r\n\tthree\r\nHost: a\r\n\r\n",
        "repeated": b"Accept: a\r\nAccept: b\nCookie: x=1\r\n\r\n",
        "bad": b"Host : a\r\n\r\n",
        "many": b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n",
    }


def _envelope_json_seeds() -> dict[str, bytes]:
    return {
        "send": b'{"event":"chat.send","data":{"text":"hi","n":[1,2.5,true,null]},"id":7}',
        "no-id": b'{"event":"mls.subscribe","data":{"channel":"room:lobby"}}',
        "bad-id": b'{"event":"x","id":-1}',
        "extra": b'{"event":"x","foo":1,"bar":2}',
        "deep": b'{"event":"x","data":' + b"[" * 70 + b"]" * 70 + b"}",
        "surrogate": b'{"event":"\\ud800"}',
        "numbers": b'[1e999, NaN, 123456789012345678901234567890, -0.0, "\\u00e9"]',
    }


def _envelope_msgpack_seeds() -> dict[str, bytes]:
    pack = MsgpackFormatter().encode
    return {
        "send": pack({"event": "chat.send", "data": {"text": "hi", "b": b"\x00\x01"}, "id": 7}),
        "no-id": pack({"event": "mls.subscribe", "data": {"channel": "room:lobby"}}),
        "bad-id": pack({"event": "x", "id": 2**60}),
        "types": pack([1, -1, 2**63, 1.5, None, True, "s", b"b", {}, []]),
        "deep": pack({"event": "x", "data": [[[[[[[[[[[[[[]]]]]]]]]]]]]]}),
        "ext": b"\x81\xa5event\xd6\xff\x00\x00\x00\x00",
        "bin-key": b"\x81\xc4\x01k\x01",
    }


def _relay_seeds() -> dict[str, bytes]:
    origin = '"origin":"web-1-4242-a1b2c3"'
    envelope = '"envelope":{"event":"chat.message","channel":"room:lobby","data":{"t":"hi"}}'
    skip = '"skip":null'
    return {
        "channel": f'{{"v":1,{origin},"target":["channel","room:lobby"],{envelope},'
        '"skip":"k3Jd9w"}'.encode(),
        "user": f'{{"v":1,{origin},"target":["user","42"],{envelope},"skip":null}}'.encode(),
        "everyone": f'{{"v":1,{origin},"target":["everyone",null],{envelope},{skip}}}'.encode(),
        "v2": f'{{"v":2,{origin},"target":["tag","admins"],{envelope},"skip":null}}'.encode(),
        "keys": b'{"v":1,"origin":"a"}',
        "msgpack": relay.encode(
            relay.RelayMessage(
                NodeId("web-2"),
                Channel("room:lobby"),
                {"event": "file", "data": {"blob": b"\x00\xff", "nan": float("nan")}},
            )
        ),
    }


def _tokens_seeds() -> dict[str, bytes]:
    key = tokens.KEYS[0]
    valid = make_token(key, "alice", ttl=60, now=tokens.NOW, info={"name": "A"}, tags=["x"])
    return {
        "valid": tokens.seed(0, valid.encode()),
        "expired": tokens.seed(0, make_token(key, "bob", ttl=1, now=0).encode()),
        "garbage": tokens.seed(0, b"abc.def"),
        "claims": tokens.seed(1, b'{"v":1,"sub":"carol","exp":1700000100,"tags":["a"]}'),
        "claims-bad": tokens.seed(1, b'{"v":true,"sub":"","exp":1e400,"info":[]}'),
        "altered": tokens.seed(2, b"\x05Adave"),
    }


SEEDS: dict[str, Callable[[], dict[str, bytes]]] = {
    "frames": _frames_seeds,
    "handshake": _handshake_seeds,
    "headers": _headers_seeds,
    "envelope_json": _envelope_json_seeds,
    "envelope_msgpack": _envelope_msgpack_seeds,
    "relay": _relay_seeds,
    "tokens": _tokens_seeds,
}


def main() -> None:
    for target, make in SEEDS.items():
        corpus = FUZZ / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        for name, data in make().items():
            (corpus / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
