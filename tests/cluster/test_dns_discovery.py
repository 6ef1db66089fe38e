"""DNS discovery against a real DNS server (dnsmasq) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastpaca.cluster.discovery import DnsDiscovery, Member
from tests.support.dnsmasq import Dnsmasq


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


def _discovery(server: Dnsmasq, changes: list[list[Member]], name: str) -> DnsDiscovery:
    async def on_change(members: list[Member]) -> None:
        changes.append(members)

    return DnsDiscovery(
        query=name,
        basename="fastpaca",
        port=4000,
        poll_interval_ms=50,
        on_change=on_change,
        nameservers=["127.0.0.1"],
        nameserver_port=server.port,
    )


async def test_finds_nodes_and_follows_changes(dns_server: Dnsmasq) -> None:
    dns_server.set_records("fastpaca.test", ["127.0.0.3", "127.0.0.2", "::1"])
    changes: list[list[Member]] = []
    discovery = _discovery(dns_server, changes, "fastpaca.test")

    members = await discovery.poll_once()
    assert members == [
        Member("fastpaca@127.0.0.2", "127.0.0.2", 4000),
        Member("fastpaca@127.0.0.3", "127.0.0.3", 4000),
        Member("fastpaca@[::1]", "::1", 4000),
    ]
    await discovery.poll_once()
    assert len(changes) == 1, "an unchanged answer must not be reported again"

    dns_server.set_records("fastpaca.test", ["127.0.0.2", "127.0.0.4"])
    await discovery.poll_once()
    assert [m.node_id for m in changes[-1]] == ["fastpaca@127.0.0.2", "fastpaca@127.0.0.4"]


async def test_unknown_name_is_an_empty_cluster(dns_server: Dnsmasq) -> None:
    changes: list[list[Member]] = []
    discovery = _discovery(dns_server, changes, "nobody.test")
    assert await discovery.poll_once() == []


async def test_dead_server_keeps_last_members(dns_server: Dnsmasq) -> None:
    dns_server.set_records("fastpaca.test", ["127.0.0.2"])
    changes: list[list[Member]] = []
    discovery = _discovery(dns_server, changes, "fastpaca.test")
    first = await discovery.poll_once()
    dns_server.stop()
    assert await discovery.poll_once() == first
    assert discovery.lookups_failed == 1
