"""The field types and validators of :class:`~mlsockets.config.schema.SettingsSchema`.

Values arrive as TOML types (file), as text (environment) or as Python values (flags); each
field accepts all three and refuses what would be silently coerced (a bool as an integer, 1.5
as an integer, NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from marshmallow import ValidationError, fields, validate

__all__ = [
    "Int",
    "Float",
    "Strings",
    "text",
    "check",
    "check_binds",
    "check_metrics_bind",
    "meta",
    "POSITIVE",
    "NOT_NEGATIVE",
]


class Int(fields.Integer):
    """An integer: an int (not a bool), or a string of digits (environment)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise self.make_error("invalid") from None
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Float(fields.Float):
    """A finite number: int or float (not a bool), or its text (environment)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Strings(fields.List[str]):
    """A list of strings; from the environment, comma- or space-separated text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.String(validate=validate.Length(min=1)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        return tuple(super()._deserialize(value, attr, data, **kwargs))


def text(validate_more: Any = None, **kwargs: Any) -> fields.String:
    checks: list[Any] = [validate.Length(min=1)]
    if validate_more is not None:
        checks.append(validate_more)
    return fields.String(validate=checks, **kwargs)


def bind_problem(value: str) -> str | None:
    """What is wrong with a listener address, or None (the same rules as the server's)."""
    if value.startswith("unix:"):
        return "empty Unix socket path" if len(value) == 5 else None
    host, sep, port = value.rpartition(":")
    if not sep:
        return f"{value!r}: expected HOST:PORT or unix:PATH"
    if not port.isdigit():
        return f"{value!r}: port {port!r} is not a number"
    if int(port) > 65535:
        return f"{value!r}: port must be 0-65535"
    return None


def check_binds(binds: Iterable[str]) -> None:
    for bind in binds:
        problem = bind_problem(bind)
        if problem:
            raise ValidationError(problem)


def check_metrics_bind(value: str) -> None:
    if value.startswith("unix:"):
        raise ValidationError("expected HOST:PORT")
    check_binds([value])


def check(predicate: Callable[[Any], bool], message: str) -> Callable[[Any], None]:
    """A marshmallow validator (they must raise: a False return is ignored)."""

    def check(value: Any) -> None:
        if not predicate(value):
            raise ValidationError(message)

    return check


def meta(
    help: str, allowed: str, *, reload: bool = False, flag: str | None = None
) -> dict[str, object]:
    return {"help": help, "allowed": allowed, "reloadable": reload, "flag": flag}


POSITIVE = validate.Range(min=0, min_inclusive=False)
NOT_NEGATIVE = validate.Range(min=0)
