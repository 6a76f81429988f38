"""Relay metrics with a real redis-server killed and started again: relay state, reconnects
and disconnects, publish latency and failures (hub emits and an Emitter), scraped over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import gevent
import pytest
from cluster_support import RedisServer
from metrics_support import Scrape, Served

from mlsockets.broadcast.base import BroadcastUnavailable
from mlsockets.broadcast.emitter import Emitter
from mlsockets.broadcast.redis import RedisBroadcaster, RelayState
from mlsockets.broadcast.relay import ReconnectBackoff


def wait(served: Served, predicate: Callable[[Scrape], bool], what: str) -> Scrape:
    with gevent.Timeout(30, AssertionError(f"timed out waiting for {what}")):
        while True:
            current = served.scrape()
            if predicate(current):
                return current
            gevent.sleep(0.05)


def test_relay_state_and_reconnects_across_a_redis_restart(
    serve: Callable[..., Served], private_redis: RedisServer
) -> None:
    broadcaster = RedisBroadcaster.from_url(
        private_redis.url,
        presence=False,
        backoff=ReconnectBackoff(initial=0.05, maximum=0.2),
        keepalive=1.0,
        socket_timeout=2.0,
        connect_timeout=1.0,
    )
    served = serve(broadcaster=broadcaster)
    assert broadcaster.state is RelayState.CONNECTED
    start = served.scrape()
    assert start.value("mlsockets_relay_state", state="connected") >= 1

    served.hub.emit("news", {"n": 1})  # one PUBLISH through Redis
    emitter = Emitter.from_url(private_redis.url)
    try:
        emitter.emit("news", {"n": 2})
        published = served.scrape() - start
        assert published("mlsockets_publish_seconds_count", source="redis") == 1
        assert published("mlsockets_publish_seconds_count", source="emitter") == 1
        assert published("mlsockets_relay_published_total") == 1

        private_redis.kill()
        down = wait(
            served,
            lambda s: (s - start)("mlsockets_relay_state", state="reconnecting") == 1,
            "the relay to report reconnecting",
        )
        assert (down - start)("mlsockets_relay_state", state="connected") == -1
        assert (down - start)("mlsockets_relay_disconnects_total") == 1
        with pytest.raises(BroadcastUnavailable):
            served.hub.emit("news", {"n": 3})
        with pytest.raises(BroadcastUnavailable):
            emitter.emit("news", {"n": 4})
        failed = served.scrape() - start
        assert failed("mlsockets_publish_failures_total", source="redis") == 1
        assert failed("mlsockets_publish_failures_total", source="emitter") == 1

        private_redis.start()
        up = wait(
            served,
            lambda s: (s - start)("mlsockets_relay_reconnects_total") == 1,
            "the relay to reconnect",
        )
        assert (up - start)("mlsockets_relay_state", state="connected") == 0
        assert (up - start)("mlsockets_relay_state", state="reconnecting") == 0
    finally:
        emitter.close()
