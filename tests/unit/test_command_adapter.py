"""The command adapter's contract, exercised with real scripts: one JSON object on stdout
for status, exit codes and timeouts for actions."""
from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from firmware.errors import ActionError, ConfigError
from firmware.subproc import run_checked
from host_tools.replication import Health, ReplicationStatus, make_adapter
from host_tools.replication.command import CommandAdapter


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _status_of(tmp_path: Path, stdout: str, code: int = 0) -> ReplicationStatus:
    out = tmp_path / "out.txt"
    out.write_text(stdout)
    return CommandAdapter(_script(tmp_path / "status", f"cat {out}\nexit {code}\n"), timeout=5).status()


def test_full_status_object(tmp_path: Path) -> None:
    doc = {"role": "standby", "in_sync": True, "lag_bytes": 4096, "lag_s": 0.25, "peer_alive": False,
           "detail": "dgmgrl: apply lag 0 s"}
    assert _status_of(tmp_path, json.dumps(doc)) == ReplicationStatus("standby", True, 4096, 0.25, False,
                                                                      "dgmgrl: apply lag 0 s")


def test_a_primary_may_name_the_standbys_holding_every_commit(tmp_path: Path) -> None:
    doc = {"role": "primary", "in_sync": True, "sync_standbys": ["db2", "db3"]}
    assert _status_of(tmp_path, json.dumps(doc)).sync_standbys == ("db2", "db3")


def test_nulls_and_missing_keys_are_unknown_values(tmp_path: Path) -> None:
    status = _status_of(tmp_path, '{"role": "primary", "in_sync": null}')
    assert status == ReplicationStatus("primary", None, None, None, None, "")


@pytest.mark.parametrize("stdout, code, expect", [
    ('{"role": "primary"}', 3, "exit 3"),
    ("ORA-16525: the Data Guard broker is not yet available", 0, "no valid JSON"),
    ('{"in_sync": true}', 0, "no valid JSON"),
    ('{"role": "leader"}', 0, "role 'leader'"),
    ('{"role": "standby", "in_sync": "yes"}', 0, "expected true/false/null"),
    ('{"role": "standby", "lag_bytes": true}', 0, "expected a finite number"),
    ('{"role": "standby", "lag_bytes": 1e999}', 0, "expected a finite number"),
    ('{"role": "standby", "lag_bytes": 1%s}' % ("0" * 400), 0, "too large"),
    ('{"role": "primary", "sync_standbys": "db2"}', 0, "sync_standbys: expected a list"),
    ('{"role": "primary", "sync_standbys": [""]}', 0, "sync_standbys: expected a list"),
])
def test_bad_output_is_role_unknown_with_the_reason(tmp_path: Path, stdout: str, code: int, expect: str) -> None:
    status = _status_of(tmp_path, stdout, code)
    assert status.role == "unknown" and expect in status.detail


def test_status_timeout_and_missing_program_are_unknown(tmp_path: Path) -> None:
    slow = CommandAdapter(_script(tmp_path / "slow", "sleep 5\n"), timeout=0.3).status()
    assert slow.role == "unknown" and "within replication.timeout = 0.3 s" in slow.detail
    missing = CommandAdapter(str(tmp_path / "nowhere"), timeout=1).status()
    assert missing.role == "unknown" and "cannot run" in missing.detail


def test_actions_run_their_commands_with_the_primary_named(tmp_path: Path) -> None:
    log = tmp_path / "log"
    act = _script(tmp_path / "act", f'echo "$1 ${{ARBITER_PRIMARY:-}}" >> {log}\n')
    adapter = make_adapter({"adapter": "command", "status": "true", "promote": f"{act} promote",
                            "demote": f"{act} demote", "rejoin": f"{act} rejoin", "timeout": 5})
    adapter.promote()
    adapter.demote()
    adapter.rejoin("master")
    assert log.read_text().splitlines() == ["promote ", "demote ", "rejoin master"]


def test_sync_loss_operations_run_on_the_primary_and_report_their_last_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    act = _script(tmp_path / "act", f'echo "$1 ${{ARBITER_STANDBYS:-}}${{ARBITER_LOST:-}}" >> {log}\necho working\necho "$1 done"\n')
    adapter = make_adapter({"adapter": "command", "status": "true", "sync_degrade": f"{act} degrade",
                            "sync_restore": f"{act} restore", "timeout": 5})
    assert adapter.sync_degrade(["standby"]) == "degrade done"
    assert adapter.sync_restore(["standby", "standby2"]) == "restore done"
    assert log.read_text().splitlines() == ["degrade standby", "restore standby,standby2"]
    with pytest.raises(ActionError, match="replication.self_fence is not configured"):
        adapter.self_fence(1.0)
    with pytest.raises(ConfigError, match=r"replication.sync_degrade = 3: must be a command"):
        make_adapter({"adapter": "command", "status": "true", "sync_degrade": 3})


def test_failed_slow_or_unset_actions_raise(tmp_path: Path) -> None:
    fail = _script(tmp_path / "fail", "echo 'ORA-16627: operation disallowed' >&2\nexit 1\n")
    adapter = CommandAdapter("true", promote_cmd=fail, demote_cmd=_script(tmp_path / "slow", "sleep 5\n"),
                             timeout=0.5)
    with pytest.raises(ActionError, match="replication.promote exit 1: ORA-16627"):
        adapter.promote()
    with pytest.raises(ActionError, match="replication.demote did not finish within replication.timeout = 0.5 s"):
        adapter.demote()
    with pytest.raises(ActionError, match="replication.rejoin is not configured"):
        adapter.rejoin("master")


def test_commands_are_not_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    adapter = CommandAdapter(f"{sys.executable} -c 'import sys; print(sys.argv[1:])' ; touch {marker}", timeout=5)
    assert adapter.status().role == "unknown"
    assert not marker.exists()


def test_bad_settings_name_key_value_and_bound() -> None:
    with pytest.raises(ConfigError) as err:
        make_adapter({"adapter": "command", "timeout": 0, "colour": "red"})
    text = str(err.value)
    assert "replication.status: required" in text
    assert "replication.timeout = 0: must be a number from 0.1 to 3600" in text
    assert "replication.colour: unknown key" in text
    with pytest.raises(ConfigError, match="replication.adapter = 'oracle': must be one of"):
        make_adapter({"adapter": "oracle"})


def test_health_command_contract(tmp_path: Path) -> None:
    """exit 0: healthy; non-zero: unhealthy with its first line; past the timeout: unhealthy
    (a hung service is a failed one); not configured: the adapter does not judge."""
    ok = make_adapter({"adapter": "command", "status": "true", "health": "true"})
    assert ok.health(1.0) == Health(True)
    down = make_adapter({"adapter": "command", "status": "true",
                         "health": _script(tmp_path / "down", "echo 'ORA-01034: ORACLE not available' >&2\nexit 2\n")})
    bad = down.health(1.0)
    assert not bad.ok and "replication.health exit 2: ORA-01034" in bad.detail
    hung = make_adapter({"adapter": "command", "status": "true", "health": _script(tmp_path / "hang", "sleep 5\n")})
    slow = hung.health(0.2)
    assert not slow.ok and "within agent.health_timeout = 0.2 s" in slow.detail
    assert make_adapter({"adapter": "command", "status": "true"}).health(1.0) is None
    with pytest.raises(ConfigError, match="replication.health = 3: must be a command"):
        make_adapter({"adapter": "command", "status": "true", "health": 3})


# ---------------------------------------------------------------- issue 15, finding 9: bounded output, whole group killed


def test_deeply_nested_status_json_is_unknown_not_a_crash(tmp_path: Path) -> None:
    status = _status_of(tmp_path, "[" * 100_000 + "]" * 100_000)
    assert status.role == "unknown" and "replication.status" in status.detail


def test_status_output_over_64_kib_is_cut_off_and_unknown(tmp_path: Path) -> None:
    """100 MB of output once cost ~287 MB of memory: now reading stops at 64 KiB."""
    import resource
    script = _script(tmp_path / "chatty", "head -c 100000000 /dev/zero | tr '\\0' 'x'\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    status = CommandAdapter(script, timeout=20).status()
    assert status.role == "unknown" and "more than 64 KiB on stdout" in status.detail
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB: no 100 MB buffer


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = _script(tmp_path / "forks", f"sleep 60 &\necho $! > {pid_file}\nsleep 60\n")
    with pytest.raises(ActionError, match="within replication.timeout = 0.5 s"):
        run_checked([script], "replication.promote", 0.5)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild), "the script's child outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
