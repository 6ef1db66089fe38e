"""Settings: every configuration variable, validated once at start.

Owns the names, defaults and rules of DESIGN section 7 (plus a few tunables of
our own, prefixed ``FASTPACA_``) and turns a bad value into one
:class:`~fastpaca.errors.ConfigError` line naming the variable. Values come
from the environment, which wins over the optional env-format file named by
``FASTPACA_CONFIG_FILE``. It never reads configuration anywhere else and is
never imported as a global: ``cli.py`` builds one ``Settings`` and passes it
down.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fastpaca.errors import ConfigError

__all__ = ["CONFIG_FILE_VARIABLE", "Settings", "load_settings"]

CONFIG_FILE_VARIABLE = "FASTPACA_CONFIG_FILE"

_NODE_RE = re.compile(r"^[A-Za-z0-9_.\-]+@[A-Za-z0-9_.\-\[\]:]+$")

# What each variable expects, for the one-line error. Keyed by variable name.
_EXPECTS: dict[str, str] = {
    "NODE_NAME": "a node name without whitespace (1-255 characters)",
    "CLUSTER_NODES": "a comma-separated list of name@host or name@host:port",
    "DNS_POLL_INTERVAL_MS": "a positive integer (milliseconds)",
    "FASTPACA_ARCHIVER_ENABLED": "true or false",
    "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": "a positive integer (milliseconds)",
    "DB_POOL_SIZE": "a positive integer",
    "REDIS_PORT": "a TCP port, an integer from 1 to 65535",
    "PORT": "a TCP port, an integer from 1 to 65535",
    "FASTPACA_BIND": "an interface address to listen on, e.g. 0.0.0.0 or 127.0.0.1",
    "FASTPACA_TAIL_KEEP": "an integer >= 0",
    "FASTPACA_ARCHIVE_BATCH_SIZE": "a positive integer",
    "FASTPACA_PUBSUB_ADAPTER": "cluster or redis",
    "FASTPACA_MAX_BODY_BYTES": "an integer number of bytes >= 1024",
    "FASTPACA_RATE_LIMIT_RPS": "off, or a positive number of requests per second",
    "LOG_LEVEL": "one of debug, info, warning, error",
    "FASTPACA_RAFT_GROUPS": "an integer from 1 to 65536",
    "FASTPACA_REQUEST_TIMEOUT_MS": "a positive integer (milliseconds)",
    "FASTPACA_NODE_DOWN_GRACE_MS": "a positive integer (milliseconds)",
    "FASTPACA_DNS_RESOLVER": "host or host:port of a DNS server",
    "FASTPACA_CLUSTER_BOOTSTRAP_EXPECT": "a positive integer (nodes)",
    "FASTPACA_RAFT_COMPACT_THRESHOLD": "an integer >= 2 (log entries)",
    "FASTPACA_RAFT_COMPACT_KEEP": "an integer >= 1 (log entries)",
}
_SECRET_VARIABLES = frozenset({"FASTPACA_CLUSTER_SECRET", "DATABASE_URL", "FASTPACA_POSTGRES_URL"})


class Settings(BaseSettings):
    """One node's configuration. Field aliases are the variable names."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="forbid", env_ignore_empty=True, frozen=True
    )

    # Cluster membership and discovery (DESIGN section 3).
    node_name: str | None = Field(None, alias="NODE_NAME", min_length=1, max_length=255)
    cluster_nodes: str = Field("", alias="CLUSTER_NODES")
    dns_cluster_query: str | None = Field(None, alias="DNS_CLUSTER_QUERY")
    dns_cluster_node_basename: str = Field("fastpaca", alias="DNS_CLUSTER_NODE_BASENAME")
    dns_poll_interval_ms: int = Field(5000, alias="DNS_POLL_INTERVAL_MS", gt=0)
    cluster_secret: SecretStr | None = Field(None, alias="FASTPACA_CLUSTER_SECRET")
    node_down_grace_ms: int = Field(60_000, alias="FASTPACA_NODE_DOWN_GRACE_MS", gt=0)
    dns_resolver: str | None = Field(None, alias="FASTPACA_DNS_RESOLVER", min_length=1)
    """DNS server for DNS_CLUSTER_QUERY instead of the system's (``host`` or ``host:port``)."""
    cluster_bootstrap_expect: int = Field(3, alias="FASTPACA_CLUSTER_BOOTSTRAP_EXPECT", gt=0)
    """With DNS discovery: nodes that must be up before the first bootstrap."""

    # Storage and Raft.
    raft_data_dir: Path = Field(Path("priv/raft"), alias="FASTPACA_RAFT_DATA_DIR")
    raft_groups: int = Field(256, alias="FASTPACA_RAFT_GROUPS", ge=1, le=65536)
    raft_compact_threshold: int = Field(20_000, alias="FASTPACA_RAFT_COMPACT_THRESHOLD", ge=2)
    """Compact a group's log once it holds more applied entries than this."""
    raft_compact_keep: int = Field(5_000, alias="FASTPACA_RAFT_COMPACT_KEEP", ge=1)
    """Entries kept below the applied index at compaction, for slow followers."""

    # Archive (DESIGN section 4).
    archiver_enabled: bool = Field(False, alias="FASTPACA_ARCHIVER_ENABLED")
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    postgres_url: SecretStr | None = Field(None, alias="FASTPACA_POSTGRES_URL")
    archive_flush_interval_ms: int = Field(5000, alias="FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS", gt=0)
    archive_batch_size: int = Field(5000, alias="FASTPACA_ARCHIVE_BATCH_SIZE", gt=0)
    tail_keep: int = Field(1000, alias="FASTPACA_TAIL_KEEP", ge=0)
    db_pool_size: int = Field(10, alias="DB_POOL_SIZE", gt=0)

    # Pub/sub (DESIGN section 5).
    pubsub_adapter: Literal["cluster", "redis"] = Field("cluster", alias="FASTPACA_PUBSUB_ADAPTER")
    redis_host: str = Field("localhost", alias="REDIS_HOST")
    redis_port: int = Field(6379, alias="REDIS_PORT", ge=1, le=65535)

    # HTTP.
    port: int = Field(4000, alias="PORT", ge=1, le=65535)
    bind: str = Field("0.0.0.0", alias="FASTPACA_BIND", min_length=1)
    max_body_bytes: int = Field(1_048_576, alias="FASTPACA_MAX_BODY_BYTES", ge=1024)
    rate_limit_rps: float | None = Field(None, alias="FASTPACA_RATE_LIMIT_RPS", gt=0)
    request_timeout_ms: int = Field(5000, alias="FASTPACA_REQUEST_TIMEOUT_MS", gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")

    @field_validator("node_name")
    @classmethod
    def _no_whitespace(cls, value: str | None) -> str | None:
        if value is not None and any(ch.isspace() for ch in value):
            raise ValueError("contains whitespace")
        return value

    @field_validator("cluster_nodes")
    @classmethod
    def _node_list(cls, value: str) -> str:
        for node in _split_nodes(value):
            if not _NODE_RE.match(node):
                raise ValueError(f"bad entry {node!r}")
        return value

    @field_validator("rate_limit_rps", mode="before")
    @classmethod
    def _off_means_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"off", "none", "0"}:
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "warning" if value == "warn" else value
        return value

    @property
    def cluster_node_list(self) -> tuple[str, ...]:
        """``CLUSTER_NODES`` entries in the order given."""
        return tuple(_split_nodes(self.cluster_nodes))

    @property
    def archive_database_url(self) -> str | None:
        url = self.database_url or self.postgres_url
        return None if url is None else url.get_secret_value()


def _split_nodes(value: str) -> list[str]:
    return [node for node in re.split(r"[,\s]+", value.strip()) if node]


def load_settings() -> Settings:
    """Settings from the process environment over the file named by
    ``FASTPACA_CONFIG_FILE`` if set. Raises ``ConfigError`` whose message is
    the one line to print."""
    config_file = os.environ.get(CONFIG_FILE_VARIABLE) or None
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}={config_file}: expected a readable env file")
    try:
        return Settings(_env_file=config_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, config_file)) from None


def _one_line(exc: ValidationError, config_file: str | None) -> str:
    error = exc.errors()[0]
    variable = str(error["loc"][0]) if error["loc"] else "configuration"
    if error["type"] == "extra_forbidden":
        return f"{variable}: unknown variable in {CONFIG_FILE_VARIABLE} {config_file}"
    expects = _EXPECTS.get(variable, error["msg"].lower())
    if variable in _SECRET_VARIABLES:
        return f"{variable}: invalid value: expected {expects}"
    return f"{variable}={error['input']!s}: invalid value: expected {expects}"
