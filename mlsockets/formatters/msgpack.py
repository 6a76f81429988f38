"""The ``mlsockets.msgpack.v1`` formatter: envelopes as MessagePack in binary messages.

The only module that imports ``msgpack``, and only on first use: importing
:mod:`mlsockets.formatters` never loads it. Without msgpack installed, :func:`available` is
False (the subprotocol is not negotiated) and using the formatter raises
:class:`~mlsockets.exceptions.ConfigurationError` saying ``pip install mlsockets[msgpack]``.

Decoding is strict: strings must be UTF-8 (``raw=False``), map keys str or bytes, every
length is capped by the message's own size, nesting by ``max_depth``; extension types,
timestamps included, are refused (the data an application sees is JSON-like plus bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters.json import DEFAULT_MAX_DEPTH, check_nesting

__all__ = ["MSGPACK_SUBPROTOCOL", "MsgpackFormatter", "available", "require"]

MSGPACK_SUBPROTOCOL = "mlsockets.msgpack.v1"

_INSTALL_HINT = (
    f"the {MSGPACK_SUBPROTOCOL} subprotocol needs msgpack: pip install mlsockets[msgpack]"
)


class _Lib:
    """The msgpack module once imported (a holder, so tests can reset it)."""

    module: Any = None


def _load() -> Any:
    """Import msgpack on first use.

    Raises:
        ConfigurationError: msgpack is not installed.
    """
    if _Lib.module is None:
        try:
            import msgpack  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ConfigurationError(_INSTALL_HINT) from exc
        _Lib.module = msgpack
    return _Lib.module


def require() -> None:
    """Import msgpack now, to fail at start-up rather than on the first message.

    Raises:
        ConfigurationError: msgpack is not installed (the message says what to install).
    """
    _load()


def available() -> bool:
    """Whether msgpack can be imported (imports it when it can)."""
    try:
        _load()
    except ConfigurationError:
        return False
    return True


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError(f"extension type {code} is not supported")


def _default(obj: object) -> object:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, int):  # the packer calls default() for integers it cannot hold
        raise ValueError(f"integer out of the msgpack range: {obj}")
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


# Bytes that can start an array or a map: fixmap, fixarray, array 16/32, map 16/32. Their
# count bounds the nesting (most messages skip the walk); a timestamp needs an 0xff type byte.
_NOT_CONTAINER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))


class MsgpackFormatter:
    """Encodes envelopes as MessagePack; decodes binary messages only.

    Args:
        max_depth: deepest nesting of arrays and maps :meth:`decode` accepts.

    Creating one does not import msgpack; the first :meth:`encode` / :meth:`decode` does.
    Instances are stateless and safe to share between connections and greenlets.
    """

    name: str = "msgpack"
    subprotocol: str = MSGPACK_SUBPROTOCOL
    binary: bool = True

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.max_depth = max_depth

    def encode(self, obj: object) -> bytes:
        """Serialize ``obj`` (msgpack types, any ``Mapping``) to a binary message.

        Raises:
            ConfigurationError: msgpack is not installed.
            TypeError: ``obj`` holds a value msgpack cannot represent (datetime included).
            ValueError: an integer out of the 64-bit range, or nesting too deep.
        """
        packed: bytes = _load().packb(obj, use_bin_type=True, datetime=False, default=_default)
        return packed

    def decode(self, message: str | bytes) -> object:
        """Parse one binary message.

        Raises:
            ConfigurationError: msgpack is not installed.
            ValueError: a text message, invalid or truncated msgpack, trailing bytes,
                invalid UTF-8, a map key that is not str or bytes, an extension type or a
                timestamp, or nesting deeper than ``max_depth``. The message is safe to send
                back to the client.
        """
        if isinstance(message, str):
            raise ValueError(f"{MSGPACK_SUBPROTOCOL} expects binary messages, got a text message")
        lib = _load()
        size = len(message)
        try:
            obj: object = lib.unpackb(
                message,
                raw=False,
                strict_map_key=True,
                use_list=True,
                ext_hook=_refuse_ext,
                max_str_len=size,
                max_bin_len=size,
                max_array_len=size,
                max_map_len=size // 2,
                max_ext_len=size,
            )
        except lib.StackError:
            raise ValueError(f"invalid msgpack: nesting deeper than {self.max_depth}") from None
        except Exception as exc:  # untrusted input: whatever the unpacker raises
            raise ValueError(f"invalid msgpack: {str(exc) or 'malformed data'}") from None
        if b"\xff" in message or len(message.translate(None, _NOT_CONTAINER)) > self.max_depth:
            try:
                check_nesting(obj, self.max_depth, lib.Timestamp)
            except ValueError as exc:
                raise ValueError(f"invalid msgpack: {exc}") from None
        return obj

    def __repr__(self) -> str:
        return f"<MsgpackFormatter {self.subprotocol}>"
