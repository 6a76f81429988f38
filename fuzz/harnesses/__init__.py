"""Fuzz harnesses: one ``test_one_input(data: bytes) -> None`` per parser (docs/fuzzing.md).

A harness feeds the fuzzer's bytes to one parser and checks its contract: only the documented
exceptions escape, and what it accepts is sound. Anything else raises (an ``AssertionError``
or the unexpected exception itself), which libFuzzer reports as a crash. The harnesses import
no atheris, so tests replay the corpus and the regressions through them directly.

This package imports nothing from mlsockets: the fuzz engine imports a harness module inside
``atheris.instrument_imports()``, which only instruments modules loaded for the first time.
"""

#: Every target, by name: ``harnesses.<name>`` holds its ``test_one_input``.
TARGETS = (
    "frames",
    "handshake",
    "headers",
    "envelope_json",
    "envelope_msgpack",
    "relay",
    "tokens",
)
