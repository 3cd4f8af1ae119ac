"""A real net-snmp ``snmptrapd`` as the rig's SNMP manager.

It runs in the foreground on 127.0.0.1 (or inside a namespace via ``netns``), logs every
notification it accepts as one line with MIB names, and ``received`` parses that log.
``stop``/``start`` simulate a manager that goes away and comes back; its engine id
survives (kept in its own persistent dir), as a real manager's would.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

# Our MIB and the IETF base modules it imports (RFC 2578-2580) ship together in one folder.
MIB_DIR = Path(__file__).resolve().parent.parent / "firmware" / "mibs"
_MARK = "ARBTRAP"
_SEP = " |~| "
_LINE = re.compile(rf"^{_MARK}\|(?P<pdu>[A-Z0-9]+), SNMP (?P<version>v[123]c?), (?P<security>.*?)\|(?P<vbs>.*)$")
_USER = re.compile(r"user ([^,\s]+)")
# Names snmptrapd prints for the two mandatory varbinds when SNMPv2-MIB is not loaded.
_TRAP_OID_NAMES = ("SNMPv2-MIB::snmpTrapOID.0", "SNMPv2-SMI::snmpModules.1.1.4.1.0")
_UPTIME_NAMES = ("DISMAN-EVENT-MIB::sysUpTimeInstance", "SNMPv2-MIB::sysUpTime.0", "SNMPv2-SMI::mib-2.1.3.0")

V3User = tuple[str, str, str, str]  # user, auth pass, priv pass, sender engine id (hex, "" for informs)


def stage_mibs(dest: Path, src: Path, probe: str) -> None:
    """Copies the modules of ``src`` into ``dest`` and proves net-snmp loads them all.

    Any line net-snmp's parser rejects, in any module, is an error naming the file: a
    rejected line makes net-snmp lose the whole OID tree under it, so the trap log would
    show numbers instead of names and the scenarios' checks would miss alerts.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        shutil.copyfile(f, dest / f.name)
    # Only the staged modules are judged: no machine-wide snmp.conf or persistent files
    # (/var/lib/snmp, which other net-snmp tools on the machine write) are read.
    with tempfile.TemporaryDirectory() as private:
        (Path(private) / "cert_indexes").mkdir()  # else net-snmp says it created it, on stderr
        env = {**os.environ, "SNMPCONFPATH": private, "SNMP_PERSISTENT_DIR": private}
        out = subprocess.run(["snmptranslate", "-M", str(dest), "-m", "ALL", "-On", probe],
                             capture_output=True, text=True, check=False, env=env)
    complaints = [line for line in out.stderr.splitlines() if line.strip()]
    if complaints or out.returncode != 0 or not out.stdout.startswith("."):
        raise RuntimeError(f"net-snmp rejects the MIBs of {src} (probe {probe}): "
                           + " / ".join(complaints[:4] or [out.stdout.strip()]))


class TrapReceiver:
    def __init__(self, workdir: Path, port: int, mib_dir: Path = MIB_DIR, community: str = "public",
                 v3_users: list[V3User] | None = None, netns: str = "", host: str = "127.0.0.1",
                 v3_protocols: tuple[str, str] = ("SHA", "AES")) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.host = host
        self.netns = netns
        self.conf = self.workdir / "snmptrapd.conf"
        self.mibs = self.workdir / "mibs"
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []  # one per start: snmptrapd truncates its -Lf file
        self.workdir.mkdir(parents=True, exist_ok=True)
        stage_mibs(self.mibs, mib_dir, "BILLMASTER-ARBITER-MIB::arbLinkDown")
        self.conf.write_text(_config(community, v3_users or [], v3_protocols))

    def start(self) -> None:
        if self.proc is not None:
            return
        self.logs.append(self.workdir / f"snmptrapd.{len(self.logs) + 1}.log")
        cmd = ["snmptrapd", "-f", "-Lf", str(self.logs[-1]), "-C", "-c", str(self.conf), "-M", str(self.mibs),
               "-m", "ALL", f"udp:{self.host}:{self.port}"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(self.workdir / "persist")}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_listening(5.0)

    def _wait_listening(self, timeout: float) -> None:
        """snmptrapd logs its version once its socket is bound."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"snmptrapd exited with {self.proc.returncode}; see {self.logs[-1]}")
            if "NET-SNMP version" in _read(self.logs[-1]):
                return
            time.sleep(0.02)
        raise RuntimeError(f"snmptrapd did not start within {timeout}s; see {self.logs[-1]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> TrapReceiver:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_text(self) -> str:
        """Everything snmptrapd logged, over all its starts."""
        return "".join(_read(p) for p in self.logs)

    def received(self) -> list[dict[str, object]]:
        """Every notification logged so far, oldest first: pdu (TRAP2/INFORM), version,
        user or community, event (the notification's MIB name) and varbinds (name -> value)."""
        return [n for line in self.log_text().splitlines() if (n := parse_line(line)) is not None]

    def wait_for(self, n: int, timeout: float) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if len(got) >= n or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _config(community: str, users: list[V3User], protocols: tuple[str, str] = ("SHA", "AES")) -> str:
    """``protocols``: net-snmp's names of the v3 users' authentication and privacy (SHA-256, AES-256)."""
    lines = [f"authCommunity log {community}"] if community else []
    for user, auth, priv, engine in users:
        target = f"-e 0x{engine} " if engine else ""
        lines.append(f'createUser {target}{user} {protocols[0]} "{auth}" {protocols[1]} "{priv}"')
    lines += [f"authUser log {user} priv" for user in sorted({u[0] for u in users})]
    lines.append(f"format2 {_MARK}|%P|%V{_SEP}%v\\n")
    return "\n".join(lines) + "\n"


def parse_line(line: str) -> dict[str, object] | None:
    m = _LINE.match(line)
    if m is None:
        return None
    varbinds: dict[str, str] = {}
    for vb in m.group("vbs").split(_SEP):
        name, _, value = vb.partition(" = ")
        varbinds[name] = value.split(": ", 1)[1] if ": " in value else value
    security = m.group("security")
    user = _USER.match(security)
    trap_oid = next((varbinds[k] for k in _TRAP_OID_NAMES if k in varbinds), "")
    return {
        "pdu": m.group("pdu"), "version": m.group("version"),
        "user": user.group(1) if user else "", "community": security.removeprefix("community ")
        if security.startswith("community ") else "",
        "event": trap_oid.rsplit("::", 1)[-1],
        "uptime": next((varbinds[k] for k in _UPTIME_NAMES if k in varbinds), ""),
        "varbinds": {k.rsplit("::", 1)[-1]: v for k, v in varbinds.items()
                     if k not in _TRAP_OID_NAMES and k not in _UPTIME_NAMES},
    }
