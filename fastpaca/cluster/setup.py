"""Cluster configuration: which node we are, who the others are, the secret.

Owns turning ``Settings`` into a ``ClusterSettings`` (or None for a node that
runs alone) and the start-up rules, each failing with one ``ConfigError``
line naming the variable:

* a node is clustered when ``CLUSTER_NODES`` lists another node or
  ``DNS_CLUSTER_QUERY`` is set; it then needs ``FASTPACA_CLUSTER_SECRET``;
* with ``CLUSTER_NODES``, ``NODE_NAME`` must be one of its entries (the whole
  ``name@host[:port]`` or just the unique ``name``);
* with DNS, our name is ``NODE_NAME`` or ``DNS_CLUSTER_NODE_BASENAME@FASTPACA_BIND``
  (the name the peers derive from our DNS address).

It builds nothing and opens no socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastpaca.cluster.discovery import Member, parse_cluster_nodes, parse_node_name
from fastpaca.config import Settings
from fastpaca.errors import ConfigError

__all__ = ["ClusterSettings", "cluster_settings"]

_ALL_INTERFACES = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    me: Member
    static_members: tuple[Member, ...]
    secret: bytes
    dns_query: str | None
    dns_basename: str
    dns_poll_interval_ms: int
    dns_nameservers: tuple[str, ...]
    dns_nameserver_port: int
    grace_ms: int
    bootstrap_expect: int
    """Nodes that must be up (and blank) for the first bootstrap."""
    required: frozenset[str]
    """Nodes that must all be up for the first bootstrap (the static list)."""


def cluster_settings(settings: Settings) -> ClusterSettings | None:
    try:
        static = parse_cluster_nodes(settings.cluster_nodes, default_port=settings.port)
    except ValueError as exc:
        raise ConfigError(f"CLUSTER_NODES={settings.cluster_nodes}: {exc}") from None
    dns_query = settings.dns_cluster_query
    if dns_query is None and len(static) <= 1:
        return None
    secret = settings.cluster_secret
    if secret is None or not secret.get_secret_value():
        raise ConfigError(
            "FASTPACA_CLUSTER_SECRET: required when CLUSTER_NODES or DNS_CLUSTER_QUERY "
            "names peers (it authenticates every peer connection)"
        )
    me = _static_identity(settings, static) if dns_query is None else _dns_identity(settings)
    nameservers, nameserver_port = _resolver(settings)
    return ClusterSettings(
        me=me,
        static_members=tuple(static),
        secret=secret.get_secret_value().encode(),
        dns_query=dns_query,
        dns_basename=settings.dns_cluster_node_basename,
        dns_poll_interval_ms=settings.dns_poll_interval_ms,
        dns_nameservers=nameservers,
        dns_nameserver_port=nameserver_port,
        grace_ms=settings.node_down_grace_ms,
        bootstrap_expect=len(static) if dns_query is None else settings.cluster_bootstrap_expect,
        required=frozenset(m.node_id for m in static) if dns_query is None else frozenset(),
    )


def _static_identity(settings: Settings, static: list[Member]) -> Member:
    names = ", ".join(m.node_id for m in static)
    name = settings.node_name
    if name is None:
        raise ConfigError(f"NODE_NAME: required with CLUSTER_NODES; expected one of {names}")
    matches = [m for m in static if name in (m.node_id, m.node_id.partition("@")[0])]
    if len(matches) != 1:
        raise ConfigError(f"NODE_NAME={name}: expected one of CLUSTER_NODES ({names})")
    return matches[0]


def _dns_identity(settings: Settings) -> Member:
    name = settings.node_name
    if name is None:
        if settings.bind in _ALL_INTERFACES:
            raise ConfigError(
                "NODE_NAME: required with DNS_CLUSTER_QUERY when FASTPACA_BIND is all "
                "interfaces; expected DNS_CLUSTER_NODE_BASENAME@<this node's IP>"
            )
        name = f"{settings.dns_cluster_node_basename}@{settings.bind}"
    try:
        return parse_node_name(name, default_port=settings.port)
    except ValueError as exc:
        raise ConfigError(f"NODE_NAME={name}: {exc}") from None


def _resolver(settings: Settings) -> tuple[tuple[str, ...], int]:
    value = settings.dns_resolver
    if value is None:
        return (), 53
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not port:
        return (value,), 53
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"FASTPACA_DNS_RESOLVER={value}: expected host or host:port")
    return (host,), int(port)
