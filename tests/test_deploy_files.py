"""The shipped deployment files are valid for the tools that read them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: `make test` installs systemd"
    unit = (ROOT / "systemd" / "fastpaca.service").read_text()
    assert "Type=notify" in unit and "StateDirectory=fastpaca" in unit
    assert "EnvironmentFile=" in unit
    # verify checks that ExecStart exists; point it at a binary this machine has,
    # everything else is verified exactly as shipped.
    checked = tmp_path / "fastpaca.service"
    checked.write_text(unit.replace("ExecStart=/usr/local/bin/fastpaca", "ExecStart=/bin/true"))
    result = subprocess.run([analyze, "verify", str(checked)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fastpaca.service" not in result.stderr, result.stderr


def test_systemd_env_file_is_plain_assignments() -> None:
    for line in (ROOT / "systemd" / "fastpaca.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, _ = line.partition("=")
            assert sep and name.isupper() and name.replace("_", "").isalnum(), line
