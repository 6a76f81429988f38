"""RFC 7692 permessage-deflate: negotiation (section 7.1) and per-message codec (section 7.2).

Negotiation is pure: :func:`negotiate_server` turns a client's ``Sec-WebSocket-Extensions``
offer into a response parameter string and a :class:`PerMessageDeflate` codec;
:func:`client_offer` / :func:`accept_response` are the client's side.

Decompression is capped: :meth:`PerMessageDeflate.decompress` never inflates more than the
caller's limit, so a compression bomb costs at most ``limit`` bytes before it is refused with
1009 (:class:`~mlsockets.exceptions.PayloadTooBig`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from mlsockets.exceptions import InvalidHandshake, PayloadTooBig, ProtocolError

__all__ = [
    "EXTENSION_NAME",
    "DeflateConfig",
    "PerMessageDeflate",
    "parse_extensions",
    "negotiate_server",
    "client_offer",
    "accept_response",
]

EXTENSION_NAME = "permessage-deflate"

# Section 7.2.1: a compressed message ends with an empty stored block whose last four octets,
# 0x00 0x00 0xff 0xff, the sender removes and the receiver appends before inflating.
_TAIL = b"\x00\x00\xff\xff"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The whitespace before "=" lives inside the optional group: two \s* separated only by an
# optional group made a failed match quadratic (a 64 KiB header line took over a minute).
_PARAM_RE = re.compile(rf'\s*({_TOKEN})(?:\s*=\s*({_TOKEN}|"(?:[^"\\]|\\.)*"))?\s*')

Params = list[tuple[str, str | None]]


def parse_extensions(header: str) -> list[tuple[str, Params]]:
    """Parse a ``Sec-WebSocket-Extensions`` value (RFC 6455 section 9.1).

    Returns ``[(name, [(param, value or None), ...]), ...]`` in offer order; quoted values are
    unquoted. Raises ``InvalidHandshake`` (400) on a syntax error.
    """
    result: list[tuple[str, Params]] = []
    for item in _split_outside_quotes(header, ","):
        if not item.strip():
            continue
        parts = _split_outside_quotes(item, ";")
        name = parts[0].strip()
        if not re.fullmatch(_TOKEN, name):
            raise InvalidHandshake(f"invalid Sec-WebSocket-Extensions header: {header!r}")
        params: Params = []
        for part in parts[1:]:
            m = _PARAM_RE.fullmatch(part)
            if m is None:
                raise InvalidHandshake(f"invalid Sec-WebSocket-Extensions header: {header!r}")
            value = m.group(2)
            if value is not None and value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
                # RFC 6455 section 9.1: a quoted value must still be a token once unquoted.
                if not re.fullmatch(_TOKEN, value):
                    raise InvalidHandshake(f"invalid Sec-WebSocket-Extensions header: {header!r}")
            params.append((m.group(1), value))
        result.append((name, params))
    return result


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise InvalidHandshake(f"unterminated quoted string in {text!r}")
    parts.append("".join(current))
    return parts


@dataclass(frozen=True, slots=True)
class DeflateConfig:
    """What this endpoint is willing to negotiate, and how it compresses.

    Attributes:
        server_max_window_bits: the server's LZ77 window (8-15); smaller saves memory.
        client_max_window_bits: asked of clients that allow it (8-15), or None.
        server_no_context_takeover: the server resets its compressor after every message.
        client_no_context_takeover: ask clients to reset theirs (saves server memory).
        level: zlib compression level (1-9).
        mem_level: zlib memLevel (1-9); 8 is zlib's default, lower saves memory.
        threshold: messages shorter than this many bytes are sent uncompressed (section 6:
            a sender may choose per message).
    """

    server_max_window_bits: int = 15
    client_max_window_bits: int | None = None
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    level: int = 6
    mem_level: int = 8
    threshold: int = 64

    def __post_init__(self) -> None:
        if not 8 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be between 8 and 15")
        if self.client_max_window_bits is not None and not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be between 8 and 15")
        if not 0 <= self.level <= 9 or not 1 <= self.mem_level <= 9:
            raise ValueError("level must be 0-9 and mem_level 1-9")
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")


class PerMessageDeflate:
    """The negotiated codec for one connection (RFC 7692 section 7.2).

    ``local_*`` parameters govern what this endpoint sends (its compressor), ``remote_*`` what
    it receives (its decompressor). Call protocol: for a received message, call
    :meth:`decompress` once per frame with ``fin`` on the last one; for a message to send,
    :meth:`compress` returns the payload of one frame carrying the whole message.
    """

    __slots__ = (
        "local_no_context_takeover",
        "remote_no_context_takeover",
        "local_max_window_bits",
        "remote_max_window_bits",
        "level",
        "mem_level",
        "threshold",
        "_compressor",
        "_decompressor",
    )

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        level: int = 6,
        mem_level: int = 8,
        threshold: int = 64,
    ) -> None:
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.level = level
        self.mem_level = mem_level
        self.threshold = threshold
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    def compress(self, data: bytes, fin: bool = True) -> bytes:
        """Compress one message, or one fragment of it; the first frame gets RSV1.

        Every call ends with a sync flush, so each fragment can be inflated on arrival; only
        the last one (``fin``) drops the 0x00 0x00 0xff 0xff tail (section 7.2.1).
        """
        if self._compressor is None:
            # zlib refuses an 8-bit window for raw deflate; a 9-bit one is what it would use
            # anyway, and every inflater configured for 8 bits accepts it (zlib >= 1.2.9).
            self._compressor = zlib.compressobj(
                self.level, zlib.DEFLATED, -max(self.local_max_window_bits, 9), self.mem_level
            )
        data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if not fin:
            return data
        # Z_SYNC_FLUSH always ends with the empty stored block whose tail we drop.
        data = data[:-4]
        if self.local_no_context_takeover:
            self._compressor = None
        return data

    def decompress(self, data: bytes, fin: bool, limit: int) -> bytes:
        """Inflate one frame of a compressed message.

        Args:
            data: the frame's payload.
            fin: whether this is the last frame of the message.
            limit: the most bytes the caller will accept from this call.

        Raises:
            PayloadTooBig: inflating would exceed ``limit`` (1009).
            ProtocolError: the data is not a valid deflate stream (1007, section 8.1 treats it
                as invalid payload data).
        """
        if self._decompressor is None:
            self._decompressor = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        d = self._decompressor
        if fin:
            data += _TAIL
        try:
            # max_length bounds the output: the rest stays in unconsumed_tail and we refuse
            # the message rather than inflate it (a compression bomb never reaches memory).
            out = d.decompress(data, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}", 1007) from None
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooBig("decompressed message exceeds the maximum size")
        # A sender may end a message with a BFINAL block (section 7.2.3.4): the stream is over,
        # so the next message needs a fresh inflater (an exhausted one would return b"").
        if fin and (self.remote_no_context_takeover or d.eof):
            self._decompressor = None
        return out


def _parse_bits(name: str, value: str | None, *, allow_none: bool) -> int | None:
    """Section 7.1.2: window bits are a decimal integer 8-15 with no leading zero."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} needs a value")
    if not re.fullmatch(r"[89]|1[0-5]", value):
        raise ValueError(f"invalid {name}={value}")
    return int(value)


@dataclass(frozen=True, slots=True)
class _Offer:
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int | None
    client_max_window_bits: int | None  # None: absent; 15: present without a value


def _parse_offer(params: Params, *, response: bool = False) -> _Offer:
    """Validate one offer (or, with ``response``, the server's answer) per section 7.1.

    Raises ValueError for an unknown or repeated parameter or a bad value.
    """
    seen: set[str] = set()
    snct = cnct = False
    smwb: int | None = None
    cmwb: int | None = None
    for name, value in params:
        if name in seen:
            raise ValueError(f"repeated parameter {name}")
        seen.add(name)
        if name == "server_no_context_takeover" and value is None:
            snct = True
        elif name == "client_no_context_takeover" and value is None:
            cnct = True
        elif name == "server_max_window_bits":
            smwb = _parse_bits(name, value, allow_none=False)
        elif name == "client_max_window_bits":
            bits = _parse_bits(name, value, allow_none=not response)
            cmwb = 15 if bits is None else bits
        else:
            raise ValueError(f"unsupported parameter {name}")
    return _Offer(snct, cnct, smwb, cmwb)


def negotiate_server(
    header: str | None, config: DeflateConfig
) -> tuple[str, PerMessageDeflate] | None:
    """Answer a client's extension offers (section 7.1; server side).

    Takes the first acceptable permessage-deflate offer (section 5.1: offers are in order of
    the client's preference); an invalid offer is declined, not fatal. Returns the
    ``Sec-WebSocket-Extensions`` response value and the codec, or None when nothing is
    accepted. Raises ``InvalidHandshake`` only when the header itself cannot be parsed.
    """
    if not header:
        return None
    for name, params in parse_extensions(header):
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _parse_offer(params)
        except ValueError:
            continue  # section 7.1: decline this offer, consider the next one
        response = [EXTENSION_NAME]
        # Section 7.1.1.1: the server must honour server_no_context_takeover, may add it.
        snct = offer.server_no_context_takeover or config.server_no_context_takeover
        if snct:
            response.append("server_no_context_takeover")
        # Section 7.1.1.2: the server may always ask the client not to take over context.
        cnct = offer.client_no_context_takeover or config.client_no_context_takeover
        if cnct:
            response.append("client_no_context_takeover")
        # Section 7.1.2.1: the answer must not exceed the client's limit on the server window.
        server_bits = config.server_max_window_bits
        if offer.server_max_window_bits is not None:
            server_bits = min(server_bits, offer.server_max_window_bits)
        if server_bits < 15 or offer.server_max_window_bits is not None:
            response.append(f"server_max_window_bits={server_bits}")
        # Section 7.1.2.2: only a client that offered client_max_window_bits may be limited.
        client_bits = 15
        if offer.client_max_window_bits is not None:
            client_bits = offer.client_max_window_bits
            if config.client_max_window_bits is not None:
                client_bits = min(client_bits, config.client_max_window_bits)
            if client_bits < 15:
                response.append(f"client_max_window_bits={client_bits}")
        codec = PerMessageDeflate(
            local_no_context_takeover=snct,
            remote_no_context_takeover=cnct,
            local_max_window_bits=server_bits,
            remote_max_window_bits=client_bits,
            level=config.level,
            mem_level=config.mem_level,
            threshold=config.threshold,
        )
        return "; ".join(response), codec
    return None


def client_offer(config: DeflateConfig) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends to offer permessage-deflate.

    ``config`` is read from the client's point of view: ``client_*`` parameters describe what
    the client asks for itself, ``server_*`` what it asks of the server.
    """
    offer = [EXTENSION_NAME]
    if config.server_no_context_takeover:
        offer.append("server_no_context_takeover")
    if config.client_no_context_takeover:
        offer.append("client_no_context_takeover")
    if config.server_max_window_bits < 15:
        offer.append(f"server_max_window_bits={config.server_max_window_bits}")
    if config.client_max_window_bits is None:
        offer.append("client_max_window_bits")
    else:
        offer.append(f"client_max_window_bits={config.client_max_window_bits}")
    return "; ".join(offer)


def accept_response(header: str | None, config: DeflateConfig) -> PerMessageDeflate | None:
    """Check the server's answer to :func:`client_offer` (section 7.1; client side).

    Returns the codec, or None when the server declined. Raises ``InvalidHandshake`` when the
    server accepted something the client did not offer (section 9.1: the client must fail).
    """
    if not header:
        return None
    accepted = parse_extensions(header)
    if len(accepted) != 1 or accepted[0][0] != EXTENSION_NAME:
        raise InvalidHandshake(f"server accepted unexpected extensions: {header!r}")
    try:
        answer = _parse_offer(accepted[0][1], response=True)
    except ValueError as exc:
        raise InvalidHandshake(f"invalid permessage-deflate response: {exc}") from None
    if config.server_no_context_takeover and not answer.server_no_context_takeover:
        raise InvalidHandshake("server ignored server_no_context_takeover")
    server_bits = answer.server_max_window_bits or 15
    if server_bits > config.server_max_window_bits:
        raise InvalidHandshake("server_max_window_bits larger than offered")
    # Section 7.1.2.2: the server may omit client_max_window_bits; the offered limit then holds.
    client_bits = answer.client_max_window_bits or config.client_max_window_bits or 15
    if config.client_max_window_bits is not None and client_bits > config.client_max_window_bits:
        raise InvalidHandshake("client_max_window_bits larger than offered")
    return PerMessageDeflate(
        local_no_context_takeover=answer.client_no_context_takeover
        or config.client_no_context_takeover,
        remote_no_context_takeover=answer.server_no_context_takeover,
        local_max_window_bits=client_bits,
        remote_max_window_bits=server_bits,
        level=config.level,
        mem_level=config.mem_level,
        threshold=config.threshold,
    )
