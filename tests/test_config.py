"""Settings: DESIGN section 7 names and defaults, the config file, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastpaca.config import Settings, load_settings
from fastpaca.errors import ConfigError

DESIGN_DEFAULTS = {
    "NODE_NAME": None,
    "CLUSTER_NODES": "",
    "DNS_CLUSTER_QUERY": None,
    "DNS_CLUSTER_NODE_BASENAME": "fastpaca",
    "DNS_POLL_INTERVAL_MS": 5000,
    "FASTPACA_RAFT_DATA_DIR": Path("priv/raft"),
    "FASTPACA_ARCHIVER_ENABLED": False,
    "DATABASE_URL": None,
    "FASTPACA_POSTGRES_URL": None,
    "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": 5000,
    "DB_POOL_SIZE": 10,
    "REDIS_HOST": "localhost",
    "REDIS_PORT": 6379,
    "PORT": 4000,
    "FASTPACA_BIND": "0.0.0.0",
    "FASTPACA_TAIL_KEEP": 1000,
    "FASTPACA_ARCHIVE_BATCH_SIZE": 5000,
    "FASTPACA_PUBSUB_ADAPTER": "cluster",
    "FASTPACA_CLUSTER_SECRET": None,
    "FASTPACA_MAX_BODY_BYTES": 1_048_576,
    "FASTPACA_RATE_LIMIT_RPS": None,
    "LOG_LEVEL": "info",
    "FASTPACA_RAFT_GROUPS": 256,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*DESIGN_DEFAULTS, "FASTPACA_CONFIG_FILE", "FASTPACA_REQUEST_TIMEOUT_MS"]:
        monkeypatch.delenv(name, raising=False)


def _by_alias(settings: Settings) -> dict[str, object]:
    return {
        field.alias: getattr(settings, name)
        for name, field in Settings.model_fields.items()
        if field.alias is not None
    }


def test_every_design_variable_has_its_name_and_default() -> None:
    values = _by_alias(load_settings())
    for name, default in DESIGN_DEFAULTS.items():
        assert name in values, name
        assert values[name] == default, name


def test_sample_file_lists_every_option_with_its_default() -> None:
    sample = Path(__file__).parent.parent / "config" / "fastpaca.example.env"
    listed: dict[str, str] = {}
    for line in sample.read_text().splitlines():
        line = line.lstrip("# ").strip()
        if "=" in line and line.split("=", 1)[0].isupper():
            name, value = line.split("=", 1)
            listed[name] = value
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases <= set(listed), aliases - set(listed)
    # The listed defaults parse to the real defaults.
    explicit = {k: v for k, v in listed.items() if v and k in aliases}
    explicit["FASTPACA_RATE_LIMIT_RPS"] = listed["FASTPACA_RATE_LIMIT_RPS"]
    assert _by_alias(Settings(**explicit)) == _by_alias(Settings())


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4100")
    monkeypatch.setenv("FASTPACA_ARCHIVER_ENABLED", "true")
    monkeypatch.setenv("FASTPACA_RATE_LIMIT_RPS", "250.5")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CLUSTER_NODES", "a@10.0.0.1, b@10.0.0.2:4001")
    monkeypatch.setenv("FASTPACA_CLUSTER_SECRET", "s3cret")
    settings = load_settings()
    assert settings.port == 4100 and settings.archiver_enabled
    assert settings.rate_limit_rps == 250.5 and settings.log_level == "debug"
    assert settings.cluster_node_list == ("a@10.0.0.1", "b@10.0.0.2:4001")
    assert settings.cluster_secret is not None
    assert settings.cluster_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_rate_limit_off_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("off", "OFF", "0"):
        monkeypatch.setenv("FASTPACA_RATE_LIMIT_RPS", value)
        assert load_settings().rate_limit_rps is None


def test_config_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "fastpaca.env"
    config.write_text("# comment\nPORT=4200\nREDIS_HOST=cache\n")
    monkeypatch.setenv("FASTPACA_CONFIG_FILE", str(config))
    monkeypatch.setenv("REDIS_HOST", "from-env")
    settings = load_settings()
    assert settings.port == 4200 and settings.redis_host == "from-env"


@pytest.mark.parametrize(
    ("name", "value", "expects"),
    [
        ("PORT", "abc", "TCP port"),
        ("PORT", "70000", "TCP port"),
        ("DNS_POLL_INTERVAL_MS", "0", "positive integer"),
        ("FASTPACA_ARCHIVER_ENABLED", "maybe", "true or false"),
        ("FASTPACA_PUBSUB_ADAPTER", "kafka", "cluster or redis"),
        ("FASTPACA_MAX_BODY_BYTES", "12", ">= 1024"),
        ("FASTPACA_RATE_LIMIT_RPS", "-3", "positive number"),
        ("LOG_LEVEL", "loud", "debug, info"),
        ("CLUSTER_NODES", "justahost", "name@host"),
        ("FASTPACA_RAFT_GROUPS", "0", "1 to 65536"),
        ("NODE_NAME", "a b", "without whitespace"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expects: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}=") and expects in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "bad.env"
    config.write_text("FASTPACA_CLUSTER_SECRET=hunter2\nBOGUS=1\n")
    monkeypatch.setenv("FASTPACA_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "BOGUS" in str(caught.value) and "hunter2" not in str(caught.value)


def test_missing_config_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTPACA_CONFIG_FILE", "/nonexistent/fastpaca.env")
    with pytest.raises(ConfigError, match=r"^FASTPACA_CONFIG_FILE="):
        load_settings()


def test_sample_file_loads_as_a_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = Path(__file__).parent.parent / "config" / "fastpaca.example.env"
    monkeypatch.setenv("FASTPACA_CONFIG_FILE", str(sample))
    assert _by_alias(load_settings()) == _by_alias(Settings())


def test_readme_table_lists_every_option() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    aliases = {field.alias for field in Settings.model_fields.values()}
    missing = {alias for alias in aliases if f"`{alias}`" not in readme}
    assert not missing, missing
