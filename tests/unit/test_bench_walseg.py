"""arbiter-hil bench --pg-wal-segsize: the rig's database built with initdb's WAL segment size.
A promotion writes and fsyncs a whole segment for the new timeline, so the segment size is
part of every fence-to-writable figure and is reported with it."""
from __future__ import annotations

from pathlib import Path

import pytest

from hil import bench, cli
from hil.postgres import NodeSpec, PgCluster


def test_the_cli_takes_powers_of_two_that_initdb_takes(capsys):
    for bad in ("0", "3", "2048", "x", "-1"):
        with pytest.raises(SystemExit) as stop:
            cli.main(["bench", "--pg-wal-segsize", bad])
        assert stop.value.code == 2
        assert "power of two from 1 to 1024" in capsys.readouterr().err
    assert cli._segsize("1") == 1 and cli._segsize("1024") == 1024


def test_initdb_gets_the_size_and_none_leaves_postgresqls_default(tmp_path: Path, monkeypatch):
    nodes = [NodeSpec("n1", "127.0.0.1", 5432, None, "primary")]
    ran: list[list[str]] = []

    def stop(_node, argv, timeout=120.0):
        ran.append(argv)
        raise RuntimeError("enough")
    for size, expect in ((1, ["--wal-segsize=1"]), (None, [])):
        cluster = PgCluster(tmp_path / str(size), nodes, wal_segsize_mb=size)
        monkeypatch.setattr(cluster, "_prepare", lambda node: None)
        monkeypatch.setattr(cluster, "_cmd", stop)
        with pytest.raises(RuntimeError):
            cluster.build()
        assert [a for a in ran[-1] if a.startswith("--wal-segsize")] == expect


def test_the_table_names_the_segment_size_of_the_figures():
    figures = {"arbiter": {"steps_median_s": {"detection_s": 0.2}, "pg_wal_segsize_mb": 1}}
    assert "(PostgreSQL WAL segments of 1 MB)" in bench.render(figures)
    figures["arbiter"].pop("pg_wal_segsize_mb")  # a file from before the option: PostgreSQL's default
    assert "(PostgreSQL WAL segments of 16 MB)" in bench.render(figures)
