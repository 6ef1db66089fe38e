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
from pathlib import Path

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
        time.sleep(0.3)
        if self._proc.poll() is not None:
            raise RuntimeError(f"dnsmasq failed to start: {self._proc.stderr.read()!r}")  # type: ignore[union-attr]

    def set_records(self, name: str, addresses: list[str]) -> None:
        self.hosts_file.write_text("".join(f"{addr} {name}\n" for addr in addresses))
        self._proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads addn-hosts on HUP
        time.sleep(0.2)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=5)
