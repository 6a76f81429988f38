"""Every input the fuzzers found (fuzz/regressions/<target>/), replayed through its harness.

A file there is an input that once crashed or broke an invariant; the fix is in the layer
that owned the bug (docs/fuzzing.md lists them), and the harness must now pass it. The
named tests below restate the fixed behaviour at the API, independently of the harnesses.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fuzz_support import FUZZ, harness
from harnesses import TARGETS

from mlsockets.broadcast.relay import RelayError, decode
from mlsockets.formatters.msgpack import MsgpackFormatter
from mlsockets.transport.gevent.headers import MAX_HEADERS, RequestHead

REGRESSIONS = sorted((FUZZ / "regressions").glob("*/*"))


def test_every_regression_belongs_to_a_target() -> None:
    assert REGRESSIONS, "fuzz/regressions/ holds the inputs of past findings"
    assert {path.parent.name for path in REGRESSIONS} <= set(TARGETS)


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_passes_its_harness(path: Path) -> None:
    harness(path.parent.name)(path.read_bytes())


RELAY = '{"v":1,"origin":"n1","target":["everyone",null],"envelope":{"event":"e","data":%s},'
RELAY += '"skip":null}'


class TestRelayDecodeRefusesWhatNoNodeCouldDeliver:
    """Found by the relay target: these decoded, then failed at every node's delivery."""

    @pytest.mark.parametrize(
        "data",
        [
            '"\\ud800"',  # a lone surrogate: no UTF-8 encoding exists
            '"a\\udfffb"',
            "NaN",
            "-Infinity",
            "1e999",  # a float that overflows to inf
        ],
    )
    def test_values_json_cannot_send(self, data: str) -> None:
        message = RELAY % data
        for form in (message, message.encode()):
            with pytest.raises(RelayError, match="undecodable"):
                decode(form)

    def test_nesting_beyond_the_recursion_limit_is_a_relay_error(self) -> None:
        # It raised RecursionError, which escaped the relay's listener and dropped its
        # Redis subscription: one published message could disconnect every node.
        deep = "[" * 100_000 + "]" * 100_000
        with pytest.raises(RelayError, match="nested too deeply"):
            decode((RELAY % deep).encode())

    def test_a_msgpack_map_with_bytes_keys_is_a_relay_error(self) -> None:
        # Found by the relay target: naming the unexpected keys sorted str and bytes together,
        # and the TypeError escaped the relay's listener.
        data = MsgpackFormatter().encode({"v": 1, "origin": "n1", b"extra": 1, "skip": None})
        with pytest.raises(RelayError, match="relay message keys"):
            decode(data)

    def test_escapes_that_make_valid_characters_still_decode(self) -> None:
        message = decode((RELAY % '"\\ud83d\\ude00 \\u00e9 1e308"').encode())
        assert message.envelope["data"] == "\U0001f600 é 1e308"


class TestRequestHeadFolding:
    """Found by the headers target: obsolete line folding (RFC 7230 section 3.2.4)."""

    def test_folded_lines_count_towards_the_header_limit(self) -> None:
        # Continuation lines were not counted: a client could grow one header without end
        # (quadratic copying, unbounded memory) while the request head stayed "valid".
        head = io.BytesIO(b"X-Grow: a\r\n" + b" a\r\n" * MAX_HEADERS + b"\r\n")
        parsed = RequestHead(head)
        assert parsed.status == "Too many headers"
        assert head.tell() < len(head.getvalue())  # it stopped reading at the limit

    def test_the_limit_still_allows_a_full_head(self) -> None:
        lines = b"X-Fold: a\r\n b\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(98))
        parsed = RequestHead(io.BytesIO(lines + b"\r\n"))
        assert parsed.status == ""
        assert len(parsed) == 99 and parsed["x-fold"] == "a b"

    @pytest.mark.parametrize("fold", [b" \r\n", b"\t \r\n"])
    def test_a_blank_continuation_adds_no_space(self, fold: bytes) -> None:
        parsed = RequestHead(io.BytesIO(b"X-A: v\r\n" + fold + b"X-B:\r\n x\r\n\r\n"))
        assert parsed.status == ""
        assert parsed.items() == [("X-A", "v"), ("X-B", "x")]
