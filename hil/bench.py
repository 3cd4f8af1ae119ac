"""Side-by-side: the appliance with its shipped default timings against keepalived (VRRPv3,
advert_int 1 and 0.1) on the same rig, the same client probe (10 ms) and the same fault
(the master's power cut). Prints median and max client-visible outage, false takeovers
under 5 % packet loss and a short hang, and the appliance's CPU seconds per hour and peak
RSS while it monitors a calm site.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from hil.keepalived import Keepalived
from hil.rig import PY, Rig, RigOptions
from hil.scenarios import run_scenario
from hil.site import Site, cleanup_stale

PROBE_PORT = 7007


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def arbiter_outages(runs: int, workdir: Path) -> tuple[list[float], int]:
    """Outages of the runs that passed, and how many runs failed (shown, never hidden).

    The power-loss scenario on a pair (master, one synchronous standby) under billing load,
    as keepalived's runs have two hosts; the scenario's own run adds an asynchronous standby.
    """
    out, failed = [], 0
    for i in range(runs):
        report = run_scenario("power-loss", workdir / f"arbiter-{i}", RigOptions(database=True))
        _say(f"arbiter run {i + 1}/{runs}: outage {report.outage_s} s, passed {report.passed}")
        if report.outage_s is not None and report.passed:
            out.append(report.outage_s)
        else:
            failed += 1
    return out, failed


def arbiter_cost(workdir: Path, seconds: float = 30.0) -> dict[str, float]:
    """CPU and memory of arbiterd while it watches a calm two-server site."""
    with Rig(RigOptions(), workdir) as rig:
        rig.wait_ready()
        pid = rig._procs["arbiter"].popen.pid
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        rss = _peak_rss_mib(pid)
    return {"cpu_s_per_hour": round((cpu1 - cpu0) / (t1 - t0) * 3600, 1), "peak_rss_mib": round(rss, 1),
            "measured_s": round(t1 - t0, 1)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ka_site(workdir: Path, advert_int: float) -> tuple[Site, Keepalived]:
    site = Site("bk", ["master", "standby", "client"], workdir)
    site.build()
    for name in ("master", "standby"):
        site.spawn(name, [PY, "-m", "hil.probe", "serve", "--port", str(PROBE_PORT), "--name", name],
                   log_name=f"echo-{name}")
    ka = Keepalived(site, ["master", "standby"], advert_int, workdir)
    ka.start()
    if not ka.wait_holder("master", 10 * advert_int + 5):
        raise RuntimeError(f"keepalived: master did not take the address (holders {ka.holder()})")
    return site, ka


def _probe(site: Site, workdir: Path):
    return site.spawn("client", [PY, "-m", "hil.probe", "client", "--target", site.vip.split("/")[0],
                                 "--port", str(PROBE_PORT), "--interval", "0.01", "--out", str(workdir / "probe.json")],
                      log_name="probe")


def keepalived_outage(workdir: Path, advert_int: float) -> float | None:
    site, ka = _ka_site(workdir, advert_int)
    try:
        probe = _probe(site, workdir)
        time.sleep(1.0)
        t0 = time.monotonic()
        site.power_cut("master")
        ka.wait_holder("standby", 10 * advert_int + 5)
        time.sleep(1.0)
        probe.send_signal(signal.SIGTERM)
        probe.wait(10)
        result = json.loads((workdir / "probe.json").read_text())
        return max((o["duration"] for o in result["outages"] if o["end"] >= t0), default=None)
    finally:
        site.teardown()


def keepalived_false_takeovers(workdir: Path, advert_int: float, loss_s: float, hang_s: float) -> dict[str, int]:
    """Takeovers by the standby while the master is alive: under loss, and across a short hang."""
    site, ka = _ka_site(workdir, advert_int)
    try:
        for host in ("master", "standby"):
            site.loss(host, 5)
        takeovers = _count_takeovers(ka, loss_s)
        site.clear_faults()
        ka.wait_holder("master", 5) or _say("keepalived: after the loss run the address stayed on the standby")
        hang = 0
        if ka.holder() == ["master"]:
            site.hang("master")
            time.sleep(hang_s)
            site.resume("master")
            hang = _count_takeovers(ka, 2.0)
        return {"packet_loss": takeovers, "short_hang": hang}
    finally:
        site.teardown()


def _count_takeovers(ka: Keepalived, seconds: float) -> int:
    count, held = 0, False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now_held = "standby" in ka.holder()
        count += now_held and not held
        held = now_held
        time.sleep(0.05)
    return count


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"runs": 0, "median_s": None, "max_s": None}
    return {"runs": len(values), "median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}


def run_bench(runs: int, workdir: Path) -> dict[str, Any]:
    loss_s = float(os.environ.get("ARBITER_HIL_LOSS_SECONDS", "20"))
    cleanup_stale("ba")
    cleanup_stale("bk")
    outages, failed = arbiter_outages(runs, workdir)
    figures: dict[str, Any] = {"arbiter": {**_summary(outages), "failed_runs": failed}}
    figures["arbiter"]["false_failovers"] = {
        name: run_scenario(name, workdir / f"arbiter-{name}").false_failovers
        for name in ("packet-loss", "short-hang", "serial-noise")}
    figures["arbiter"].update(arbiter_cost(workdir / "arbiter-cost"))
    for advert in (1.0, 0.1):
        ka: list[float] = []
        for i in range(runs):
            o = keepalived_outage(workdir / f"ka{advert:g}-{i}", advert)
            _say(f"keepalived advert_int {advert:g} run {i + 1}/{runs}: outage {o} s")
            if o is not None:
                ka.append(o)
        figures[f"keepalived_{advert:g}"] = {**_summary(ka), "failed_runs": runs - len(ka)}
    figures["loss_s"] = loss_s
    figures["keepalived_0.1"]["false_takeovers"] = keepalived_false_takeovers(
        workdir / "ka-false", 0.1, loss_s, hang_s=0.1)
    print(render(figures))
    return figures


def render(f: dict[str, Any]) -> str:
    a, k1, k01 = f["arbiter"], f["keepalived_1"], f["keepalived_0.1"]
    rows = [
        ("", "arbiter (defaults)", "keepalived advert 1", "keepalived advert 0.1"),
        ("power-loss runs", a["runs"], k1["runs"], k01["runs"]),
        ("runs that failed (not in the figures)", a["failed_runs"], k1["failed_runs"], k01["failed_runs"]),
        ("median outage (s)", a["median_s"], k1["median_s"], k01["median_s"]),
        ("max outage (s)", a["max_s"], k1["max_s"], k01["max_s"]),
        (f"false takeovers, 5% loss for {f['loss_s']:g} s", a["false_failovers"]["packet-loss"], "-",
         k01["false_takeovers"]["packet_loss"]),
        ("false takeovers, short hang", a["false_failovers"]["short-hang"], "-",
         k01["false_takeovers"]["short_hang"]),
        ("false takeovers, line noise", a["false_failovers"]["serial-noise"], "-", "n/a (no serial)"),
        ("CPU s per hour, monitoring", a["cpu_s_per_hour"], "-", "-"),
        ("peak RSS (MiB)", a["peak_rss_mib"], "-", "-"),
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows)
