"""Formatters: JSON and msgpack codecs, negotiation, and msgpack as an optional dependency."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import msgpack  # type: ignore[import-untyped]
import pytest

from mlsockets.exceptions import ConfigurationError
from mlsockets.formatters import msgpack as msgpack_formatter
from mlsockets.formatters.base import (
    FORMATTERS,
    JSON,
    MSGPACK,
    Formatter,
    choose,
    get_formatter,
)
from mlsockets.formatters.json import JsonFormatter, check_nesting
from mlsockets.formatters.msgpack import MsgpackFormatter

ROOT = Path(__file__).resolve().parents[2]
JSON_V1 = "mlsockets.json.v1"
MSGPACK_V1 = "mlsockets.msgpack.v1"


def nested_list(depth: int) -> object:
    """``depth`` lists nested in one another, built without recursion."""
    obj: object = 0
    for _ in range(depth):
        obj = [obj]
    return obj


def nested_dict(depth: int) -> object:
    obj: object = 0
    for _ in range(depth):
        obj = {"k": obj}
    return obj


@pytest.fixture
def no_msgpack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import msgpack`` fail, as when the extra is not installed."""
    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.setattr(msgpack_formatter._Lib, "module", None)


# -- the registry and negotiation ----------------------------------------------------------


class TestRegistry:
    def test_formatters_are_keyed_by_subprotocol(self) -> None:
        assert list(FORMATTERS) == [JSON_V1, MSGPACK_V1]
        assert FORMATTERS[JSON_V1] is JSON
        assert FORMATTERS[MSGPACK_V1] is MSGPACK

    @pytest.mark.parametrize(
        ("formatter", "name", "subprotocol", "binary"),
        [(JSON, "json", JSON_V1, False), (MSGPACK, "msgpack", MSGPACK_V1, True)],
    )
    def test_attributes(
        self, formatter: Formatter, name: str, subprotocol: str, binary: bool
    ) -> None:
        assert (formatter.name, formatter.subprotocol, formatter.binary) == (
            name,
            subprotocol,
            binary,
        )
        assert subprotocol in repr(formatter)

    def test_choose_follows_the_client_order(self) -> None:
        assert choose([MSGPACK_V1, JSON_V1]) is MSGPACK
        assert choose([JSON_V1, MSGPACK_V1]) is JSON

    def test_choose_skips_unknown_subprotocols(self) -> None:
        assert choose(["chat", "mlsockets.json.v2", JSON_V1]) is JSON

    def test_choose_returns_none_when_nothing_matches(self) -> None:
        assert choose([]) is None
        assert choose(["chat", "MLSOCKETS.JSON.V1"]) is None

    def test_get_formatter(self) -> None:
        assert get_formatter(JSON_V1) is JSON
        assert get_formatter(MSGPACK_V1) is MSGPACK

    def test_get_formatter_unknown_lists_the_known_ones(self) -> None:
        with pytest.raises(ConfigurationError, match=r"'chat'.*mlsockets\.json\.v1"):
            get_formatter("chat")


class TestWithoutMsgpack:
    @pytest.mark.usefixtures("no_msgpack")
    def test_not_available(self) -> None:
        assert msgpack_formatter.available() is False

    @pytest.mark.usefixtures("no_msgpack")
    def test_choose_skips_msgpack(self) -> None:
        assert choose([MSGPACK_V1, JSON_V1]) is JSON
        assert choose([MSGPACK_V1]) is None

    @pytest.mark.usefixtures("no_msgpack")
    def test_get_formatter_says_what_to_install(self) -> None:
        with pytest.raises(ConfigurationError, match=r"pip install mlsockets\[msgpack\]"):
            get_formatter(MSGPACK_V1)

    @pytest.mark.usefixtures("no_msgpack")
    def test_require_says_what_to_install(self) -> None:
        with pytest.raises(ConfigurationError, match=r"pip install mlsockets\[msgpack\]") as e:
            msgpack_formatter.require()
        assert isinstance(e.value.__cause__, ImportError)

    @pytest.mark.usefixtures("no_msgpack")
    def test_using_the_formatter_says_what_to_install(self) -> None:
        with pytest.raises(ConfigurationError, match=r"pip install mlsockets\[msgpack\]"):
            MSGPACK.encode({})
        with pytest.raises(ConfigurationError, match=r"pip install mlsockets\[msgpack\]"):
            MSGPACK.decode(b"\x80")

    def test_available_when_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(msgpack_formatter._Lib, "module", None)
        assert msgpack_formatter.available() is True
        msgpack_formatter.require()

    def test_importing_the_formatters_does_not_import_msgpack(self) -> None:
        code = (
            "import sys\n"
            "import mlsockets.formatters, mlsockets.formatters.base\n"
            "import mlsockets.formatters.msgpack, mlsockets.formatters.envelope\n"
            "import mlsockets.events\n"
            "from mlsockets.formatters.base import choose\n"
            "assert choose(['mlsockets.json.v1']).name == 'json'\n"
            "print('msgpack' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        )
        assert out.stdout.strip() == "False"


# -- JSON ------------------------------------------------------------------------------------


class TestJsonEncode:
    def test_compact_and_not_ascii_escaped(self) -> None:
        text = JSON.encode({"event": "chat", "data": {"text": "héllo ☃", "n": [1, 2.5, None]}})
        assert text == '{"event":"chat","data":{"text":"héllo ☃","n":[1,2.5,null]}}'
        assert isinstance(text, str)

    def test_mappings_encode_as_objects(self) -> None:
        assert JSON.encode(MappingProxyType({"a": 1})) == '{"a":1}'

    def test_tuples_encode_as_arrays(self) -> None:
        assert JSON.encode((1, 2)) == "[1,2]"

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_refuses_nan_and_infinity(self, value: float) -> None:
        with pytest.raises(ValueError):
            JSON.encode({"x": value})

    @pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()])
    def test_refuses_other_types(self, value: object) -> None:
        with pytest.raises(TypeError):
            JSON.encode({"x": value})

    def test_refuses_circular_references(self) -> None:
        loop: list[object] = []
        loop.append(loop)
        with pytest.raises(ValueError):
            JSON.encode(loop)

    def test_too_deep_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="too deep"):
            JSON.encode(nested_list(100_000))


class TestJsonDecode:
    def test_round_trip(self) -> None:
        obj = {"event": "e", "data": {"s": "é☃😀", "i": -3, "f": 0.5, "b": True, "n": None}}
        assert JSON.decode(JSON.encode(obj)) == obj

    @pytest.mark.parametrize("message", [b"{}", b""])
    def test_refuses_binary_messages(self, message: bytes) -> None:
        with pytest.raises(ValueError, match="expects text messages"):
            JSON.decode(message)

    @pytest.mark.parametrize("message", ["", "{", '{"a":}', "[1,]", "{'a': 1}", "{} x", "nul"])
    def test_refuses_invalid_json(self, message: str) -> None:
        with pytest.raises(ValueError, match="^invalid JSON: "):
            JSON.decode(message)

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
    def test_refuses_nan_and_infinity(self, literal: str) -> None:
        with pytest.raises(ValueError, match=f"invalid JSON: -?{literal.lstrip('-')} is not"):
            JSON.decode(f'{{"x":{literal}}}')

    @pytest.mark.parametrize("number", ["1e999", "-1e999", "1" + "0" * 400 + ".0"])
    def test_refuses_numbers_that_overflow_a_float(self, number: str) -> None:
        with pytest.raises(ValueError, match="number out of range"):
            JSON.decode(f"[{number}]")

    def test_refuses_integers_with_too_many_digits(self) -> None:
        with pytest.raises(ValueError, match="^invalid JSON: "):
            JSON.decode("1" * 5000)

    def test_accepts_large_finite_numbers(self) -> None:
        assert JSON.decode("[1e308, 12345678901234567890]") == [1e308, 12345678901234567890]

    def test_refuses_control_characters_in_strings(self) -> None:
        with pytest.raises(ValueError):
            JSON.decode('"a\nb"')

    def test_nesting_of_64_is_accepted(self) -> None:
        assert JSON.decode(JSON.encode(nested_list(64))) == nested_list(64)
        assert JSON.decode("[" * 64 + "]" * 64) is not None

    @pytest.mark.parametrize("depth", [65, 66, 500])
    def test_nesting_over_64_is_refused(self, depth: int) -> None:
        with pytest.raises(ValueError, match="nesting deeper than 64"):
            JSON.decode("[" * depth + "]" * depth)

    def test_objects_count_as_nesting(self) -> None:
        assert JSON.decode(JSON.encode(nested_dict(64))) == nested_dict(64)
        with pytest.raises(ValueError, match="nesting deeper than 64"):
            JSON.decode(JSON.encode(nested_dict(65)))

    def test_deeper_than_the_recursion_limit_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="nesting deeper than 64"):
            JSON.decode("[" * 100_000 + "]" * 100_000)

    def test_recursion_error_in_the_parser_is_a_value_error(self) -> None:
        deep = JsonFormatter(max_depth=10**9)
        with pytest.raises(ValueError, match="nesting deeper than"):
            deep.decode("[" * 100_000 + "]" * 100_000)

    def test_wide_but_shallow_data_is_accepted(self) -> None:
        obj = [{"a": [i, {"b": []}]} for i in range(100)]
        assert JSON.decode(JSON.encode(obj)) == obj

    def test_brackets_inside_strings_do_not_count(self) -> None:
        obj = {"text": "[{" * 1000, "quote": '"[\\'}
        assert JSON.decode(JSON.encode(obj)) == obj

    def test_max_depth_is_configurable(self) -> None:
        shallow = JsonFormatter(max_depth=2)
        assert shallow.decode('{"a":[1]}') == {"a": [1]}
        with pytest.raises(ValueError, match="nesting deeper than 2"):
            shallow.decode('{"a":[[1]]}')

    @pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "\\udc00x", "a\\ud83d"])
    def test_refuses_lone_surrogates(self, escape: str) -> None:
        with pytest.raises(ValueError, match="lone surrogate"):
            JSON.decode(f'{{"x":"{escape}"}}')

    def test_lone_surrogate_in_a_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="lone surrogate"):
            JSON.decode('{"\\ud800":1}')

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ('"\\ud83d\\ude00"', "😀"),
            ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then text
            ('"\\u00e9\\n"', "é\n"),
        ],
    )
    def test_accepts_other_escapes(self, message: str, expected: str) -> None:
        assert JSON.decode(message) == expected


# -- msgpack -------------------------------------------------------------------------------


class TestMsgpackEncode:
    def test_bytes_use_the_bin_type_and_str_the_str_type(self) -> None:
        assert MSGPACK.encode(b"ab") == b"\xc4\x02ab"
        assert MSGPACK.encode("ab") == b"\xa2ab"

    def test_mappings_encode_as_maps(self) -> None:
        assert MSGPACK.encode(MappingProxyType({"a": 1})) == msgpack.packb({"a": 1})

    def test_refuses_datetimes_and_other_types(self) -> None:
        import datetime

        with pytest.raises(TypeError):
            MSGPACK.encode(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
        with pytest.raises(TypeError):
            MSGPACK.encode({"x": object()})

    def test_integer_out_of_range_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="integer out of the msgpack range"):
            MSGPACK.encode(2**64)
        with pytest.raises(ValueError, match="integer out of the msgpack range"):
            MSGPACK.encode([-(2**63) - 1])
        assert MSGPACK.decode(MSGPACK.encode([2**64 - 1, -(2**63)])) == [2**64 - 1, -(2**63)]

    def test_too_deep_is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            MSGPACK.encode(nested_list(10_000))


class TestMsgpackDecode:
    def test_round_trip(self) -> None:
        obj = {"event": "e", "data": {"s": "é☃", "b": b"\x00\xff", "i": -1, "f": math.inf}}
        assert MSGPACK.decode(MSGPACK.encode(obj)) == obj

    def test_lists_not_tuples(self) -> None:
        assert MSGPACK.decode(MSGPACK.encode((1, (2,)))) == [1, [2]]

    @pytest.mark.parametrize("message", ["\x80", ""])
    def test_refuses_text_messages(self, message: str) -> None:
        with pytest.raises(ValueError, match="expects binary messages"):
            MSGPACK.decode(message)

    @pytest.mark.parametrize(
        ("message", "match"),
        [
            (b"", "incomplete"),
            (b"\x92\x01", "max_array_len|incomplete"),  # truncated array
            (b"\xa5ab", "max_str_len|incomplete"),  # truncated string
            (b"\x01\x02", "extra data"),
            (b"\xc1", "malformed data"),  # the one never-used byte
            (b"\xa2\xff\xfe", "utf-8"),
            (b"\xc4\x02\xff\xfe\x00", "extra data"),
            (b"\x81\x01\x02", "map key"),
            (b"\x81\x91\x01\x02", "map key"),
            (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # a 4 G-item array in 5 bytes
            (b"\xdf\xff\xff\xff\xff", "max_map_len"),
            (b"\xdb\xff\xff\xff\xff", "max_str_len|incomplete"),
            (b"\xc6\xff\xff\xff\xff", "max_bin_len|incomplete"),
        ],
    )
    def test_refuses_invalid_msgpack(self, message: bytes, match: str) -> None:
        with pytest.raises(ValueError, match=f"^invalid msgpack: .*({match})"):
            MSGPACK.decode(message)

    def test_refuses_extension_types(self) -> None:
        with pytest.raises(ValueError, match="extension type 5"):
            MSGPACK.decode(msgpack.packb({"x": msgpack.ExtType(5, b"data")}))

    @pytest.mark.parametrize("seconds", [1, 2**33, -1])  # 32-, 64- and 96-bit encodings
    def test_refuses_timestamps(self, seconds: int) -> None:
        packed = msgpack.packb(msgpack.Timestamp(seconds, 5))
        with pytest.raises(ValueError, match="Timestamp values are not supported"):
            MSGPACK.decode(packed)

    def test_refuses_nested_timestamps(self) -> None:
        packed = msgpack.packb({"a": [1, {"b": msgpack.Timestamp(1)}]})
        with pytest.raises(ValueError, match="Timestamp values are not supported"):
            MSGPACK.decode(packed)

    def test_nesting_of_64_is_accepted(self) -> None:
        assert MSGPACK.decode(MSGPACK.encode(nested_list(64))) == nested_list(64)
        assert MSGPACK.decode(MSGPACK.encode(nested_dict(64))) == nested_dict(64)

    @pytest.mark.parametrize("obj", [nested_list(65), nested_dict(65)])
    def test_nesting_over_64_is_refused(self, obj: object) -> None:
        with pytest.raises(ValueError, match="nesting deeper than 64"):
            MSGPACK.decode(MSGPACK.encode(obj))

    def test_nesting_past_the_unpacker_stack_is_refused(self) -> None:
        with pytest.raises(ValueError, match="nesting deeper than 64"):
            MSGPACK.decode(b"\x91" * 5000 + b"\x01")

    def test_wide_data_with_non_ascii_text_is_accepted(self) -> None:
        obj = {"items": [{"name": "żółw ☃", "n": -1} for _ in range(200)]}
        assert MSGPACK.decode(MSGPACK.encode(obj)) == obj

    def test_max_depth_is_configurable(self) -> None:
        shallow = MsgpackFormatter(max_depth=1)
        assert shallow.decode(b"\x91\x01") == [1]
        with pytest.raises(ValueError, match="nesting deeper than 1"):
            shallow.decode(b"\x91\x91\x01")


class TestCheckNesting:
    @pytest.mark.parametrize(
        "obj",
        [
            0,
            "[[[",
            [],
            {},
            [[], {}],
            {"a": [1, 2], "c": {"d": 3}},
            {"a": {"b": 1}, "c": 1},
            [[1], 2],
        ],
    )
    def test_within_the_limit(self, obj: object) -> None:
        check_nesting(obj, 2)

    @pytest.mark.parametrize("obj", [[[[]]], {"a": {"b": {}}}, [1, {"a": [2]}], [{}, [[]]]])
    def test_over_the_limit(self, obj: object) -> None:
        with pytest.raises(ValueError, match="nesting deeper than 2"):
            check_nesting(obj, 2)

    def test_refused_type_anywhere(self) -> None:
        class Marker:
            pass

        with pytest.raises(ValueError, match="Marker values are not supported"):
            check_nesting([1, {"a": [Marker()]}], 64, Marker)
        check_nesting([1, {"a": [2]}], 64, Marker)
