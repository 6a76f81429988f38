"""Channel names: the validity table and the kind given by the prefix."""

from __future__ import annotations

import pytest

from mlsockets.channels.names import (
    MAX_CHANNEL_LENGTH,
    VALID_CHARACTERS,
    ChannelKind,
    InvalidChannel,
    parse_channel,
)
from mlsockets.exceptions import MLSocketsError

PUBLIC, PRIVATE, PRESENCE = ChannelKind.PUBLIC, ChannelKind.PRIVATE, ChannelKind.PRESENCE


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("lobby", PUBLIC),
        ("room:lobby", PUBLIC),
        ("a", PUBLIC),
        ("0", PUBLIC),
        ("-", PUBLIC),
        ("_-=@,.;:", PUBLIC),
        ("user@example.com", PUBLIC),
        ("a=b;c,d", PUBLIC),
        ("private", PUBLIC),  # no hyphen: not the prefix
        ("presence", PUBLIC),
        ("Private-user.7", PUBLIC),  # prefixes are case-sensitive
        ("PRESENCE-room.1", PUBLIC),
        ("privatex-1", PUBLIC),
        ("x-private-1", PUBLIC),  # prefix only at the start
        ("private-user.7", PRIVATE),
        ("private-a", PRIVATE),
        ("private--", PRIVATE),
        ("private-presence-x", PRIVATE),
        ("presence-room.1", PRESENCE),
        ("presence-a", PRESENCE),
        ("presence-private-x", PRESENCE),
        ("presence-:", PRESENCE),
        ("x" * MAX_CHANNEL_LENGTH, PUBLIC),
        ("private-" + "x" * (MAX_CHANNEL_LENGTH - 8), PRIVATE),
    ],
)
def test_valid_names_and_their_kind(name: str, kind: ChannelKind) -> None:
    assert parse_channel(name) == (kind, name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "channel name is empty"),
        ("x" * (MAX_CHANNEL_LENGTH + 1), "channel name is longer than 200 characters"),
        ("private-" + "x" * MAX_CHANNEL_LENGTH, "longer than 200"),
        ("room lobby", "invalid character: ' '"),
        ("room/lobby", "invalid character: '/'"),
        ("a*b", "invalid character: '*'"),
        ("ab{c}", "invalid character: '{'"),
        ("ok!first?second", "invalid character: '!'"),  # the first bad one is named
        ("tab\there", "invalid character: '\\t'"),  # escaped, never raw
        ("nul\x00", "invalid character: '\\x00'"),
        ("line\n", "invalid character: '\\n'"),
        ("quote'", 'invalid character: "\'"'),
        ("café", "invalid character: 'é'"),  # ASCII only
        ("١٢٣", "invalid character: '١'"),  # non-ASCII digits too
        ("ｆｕｌｌ", "invalid character: 'ｆ'"),
        ("private-", "'private-' is a bare prefix"),
        ("presence-", "'presence-' is a bare prefix"),
    ],
)
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel(name)
    assert message in info.value.message
    assert str(info.value) == info.value.message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), (7, "int"), (b"lobby", "bytes"), (["lobby"], "list")],
)
def test_non_strings_are_invalid(value: object, type_name: str) -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel(value)
    assert info.value.message == f"channel name must be a string, not {type_name}"


def test_invalid_channel_is_a_client_safe_mlsockets_error() -> None:
    exc = InvalidChannel("channel name is empty")
    assert isinstance(exc, MLSocketsError)
    assert exc.code == "invalid_channel"
    assert exc.message == "channel name is empty"


def test_long_names_are_refused_before_scanning_characters() -> None:
    # A huge name full of bad characters reports the length: it is never scanned.
    with pytest.raises(InvalidChannel, match="longer than"):
        parse_channel(" " * 1_000_000)


def test_valid_characters_are_exactly_the_documented_set() -> None:
    for code in range(0x250):
        ch = chr(code)
        name = "a" + ch
        if ch in VALID_CHARACTERS:
            assert parse_channel(name) == (PUBLIC, name)
        else:
            with pytest.raises(InvalidChannel):
                parse_channel(name)
    assert len(VALID_CHARACTERS) == 26 + 26 + 10 + 8


def test_the_returned_name_is_the_same_string() -> None:
    name = "room:" + "x" * 10
    assert parse_channel(name)[1] is name
