"""docs/reference/api.md names every public name, with the parameters the code has.

- Every name in the ``__all__`` of ``mlsockets``, ``flask_mlsockets``, ``mlsockets.client``
  and ``mlsockets.tokens`` appears, as code, in that module's section of the page; so do the
  public names of the other sections (targets, hub, SocketApp, servers).
- Every ``### `name(parameters)``` heading is checked against ``inspect.signature``: the same
  parameter names, of the same kinds, in the same order, and the same defaults where the page
  writes a literal (``...`` stands for a default the page describes in words).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"

# Sections whose module's whole __all__ must be on the page.
ALL_LISTS = ["mlsockets", "flask_mlsockets", "mlsockets.client", "mlsockets.tokens"]

# Public names of modules without a curated __all__ of their own (or with internals in it).
REQUIRED = {
    "mlsockets.broadcast": ["Channel", "User", "ConnectionTarget", "Tag", "Everyone"],
    "mlsockets.hub": ["Hub", "HubOptions", "EventRouter", "ChannelAuthorizers"],
    "mlsockets.wsgi": ["SocketApp"],
    "mlsockets.admission": ["Admission", "OriginPolicy", "HandshakeRateLimiter"],
    "mlsockets.transport.gevent": ["Server", "serve", "WebSocketHandler", "broadcast"],
}

# Where the names of a section's headings are looked up, in order.
LOOKUP = {
    "mlsockets.broadcast": ["mlsockets.broadcast.base", "mlsockets.broadcast.redis"],
    "mlsockets.hub": ["mlsockets.hub", "mlsockets.events", "mlsockets.channels.authorizers"],
    "mlsockets.transport.gevent": ["mlsockets.transport.gevent", "mlsockets.gunicorn"],
}

_SECTION = re.compile(r"^## `([\w.]+)`$", re.MULTILINE)
_HEADING = re.compile(r"^### `([\w.]+)\((.*)\)`$", re.MULTILINE)


def sections() -> dict[str, str]:
    """Module name -> the text of its ``## `module``` section."""
    text = PAGE.read_text(encoding="utf-8")
    found = list(_SECTION.finditer(text))
    return {
        match[1]: text[match.end() : found[i + 1].start() if i + 1 < len(found) else len(text)]
        for i, match in enumerate(found)
    }


def mentions(section: str, name: str) -> bool:
    return re.search(r"`" + re.escape(name) + r"[`(]", section) is not None


@pytest.mark.parametrize("module_name", ALL_LISTS)
def test_every_name_of_all_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    section = sections().get(module_name)
    assert section is not None, f"api.md has no section ## `{module_name}`"
    missing = [name for name in module.__all__ if not mentions(section, name)]
    assert not missing, f"api.md, ## `{module_name}`: not documented: {missing}"


@pytest.mark.parametrize("module_name", sorted(REQUIRED))
def test_other_public_names_are_documented(module_name: str) -> None:
    section = sections().get(module_name)
    assert section is not None, f"api.md has no section ## `{module_name}`"
    missing = [name for name in REQUIRED[module_name] if not mentions(section, name)]
    assert not missing, f"api.md, ## `{module_name}`: not documented: {missing}"


def _resolve(module_names: list[str], dotted: str) -> Any:
    for module_name in module_names:
        obj: Any = importlib.import_module(module_name)
        try:
            for part in dotted.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AssertionError(f"{dotted} is in none of {module_names}")


def _documented(params: str) -> list[tuple[str, inspect._ParameterKind, object]]:
    """(name, kind, default) of a parameter list as the page writes it; the default is
    ``inspect.Parameter.empty`` when there is none or when it is not a literal."""
    function = ast.parse(f"def f({params}): pass").body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    result: list[tuple[str, inspect._ParameterKind, object]] = []

    def literal(node: ast.expr | None) -> object:
        if node is None:
            return inspect.Parameter.empty
        try:
            value = ast.literal_eval(node)
        except ValueError:
            return inspect.Parameter.empty
        return inspect.Parameter.empty if value is Ellipsis else value

    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults, strict=True):
        result.append((arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, literal(default)))
    if args.vararg:
        result.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        result.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, literal(kw_default)))
    if args.kwarg:
        result.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty))
    return result


def headings() -> list[tuple[str, str, str]]:
    return [
        (module_name, match[1], match[2])
        for module_name, section in sections().items()
        for match in _HEADING.finditer(section)
    ]


def test_the_page_has_signature_headings() -> None:
    assert len(headings()) >= 20


@pytest.mark.parametrize(
    ("module_name", "name", "params"), headings(), ids=[h[1] for h in headings()]
)
def test_documented_signatures_match_the_code(module_name: str, name: str, params: str) -> None:
    obj = _resolve(LOOKUP.get(module_name, [module_name]), name)
    actual = inspect.signature(obj).parameters.values()
    real = [(p.name, p.kind, p.default) for p in actual]
    page = _documented(params)
    assert [(n, k) for n, k, _ in page] == [(n, k) for n, k, _ in real], (
        f"api.md: {name}({params}) does not match {name}{inspect.signature(obj)}"
    )
    for (pname, _, documented), (_, _, default) in zip(page, real, strict=True):
        if documented is not inspect.Parameter.empty:
            assert documented == default, f"api.md: {name}: {pname}={documented!r}, not {default!r}"
