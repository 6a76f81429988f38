"""HMAC tokens: the wire format, every refusal with its client-safe message, key rotation, and
the TokenAuthenticator's token sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping

import pytest

from mlsockets.auth import HandshakeRequest, Principal
from mlsockets.exceptions import ConfigurationError, Unauthorized
from mlsockets.tokens import (
    MAX_PAYLOAD_BYTES,
    MIN_SECRET_BYTES,
    TOKEN_VERSION,
    TokenAuthenticator,
    make_token,
    verify_token,
)

SECRET = b"k" * 32
OLD_SECRET = "an-old-secret-of-32-characters!!"
NOW = 1_700_000_000.0


# Independent of mlsockets.tokens: these implement the documented format from scratch, so the
# tests pin the wire format rather than the module's helpers.
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(body: str, secret: bytes | str = SECRET) -> str:
    """A token with an arbitrary payload segment and a valid signature."""
    key = secret.encode() if isinstance(secret, str) else secret
    return body + "." + b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def signed_json(payload: object, secret: bytes | str = SECRET) -> str:
    return signed(b64(json.dumps(payload).encode()), secret)


def claims(**overrides: object) -> dict[str, object]:
    """A valid payload; an override of None removes the claim."""
    payload: dict[str, object] = {"v": 1, "sub": "42", "exp": NOW + 60}
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def refusal(token: str | None, secret: object = SECRET, **kwargs: object) -> str:
    kwargs.setdefault("now", NOW)
    with pytest.raises(Unauthorized) as info:
        verify_token(secret, token, **kwargs)  # type: ignore[arg-type]
    return info.value.message


def handshake(
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
) -> HandshakeRequest:
    return HandshakeRequest(
        path="/ws",
        query=dict(query or {}),
        headers={name.lower(): value for name, value in (headers or {}).items()},
        cookies=dict(cookies or {}),
        origin=None,
        subprotocols=(),
        remote_addr="203.0.113.7",
    )


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestFormat:
    def test_round_trip(self) -> None:
        token = make_token(SECRET, "42", info={"name": "Ada"}, tags=["b", "a"], now=NOW)
        principal = verify_token(SECRET, token, now=NOW)
        assert principal == Principal(user_id="42", info={"name": "Ada"}, tags=frozenset("ab"))  # type: ignore[arg-type]

    def test_payload_and_signature_follow_the_documented_format(self) -> None:
        token = make_token(SECRET, "42", ttl=60, info={"n": "é"}, tags=["b", "a", "b"], now=NOW)
        body, signature = token.split(".")
        assert json.loads(unb64(body)) == {
            "v": TOKEN_VERSION,
            "sub": "42",
            "exp": NOW + 60,
            "info": {"n": "é"},
            "tags": ["a", "b"],
        }
        assert token == signed(body)
        assert "=" not in token

    def test_empty_info_and_tags_are_omitted(self) -> None:
        body = make_token(SECRET, "42", info={}, now=NOW).split(".")[0]
        assert json.loads(unb64(body)) == {"v": 1, "sub": "42", "exp": NOW + 3600}
        assert verify_token(SECRET, make_token(SECRET, "42", now=NOW), now=NOW).info == {}

    def test_str_secret_is_its_utf8_bytes(self) -> None:
        text = "é" * 8  # 16 bytes in UTF-8, although only 8 characters
        token = make_token(text, "42", now=NOW)
        assert verify_token(text.encode(), token, now=NOW).user_id == "42"

    def test_default_clock_is_wall_time(self) -> None:
        assert verify_token(SECRET, make_token(SECRET, "42")).user_id == "42"

    def test_integer_exp_from_another_minter(self) -> None:
        assert verify_token(SECRET, signed_json(claims(exp=int(NOW) + 5)), now=NOW).user_id == "42"

    def test_largest_payload_passes(self) -> None:
        base = len(json.dumps(claims(info={"p": ""}), separators=(",", ":")).encode())
        info = {"p": "x" * (MAX_PAYLOAD_BYTES - base)}
        token = make_token(SECRET, "42", ttl=60, info=info, now=NOW)
        assert len(unb64(token.split(".")[0])) == MAX_PAYLOAD_BYTES
        assert verify_token(SECRET, token, now=NOW).info == info
        with pytest.raises(ValueError, match="4096"):
            make_token(SECRET, "42", ttl=60, info={"p": info["p"] + "x"}, now=NOW)


class TestRefusals:
    @pytest.mark.parametrize("token", [None, ""])
    def test_missing(self, token: str | None) -> None:
        assert refusal(token) == "missing token"

    @pytest.mark.parametrize(
        "token",
        [
            "abc",
            "abc.",
            ".abc",
            "a.b.c",
            "eyJ2IjoxfQ.short",
            "eyJ2IjoxfQ." + "A" * 44,
            "eyJ2IjoxfQ==." + "A" * 43,  # padding is not part of the format
            "eyJ2 IjoxfQ." + "A" * 43,
            "eyJ2IjoxfQ+/." + "A" * 43,  # standard, not url-safe, alphabet
            "eyJ2IjoxfQé." + "A" * 43,
            " " + make_token(SECRET, "42", now=NOW),
        ],
    )
    def test_malformed(self, token: str) -> None:
        assert refusal(token) == "malformed token"

    def test_truncated_signature(self) -> None:
        assert refusal(make_token(SECRET, "42", now=NOW)[:-1]) == "malformed token"

    def test_truncated_payload(self) -> None:
        body, signature = make_token(SECRET, "42", now=NOW).split(".")
        assert refusal(f"{body[:-4]}.{signature}") == "invalid signature"

    def test_forged_signature(self) -> None:
        body, signature = make_token(SECRET, "42", now=NOW).split(".")
        forged = ("B" if signature[0] == "A" else "A") + signature[1:]
        assert refusal(f"{body}.{forged}") == "invalid signature"

    def test_tampered_payload(self) -> None:
        signature = make_token(SECRET, "42", now=NOW).split(".")[1]
        body = b64(json.dumps(claims(sub="1")).encode())
        assert refusal(f"{body}.{signature}") == "invalid signature"

    def test_non_canonical_signature_spelling(self) -> None:
        # 43 characters carry 258 bits for 256: the last one has 2 spare bits, so 4 spellings
        # decode to the same digest. Only the canonical one is accepted.
        token = make_token(SECRET, "42", now=NOW)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(token[-1])
        respelled = token[:-1] + alphabet[last ^ 1]
        assert unb64(respelled.split(".")[1]) == unb64(token.split(".")[1])
        assert refusal(respelled) == "invalid signature"

    def test_wrong_secret(self) -> None:
        assert refusal(make_token(OLD_SECRET, "42", now=NOW)) == "invalid signature"

    def test_huge_token_is_refused_before_anything_else(self) -> None:
        assert refusal("A" * 1_000_000 + "." + "A" * 43) == "malformed token"

    def test_oversized_payload_with_a_valid_signature(self) -> None:
        body = b64(b" " * (MAX_PAYLOAD_BYTES + 1))
        assert refusal(signed(body)) == "malformed token"

    def test_expiry_without_leeway(self) -> None:
        token = make_token(SECRET, "42", ttl=60, now=NOW)
        assert verify_token(SECRET, token, now=NOW + 59.9, leeway=0).user_id == "42"
        assert refusal(token, now=NOW + 60, leeway=0) == "token expired"

    def test_expiry_with_leeway(self) -> None:
        token = make_token(SECRET, "42", ttl=60, now=NOW)
        assert verify_token(SECRET, token, now=NOW + 89.9).user_id == "42"  # default 30 s
        assert refusal(token, now=NOW + 90) == "token expired"
        assert verify_token(SECRET, token, now=NOW + 119, leeway=60).user_id == "42"

    def test_signature_is_checked_before_expiry(self) -> None:
        token = make_token(OLD_SECRET, "42", ttl=1, now=NOW - 3600)
        assert refusal(token) == "invalid signature"


class TestPayloadValidation:
    @pytest.mark.parametrize(
        "body",
        [
            b64(b"A"),  # 4n+1 characters: not base64 at all
            b64(b"\xff\xfe{}"),  # not UTF-8
            b64(b"{not json"),
            b64(b'{"v":1,"sub":"42","exp":NaN}'),
            b64(b'{"v":1,"sub":"42","exp":Infinity}'),
            b64(b'{"v":1,"sub":"42","exp":1e400}'),  # parses to inf
            b64(b'{"v":1,"sub":"42","exp":1' + b"0" * 400 + b"}"),  # an int no float holds
            b64(b"[" * 2000 + b"]" * 2000),  # nesting beyond the recursion limit
        ],
        ids=["bad-base64", "not-utf8", "not-json", "nan", "infinity", "1e400", "huge-int", "deep"],
    )
    def test_undecodable(self, body: str) -> None:
        assert refusal(signed(body)) == "malformed token"

    @pytest.mark.parametrize("payload", [[], "42", 42, None, True])
    def test_not_an_object(self, payload: object) -> None:
        assert refusal(signed_json(payload)) == "malformed token"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"v": None},
            {"v": 2},
            {"v": 0},
            {"v": True},  # True == 1 in Python
            {"v": 1.0},
            {"v": "1"},
            {"sub": None},
            {"sub": ""},
            {"sub": 42},
            {"exp": None},
            {"exp": "1700000060"},
            {"exp": True},
            {"exp": [1]},
            {"info": []},
            {"info": "x"},
            {"tags": "admin"},
            {"tags": [1]},
            {"tags": {"a": 1}},
            {"admin": True},  # unknown claims are refused: a new claim is a new version
        ],
        ids=repr,
    )
    def test_wrong_types(self, overrides: dict[str, object]) -> None:
        assert refusal(signed_json(claims(**overrides))) == "malformed token"


class TestRotation:
    def test_any_listed_secret_verifies(self) -> None:
        old = make_token(OLD_SECRET, "42", now=NOW)
        new = make_token(SECRET, "43", now=NOW)
        assert verify_token([SECRET, OLD_SECRET], old, now=NOW).user_id == "42"
        assert verify_token((SECRET, OLD_SECRET), new, now=NOW).user_id == "43"

    def test_removed_secret_no_longer_verifies(self) -> None:
        assert refusal(make_token(OLD_SECRET, "42", now=NOW), secret=[SECRET]) == (
            "invalid signature"
        )

    def test_first_secret_signs(self) -> None:
        authenticator = TokenAuthenticator([SECRET, OLD_SECRET], clock=FakeClock())
        token = authenticator.make_token("42", ttl=60, info={"a": 1}, tags={"t"})
        assert verify_token(SECRET, token, now=NOW) == Principal(
            user_id="42",  # type: ignore[arg-type]
            info={"a": 1},
            tags=frozenset({"t"}),
        )
        assert json.loads(unb64(token.split(".")[0]))["exp"] == NOW + 60


class TestArguments:
    @pytest.mark.parametrize("secret", [b"k" * (MIN_SECRET_BYTES - 1), "k" * 15, "", [], ()])
    def test_short_or_no_secret(self, secret: object) -> None:
        with pytest.raises(ConfigurationError):
            verify_token(secret, "x.y", now=NOW)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            TokenAuthenticator(secret)  # type: ignore[arg-type]

    def test_short_secret_in_a_rotation_list(self) -> None:
        with pytest.raises(ConfigurationError, match="16 bytes"):
            TokenAuthenticator([SECRET, b"short"])

    def test_short_secret_when_minting(self) -> None:
        with pytest.raises(ConfigurationError):
            make_token(b"short", "42")

    @pytest.mark.parametrize("leeway", [-1.0, float("nan")])
    def test_bad_leeway(self, leeway: float) -> None:
        with pytest.raises(ConfigurationError, match="leeway"):
            verify_token(SECRET, "x.y", leeway=leeway)
        with pytest.raises(ConfigurationError, match="leeway"):
            TokenAuthenticator(SECRET, leeway=leeway)

    @pytest.mark.parametrize("user_id", ["", 42, None])
    def test_bad_user_id(self, user_id: object) -> None:
        with pytest.raises(ValueError, match="user_id"):
            make_token(SECRET, user_id, now=NOW)  # type: ignore[arg-type]

    @pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
    def test_bad_ttl(self, ttl: float) -> None:
        with pytest.raises(ValueError, match="ttl"):
            make_token(SECRET, "42", ttl=ttl, now=NOW)

    def test_tags_as_a_str(self) -> None:
        with pytest.raises(TypeError, match="not a str"):
            make_token(SECRET, "42", tags="admin", now=NOW)

    def test_tags_not_strings(self) -> None:
        with pytest.raises(TypeError, match="strings"):
            make_token(SECRET, "42", tags=[1], now=NOW)  # type: ignore[list-item]

    def test_info_not_serializable(self) -> None:
        with pytest.raises(TypeError):
            make_token(SECRET, "42", info={"when": object()}, now=NOW)


class TestAuthenticator:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def auth(self, clock: FakeClock) -> TokenAuthenticator:
        return TokenAuthenticator(SECRET, clock=clock)

    @pytest.fixture
    def token(self) -> str:
        return make_token(SECRET, "42", ttl=60, now=NOW)

    @pytest.mark.parametrize("template", ["Bearer {}", "bearer {}", "BEARER   {}  "])
    def test_authorization_header(
        self, auth: TokenAuthenticator, token: str, template: str
    ) -> None:
        request = handshake(headers={"Authorization": template.format(token)})
        assert auth(request).user_id == "42"

    def test_query_param(self, auth: TokenAuthenticator, token: str) -> None:
        assert auth(handshake(query={"token": token})).user_id == "42"

    def test_cookie_only_when_named(self, clock: FakeClock, token: str) -> None:
        request = handshake(cookies={"ws_token": token})
        assert TokenAuthenticator(SECRET, cookie="ws_token", clock=clock)(request).user_id == "42"
        with pytest.raises(Unauthorized, match="missing token"):
            TokenAuthenticator(SECRET, clock=clock)(request)

    @pytest.mark.parametrize(
        "request_",
        [
            handshake(),
            handshake(headers={"Authorization": ""}),
            handshake(headers={"Authorization": "Bearer"}),
            handshake(headers={"Authorization": "Bearer   "}),
            handshake(headers={"Authorization": "Basic dXNlcjpwYXNz"}),
            handshake(query={"token": ""}),
            handshake(query={"other": "x"}),
        ],
        ids=["nothing", "empty", "no-token", "blank-token", "basic", "empty-query", "other"],
    )
    def test_missing(self, auth: TokenAuthenticator, request_: HandshakeRequest) -> None:
        with pytest.raises(Unauthorized, match="missing token"):
            auth(request_)

    def test_other_scheme_falls_through_to_the_query(
        self, auth: TokenAuthenticator, token: str
    ) -> None:
        request = handshake(headers={"Authorization": "Basic dXNlcjpwYXNz"}, query={"token": token})
        assert auth(request).user_id == "42"

    def test_first_source_decides(self, auth: TokenAuthenticator, token: str) -> None:
        forged = make_token(OLD_SECRET, "1", now=NOW)
        request = handshake(headers={"Authorization": f"Bearer {forged}"}, query={"token": token})
        with pytest.raises(Unauthorized, match="invalid signature"):
            auth(request)

    @pytest.mark.parametrize("template", ["{}", "Bearer {}"])
    def test_custom_header(self, clock: FakeClock, token: str, template: str) -> None:
        auth = TokenAuthenticator(SECRET, header="X-MLSockets-Token", clock=clock)
        assert auth(handshake(headers={"x-mlsockets-token": template.format(token)})).user_id == (
            "42"
        )

    def test_disabled_sources(self, clock: FakeClock, token: str) -> None:
        auth = TokenAuthenticator(SECRET, header=None, query_param=None, clock=clock)
        request = handshake(headers={"Authorization": f"Bearer {token}"}, query={"token": token})
        with pytest.raises(Unauthorized, match="missing token"):
            auth(request)

    def test_clock_and_leeway(self, token: str) -> None:
        clock = FakeClock(NOW + 65)
        assert (
            TokenAuthenticator(SECRET, clock=clock, leeway=10)(
                handshake(query={"token": token})
            ).tags
            == frozenset()
        )
        clock.now = NOW + 70
        with pytest.raises(Unauthorized, match="token expired"):
            TokenAuthenticator(SECRET, clock=clock, leeway=10)(handshake(query={"token": token}))

    def test_from_environ(self, auth: TokenAuthenticator, token: str) -> None:
        request = HandshakeRequest.from_environ({"HTTP_AUTHORIZATION": f"Bearer {token}"})
        assert auth(request).user_id == "42"

    def test_repr_hides_the_secrets(self) -> None:
        text = repr(TokenAuthenticator([SECRET, OLD_SECRET], cookie="t"))
        assert "kkkk" not in text and OLD_SECRET not in text
        assert "2 secret(s)" in text and "'t'" in text
