"""Handshake admission: the Origin policy table, the per-address rate limiter on a fake clock,
and Admission's order of checks and its mapping to HTTP."""

from __future__ import annotations

import threading

import pytest

from mlsockets.admission import (
    UNKNOWN_ADDRESS,
    Admission,
    HandshakeRateLimiter,
    OriginPolicy,
)
from mlsockets.auth import ANONYMOUS, HandshakeRequest, Principal
from mlsockets.exceptions import (
    ConfigurationError,
    Forbidden,
    InvalidState,
    MLSocketsError,
    TooManyRequests,
    Unauthorized,
)
from mlsockets.tokens import TokenAuthenticator, make_token
from mlsockets.typing import UserId

USER = Principal(user_id=UserId("42"))


def handshake(
    origin: str | None = None, host: str | None = None, remote_addr: str | None = "203.0.113.7"
) -> HandshakeRequest:
    headers = {} if host is None else {"host": host}
    return HandshakeRequest(
        path="/ws",
        query={},
        headers=headers,
        cookies={},
        origin=origin,
        subprotocols=(),
        remote_addr=remote_addr,
    )


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def allows(policy: OriginPolicy, origin: str | None, host: str | None = None) -> bool:
    try:
        policy.check(handshake(origin, host))
    except Forbidden as exc:
        assert exc.status == 403
        assert exc.message in ("origin not allowed", "origin required")
        return False
    return True


# --- OriginPolicy -----------------------------------------------------------------------------


EXACT = ["https://example.com"]
WILDCARD = ["https://*.example.com"]

ORIGINS = [
    # exact, with case and default-port normalization
    (EXACT, "https://example.com", True),
    (EXACT, "https://EXAMPLE.com", True),
    (EXACT, "HTTPS://Example.Com", True),
    (EXACT, "https://example.com:443", True),
    (EXACT, "http://example.com", False),
    (EXACT, "https://example.com:8443", False),
    (EXACT, "https://evil.com", False),
    (EXACT, "https://example.com.evil.com", False),
    (EXACT, "https://evilexample.com", False),
    (EXACT, "https://sub.example.com", False),
    # not a serialized origin
    (EXACT, "https://example.com/", False),
    (EXACT, "https://example.com?", False),
    (EXACT, "https://user@example.com", False),
    (EXACT, "https://example.com:", False),
    (EXACT, "https://example.com:99999", False),
    (EXACT, "https://example.com https://evil.com", False),
    (EXACT, "https://example.com\t", False),
    (EXACT, " https://example.com", False),
    (EXACT, "https://exämple.com", False),
    (["https://kexample.com"], "https://\u212aexample.com", False),  # Kelvin sign lowers to k
    (["https://kexample.com"], "\u212a://kexample.com", False),
    (["k://kexample.com"], "\u212a://kexample.com", False),
    (EXACT, "https://", False),
    (EXACT, "example.com", False),
    (EXACT, "1https://example.com", False),
    (EXACT, "null", False),
    (EXACT, "", False),
    # configured with explicit or non-default ports, or in upper case
    (["https://example.com:443"], "https://example.com", True),
    (["http://example.com:80"], "http://example.com", True),
    (["HTTPS://Example.COM"], "https://example.com", True),
    (["http://localhost:5000"], "http://localhost:5000", True),
    (["http://localhost:5000"], "http://localhost", False),
    (["http://127.0.0.1:5000"], "http://127.0.0.1:5000", True),
    # IPv6 literals, one spelling per address
    (["http://[::1]:8080"], "http://[::1]:8080", True),
    (["http://[::1]:8080"], "http://[0:0::1]:8080", True),
    (["http://[::1]:8080"], "http://[::2]:8080", False),
    (["http://[::1]:8080"], "http://[::1", False),
    (["http://[::1]:8080"], "http://[1::2::3]:8080", False),
    # schemes with no default port
    (["chrome-extension://abcdef"], "chrome-extension://abcdef", True),
    (["chrome-extension://abcdef"], "chrome-extension://abcdeg", False),
    # wildcard subdomains: any depth, never the apex, same scheme and port
    (WILDCARD, "https://a.example.com", True),
    (WILDCARD, "https://a.b.example.com", True),
    (WILDCARD, "https://A.Example.com:443", True),
    (WILDCARD, "https://example.com", False),
    (WILDCARD, "https://.example.com", False),
    (WILDCARD, "http://a.example.com", False),
    (WILDCARD, "https://a.example.com:8443", False),
    (WILDCARD, "https://aexample.com", False),
    (WILDCARD, "https://a.example.com.evil.com", False),
    (["https://*.example.com:8443"], "https://a.example.com:8443", True),
    (["https://*.example.com", "https://example.com"], "https://example.com", True),
    # "*" lets anything through, even what is not an origin
    (["*"], "https://evil.com", True),
    (["*"], "null", True),
    (["*"], "garbage", True),
    # nothing allowed: only non-browser clients (no Origin) get in
    ([], "https://example.com", False),
]


@pytest.mark.parametrize(("allowed", "origin", "expected"), ORIGINS)
def test_origin_table(allowed: list[str], origin: str, expected: bool) -> None:
    assert allows(OriginPolicy(allowed), origin) is expected


SAME_ORIGIN = [
    ("https://example.com", "example.com", True),
    ("https://example.com", "example.com:443", True),
    ("https://example.com", "Example.COM", True),
    ("https://example.com:443", "example.com", True),
    ("http://example.com:8080", "example.com:8080", True),
    ("http://example.com", "example.com:80", True),
    ("http://[::1]:8080", "[0::1]:8080", True),
    ("https://example.com", "example.com:80", False),
    ("https://example.com", "example.com:8443", False),
    ("https://example.com:8443", "example.com", False),
    ("https://evil.com", "example.com", False),
    ("https://example.com", "example.com:bad", False),
    ("https://kexample.com", "\u212aexample.com", False),
    ("https://example.com", None, False),
]


@pytest.mark.parametrize(("origin", "host", "expected"), SAME_ORIGIN)
def test_same_origin(origin: str, host: str | None, expected: bool) -> None:
    assert allows(OriginPolicy(same_origin=True), origin, host) is expected


def test_same_origin_is_off_by_default() -> None:
    assert not allows(OriginPolicy(), "https://example.com", "example.com")


def test_same_origin_combines_with_the_list() -> None:
    policy = OriginPolicy(["https://app.example.com"], same_origin=True)
    assert allows(policy, "https://app.example.com", "api.example.com")
    assert allows(policy, "https://api.example.com", "api.example.com")
    assert not allows(policy, "https://other.example.com", "api.example.com")


def test_missing_origin_is_allowed_by_default() -> None:
    assert allows(OriginPolicy(EXACT), None)
    assert allows(OriginPolicy(), None)


@pytest.mark.parametrize("allowed", [EXACT, ["*"]])
def test_missing_origin_refused_when_required(allowed: list[str]) -> None:
    with pytest.raises(Forbidden, match="origin required"):
        OriginPolicy(allowed, require=True).check(handshake(None))
    OriginPolicy(allowed, require=True).check(handshake("https://example.com"))


def test_single_string_is_one_origin() -> None:
    assert allows(OriginPolicy("https://example.com"), "https://example.com")


def test_entries_are_stripped() -> None:
    assert allows(OriginPolicy([" https://example.com \n"]), "https://example.com")


@pytest.mark.parametrize(
    "entry",
    [
        "example.com",
        "*.example.com",
        "https://",
        "https://example.com/",
        "https://example.com/path",
        "https://*",
        "https://foo.*.com",
        "https://*example.com",
        "https://example.com:70000",
        "*://example.com",
        "https://example.com, https://other.com",
        "null",
        "",
    ],
)
def test_invalid_entries(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid allowed origin"):
        OriginPolicy(["https://ok.example.com", entry])


# --- HandshakeRateLimiter ---------------------------------------------------------------------


def refused(limiter: HandshakeRateLimiter, key: str = "a") -> float | None:
    """None when the hit passed, else the refusal's retry_after."""
    try:
        limiter.hit(key)
    except TooManyRequests as exc:
        assert exc.status == 429 and exc.message == "too many requests"
        assert exc.retry_after is not None
        return exc.retry_after
    return None


class TestRateLimiter:
    def test_burst_then_refusal(self) -> None:
        limiter = HandshakeRateLimiter(rate=1, burst=3, clock=FakeClock())
        assert [refused(limiter) for _ in range(3)] == [None, None, None]
        assert refused(limiter) == pytest.approx(1.0)

    def test_refill(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=2, burst=1, clock=clock)
        assert refused(limiter) is None
        clock.now += 0.25  # half a token
        assert refused(limiter) == pytest.approx(0.25)
        clock.now += 0.25
        assert refused(limiter) is None

    def test_refusals_cost_nothing(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=1, burst=1, clock=clock)
        assert refused(limiter) is None
        for _ in range(10):
            assert refused(limiter) == pytest.approx(1.0)
        clock.now += 1
        assert refused(limiter) is None

    def test_refill_is_capped_at_burst(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=10, burst=2, clock=clock)
        assert refused(limiter) is None
        clock.now += 0.15  # 1.5 tokens back: 2 in the bucket, not 2.5
        assert [refused(limiter) for _ in range(3)] == [None, None, pytest.approx(0.1)]

    def test_clock_stepping_back_refills_nothing(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=1, burst=1, clock=clock)
        assert refused(limiter) is None
        clock.now -= 5
        assert refused(limiter) == pytest.approx(1.0)
        clock.now += 5 + 1
        assert refused(limiter) is None

    def test_keys_are_independent(self) -> None:
        limiter = HandshakeRateLimiter(rate=1, burst=1, clock=FakeClock())
        limiter.check(handshake(remote_addr="192.0.2.1"))
        limiter.check(handshake(remote_addr="192.0.2.2"))
        with pytest.raises(TooManyRequests):
            limiter.check(handshake(remote_addr="192.0.2.1"))

    def test_unknown_addresses_share_one_bucket(self) -> None:
        limiter = HandshakeRateLimiter(rate=1, burst=1, clock=FakeClock())
        limiter.check(handshake(remote_addr=None))
        with pytest.raises(TooManyRequests):
            limiter.check(handshake(remote_addr=""))
        with pytest.raises(TooManyRequests):
            limiter.hit(UNKNOWN_ADDRESS)

    def test_full_buckets_are_dropped(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=1, burst=2, clock=clock)
        limiter.hit("a")
        clock.now = 1001
        limiter.hit("b")
        limiter.hit("b")
        assert len(limiter) == 2
        clock.now = 1002  # "a" has idled burst / rate = 2 s: full, so forgotten
        limiter.hit("c")
        assert len(limiter) == 2
        clock.now = 1002.9  # "b" is back to 1.9 tokens only: kept
        limiter.hit("c")
        assert len(limiter) == 2
        clock.now = 1003  # "b" idled 2 s: full
        limiter.hit("d")
        assert len(limiter) == 2
        clock.now = 1013
        limiter.hit("e")
        assert len(limiter) == 1
        assert limiter.evictions == 0

    def test_eviction_at_capacity_takes_the_least_recently_used(self) -> None:
        clock = FakeClock()
        limiter = HandshakeRateLimiter(rate=0.001, burst=1, clock=clock, max_keys=2)
        assert refused(limiter, "a") is None
        assert refused(limiter, "b") is None
        assert refused(limiter, "a") is not None  # "a" is now the most recently used
        assert refused(limiter, "c") is None  # evicts "b"
        assert limiter.evictions == 1 and len(limiter) == 2
        assert refused(limiter, "a") is not None  # kept, still empty
        assert refused(limiter, "b") is None  # forgotten: a fresh burst (documented price)
        assert limiter.evictions == 2

    def test_shared_across_threads(self) -> None:
        # A smoke test: the exact count under concurrent use. It cannot prove the lock is
        # needed (CPython rarely switches threads inside hit()), only that it does no harm.
        limiter = HandshakeRateLimiter(rate=1e-9, burst=200, clock=FakeClock())
        passed: list[bool] = []

        def worker() -> None:
            for _ in range(50):
                passed.append(refused(limiter) is None)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert passed.count(True) == 200 and len(passed) == 400

    def test_default_clock(self) -> None:
        limiter = HandshakeRateLimiter(rate=1, burst=1)
        assert refused(limiter) is None
        assert refused(limiter) is not None

    @pytest.mark.parametrize(
        ("rate", "burst", "max_keys"),
        [(0, 1, 1), (-1, 1, 1), (float("inf"), 1, 1), (float("nan"), 1, 1), (1, 0, 1), (1, 1, 0)],
    )
    def test_invalid_settings(self, rate: float, burst: int, max_keys: int) -> None:
        with pytest.raises(ConfigurationError):
            HandshakeRateLimiter(rate, burst, max_keys=max_keys)


# --- Admission --------------------------------------------------------------------------------


class Spy:
    """Records the order in which Admission runs its hooks; each may be told to refuse."""

    def __init__(self, calls: list[str], name: str, error: Exception | None = None) -> None:
        self.calls, self.name, self.error = calls, name, error

    def check(self, request: HandshakeRequest) -> None:
        self.calls.append(self.name)
        if self.error is not None:
            raise self.error

    def __call__(self, request: HandshakeRequest) -> Principal | None:
        self.check(request)
        return USER


def admission(
    calls: list[str],
    origin: Exception | None = None,
    rate: Exception | None = None,
    auth: Exception | None = None,
) -> Admission:
    return Admission(
        origin=Spy(calls, "origin", origin),
        rate_limiter=Spy(calls, "rate", rate),
        authenticate=Spy(calls, "auth", auth),
    )


class TestAdmission:
    def test_all_checks_pass_in_order(self) -> None:
        calls: list[str] = []
        assert admission(calls).admit(handshake()) is USER
        assert calls == ["origin", "rate", "auth"]

    def test_origin_refusal_stops_everything(self) -> None:
        calls: list[str] = []
        with pytest.raises(Forbidden):
            admission(calls, origin=Forbidden("origin not allowed"), rate=TooManyRequests()).admit(
                handshake()
            )
        assert calls == ["origin"]

    def test_rate_limit_comes_before_authentication(self) -> None:
        calls: list[str] = []
        with pytest.raises(TooManyRequests):
            admission(calls, rate=TooManyRequests(), auth=Unauthorized()).admit(handshake())
        assert calls == ["origin", "rate"]

    @pytest.mark.parametrize("error", [Unauthorized("invalid signature"), Forbidden("banned")])
    def test_authenticate_may_refuse(self, error: Exception) -> None:
        calls: list[str] = []
        with pytest.raises(type(error)):
            admission(calls, auth=error).admit(handshake())
        assert calls == ["origin", "rate", "auth"]

    @pytest.mark.parametrize("result", [None, ANONYMOUS, Principal(info={"name": "guest"})])
    def test_nobody_is_unauthorized(self, result: Principal | None) -> None:
        with pytest.raises(Unauthorized, match="authentication required"):
            Admission(authenticate=lambda request: result).admit(handshake())

    @pytest.mark.parametrize("result", [None, ANONYMOUS])
    def test_nobody_is_anonymous_when_allowed(self, result: Principal | None) -> None:
        admitted = Admission(authenticate=lambda r: result, allow_anonymous=True).admit(handshake())
        assert admitted is ANONYMOUS

    def test_anonymous_principal_keeps_its_info_when_allowed(self) -> None:
        guest = Principal(info={"name": "guest"})
        assert Admission(authenticate=lambda r: guest, allow_anonymous=True).admit(handshake()) is (
            guest
        )

    def test_no_authenticate_hook(self) -> None:
        assert Admission(allow_anonymous=True).admit(handshake()) is ANONYMOUS
        with pytest.raises(ConfigurationError, match="allow_anonymous"):
            Admission()

    def test_real_checks_together(self) -> None:
        secret = b"s" * 32
        clock = FakeClock()
        gate = Admission(
            origin=OriginPolicy(["https://app.example.com"]),
            rate_limiter=HandshakeRateLimiter(rate=1, burst=2, clock=clock),
            authenticate=TokenAuthenticator(secret),
        )
        token = make_token(secret, "42", info={"name": "Ada"})
        good = HandshakeRequest.from_environ(
            {
                "HTTP_ORIGIN": "https://app.example.com",
                "HTTP_AUTHORIZATION": f"Bearer {token}",
                "REMOTE_ADDR": "192.0.2.9",
            }
        )
        assert gate.admit(good).info == {"name": "Ada"}
        unsigned = HandshakeRequest.from_environ(
            {"HTTP_ORIGIN": "https://app.example.com", "REMOTE_ADDR": "192.0.2.9"}
        )
        with pytest.raises(Unauthorized, match="missing token") as missing:
            gate.admit(unsigned)
        assert gate.status_for(missing.value) == (401, "missing token")
        with pytest.raises(TooManyRequests) as limited:
            gate.admit(good)
        assert gate.status_for(limited.value) == (429, "too many requests")
        assert gate.headers_for(limited.value) == (("Retry-After", "1"),)
        cross_site = HandshakeRequest.from_environ({"HTTP_ORIGIN": "https://evil.example"})
        with pytest.raises(Forbidden) as forbidden:
            gate.admit(cross_site)
        assert gate.status_for(forbidden.value) == (403, "origin not allowed")


class TestHttpMapping:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (Unauthorized(), (401, "authentication required")),
            (Unauthorized("token expired"), (401, "token expired")),
            (Forbidden("origin not allowed"), (403, "origin not allowed")),
            (TooManyRequests(retry_after=3.0), (429, "too many requests")),
            (TooManyRequests("slow down"), (429, "slow down")),
        ],
    )
    def test_refusals(self, error: MLSocketsError, expected: tuple[int, str]) -> None:
        assert Admission.status_for(error) == expected

    @pytest.mark.parametrize(
        "error", [RuntimeError("db password is hunter2"), InvalidState("bug"), KeyError("k")]
    )
    def test_anything_else_is_a_500_without_detail(self, error: Exception) -> None:
        assert Admission.status_for(error) == (500, "internal server error")

    @pytest.mark.parametrize(
        ("retry_after", "header"), [(0.001, "1"), (0.2, "1"), (1.0, "1"), (2.5, "3"), (0, "1")]
    )
    def test_retry_after_in_whole_seconds_rounded_up(self, retry_after: float, header: str) -> None:
        gate = Admission(allow_anonymous=True)
        assert gate.headers_for(TooManyRequests(retry_after=retry_after)) == (
            ("Retry-After", header),
        )

    def test_no_retry_after_when_unknown(self) -> None:
        assert Admission(allow_anonymous=True).headers_for(TooManyRequests()) == ()

    def test_challenge_on_401_only(self) -> None:
        gate = Admission(allow_anonymous=True, challenge='Bearer realm="ws"')
        assert gate.headers_for(Unauthorized()) == (("WWW-Authenticate", 'Bearer realm="ws"'),)
        assert gate.headers_for(Forbidden()) == ()
        assert Admission(allow_anonymous=True).headers_for(Unauthorized()) == ()


def test_too_many_requests_exception() -> None:
    exc = TooManyRequests()
    assert isinstance(exc, MLSocketsError)
    assert (exc.status, exc.message, exc.retry_after, str(exc)) == (
        429,
        "too many requests",
        None,
        "too many requests",
    )
    assert TooManyRequests("slow", retry_after=2.0).retry_after == 2.0
