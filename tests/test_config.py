"""Stack settings: defaults, environment overrides, errors that name file, key and reason."""

from pathlib import Path

import pytest

from core.config import ConfigError, endpoint_is_loopback, load_stack


def test_defaults_listen_on_loopback_only(monkeypatch, tmp_path):
    monkeypatch.setenv("TRADER_RUN_DIR", str(tmp_path))
    settings = load_stack()
    for name in type(settings.endpoints).model_fields:
        endpoint = settings.endpoint(name)
        assert endpoint_is_loopback(endpoint), endpoint
        assert str(tmp_path) in endpoint
    assert settings.dashboard.host == "127.0.0.1"


def test_environment_overrides_the_file(monkeypatch):
    monkeypatch.setenv("TRADER_CLOCK__SPEED", "123.5")
    monkeypatch.setenv("TRADER_BUS__RPC_RETRIES", "5")
    settings = load_stack()
    assert settings.clock.speed == 123.5
    assert settings.bus.rpc_retries == 5


def test_bad_value_names_file_key_and_reason(monkeypatch):
    monkeypatch.setenv("TRADER_CLOCK__SPEED", "-3")
    with pytest.raises(ConfigError) as info:
        load_stack()
    (file, key, reason), = info.value.problems
    assert file.endswith("stack.toml")
    assert key == "clock.speed"
    assert "greater than 0" in reason


def test_unknown_key_and_bad_toml_are_reported(tmp_path: Path):
    bad = tmp_path / "stack.toml"
    bad.write_text("[clock]\nspede = 3\n")
    with pytest.raises(ConfigError) as info:
        load_stack(bad)
    assert info.value.problems[0][1] == "clock.spede"
    bad.write_text("[clock\n")
    with pytest.raises(ConfigError) as info:
        load_stack(bad)
    assert "not valid TOML" in info.value.problems[0][2]


def test_bad_endpoint_transport_is_refused(tmp_path: Path):
    bad = tmp_path / "stack.toml"
    bad.write_text('[endpoints]\nbus_in = "http://127.0.0.1:5"\n')
    with pytest.raises(ConfigError) as info:
        load_stack(bad)
    assert info.value.problems[0][1] == "endpoints.bus_in"


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("TRADER_DASHBOARD_TOKEN", "s3cret-token")
    settings = load_stack()
    assert settings.token() == "s3cret-token"
    assert "s3cret-token" not in repr(settings.masked())
    assert "s3cret-token" not in repr(settings)


def test_tcp_beyond_loopback_is_recognised():
    assert endpoint_is_loopback("tcp://127.0.0.1:5555")
    assert not endpoint_is_loopback("tcp://0.0.0.0:5555")
    assert not endpoint_is_loopback("tcp://10.1.2.3:5555")
