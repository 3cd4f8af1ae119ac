"""A real NUT server for the rig and the tests: upsd with one dummy-ups driver per UPS, in a
directory of its own (NUT_CONFPATH/NUT_STATEPATH), on any address and port, optionally
inside a network namespace. A UPS's state is changed at run time by rewriting its .dev
file: dummy-ups in dummy-once mode re-reads the file when its timestamp changes.

Fence level 2 (an instcmd such as load.off or outlet.N.load.off): upsd is real here, so the
user's password and its instcmds permission are checked for real and upsd hands the command
to the driver. dummy-ups (2.8.0) has no load to switch and rejects every instcmd ("instcmd:
unknown command" in its log, and upsd without TRACKING has already answered OK, as it does
for any driver). So the rig plays the UPS's outlet relay: ``new_instcmds`` reads the commands
upsd accepted from its own log ("Instant command: USER@HOST did CMD on UPS"), and the rig
turns them into a power cut and writes ``ups.status: OFF`` (and ``outlet.N.status: off``) to
the .dev file, so that the appliance's readback through upsd is real as well.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from firmware.state import write_atomic

DRIVER = "/lib/nut/dummy-ups"
FENCE_USER = "fencer"
FENCE_PASSWORD = "rig-fencer"
FENCE_COMMANDS = ("load.off",)  # dummy-ups declares no outlets: upsd refuses outlet.N.load.off for it
_INSTCMD = re.compile(r"Instant command: (?P<user>[^@\s]+)@\S+ did (?P<cmd>\S+) on (?P<ups>\S+)")
UPSD = "/lib/nut/upsd"  # /usr/sbin/upsd is Debian's wrapper that obeys /etc/nut/nut.conf


class NutSite:
    def __init__(self, workdir: Path, upses: list[str], port: int, listen: str = "127.0.0.1",
                 netns: str | None = None) -> None:
        self.workdir, self.upses, self.port, self.listen, self.netns = Path(workdir), upses, port, listen, netns
        self._drivers: dict[str, subprocess.Popen] = {}
        self._upsd: subprocess.Popen | None = None
        self._log_read = 0

    def __enter__(self) -> NutSite:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        for ups in self.upses:
            self.set(ups, status="OL", charge=100, runtime=1800)
            self.start_driver(ups)
        self.start_upsd()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        d = str(self.workdir)
        return {**os.environ, "NUT_CONFPATH": d, "NUT_STATEPATH": d, "NUT_ALTPIDPATH": d}

    def _argv(self, *argv: str) -> list[str]:
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(argv)

    def _write_config(self) -> None:
        blocks = [f"[{u}]\n  driver = dummy-ups\n  port = {self.workdir / (u + '.dev')}\n  mode = dummy-once\n"
                  f"  pollinterval = 1\n  desc = \"HIL rig UPS\"\n" for u in self.upses]
        (self.workdir / "ups.conf").write_text("maxretry = 3\n" + "".join(blocks))
        (self.workdir / "upsd.conf").write_text(f"LISTEN {self.listen} {self.port}\nMAXAGE 5\n")
        users = self.workdir / "upsd.users"
        users.write_text("[monitor]\n  password = rig-monitor\n  upsmon primary\n"
                         f"[{FENCE_USER}]\n  password = {FENCE_PASSWORD}\n"
                         + "".join(f"  instcmds = {c}\n" for c in FENCE_COMMANDS))
        self.fence_password_file.write_text(FENCE_PASSWORD + "\n")
        self.fence_password_file.chmod(0o600)
        users.chmod(0o600)
        (self.workdir / "nut.conf").write_text("MODE=netserver\n")

    @property
    def fence_password_file(self) -> Path:
        return self.workdir / "fence.pw"

    def new_instcmds(self) -> list[tuple[str, str, str]]:
        """(user, command, ups) of every instcmd upsd accepted since the last call."""
        log = self.workdir / "upsd.log"
        try:
            with open(log, "rb") as f:
                f.seek(self._log_read)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        done, _, _ = text.rpartition("\n")  # a line still being written waits for the next call
        self._log_read += len(done.encode()) + (1 if done else 0)
        return [(m["user"], m["cmd"], m["ups"]) for m in _INSTCMD.finditer(done)]

    def set(self, ups: str, status: str, charge: float = 100, runtime: float = 1800,
            extra: dict[str, str] | None = None) -> None:
        """New readings for the driver; it notices the new timestamp within its poll interval."""
        dev = self.workdir / f"{ups}.dev"
        write_atomic(dev, f"ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {runtime}\n"
                          "device.mfr: HIL\ndevice.model: rig\n" + "".join(f"{k}: {v}\n" for k, v in (extra or {}).items()),
                     durable=False)
        now = time.time()
        os.utime(dev, (now, now))

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        out = open(self.workdir / log, "ab")
        try:
            return subprocess.Popen(self._argv(*argv), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            out.close()

    def start_driver(self, ups: str) -> None:
        self._drivers[ups] = self._spawn([DRIVER, "-a", ups, "-u", "root", "-F"], f"driver-{ups}.log")

    def kill_driver(self, ups: str) -> None:
        _kill(self._drivers.pop(ups, None))

    def start_upsd(self) -> None:
        self._upsd = self._spawn([UPSD, "-u", "root", "-F"], "upsd.log")

    def stop_upsd(self) -> None:
        _kill(self._upsd)
        self._upsd = None

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for ups in self.upses:
            while True:
                done = subprocess.run(self._argv("upsc", f"{ups}@{self.listen}:{self.port}", "ups.status"),
                                      capture_output=True, text=True)
                if done.returncode == 0 and done.stdout.strip() not in ("", "WAIT"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"NUT {ups}@{self.listen}:{self.port} not ready: {done.stderr.strip()}")
                time.sleep(0.1)

    def close(self) -> None:
        for ups in list(self._drivers):
            self.kill_driver(ups)
        self.stop_upsd()


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(5)
