"""check-config refuses what the daemon and the agent would refuse at start, with the same
exit codes (0 ok, 1 bad config, 2 usage); the shipped examples pass; every command has
--version."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import firmware
from firmware.daemon import check_config
from hil.toml_out import dumps
from host_tools import agent

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _example(name: str) -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / name).read_text())


def _write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    """A copy of an example beside the example keys, so relative file names still resolve."""
    path = tmp_path / name
    path.write_text(dumps(data))
    for key in EXAMPLES.glob("*.key"):
        (tmp_path / key.name).write_bytes(key.read_bytes())
    return path


def test_the_examples_pass_check_config_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names resolve against the config's folder, not the cwd
    for argv in (["arbiterd", "check-config", EXAMPLES / "arbiter.toml"],
                 ["arbiter-agent", "check-config", EXAMPLES / "agent.toml"]):
        done = subprocess.run([str(Path(sys.executable).parent / argv[0]), *map(str, argv[1:])],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and ": ok (" in done.stdout, done.stderr


def _arbiter_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], change) -> str:
    data = _example("arbiter.toml")
    change(data)
    assert check_config(_write(tmp_path, "arbiter.toml", data), as_json=False) == 1
    return capsys.readouterr().err


def _server(i: int, **values: Any):
    return lambda d: d["servers"][i].update(values)


@pytest.mark.parametrize("change,needle", [
    (_server(0, fence_relay="relay11"), "servers[0].fence_relay = 'relay11': no such pin on board.kind = 'pi4'"),
    (lambda d: d["board"].update(alarm_relay="siren"), "board.alarm_relay = 'siren': no such pin"),
    (_server(1, fence_relay="relay1"), "servers[1].fence_relay = 'relay1': already used by servers[0].fence_relay"),
    (_server(0, power_sense="led_ok"), "servers[0].power_sense = 'led_ok': already used by the 'ok' status LED"),
    (lambda d: d["site"].update(key_file="missing.key"), "site.key_file = "),
    (lambda d: d["alerts"]["managers"].append({"host": "192.0.2.51", "version": "v3", "user": "u",
                                               "auth_key_file": "snmp/auth", "priv_key_file": "snmp/priv"}),
     "alerts.managers[1].auth_key_file = "),
    (lambda d: d["ups"].update(password_file="nut.password"), "ups.password_file = "),
    (lambda d: d["fence"].update(ups_password_file="fence.password"), "fence.ups_password_file = "),
    (_server(0, address="2001:db8::11"), "servers[0].address = '2001:db8::11': IPv6 is not supported"),
    (lambda d: d["vip"].update(address="2001:db8::10/64"), "vip.address = '2001:db8::10/64': IPv6 is not supported"),
    (lambda d: d["alerts"]["managers"][0].update(host="2001:db8::50"), "alerts.managers[0].host = '2001:db8::50'"),
])
def test_check_config_refuses_what_the_daemon_refuses_at_start(tmp_path, capsys, change, needle):
    err = _arbiter_problems(tmp_path, capsys, change)
    assert needle in err, err


def _on_the_rig_board(d: dict[str, Any], tmp_path: Path) -> None:
    """The example on mock pins with its state in tmp_path: a daemon that can start here."""
    d["board"] = {"kind": "hil", "pin_factory": "mock", "alarm_relay": "alarm", "ack_button": "ack_button"}
    d["site"].update(state_dir=str(tmp_path / "state"), socket=str(tmp_path / "ctl.sock"))


@pytest.mark.parametrize("key,change", [
    ("site.key_file", lambda d: d["site"].update(key_file="missing.key")),
    ("ups.password_file", lambda d: d["ups"].update(password_file="nut.password")),
    ("fence.ups_password_file", lambda d: d["fence"].update(ups_password_file="fence.password")),
    ("alerts.managers[0].auth_key_file", lambda d: d["alerts"]["managers"][0].update(
        version="v3", user="u", auth_key_file="auth", priv_key_file="auth")),
])
def test_the_daemon_refuses_at_start_what_check_config_names(tmp_path, capsys, key, change):
    data = _example("arbiter.toml")
    _on_the_rig_board(data, tmp_path)
    change(data)
    path = _write(tmp_path, "arbiter.toml", data)
    assert check_config(path, as_json=False) == 1 and f"{key} = " in capsys.readouterr().err
    done = subprocess.run([str(Path(sys.executable).parent / "arbiterd"), "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"{key} = " in done.stderr, done.stderr


def test_missing_secret_files_are_all_named_at_once(tmp_path, capsys):
    def change(d: dict[str, Any]) -> None:
        d["site"]["key_file"] = "missing.key"
        d["ups"]["password_file"] = "nut.password"
        d["alerts"]["managers"][0].update(version="v3", user="u", auth_key_file="a", priv_key_file="p")
    err = _arbiter_problems(tmp_path, capsys, change)
    for key in ("site.key_file", "ups.password_file", "alerts.managers[0].auth_key_file",
                "alerts.managers[0].priv_key_file"):
        assert f"{key} = " in err and "cannot read" in err, key


def test_a_short_snmpv3_passphrase_is_refused_as_the_daemon_would(tmp_path, capsys):
    (tmp_path / "auth").write_text("short\n")
    (tmp_path / "priv").write_text("long enough\n")
    err = _arbiter_problems(tmp_path, capsys, lambda d: d["alerts"]["managers"][0].update(
        version="v3", user="u", auth_key_file="auth", priv_key_file="priv"))
    assert "alerts.managers[0].auth_key_file" in err and "passphrase is 5 characters, minimum 8" in err
    assert "priv_key_file" not in err


def test_a_password_file_no_ups_needs_is_not_read(tmp_path, capsys):
    data = _example("arbiter.toml")
    data["ups"]["password_file"] = "nut.password"
    for s in data["servers"]:
        del s["ups"]
    assert check_config(_write(tmp_path, "arbiter.toml", data), as_json=False) == 0


def _agent_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], change) -> tuple[int, str]:
    data = _example("agent.toml")
    change(data)
    code = agent.check_config(_write(tmp_path, "agent.toml", data))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["replication"].update(adapter="oracle"), "replication.adapter = 'oracle': must be one of"),
    (lambda d: d["replication"].update(pg_data="/srv"), "replication.pg_data: unknown key"),
    (lambda d: d["replication"].update(adapter="drbd", resource="r0", peer_fencing=True),
     "replication.host: unknown key"),
    (lambda d: d["agent"].update(key_file="missing.key"), "agent.key_file = "),
    (lambda d: d["peers"][0].update(key_file="missing.key"), "peers[0].key_file = "),
    (lambda d: d["peers"][0].update(address="2001:db8::11"), "peers[0].address = '2001:db8::11': IPv6"),
    (lambda d: d["agent"].update(listen="::"), "agent.listen = '::': IPv6"),
    (lambda d: d["agent"].update(naem="db2"), "agent.naem: unknown key"),
])
def test_agent_check_config_refuses_what_the_agent_refuses_at_start(tmp_path, capsys, change, needle):
    code, err = _agent_check(tmp_path, capsys, change)
    assert code == 1 and needle in err, err


def test_agent_without_replication_is_valid_and_says_what_it_reports(tmp_path, capsys):
    code = agent.check_config(_write(tmp_path, "agent.toml", {**_example("agent.toml"), "replication": {}}))
    assert code == 0 and "the role is reported as unknown" in capsys.readouterr().out


@pytest.mark.parametrize("prog", ["arbiterd", "arbiter-agent"])
def test_usage_errors_exit_2_and_help_documents_the_exit_codes(prog):
    bin_dir = Path(sys.executable).parent
    usage = subprocess.run([str(bin_dir / prog), "check-config"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    for argv in ([], ["check-config"]):
        helped = subprocess.run([str(bin_dir / prog), *argv, "--help"], capture_output=True, text=True, timeout=60)
        text = " ".join(helped.stdout.split())
        assert helped.returncode == 0 and "exit status: 0 ok, 1 bad config, 2 usage" in text, text


def _commands() -> list[importlib.metadata.EntryPoint]:
    return [ep for ep in importlib.metadata.distribution("billmaster-arbiter").entry_points
            if ep.group == "console_scripts"]


def test_every_command_prints_the_package_version(capsys):
    commands = _commands()
    assert {ep.name for ep in commands} >= {"arbiterd", "arbiterctl", "arbiter-agent", "arbiter-hil",
                                            "arbiter-image", "arbiter-flash", "arbiter-provision"}
    for ep in commands:
        with pytest.raises(SystemExit) as done:
            ep.load()(["--version"])
        assert done.value.code == 0, ep.name
        assert capsys.readouterr().out.strip() == f"{ep.name} {firmware.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", firmware.__version__)
    assert importlib.metadata.version("billmaster-arbiter") == firmware.__version__


def test_the_example_can_be_provisioned_its_relative_names_land_where_first_boot_puts_them():
    from host_tools.provision import secret_files
    files = secret_files(EXAMPLES / "arbiter.toml", EXAMPLES / "site.key", [], None, None)
    assert set(files) == {"arbiter.toml", "site.key"}
