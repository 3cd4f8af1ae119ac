"""BILLMASTER-ARBITER-MIB: lint-clean at level 6 and in step with the event table."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.events import EVENTS
from firmware.mib import DEFAULT_ENTERPRISE, notification_name, notification_oid, object_oid, render_mib

MIBS = Path(__file__).resolve().parents[2] / "firmware" / "mibs"
COMMITTED = MIBS / "BILLMASTER-ARBITER-MIB"
# The IETF base modules ship unchanged (RFC 2578-2580 text); an edit would show here.
BASE_MODULES_SHA256 = {
    "SNMPv2-CONF": "b96bd8fceb39587f126eb30248eaf4b9769a5e35714f1ee21ecc478d80272dda",
    "SNMPv2-SMI": "1eebc95343ebbdf6db24d95d667d78404fa356cac181e99dd05e8a44e8f5f269",
    "SNMPv2-TC": "0fbdb5e54efa9b5f5ee5ef19fd2106a2217927f00477d53d6ba9df16a632bd05",
}


def smilint(path: Path) -> str:
    """Lint with the shipped MIB folder (ours and the IETF base modules) on the search path."""
    done = subprocess.run(["smilint", "-l", "6", str(path)], env={**os.environ, "SMIPATH": str(MIBS)},
                          capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def test_base_modules_ship_unchanged_beside_ours() -> None:
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MIBS.iterdir() if p.name != COMMITTED.name}
    assert shipped == BASE_MODULES_SHA256


def test_committed_mib_is_lint_clean() -> None:
    assert smilint(COMMITTED) == ""


def test_mib_rendered_for_another_arc_is_lint_clean(tmp_path: Path) -> None:
    path = tmp_path / "BILLMASTER-ARBITER-MIB"
    path.write_text(render_mib("1.3.6.1.4.1.99999"))
    assert smilint(path) == ""
    assert "{ enterprises 99999 }" in path.read_text()


def test_smilint_reports_a_broken_mib(tmp_path: Path) -> None:
    path = tmp_path / "BILLMASTER-ARBITER-MIB"
    path.write_text(render_mib().replace("arbEventText }", "arbEventTxt }", 1))
    assert "arbEventTxt" in smilint(path)


def test_committed_mib_equals_the_default_rendering() -> None:
    assert COMMITTED.read_text() == render_mib(DEFAULT_ENTERPRISE)


def test_every_event_is_a_notification_numbered_by_the_table() -> None:
    text = render_mib()
    for e in EVENTS.values():
        assert f"{notification_name(e.name)} NOTIFICATION-TYPE" in text
        assert f"::= {{ arbNotifications {e.number} }}" in text
    assert notification_name("split-brain-suspected") == "arbSplitBrainSuspected"
    assert notification_oid("1.3.6.1.4.1.7", EVENTS["link-down"]) == "1.3.6.1.4.1.7.0.2"
    assert object_oid("1.3.6.1.4.1.7", "arbEventText") == "1.3.6.1.4.1.7.1.5.0"


def test_command_renders_a_sites_arc() -> None:
    done = subprocess.run([sys.executable, "-m", "firmware.mib", "--enterprise", "1.3.6.1.4.1.4242"],
                          capture_output=True, text=True, check=True)
    assert done.stdout == render_mib("1.3.6.1.4.1.4242")


@pytest.mark.parametrize("bad", ["1.3.6.1.4.1", "1.3.6.1.4.2.5", "1.3.6.1.4.1.5.1"])
def test_command_refuses_an_arc_outside_enterprises(bad: str) -> None:
    done = subprocess.run([sys.executable, "-m", "firmware.mib", "--enterprise", bad],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "must be 1.3.6.1.4.1.N" in done.stderr
