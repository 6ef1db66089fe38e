"""Who the cluster's members are: from ``CLUSTER_NODES`` or from DNS.

Owns turning configuration into :class:`Member` records and, for DNS, polling
the query and reporting the member set whenever it changes. It does not
connect to anyone (that is the transport) or decide placement (``placement.py``).

Node names follow DESIGN.md section 3: ``name@host`` or ``name@host:port``,
the port defaulting to the node's ``PORT``. A member's ``node_id`` is the
name exactly as configured (``n1@10.0.0.5``), so the same string identifies a
node in logs, metrics and Raft membership on every node.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

__all__ = [
    "DnsDiscovery",
    "Member",
    "parse_cluster_nodes",
    "parse_node_name",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class Member:
    node_id: str
    host: str
    port: int


def parse_node_name(name: str, *, default_port: int) -> Member:
    """Parse ``name@host`` / ``name@host:port`` (IPv6 hosts in brackets).

    Raises ``ValueError`` naming the problem for anything else.
    """
    text = name.strip()
    base, sep, address = text.partition("@")
    if not sep or not base or not address:
        raise ValueError(f"{text!r} is not of the form name@host or name@host:port")
    if any(ch.isspace() for ch in text) or "," in text:
        raise ValueError(f"{text!r} contains whitespace or a comma")
    host, port = _split_host_port(address, default_port)
    return Member(node_id=text, host=host, port=port)


def _split_host_port(address: str, default_port: int) -> tuple[str, int]:
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {address!r}")
    elif address.count(":") == 1:
        host, port_text = address.split(":")
    else:
        host, port_text = address, ""  # bare host, or a bare IPv6 literal
    if not host:
        raise ValueError(f"bad address {address!r}: empty host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {address!r}")
    return host, int(port_text)


def parse_cluster_nodes(value: str, *, default_port: int) -> list[Member]:
    """Parse ``CLUSTER_NODES``: entries separated by commas and/or whitespace.

    Duplicate node names are an error (two entries would fight over one id).
    """
    members = [
        parse_node_name(part, default_port=default_port) for part in value.replace(",", " ").split()
    ]
    seen: set[str] = set()
    for member in members:
        if member.node_id in seen:
            raise ValueError(f"{member.node_id!r} is listed twice")
        seen.add(member.node_id)
    return sorted(members)


MembersHandler = Callable[[list[Member]], Awaitable[None]]


class DnsDiscovery:
    """Polls ``query`` (A and AAAA records) every ``poll_interval_ms`` and calls
    ``on_change`` with the sorted member list whenever it differs from the last
    one. Each address becomes ``{basename}@{ip}`` on ``port``.

    A failed lookup keeps the last known members (a DNS hiccup must not make a
    node forget its peers); it is logged and retried on the next poll.
    """

    def __init__(
        self,
        *,
        query: str,
        basename: str,
        port: int,
        poll_interval_ms: int,
        on_change: MembersHandler,
        nameservers: Sequence[str] = (),
        nameserver_port: int = 53,
    ) -> None:
        self._query = query
        self._basename = basename
        self._port = port
        self._poll_interval_s = poll_interval_ms / 1000.0
        self._on_change = on_change
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = nameserver_port
        self._resolver.lifetime = max(1.0, min(5.0, self._poll_interval_s))
        self._members: list[Member] | None = None
        self.lookups_failed = 0

    async def resolve(self) -> list[Member]:
        """One lookup; raises ``dns.exception.DNSException`` when both record
        types fail for a reason other than 'no such records'."""
        addresses: set[str] = set()
        failures = 0
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(self._query, rdtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException:
                failures += 1
                if failures == 2:
                    raise
                continue
            addresses.update(str(ipaddress.ip_address(r.to_text())) for r in answer)
        return sorted(self._member_for(ip) for ip in addresses)

    def _member_for(self, ip: str) -> Member:
        shown = f"[{ip}]" if ":" in ip else ip
        return Member(node_id=f"{self._basename}@{shown}", host=ip, port=self._port)

    async def poll_once(self) -> list[Member] | None:
        try:
            members = await self.resolve()
        except dns.exception.DNSException as exc:
            self.lookups_failed += 1
            log.warning(
                "dns discovery lookup failed",
                extra={"type": "discovery", "query": self._query, "error": str(exc)},
            )
            return self._members
        if members != self._members:
            self._members = members
            await self._on_change(members)
        return members

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self._poll_interval_s)
