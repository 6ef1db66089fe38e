"""A throwaway dnsmasq serving a hosts file on a free loopback port.

dnsmasq comes from Debian's ``dnsmasq-base`` (``make test`` installs it). A
missing binary fails the test loudly: DNS discovery must be proven against a
real DNS server, never skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.support.ports import free_port


class Dnsmasq:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.path.exists(binary):
            raise RuntimeError("dnsmasq not found: run `make test` (installs dnsmasq-base)")
        self.hosts_file = workdir / "hosts"
        self.hosts_file.write_text("")
        self.port = free_port(socket.SOCK_DGRAM)
        self._proc = subprocess.Popen(
            [
                binary,
                "--keep-in-foreground",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",  # answer NXDOMAIN for unknown .test names, as a real zone would
                f"--addn-hosts={self.hosts_file}",
                "--user=root",
                "--local-ttl=0",
                f"--pid-file={workdir / 'dnsmasq.pid'}",
                f"--log-facility={workdir / 'dnsmasq.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Ready once it answers. Not a fixed sleep: a SIGHUP (set_records)
        # that arrives before dnsmasq has installed its handler kills it, and
        # on a loaded machine its start took longer than the 0.3 s once slept
        # here (both DNS tests of a CI run failed, dnsmasq gone without a log).
        self._wait_until(lambda: self._answer("probe.test") is not None, "answer")

    def set_records(self, name: str, addresses: list[str]) -> None:
        self.hosts_file.write_text("".join(f"{addr} {name}\n" for addr in addresses))
        self._proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads addn-hosts on HUP
        wanted = sorted(addresses)
        self._wait_until(lambda: self._answer(name) == wanted, f"serve {name} -> {wanted}")

    def _answer(self, name: str) -> list[str] | None:
        """The A and AAAA addresses dnsmasq gives for ``name`` (empty: none),
        or None if it does not answer."""
        found: list[str] = []
        for kind in ("A", "AAAA"):
            try:
                reply = dns.query.udp(
                    dns.message.make_query(name, kind), "127.0.0.1", port=self.port, timeout=0.2
                )
            except (dns.exception.Timeout, OSError):
                return None
            found.extend(item.to_text() for rrset in reply.answer for item in rrset)
        return sorted(found)

    def _wait_until(
        self, condition: Callable[[], bool], what: str, timeout_s: float = 10.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read() if self._proc.stderr else b""
                raise RuntimeError(f"dnsmasq exited ({self._proc.returncode}): {stderr!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not {what} within {timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=5)
