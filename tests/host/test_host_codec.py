"""The Unix-socket broadcaster's records: a 4-byte big-endian length, then one relay message.
Pure: bytes in, payloads out."""

from __future__ import annotations

import pytest

from mlsockets.broadcast.base import Channel, User
from mlsockets.broadcast.records import (
    HEADER,
    MessageTooLarge,
    RecordError,
    RecordReader,
    record,
)
from mlsockets.broadcast.relay import RelayMessage, decode, encode
from mlsockets.typing import ConnectionId, NodeId


def test_a_relay_message_survives_records_byte_by_byte() -> None:
    message = RelayMessage(
        NodeId("host-1-abc"), Channel("room:lobby"), {"event": "e", "data": "é" * 10}
    )
    data = record(encode(message)) * 2
    reader = RecordReader()
    out: list[bytes] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert [decode(p) for p in out] == [message, message]
    assert reader.pending == 0


def test_several_records_in_one_read_and_one_split_across_reads() -> None:
    payloads = [b"", b"a", b"b" * 70_000, b"c"]
    stream = b"".join(record(p) for p in payloads)
    reader = RecordReader()
    first = reader.feed(stream[:70_003])
    assert first == payloads[:2]
    assert reader.pending == 70_003 - 2 * HEADER.size - 1
    assert reader.feed(stream[70_003:]) == payloads[2:]


def test_a_large_message_is_carried_whole() -> None:
    big = RelayMessage(NodeId("n"), User("7"), {"event": "big", "data": "x" * 3_000_000})
    reader = RecordReader()
    data = record(encode(big))
    out = [p for i in range(0, len(data), 65536) for p in reader.feed(data[i : i + 65536])]
    assert len(out) == 1 and decode(out[0]).envelope["data"] == "x" * 3_000_000


def test_an_incomplete_record_is_pending_never_delivered() -> None:
    reader = RecordReader()
    data = record(b"0123456789")
    assert reader.feed(data[:-3]) == []
    assert reader.pending == len(data) - 3  # the publisher went away: the reader drops it


def test_a_message_over_the_limit_is_refused_before_sending() -> None:
    with pytest.raises(MessageTooLarge, match="limit"):
        record(b"x" * 11, max_message=10)
    assert record(b"x" * 10, max_message=10)[HEADER.size :] == b"x" * 10


def test_a_header_over_the_limit_is_a_record_error() -> None:
    reader = RecordReader(max_message=1000)
    with pytest.raises(RecordError, match="1001 bytes"):
        reader.feed(HEADER.pack(1001) + b"x")


def test_skip_and_target_survive() -> None:
    message = RelayMessage(NodeId("o"), Channel("c"), {"event": "e"}, ConnectionId("k"))
    (payload,) = RecordReader().feed(record(encode(message)))
    assert decode(payload) == message
