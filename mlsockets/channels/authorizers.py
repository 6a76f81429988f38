"""Who may subscribe to which channel: authorizer functions registered by pattern.

An application registers functions for channel patterns::

    authorizers = ChannelAuthorizers()

    @authorizers.channel("private-user.{id}")
    def own_channel(principal, id):
        return principal.user_id == id

    @authorizers.channel("presence-room.{room}")
    def room_member(principal, room):
        if not can_enter(principal, room):
            return False
        return {"name": principal.info.get("name")}   # allowed, with this member info

A pattern is literal text plus ``{param}`` placeholders; a placeholder matches one or more
characters other than ``.`` and ``:`` (so ``{id}`` never spans a separator), and the pattern
must match the whole channel name. :meth:`ChannelAuthorizers.authorize` decides:

1. every authorizer whose pattern matches runs, in descending priority (registration order
   among equal priorities), as ``fn(principal, **params)`` with the captured strings;
2. all must allow: a falsy result refuses at once (later authorizers do not run); a
   ``Mapping`` (even an empty one) allows and is the member info for presence channels (the
   last mapping returned wins); any other truthy value allows;
3. a private or presence channel that no pattern matches is refused; a public channel that
   no pattern matches is allowed;
4. an allowed presence channel always has member info: ``{}`` when no authorizer returned a
   mapping. Non-presence channels have none (``None``);
5. exceptions raised by an authorizer propagate unchanged: the hub maps them to the wire
   (``Forbidden`` -> ``forbidden``, anything else -> ``internal``).
"""

from __future__ import annotations

import bisect
import inspect
import keyword
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from mlsockets.auth import Principal
from mlsockets.channels.names import VALID_CHARACTERS, ChannelKind, parse_channel

__all__ = ["AuthResult", "Authorizer", "ChannelAuthorizers", "compile_pattern"]

logger = logging.getLogger("mlsockets.channels")

#: An authorizer: called as ``fn(principal, **params)``; see the module docstring.
Authorizer = Callable[..., object]
F = TypeVar("F", bound=Authorizer)

# What a placeholder captures: one segment between separators.
_PARAM_RE = r"[^.:]+"
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
# ASCII identifiers only: they become keyword arguments and regex group names.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The decision of :meth:`ChannelAuthorizers.authorize`.

    Attributes:
        allowed: whether the principal may subscribe.
        member_info: for an allowed presence channel, the member info (read-only, ``{}`` when
            no authorizer returned a mapping); None otherwise.
        reason: for a refusal, a client-safe explanation; None when allowed.
    """

    allowed: bool
    member_info: Mapping[str, object] | None = None
    reason: str | None = None


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a channel pattern such as ``"private-user.{id}"`` to an anchored regex.

    Use the result with ``fullmatch``; its named groups are the placeholders.

    Raises:
        ValueError: the pattern is empty; has an unbalanced brace; a placeholder name that
            is not an ASCII identifier, is a Python keyword, or is repeated; two placeholders
            with no literal text between them (the split would be ambiguous); or literal
            text with a character no channel name can contain (the pattern could never match).
    """
    if not pattern:
        raise ValueError("empty channel pattern")
    parts: list[str] = []
    names: set[str] = set()
    position = 0
    for match in _PLACEHOLDER_RE.finditer(pattern):
        literal = pattern[position : match.start()]
        if parts and not literal:
            raise ValueError(f"adjacent placeholders in channel pattern {pattern!r}")
        parts.append(_literal(pattern, literal))
        name = match.group(1)
        if not _NAME_RE.fullmatch(name) or keyword.iskeyword(name):
            raise ValueError(f"invalid placeholder {{{name}}} in channel pattern {pattern!r}")
        if name in names:
            raise ValueError(f"repeated placeholder {{{name}}} in channel pattern {pattern!r}")
        names.add(name)
        parts.append(f"(?P<{name}>{_PARAM_RE})")
        position = match.end()
    parts.append(_literal(pattern, pattern[position:]))
    return re.compile("".join(parts))


def _literal(pattern: str, text: str) -> str:
    # Any brace left in literal text is unbalanced: balanced ones were placeholders.
    if "{" in text or "}" in text:
        raise ValueError(f"unbalanced brace in channel pattern {pattern!r}")
    bad = [ch for ch in text if ch not in VALID_CHARACTERS]
    if bad:
        raise ValueError(
            f"channel pattern {pattern!r} contains {bad[0]!r}, which no channel name can contain"
        )
    return re.escape(text)


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: str
    regex: re.Pattern[str]
    fn: Authorizer
    priority: int
    sequence: int

    @property
    def order(self) -> tuple[int, int]:
        return (-self.priority, self.sequence)


class ChannelAuthorizers:
    """The registry of channel authorizers, and the decision procedure (module docstring).

    Register everything at start-up; :meth:`authorize` may then be called from any greenlet.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []  # kept sorted by _Entry.order

    def add(self, pattern: str, fn: Authorizer, priority: int = 0) -> None:
        """Register ``fn`` for channels matching ``pattern``.

        Args:
            pattern: literal text and ``{param}`` placeholders (see :func:`compile_pattern`).
            fn: called as ``fn(principal, **params)``; see the module docstring for what it
                returns.
            priority: higher runs first; equal priorities run in registration order.

        Raises:
            ValueError: the pattern is invalid.
            TypeError: ``fn`` is not callable, or its signature cannot accept
                ``(principal, **params)`` for this pattern's placeholders (caught here rather
                than on a client's first subscribe).
        """
        regex = compile_pattern(pattern)
        if not callable(fn):
            raise TypeError(f"authorizer for {pattern!r} is not callable: {fn!r}")
        _check_signature(pattern, fn, list(regex.groupindex))
        entry = _Entry(pattern, regex, fn, priority, len(self._entries))
        bisect.insort(self._entries, entry, key=lambda e: e.order)

    def channel(self, pattern: str, priority: int = 0) -> Callable[[F], F]:
        """Decorator form of :meth:`add`; returns the function unchanged."""

        def register(fn: F) -> F:
            self.add(pattern, fn, priority)
            return fn

        return register

    def authorize(self, principal: Principal, channel: str) -> AuthResult:
        """Decide whether ``principal`` may subscribe to ``channel``.

        Raises:
            InvalidChannel: ``channel`` is not a valid channel name.
            Exception: whatever an authorizer raised, unchanged.
        """
        kind, name = parse_channel(channel)
        matched = False
        info: Mapping[str, object] | None = None
        for entry in self._entries:
            match = entry.regex.fullmatch(name)
            if match is None:
                continue
            matched = True
            verdict = entry.fn(principal, **match.groupdict())
            # Mapping first: an empty dict is falsy but means "allowed, no details".
            if isinstance(verdict, Mapping):
                info = verdict
            elif not verdict:
                logger.debug("%s refused %r for %r", entry.pattern, name, principal.user_id)
                return AuthResult(False, reason=f"not allowed to subscribe to {name!r}")
        if not matched and kind is not ChannelKind.PUBLIC:
            logger.debug("no authorizer for %s channel %r", kind.value, name)
            return AuthResult(False, reason=f"{kind.value} channel {name!r} has no authorizer")
        if kind is ChannelKind.PRESENCE:
            # Copied and frozen: the authorizer's dict must not change what members see.
            return AuthResult(True, MappingProxyType(dict(info) if info is not None else {}))
        return AuthResult(True)

    def __len__(self) -> int:
        return len(self._entries)


def _check_signature(pattern: str, fn: Authorizer, params: list[str]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature: trust the caller
    try:
        signature.bind(None, **dict.fromkeys(params, ""))
    except TypeError as exc:
        call = ", ".join(["principal", *(f"{name}=..." for name in params)])
        raise TypeError(
            f"authorizer {fn!r} for {pattern!r} cannot be called as fn({call}): {exc}"
        ) from None
