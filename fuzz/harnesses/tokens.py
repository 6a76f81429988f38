"""The HMAC token parser (``mlsockets/tokens.py``): ``verify_token`` on hostile tokens.

Input layout: byte 0 picks the mode, the rest is its material:

- ``mode % 3 == 0``: the rest, as Latin-1, is the token as received;
- ``1``: the rest is a payload signed with the right key (only a secret holder, or a bug in
  another language's minter, gets past the signature: the claims parser must still cope);
- ``2``: a token minted for the user named by the rest, then one byte changed: the first
  two bytes of the rest give the position and the new character.

Invariants: ``verify_token`` returns a ``Principal`` or raises ``Unauthorized`` with one of
the four documented messages, nothing else; it never accepts a token whose signature does
not verify (checked here independently with ``hmac``), nor an expired one, and an altered
token is always refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from mlsockets.auth import Principal
from mlsockets.exceptions import Unauthorized
from mlsockets.tokens import DEFAULT_LEEWAY, make_token, verify_token

KEYS = (b"fuzzing-secret-number-one-32byte", b"fuzzing-secret-number-two-32byte")
NOW = 1_700_000_000.0
MESSAGES = ("missing token", "malformed token", "invalid signature", "token expired")


def seed(mode: int, material: bytes) -> bytes:
    """An input in the layout above (for the seed corpus and tests)."""
    return bytes((mode,)) + material


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signed(body: str) -> str:
    return f"{body}.{_b64(hmac.new(KEYS[0], body.encode('ascii'), hashlib.sha256).digest())}"


def _token(mode: int, material: bytes) -> tuple[str, bool]:
    """The token to verify, and whether it must be refused."""
    if mode == 1:
        return _signed(_b64(material)), False
    if mode == 2:
        user = material[2:].decode("latin-1") or "u"
        token = make_token(KEYS[1], user, ttl=60, now=NOW)
        if len(material) < 2:
            return token, False
        pos, char = material[0] % len(token), chr(material[1])
        altered = token[:pos] + char + token[pos + 1 :]
        return altered, altered != token
    return material.decode("latin-1"), False


def _signature_verifies(token: str) -> bool:
    body, _, signature = token.partition(".")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        body_bytes = body.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        return False
    return any(
        hmac.compare_digest(hmac.new(key, body_bytes, hashlib.sha256).digest(), raw)
        and _b64(raw) == signature
        for key in KEYS
    )


def test_one_input(data: bytes) -> None:
    """Verify one token; raise on a broken invariant."""
    if not data:
        return
    token, must_refuse = _token(data[0] % 3, data[1:])
    try:
        principal = verify_token(KEYS, token, now=NOW)
    except Unauthorized as exc:
        assert exc.message in MESSAGES, exc.message
        return
    assert not must_refuse, f"an altered token passed: {token!r}"
    assert _signature_verifies(token), f"accepted a bad signature: {token!r}"
    assert isinstance(principal, Principal)
    assert isinstance(principal.user_id, str) and principal.user_id
    assert all(isinstance(tag, str) for tag in principal.tags)
    body = token.partition(".")[0]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert NOW < claims["exp"] + DEFAULT_LEEWAY, "accepted an expired token"
