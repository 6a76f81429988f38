"""mlsockets.config: the four sources and their order, validation messages that name the
setting, its source, the value and what is allowed; unknown keys and variables; reload hooks."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from mlsockets import config
from mlsockets.config import Settings
from mlsockets.exceptions import ConfigurationError
from mlsockets.transport.gevent.options import ServerOptions


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlsockets.toml"
    path.write_text(text)
    return path


def error_of(**kwargs: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        config.load(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


class TestDefaults:
    def test_every_setting_has_its_default_and_source(self) -> None:
        settings = config.load(environ={})
        assert settings.bind == ("127.0.0.1:8000",)
        assert settings.max_message_size == 1 << 20 and settings.ping_interval == 20.0
        assert settings.compression is True and settings.log_level == "info"
        assert settings.broadcast is None and settings.prefix == "mls"
        assert set(settings.sources) == set(config.setting_names())
        assert set(settings.sources.values()) == {"default"}

    def test_server_options_from_defaults_equal_the_transports_own(self) -> None:
        assert ServerOptions.from_settings(config.load(environ={})) == ServerOptions()


class TestPrecedence:
    def test_file_then_environment_then_flags(self, tmp_path: Path) -> None:
        path = write(tmp_path, 'ping_interval = 5\nping_timeout = 6\nlog_level = "debug"\n')
        env = {"MLSOCKETS_PING_TIMEOUT": "7", "MLSOCKETS_CLOSE_TIMEOUT": "2.5"}
        settings = config.load(
            config_file=path, environ=env, overrides={"close_timeout": 1.5, "bind": None}
        )
        assert settings.ping_interval == 5.0  # file
        assert settings.ping_timeout == 7.0  # environment over file
        assert settings.close_timeout == 1.5  # flag over environment
        assert settings.log_level == "debug"
        assert settings.sources["ping_interval"] == f"file {path}"
        assert settings.sources["ping_timeout"] == "environment variable MLSOCKETS_PING_TIMEOUT"
        assert settings.sources["close_timeout"] == "flag --close-timeout"
        assert settings.sources["bind"] == "default"  # a None override is "not given"

    def test_the_file_comes_from_mlsockets_config(self, tmp_path: Path) -> None:
        path = write(tmp_path, 'allowed_origins = ["https://a.example"]\n')
        settings = config.load(environ={"MLSOCKETS_CONFIG": str(path)})
        assert settings.allowed_origins == ("https://a.example",)

    def test_ws_aliases_lose_to_the_mlsockets_names(self) -> None:
        env = {
            "WS_HOST": "0.0.0.0",
            "WS_PORT": "9000",
            "WS_MAX_MESSAGE_SIZE": "4096",
            "WS_HEARTBEAT": "15",
            "WS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        }
        settings = config.load(environ=env)
        assert settings.bind == ("0.0.0.0:9000",)
        assert settings.max_message_size == 4096 and settings.ping_interval == 15.0
        assert settings.allowed_origins == ("https://a.example", "https://b.example")
        assert settings.sources["ping_interval"] == "environment variable WS_HEARTBEAT"
        env |= {"MLSOCKETS_PING_INTERVAL": "30", "MLSOCKETS_BIND": "unix:/tmp/x.sock"}
        settings = config.load(environ=env)
        assert settings.ping_interval == 30.0 and settings.bind == ("unix:/tmp/x.sock",)

    def test_ipv6_ws_host(self) -> None:
        assert config.load(environ={"WS_HOST": "::1", "WS_PORT": "80"}).bind == ("[::1]:80",)

    def test_zero_means_none_and_empty_clears(self) -> None:
        env = {
            "MLSOCKETS_MAX_MESSAGE_SIZE": "0",
            "MLSOCKETS_PING_INTERVAL": "0",
            "MLSOCKETS_HANDSHAKE_RATE": "0",
            "MLSOCKETS_REDIS_URL": "",
            "MLSOCKETS_COMPRESSION": "off",
        }
        settings = config.load(environ=env)
        assert settings.max_message_size is None and settings.ping_interval is None
        assert settings.handshake_rate is None and settings.redis_url is None
        options = ServerOptions.from_settings(settings)
        assert options.compression is None and options.max_message_size is None

    def test_lists_from_environment_and_file(self, tmp_path: Path) -> None:
        env = {"MLSOCKETS_BIND": "127.0.0.1:1 unix:/tmp/a.sock,[::1]:2"}
        assert config.load(environ=env).bind == ("127.0.0.1:1", "unix:/tmp/a.sock", "[::1]:2")
        path = write(tmp_path, 'bind = ["127.0.0.1:3", "unix:/tmp/b.sock"]\n')
        assert config.load(config_file=path, environ={}).bind == (
            "127.0.0.1:3",
            "unix:/tmp/b.sock",
        )


class TestErrors:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            (
                {"MLSOCKETS_PING_TIMEOUT": "-1"},
                "invalid setting ping_timeout = '-1' (from environment variable "
                "MLSOCKETS_PING_TIMEOUT): must be greater than 0; allowed: a number > 0 (seconds)",
            ),
            ({"MLSOCKETS_MAX_QUEUE": "1.5"}, "max_queue = '1.5'"),
            ({"MLSOCKETS_PING_INTERVAL": "nan"}, "special numeric values"),
            ({"MLSOCKETS_LOG_LEVEL": "loud"}, "allowed: debug | info | warning"),
            ({"MLSOCKETS_BROADCAST": "carrier-pigeon"}, "allowed: local | redis | unix"),
            ({"MLSOCKETS_REDIS_URL": "http://x"}, "a redis://, rediss:// or unix:// URL"),
            ({"MLSOCKETS_BIND": "localhost"}, "'localhost': expected HOST:PORT or unix:PATH"),
            ({"MLSOCKETS_BIND": "h:99999"}, "port must be 0-65535"),
            ({"MLSOCKETS_METRICS_BIND": "unix:/x"}, "metrics_bind"),
            ({"MLSOCKETS_METRICS_PATH": "metrics"}, "a path starting with /"),
            ({"MLSOCKETS_ALLOWED_ORIGINS": "example.com"}, "scheme://host[:port]"),
            ({"MLSOCKETS_COMPRESSION": "maybe"}, "compression = 'maybe'"),
            ({"WS_PORT": "http"}, "environment variables WS_HOST/WS_PORT"),
            ({"MLSOCKETS_BROADCAST": "redis"}, "broadcast = 'redis' (from environment"),
            ({"MLSOCKETS_KEYFILE": "k.pem"}, "keyfile is set (from environment"),
            ({"MLSOCKETS_PUBLISH_SECRET": "short"}, "at least 16 characters"),
        ],
    )
    def test_bad_environment_values(self, env: dict[str, str], expected: str) -> None:
        assert expected in error_of(environ=env)

    def test_every_problem_is_listed(self) -> None:
        message = error_of(environ={"MLSOCKETS_PING_TIMEOUT": "0", "MLSOCKETS_MAX_QUEUE": "x"})
        assert "ping_timeout" in message and "max_queue" in message
        assert len(message.splitlines()) == 2

    def test_bad_file_values_name_the_file(self, tmp_path: Path) -> None:
        path = write(tmp_path, "max_message_size = true\nping_timeout = 0\n")
        message = error_of(config_file=path, environ={})
        assert f"max_message_size = True (from file {path}): not a valid integer" in message
        assert f"ping_timeout = 0 (from file {path})" in message

    def test_bad_flag_values_name_the_flag(self) -> None:
        message = error_of(environ={}, overrides={"max_queue": 0})
        assert "max_queue = 0 (from flag --max-queue)" in message

    def test_unknown_keys_and_variables_suggest_a_name(self, tmp_path: Path) -> None:
        path = write(tmp_path, "ping_intervall = 3\n")
        message = error_of(config_file=path, environ={})
        assert f"unknown setting 'ping_intervall' in file {path}; did you mean ping_interval?" in (
            message
        )
        message = error_of(environ={"MLSOCKETS_PING_INTERVL": "3"})
        assert "unknown environment variable MLSOCKETS_PING_INTERVL; did you mean " in message
        assert "MLSOCKETS_PING_INTERVAL?" in message
        message = error_of(environ={"MLSOCKETS_QQQQQQ": "3"})
        assert "known settings: bind, certfile" in message

    def test_missing_and_malformed_files(self, tmp_path: Path) -> None:
        assert "cannot read config file" in error_of(config_file=tmp_path / "no.toml", environ={})
        path = write(tmp_path, "ping_interval = = 3\n")
        assert f"config file {path} is not valid TOML" in error_of(config_file=path, environ={})

    def test_server_options_from_env_uses_the_model(self) -> None:
        with pytest.raises(ConfigurationError, match="MLSOCKETS_PING_TIMEOUT"):
            ServerOptions.from_env({"MLSOCKETS_PING_TIMEOUT": "soon"})
        options = ServerOptions.from_env({"WS_HEARTBEAT": "0", "MLSOCKETS_MAX_QUEUE": "10"})
        assert options.ping_interval is None and options.max_queue == 10


class TestValues:
    def test_changes_and_public(self) -> None:
        old = config.load(environ={})
        key = "k" * 16
        new = config.load(environ={"MLSOCKETS_PUBLISH_KEY": key, "MLSOCKETS_PING_INTERVAL": "3"})
        assert old.changes(new) == {"publish_key": (None, key), "ping_interval": (20.0, 3.0)}
        assert new.public()["publish_key"] == "***"
        url = config.load(environ={"MLSOCKETS_REDIS_URL": "redis://u:pw@h:1/0"}).public()
        assert url["redis_url"] == "redis://***@h:1/0"

    def test_explicit_values_leave_out_the_defaults(self, tmp_path: Path) -> None:
        path = write(tmp_path, 'handshake_rate = 0\nprefix = "app"\n')
        env = {"MLSOCKETS_CONFIG": str(path), "MLSOCKETS_PUBLISH_WINDOW": "60"}
        assert config.explicit_values(environ=env) == {
            "handshake_rate": None,
            "prefix": "app",
            "publish_window": 60.0,
        }
        assert config.explicit_values(["prefix"], environ=env) == {"prefix": "app"}

    def test_reloadable_settings(self) -> None:
        live = config.reloadable()
        assert {"allowed_origins", "max_message_size", "ping_interval", "log_level"} <= live
        assert not {"bind", "certfile", "redis_url", "broadcast"} & live


class TestReloadHooks:
    def test_callbacks_run_and_unregister(self) -> None:
        seen: list[Settings] = []
        unregister = config.on_reload(seen.append)
        settings = config.load(environ={})
        try:
            assert config.notify_reload(settings) >= 1
            assert seen == [settings]
        finally:
            unregister()
        config.notify_reload(settings)
        assert seen == [settings]

    def test_a_failing_callback_is_logged_and_the_others_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        seen: list[Settings] = []

        def broken(settings: Settings) -> None:
            raise RuntimeError("boom")

        first, second = config.on_reload(broken), config.on_reload(seen.append)
        try:
            config.notify_reload(config.load(environ={}))
        finally:
            first()
            second()
        assert len(seen) == 1
        assert "a configuration reload listener failed" in caplog.text

    def test_bound_methods_are_held_weakly(self) -> None:
        class Listener:
            calls = 0

            def reloaded(self, settings: Settings) -> None:
                Listener.calls += 1

        listener = Listener()
        config.on_reload(listener.reloaded)
        config.notify_reload(config.load(environ={}))
        assert Listener.calls == 1
        del listener
        gc.collect()
        config.notify_reload(config.load(environ={}))
        assert Listener.calls == 1
