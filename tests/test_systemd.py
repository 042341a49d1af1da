"""The unit files: systemd-analyze verify is clean, their exposure is low for a camera service, and the
template facepi@.service (one instance per camera) keeps facepi.service's hardening line for line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UNIT = ROOT / "systemd" / "facepi.service"
TEMPLATE = ROOT / "systemd" / "facepi@.service"
# verify checks that ExecStart exists: this checkout's facepi (scripts/test.sh's .venv), else the one beside
# the interpreter running the tests (a worktree that uses another checkout's venv)
FACEPI = next((p for p in (ROOT / ".venv" / "bin" / "facepi", Path(sys.executable).parent / "facepi")
               if p.exists()), ROOT / ".venv" / "bin" / "facepi")
# the only [Service] keys in which an instance differs from facepi.service: its config and its env files
PER_INSTANCE = ("ExecStart", "EnvironmentFile")


@pytest.fixture()
def analyze():
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: run scripts/test.sh (it installs systemd)")
    return exe


def test_unit_verifies_clean(tmp_path, analyze):
    # verify checks that ExecStart exists: point it at this checkout's facepi
    text = UNIT.read_text().replace("/opt/facepi/venv/bin/facepi", str(FACEPI))
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


def sections(path: Path) -> dict[str, list[str]]:
    """A unit's settings per section, in order, without comments and blank lines."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = []
        else:
            out[current].append(line)
    return out


def test_template_keeps_the_hardening_of_facepi_service():
    """facepi@.service is facepi.service but for its config file and env files: the same hardening,
    watchdog, devices, restart policy and shared StateDirectory, so the two cannot drift apart."""
    one, many = sections(UNIT), sections(TEMPLATE)
    assert set(one) == set(many) == {"Unit", "Service", "Install"}

    def shared(lines: list[str]) -> list[str]:
        return [line for line in lines if line.split("=", 1)[0] not in PER_INSTANCE]

    assert shared(many["Service"]) == shared(one["Service"])
    assert len(shared(one["Service"])) >= 40  # the comparison covers the hardening, not an empty list
    assert many["Install"] == one["Install"]
    assert [x for x in many["Unit"] if not x.startswith("Description=")] == \
        [x for x in one["Unit"] if not x.startswith("Description=")]
    assert "ExecStart=/opt/facepi/venv/bin/facepi run --config /etc/facepi/%i.toml" in many["Service"]
    # passwords: the household's shared ones, then this camera's own (a later EnvironmentFile wins)
    assert [x for x in many["Service"] if x.startswith("EnvironmentFile=")] == \
        ["EnvironmentFile=-/etc/facepi/facepi.env", "EnvironmentFile=-/etc/facepi/%i.env"]
    assert "StateDirectory=facepi" in many["Service"]  # one gallery and visitor store for every camera
    assert "#LoadCredential=camera_password:/etc/facepi/%i.camera_password" in TEMPLATE.read_text()


def test_template_instance_verifies_clean(tmp_path, analyze):
    """An instance (facepi@front_door) made from the template, as systemd makes it."""
    text = TEMPLATE.read_text().replace("/opt/facepi/venv/bin/facepi", str(FACEPI))
    (tmp_path / "facepi@.service").write_text(text)
    proc = subprocess.run([analyze, "verify", str(tmp_path / "facepi@front_door.service")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr
    proc = subprocess.run([analyze, "security", "--offline=yes", str(tmp_path / "facepi@front_door.service")],
                          capture_output=True, text=True, cwd=tmp_path)
    m = re.search(r"Overall exposure level for facepi@front_door.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:]
    assert float(m.group(1)) <= 3.0, m.group(0)


WEB = ROOT / "systemd" / "facepi-web.service"
# what the page's unit may differ in from facepi.service: it is a plain web server without a camera or a
# watchdog, and it gets its own password credential instead of the broker's and the camera's
WEB_OWN = ("Type", "NotifyAccess", "ExecStart", "ExecReload", "EnvironmentFile", "WatchdogSec", "TimeoutStartSec",
           "TimeoutStopSec", "SupplementaryGroups", "DeviceAllow", "LoadCredential", "MemoryHigh", "MemoryMax",
           "PrivateDevices", "ProcSubset", "RestrictAddressFamilies")


def test_web_unit_keeps_the_hardening_and_verifies_clean(tmp_path, analyze):
    """facepi-web.service: facepi.service's hardening line for line (but the camera's devices), no device at all,
    no netlink, no credential of the broker or the camera, and off until its password file exists."""
    one, page = sections(UNIT), sections(WEB)

    def shared(lines: list[str]) -> list[str]:
        return [line for line in lines if line.split("=", 1)[0] not in WEB_OWN]

    assert shared(page["Service"]) == shared(one["Service"])
    assert len(shared(one["Service"])) >= 30
    assert "PrivateDevices=yes" in page["Service"] and not any(x.startswith("DeviceAllow") for x in page["Service"])
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in page["Service"]
    assert [x for x in page["Service"] if x.startswith(("LoadCredential", "EnvironmentFile"))] == \
        ["LoadCredential=web_password:/etc/facepi/web_password"]  # never facepi.env (the broker's password)
    assert "ConditionPathExists=/etc/facepi/web_password" in page["Unit"]
    assert "ExecStart=/opt/facepi/venv/bin/facepi web --config /etc/facepi/facepi.toml" in page["Service"]
    text = WEB.read_text().replace("/opt/facepi/venv/bin/facepi", str(FACEPI))
    (tmp_path / "facepi-web.service").write_text(text)
    proc = subprocess.run([analyze, "verify", str(tmp_path / "facepi-web.service")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr
    proc = subprocess.run([analyze, "security", "--offline=yes", str(WEB)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for facepi-web.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:]
    assert float(m.group(1)) <= 2.5, m.group(0)
    install = (ROOT / "scripts" / "install-pi.sh").read_text()
    assert "systemd/facepi-web.service" in install and "-e /etc/facepi/web_password" in install
