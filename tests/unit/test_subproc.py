"""The one subprocess-with-timeout helper (firmware.subproc), as the alert hook and the
agent's commands use it; the group kill on timeout is tested through run_checked
(test_command_adapter) and the alert hook (test_notify)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from firmware.errors import ActionError
from firmware.subproc import OUTPUT_CAP, OutputOverflow, run_bounded, run_checked, why_failed


def test_exit_code_output_and_environment_come_back_decoded():
    done = run_bounded([sys.executable, "-c", "import os, sys; print(os.environ['X']); sys.exit(3)"], 5.0, {"X": "é"})
    assert (done.returncode, done.stdout, done.stderr) == (3, "é\n", "")


def test_output_over_the_cap_stops_the_command():
    with pytest.raises(OutputOverflow, match="on stderr") as caught:
        run_bounded([sys.executable, "-c", f"import sys; sys.stderr.write('x' * {OUTPUT_CAP + 1}); sys.stderr.flush()"
                     "; import time; time.sleep(30)"], 10.0)
    assert caught.value.stream == "stderr" and isinstance(caught.value, subprocess.SubprocessError)


@pytest.mark.parametrize("argv,words", [
    ([sys.executable, "-c", "import sys; print('half done'); sys.exit('disk full')"], "hooks.promote exit 1: disk full"),
    (["/nonexistent/promote"], "hooks.promote: cannot run"),
    (["sleep", "5"], "hooks.promote did not finish within agent.command_timeout = 0.2 s"),
])
def test_run_checked_says_what_failed_and_the_bound(argv, words):
    with pytest.raises(ActionError, match=words):
        run_checked(argv, "hooks.promote", 0.2 if argv[0] == "sleep" else 5.0, bound="agent.command_timeout")


def test_a_failed_commands_error_line_comes_first_whatever_came_before_it():
    """An acknowledgement keeps 200 characters: PostgreSQL's dated LOG lines ahead of the PANIC
    cut the reason in two."""
    for shut in ("shut down in recovery", "interrupted while in recovery, a longer way of saying it"):
        out = (f"2026-12-01 14:44:14.986 UTC [25108] LOG:  database system was {shut} at 2026-12-01 14:44:14 UTC\n"
               "2026-12-01 14:44:14.987 UTC [25108] LOG:  invalid primary checkpoint record\n"
               "2026-12-01 14:44:14.987 UTC [25108] PANIC:  could not locate a valid checkpoint record\nAborted\n")
        why = why_failed(out)
        assert why.startswith("PANIC:  could not locate a valid checkpoint record (") and len(why) <= 300
        assert why.endswith("Aborted)")
    rewind = ("2026-12-01 14:52:10.170 UTC [3] PANIC:  could not locate a valid checkpoint record\nAborted\n"
              "pg_rewind: error: postgres single-user mode in target cluster failed\n"
              "pg_rewind: detail: Command was: /usr/lib/postgresql/15/bin/postgres --single -F -D /srv/pg/data\n")
    assert why_failed(rewind).startswith("PANIC:  could not locate a valid checkpoint record (")
    assert why_failed("disk full") == "disk full"
    assert why_failed("x" * 400) == "x" * 300
