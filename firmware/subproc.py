"""The one way this project runs a site command with a timeout: the appliance's alert hook,
the agent's hooks, health and replication commands.

The command runs without a shell, stdin closed, in a process group of its own. On timeout,
or when it prints more than OUTPUT_CAP on either stream, the whole group is killed (a
script's children too; ``subprocess.run(timeout=...)`` kills only the leader and then waits
for pipes a child still holds), so a hung or chatty script costs neither memory nor stray
processes.
"""
from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time

from firmware.errors import ActionError

OUTPUT_CAP = 64 * 1024  # bytes kept of a command's stdout and of its stderr


class OutputOverflow(subprocess.SubprocessError):
    """The command printed more than OUTPUT_CAP on ``stream`` ("stdout" or "stderr"). A
    SubprocessError, as TimeoutExpired is: a caller that must go on catches both as one."""

    def __init__(self, argv: list[str], stream: str) -> None:
        super().__init__(f"{argv[0]} printed more than {OUTPUT_CAP // 1024} KiB on {stream}")
        self.stream = stream


def run_bounded(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end within ``timeout`` seconds (``env`` on top of ours); its exit
    code and output, decoded. Raises OSError (cannot start), subprocess.TimeoutExpired or
    OutputOverflow; a non-zero exit is the caller's to judge."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, err, problem = _read_capped(proc, time.monotonic() + timeout)
    finally:
        _kill_group(proc)
    if problem == "timeout":
        raise subprocess.TimeoutExpired(argv, timeout, out, err)
    if problem:
        raise OutputOverflow(argv, problem)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def run_checked(argv: list[str], what: str, timeout: float, env: dict[str, str] | None = None,
                bound: str = "replication.timeout") -> str:
    """run_bounded for an action: its stdout, or ActionError saying what failed (``what``:
    the command in the operator's words; ``bound``: the setting that gave the timeout)."""
    try:
        done = run_bounded(argv, timeout, env)
    except OSError as exc:
        raise ActionError(f"{what}: cannot run ({exc})") from exc
    except subprocess.TimeoutExpired:
        raise ActionError(f"{what} did not finish within {bound} = {timeout:g} s") from None
    except OutputOverflow as exc:
        raise ActionError(f"{what} printed more than {OUTPUT_CAP // 1024} KiB on {exc.stream}; stopped") from None
    if done.returncode != 0:
        raise ActionError(f"{what} exit {done.returncode}: {why_failed(done.stderr or done.stdout)}")
    return done.stdout


_SEVERE = re.compile(r"\b(PANIC|FATAL|fatal|ERROR|error)\b:?")
_RANK = {"PANIC": 3, "FATAL": 2, "fatal": 2, "ERROR": 1, "error": 1}


def why_failed(output: str, limit: int = 300) -> str:
    """A failed command's words, its gravest error line first (the last of the gravest): a
    report cuts the text short (an acknowledgement's detail takes 200 characters), and the
    tail alone began with PostgreSQL's dated LOG lines, a varying length of them, or ended
    with pg_rewind's own "error: postgres single-user mode in target cluster failed", so
    the cause, "PANIC: could not locate a valid checkpoint record", was cut away in about
    one rejoin of eight."""
    text = output.strip()
    found = [(_RANK[m.group(1)], i, line[m.start():]) for i, line in enumerate(text.splitlines())
             if (m := _SEVERE.search(line))]
    if not found or len(text) <= 100:
        return text[-limit:]
    key = max(found)[2].strip()  # from "PANIC:" on
    rest = text[-(limit - len(key) - 4):] if len(key) + 4 < limit else ""
    return f"{key[:limit]}{f' ({rest})' if rest else ''}"


def _read_capped(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bytes, str]:
    """Both pipes read until EOF and the exit, the deadline, or a stream over the cap:
    (stdout, stderr, "" | "timeout" | "stdout" | "stderr")."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    names = {proc.stdout: "stdout", proc.stderr: "stderr"}
    with selectors.DefaultSelector() as sel:
        for pipe in bufs:
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), "timeout"
            for sk, _ in sel.select(left):
                chunk = os.read(sk.fd, 65536)
                if not chunk:
                    sel.unregister(sk.fileobj)
                    continue
                buf = bufs[sk.fileobj]  # type: ignore[index]
                buf += chunk
                if len(buf) > OUTPUT_CAP:
                    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), names[sk.fileobj]  # type: ignore[index]
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), "timeout"
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The leader is reaped; a group still running after a timeout or overflow is killed."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
