"""The DRBD adapter on status output written from DRBD 9's documented formats (the kernel
module cannot load on the test machine): ``drbdsetup status --json`` and the plain
``drbdadm status`` text, run through real commands (cat of a fixture, a recording drbdadm)."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from firmware.errors import ActionError, ConfigError
from host_tools.replication import make_adapter
from host_tools.replication.drbd import DrbdAdapter, parse_json, parse_text


def _resource(role: str, disk: str, conn: str, peer_role: str, peer_disk: str, oos: int) -> dict:
    return {
        "name": "billing", "node-id": 0, "role": role, "suspended": False, "write-ordering": "flush",
        "devices": [{"volume": 0, "minor": 0, "disk-state": disk, "client": False, "quorum": True, "size": 409600}],
        "connections": [{
            "peer-node-id": 1, "name": "standby", "connection-state": conn, "congested": False,
            "peer-role": peer_role,
            "peer_devices": [{"volume": 0, "replication-state": "Established" if conn == "Connected" else "Off",
                              "peer-disk-state": peer_disk, "peer-client": False, "resync-suspended": "no",
                              "received": 0, "sent": 5088, "out-of-sync": oos, "pending": 0, "unacked": 0}],
        }],
    }


def _json(*resources: dict) -> str:
    other = {"name": "scratch", "role": "Secondary", "devices": [], "connections": []}
    return json.dumps([other, *resources])


TEXT_HEALTHY = """\
scratch role:Secondary
  disk:Diskless

billing role:Primary
  volume:0 disk:UpToDate
  volume:1 disk:UpToDate
  standby role:Secondary
    volume:0 replication:Established peer-disk:UpToDate
    volume:1 replication:Established peer-disk:UpToDate
"""

TEXT_RESYNC = """\
billing role:Secondary
  disk:Inconsistent
  master role:Primary
    replication:SyncTarget peer-disk:UpToDate done:19.40
"""

TEXT_DISCONNECTED = """\
billing role:Primary
  disk:UpToDate
  standby connection:Connecting
"""

TEXT_STATISTICS = """\
billing node-id:0 role:Primary suspended:no
    write-ordering:flush
  volume:0 minor:0 disk:UpToDate
      size:4056 read:1032 written:4112 al-writes:1 bm-writes:0 upper-pending:0 lower-pending:0
  standby node-id:1 connection:Connected role:Secondary congested:no
    volume:0 replication:Established peer-disk:Outdated resync-suspended:no
        received:0 sent:56 out-of-sync:128 pending:0 unacked:0
"""


def test_json_primary_in_sync() -> None:
    status = parse_json(_json(_resource("Primary", "UpToDate", "Connected", "Secondary", "UpToDate", 0)),
                        "billing").to_status()
    assert (status.role, status.in_sync, status.peer_alive, status.lag_bytes) == ("primary", True, True, 0)
    assert "standby Connected/Secondary/UpToDate" in status.detail


def test_json_out_of_sync_counts_in_bytes_and_breaks_sync() -> None:
    status = parse_json(_json(_resource("Primary", "UpToDate", "Connected", "Secondary", "UpToDate", 64)),
                        "billing").to_status()
    assert status.in_sync is False and status.lag_bytes == 64 * 1024


def test_json_standalone_secondary_has_lost_its_peer() -> None:
    state = parse_json(_json(_resource("Secondary", "Outdated", "StandAlone", "Unknown", "DUnknown", 0)), "billing")
    status = state.to_status()
    assert (state.disk, state.peers[0].connection) == ("Outdated", "StandAlone")
    assert (status.role, status.in_sync, status.peer_alive) == ("standby", False, False)


@pytest.mark.parametrize("peer_fencing, in_sync", [(True, True), (False, None)])
def test_a_secondary_that_lost_its_primary_is_in_sync_only_under_peer_fencing(peer_fencing, in_sync) -> None:
    # the Primary died: its connection is Connecting, this side kept its last disk state
    state = parse_json(_json(_resource("Secondary", "UpToDate", "Connecting", "Unknown", "DUnknown", 0)), "billing")
    status = state.to_status(peer_fencing)
    assert (status.role, status.in_sync, status.peer_alive) == ("standby", in_sync, False)
    outdated = parse_json(_json(_resource("Secondary", "Outdated", "Connecting", "Unknown", "DUnknown", 0)), "billing")
    assert outdated.to_status(peer_fencing).in_sync is False


def test_json_missing_resource_is_named() -> None:
    with pytest.raises(ValueError, match="'billing' not in .*scratch"):
        parse_json(_json(), "billing")


@pytest.mark.parametrize("text, role, disk, in_sync, alive, oos", [
    (TEXT_HEALTHY, "primary", "UpToDate", True, True, 0),
    (TEXT_RESYNC, "standby", "Inconsistent", False, True, 0),
    (TEXT_DISCONNECTED, "primary", "UpToDate", False, False, 0),
    (TEXT_STATISTICS, "primary", "UpToDate", False, True, 128 * 1024),
])
def test_text_forms(text: str, role: str, disk: str, in_sync: bool, alive: bool, oos: int) -> None:
    state = parse_text(text, "billing")
    status = state.to_status()
    assert state.disk == disk
    assert (status.role, status.in_sync, status.peer_alive, status.lag_bytes) == (role, in_sync, alive, oos)


def test_text_peer_roles_and_worst_volume() -> None:
    state = parse_text(TEXT_RESYNC, "billing")
    assert state.peers[0].name == "master" and state.peers[0].role == "Primary"
    mixed = TEXT_HEALTHY.replace("volume:1 disk:UpToDate", "volume:1 disk:Outdated")
    assert parse_text(mixed, "billing").disk == "Outdated"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_adapter_reads_json_or_text_and_runs_drbdadm(tmp_path: Path) -> None:
    fixture = tmp_path / "status.json"
    fixture.write_text(_json(_resource("Secondary", "UpToDate", "Connected", "Primary", "UpToDate", 0)))
    calls = tmp_path / "calls"
    drbdadm = _script(tmp_path / "drbdadm", f'echo "$@" >> {calls}\n')
    adapter = make_adapter({"adapter": "drbd", "resource": "billing", "peer_fencing": True,
                            "status": f"cat {fixture}", "drbdadm": drbdadm})
    assert adapter.status().role == "standby" and adapter.status().in_sync
    fixture.write_text(TEXT_DISCONNECTED)
    assert adapter.status().peer_alive is False
    adapter.promote()
    adapter.demote()
    adapter.rejoin("master")
    assert calls.read_text().splitlines() == ["primary billing", "secondary billing", "connect billing"]


def test_failures_are_unknown_or_action_errors(tmp_path: Path) -> None:
    failing = _script(tmp_path / "fail", "echo 'billing: State change failed: (-2) Need access to UpToDate data' >&2\n"
                                         "exit 17\n")
    adapter = DrbdAdapter("billing", True, status_cmd=failing, drbdadm=failing, timeout=5)
    status = adapter.status()
    assert status.role == "unknown" and "exit 17" in status.detail
    with pytest.raises(ActionError, match="drbdadm primary exit 17: .*Need access to UpToDate data"):
        adapter.promote()
    garbled = DrbdAdapter("billing", True, status_cmd="echo [1, 2", timeout=5).status()
    assert garbled.role == "unknown" and "unreadable" in garbled.detail
    slow = DrbdAdapter("billing", True, drbdadm=_script(tmp_path / "slow", "sleep 5\n"), timeout=1)
    with pytest.raises(ActionError, match="within replication.timeout = 1 s"):
        slow.demote()


def test_bad_settings_name_key_value_and_bound() -> None:
    with pytest.raises(ConfigError) as err:
        make_adapter({"adapter": "drbd", "resource": "bad name", "timeout": 0, "colour": 1})
    text = str(err.value)
    assert "replication.resource = 'bad name'" in text and "replication.timeout = 0" in text
    assert "from 1 to 600" in text and "replication.colour: unknown key" in text
    assert "replication.peer_fencing = None: required" in text
