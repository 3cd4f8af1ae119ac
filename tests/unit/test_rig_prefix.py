"""The rig's prefix: everything machine-wide a rig creates (namespaces, the serial cables' run
directory that a stale run's socat is found by, the CPU-budget cgroup, keepalived's pair) is
named after it, so two rigs with different prefixes never meet; ``arbiter-hil --prefix``
takes it and refuses a bad one. Nothing is built here: names only."""
from __future__ import annotations

import pytest

from hil import cli
from hil.budget import CpuBudget
from hil.keepalived import site_prefix
from hil.rig import Rig, RigOptions
from hil.site import DEFAULT_PREFIX


def machine_wide_names(prefix: str, tmp_path) -> set[str]:
    rig = Rig(RigOptions(prefix=prefix, ping=True), tmp_path / prefix)
    site = rig.site
    names = {site.netns(h) for h in site.hosts} | {site.lan}
    names.add(site.run_dir.name)  # cleanup_stale kills processes by this path fragment
    names.add(CpuBudget(prefix=prefix).name)
    names |= {f"{site_prefix(prefix)}-{h}" for h in ("master", "standby", "client", "lan")}
    return names


def test_two_prefixes_share_no_machine_wide_name(tmp_path):
    ours, theirs = machine_wide_names("bb", tmp_path), machine_wide_names(DEFAULT_PREFIX, tmp_path)
    assert "bb-master" in ours and "bb-lan" in ours and "bbk-standby" in ours
    assert ours.isdisjoint(theirs)


def test_cleanup_of_the_rig_never_matches_its_keepalived_pair(tmp_path):
    """cleanup_stale(p) removes the namespaces that start with 'p-'."""
    pair = {n for n in machine_wide_names("ba", tmp_path) if n.startswith(site_prefix("ba"))}
    assert pair and not any(n.startswith("ba-") for n in pair)


def test_cli_takes_a_prefix_and_refuses_a_bad_one(capsys):
    assert cli.main(["--prefix", "bb", "list"]) == 0
    for bad in ("B1", "b-b", "1b", "abcdefghijkl", ""):  # 12: its keepalived pair's would be 13
        with pytest.raises(SystemExit) as stop:
            cli.main(["--prefix", bad, "list"])
        assert stop.value.code == 2
        assert "prefix=" in capsys.readouterr().err
