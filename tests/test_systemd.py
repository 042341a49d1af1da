"""The unit file: systemd-analyze verify is clean, and its exposure is low for a camera service."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ROOT

UNIT = ROOT / "systemd" / "facepi.service"


@pytest.fixture()
def analyze():
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: run scripts/test.sh (it installs systemd)")
    return exe


def test_unit_verifies_clean(tmp_path, analyze):
    # verify checks that ExecStart exists: point it at this checkout's facepi
    text = UNIT.read_text().replace("/opt/facepi/venv/bin/facepi", str(ROOT / ".venv" / "bin" / "facepi"))
    unit = tmp_path / "facepi.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


def test_unit_exposure_is_low(analyze):
    proc = subprocess.run([analyze, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for facepi.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:]
    assert float(m.group(1)) <= 3.0, m.group(0)


def test_unit_has_what_the_daemon_relies_on():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=facepi",
                 "SupplementaryGroups=video", "DeviceAllow=char-video4linux rw", "DeviceAllow=char-dma_heap rw",
                 "DeviceAllow=char-media rw", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "EnvironmentFile=-/etc/facepi/facepi.env"):
        assert line in text, line
