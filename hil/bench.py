"""Side-by-side: the appliance at its shipped defaults against keepalived (VRRPv3, advert_int
1 and 0.1) on the same rig, the same client probe (10 ms) and the same fault.

Parts (``arbiter-hil bench --parts``), each a figure set in the JSON:

* ``outage``: power-loss runs on a pair under billing load (PostgreSQL): client-visible
  outage, fence to standby accepting writes, billing's longest gap, and where the time went
  (the appliance's own step times); keepalived's runs beside them.
* ``cost``: CPU seconds per hour and peak RSS of the daemon process alone while it watches
  a calm site, with 2 servers and with 10. The rig's GPIO bridge runs as a thread inside the
  daemon (board/hil_bridge.py); its CPU time is read from its own /proc task and subtracted.
* ``monitored``: the same daemon-alone CPU seconds per hour and RSS on a pair with its HTTP
  status and SNMP responder on, first unpolled, then with /health, /status, /metrics and an
  snmpwalk of the status objects each once a second (hil.monitor on the client host).
* ``soak``, ``soak-keepalived``: hil.soak for ``--soak-seconds``, the appliance, and
  keepalived at advert_int 0.1 (two parts, so that each fits in one hold of the test lock).
* ``budget``: the appliance on a quarter of one core (hil.budget): power-loss runs and a
  soak of ``--budget-soak-seconds``.
* ``endurance``: hil.endurance with ``--endurance N`` failovers.

Results are merged into the JSON file (so parts can run one at a time), and a PNG next to
it plots the outage distribution per contender.
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

from hil.budget import CpuBudget
from hil.endurance import run_endurance
from hil.keepalived import on_pair, site_prefix
from hil.rig import PROBE_PORT, PY, Rig, RigOptions
from hil.scenarios import run_scenario
from hil.site import DEFAULT_PREFIX, Site, cleanup_stale
from hil.soak import arbiter_soak, keepalived_soak

PARTS = ("outage", "cost", "monitored", "soak", "soak-keepalived", "budget", "endurance")
ADVERTS = (1.0, 0.1)
SOAK_ADVERT = 0.1
STEPS = ("detection_s", "fence_s", "promote_s", "take_ip_s", "verify_s")


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- outage


def arbiter_outages(runs: int, workdir: Path, budget: bool = False, prefix: str = DEFAULT_PREFIX,
                    wal_segsize_mb: int | None = None) -> dict[str, Any]:
    """Power-loss on a pair (master, one synchronous standby) under billing load, as
    keepalived's runs have two hosts. A failed run is counted and listed, never hidden.
    ``wal_segsize_mb``: the database's WAL segment size (None: PostgreSQL's 16 MB); its
    promotion writes and fsyncs a whole segment for the new timeline."""
    rows: list[dict[str, Any]] = []
    method = ""
    for i in range(runs):
        with CpuBudget(enabled=budget, prefix=prefix) as cpu:
            report = run_scenario("power-loss", workdir / f"arbiter{'-budget' if budget else ''}-{i}",
                                  RigOptions(database=True, wal_segsize_mb=wal_segsize_mb),
                                  prepare=lambda rig: cpu.add(rig.arbiter_pid),
                                  prefix=prefix)
            method = cpu.method
        d = report.details
        rows.append({"passed": report.passed, "outage_s": report.outage_s, "lost_tx": report.lost_tx,
                     "fence_to_writable_s": d.get("fence_to_writable_s"),
                     "billing_longest_gap_s": d.get("billing_longest_gap_s"),
                     "steps": {k: (d.get("last_failover") or {}).get(k) for k in STEPS},
                     "failed_checks": [name for name, ok in report.checks.items() if not ok]})
        _say(f"arbiter{' (budget)' if budget else ''} run {i + 1}/{runs}: outage {report.outage_s} s, "
             f"fence to writable {d.get('fence_to_writable_s')} s, passed {report.passed}")
    ok = [r for r in rows if r["passed"]]
    out = {**spread([r["outage_s"] for r in ok]), "failed_runs": len(rows) - len(ok),
           "outages": [r["outage_s"] for r in ok],
           "fence_to_writable": spread([r["fence_to_writable_s"] for r in ok if r["fence_to_writable_s"] is not None]),
           "billing_longest_gap": spread([r["billing_longest_gap_s"] for r in ok
                                          if r["billing_longest_gap_s"] is not None]),
           "steps_median_s": {k: _median([r["steps"][k] for r in ok]) for k in STEPS},
           "lost_tx": sum(r["lost_tx"] or 0 for r in rows), "pg_wal_segsize_mb": wal_segsize_mb or 16,
           "runs_detail": rows}
    if budget:
        out["budget"] = method
    return out


def keepalived_outage(workdir: Path, advert_int: float, prefix: str = DEFAULT_PREFIX) -> float | None:
    site, ka = on_pair(workdir, advert_int, prefix)
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


def _probe(site: Site, workdir: Path):
    return site.spawn("client", [PY, "-m", "hil.probe", "client", "--target", site.vip.split("/")[0],
                                 "--port", str(PROBE_PORT), "--interval", "0.01", "--out", str(workdir / "probe.json")],
                      log_name="probe")


def keepalived_outages(runs: int, workdir: Path, advert_int: float, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    got: list[float] = []
    for i in range(runs):
        o = keepalived_outage(workdir / f"ka{advert_int:g}-{i}", advert_int, prefix)
        _say(f"keepalived advert_int {advert_int:g} run {i + 1}/{runs}: outage {o} s")
        if o is not None:
            got.append(o)
    return {**spread(got), "failed_runs": runs - len(got), "outages": got}


# ---------------------------------------------------------------------- cost


def arbiter_cost(workdir: Path, seconds: float, standbys: int, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The daemon process alone while it watches a calm site: utime+stime of its process
    minus those of the rig's bridge thread inside it; VmHWM for the peak RSS."""
    with Rig(RigOptions(standbys=standbys, prefix=prefix), workdir) as rig:
        rig.wait_ready(timeout=60.0)
        time.sleep(2.0)
        pid, tid = rig.arbiter_pid, rig.gpio.bridge_thread()
        if tid is None:
            raise RuntimeError("the GPIO bridge thread wrote no thread id: cannot tell its CPU time from the daemon's")
        (p0, b0), t0 = (_cpu_seconds(pid), _cpu_seconds(pid, tid)), time.monotonic()
        load0 = os.getloadavg()[0]
        time.sleep(seconds)
        (p1, b1), t1 = (_cpu_seconds(pid), _cpu_seconds(pid, tid)), time.monotonic()
        rss = _rss_mib(pid, "VmHWM")
    hour = 3600 / (t1 - t0)
    return {"servers": standbys + 1, "cpu_s_per_hour": round((p1 - p0 - (b1 - b0)) * hour, 1),
            "percent_of_one_core": round((p1 - p0 - (b1 - b0)) / (t1 - t0) * 100, 2),
            "bridge_cpu_s_per_hour": round((b1 - b0) * hour, 1), "peak_rss_mib": round(rss, 1),
            "measured_s": round(t1 - t0, 1), "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def monitored_cost(workdir: Path, seconds: float, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The daemon process alone on a calm pair with its HTTP status and SNMP responder on:
    ``seconds`` with nobody polling, then ``seconds`` with /health, /status, /metrics and an
    snmpwalk of arbStatus (GETNEXT, one request per object) each once a second from the
    client host (hil.monitor). CPU as in arbiter_cost, RSS (VmRSS) at the end of each half."""
    with Rig(RigOptions(monitoring=True, prefix=prefix), workdir) as rig:
        rig.wait_ready(timeout=60.0)
        pid, tid = rig.arbiter_pid, rig.gpio.bridge_thread()
        if tid is None:
            raise RuntimeError("the GPIO bridge thread wrote no thread id: cannot tell its CPU time from the daemon's")
        time.sleep(2.0)
        quiet = _cpu_per_hour(pid, tid, seconds)
        quiet_rss = _rss_mib(pid, "VmRSS")
        rig.start_monitor(browser=False, interval=1.0)
        time.sleep(2.0)
        polled = _cpu_per_hour(pid, tid, seconds)
        polled_rss, peak = _rss_mib(pid, "VmRSS"), _rss_mib(pid, "VmHWM")
        rig.stop_monitor()
    return {"servers": 2, "measured_s": seconds, "cpu_s_per_hour_unpolled": quiet, "cpu_s_per_hour_polled": polled,
            "rss_mib_unpolled": round(quiet_rss, 1), "rss_mib_polled": round(polled_rss, 1),
            "peak_rss_mib": round(peak, 1)}


def _cpu_per_hour(pid: int, bridge: int, seconds: float) -> float:
    """The process's CPU seconds per hour over the next ``seconds``, the bridge thread's taken out."""
    def daemon() -> float:
        return _cpu_seconds(pid) - _cpu_seconds(pid, bridge)
    (cpu0, t0) = daemon(), time.monotonic()
    time.sleep(seconds)
    return round((daemon() - cpu0) * 3600 / (time.monotonic() - t0), 1)


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of the process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- figures


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"runs": 0, "median_s": None, "max_s": None}
    return {"runs": len(values), "median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def run_bench(parts: list[str], workdir: Path, *, runs: int, soak_s: float, budget_soak_s: float,
              endurance: int, cost_s: float, prefix: str = DEFAULT_PREFIX,
              wal_segsize_mb: int | None = None) -> dict[str, Any]:
    """The figures of the parts asked for, each stamped with the load average it ran under.
    ``prefix`` names every site the bench builds (keepalived's pairs: hil.keepalived.site_prefix);
    ``wal_segsize_mb``: the database's WAL segments in the outage and budget parts."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts {','.join(unknown)}: unknown (known: {', '.join(PARTS)})")
    cleanup_stale(prefix)
    cleanup_stale(site_prefix(prefix))
    figures: dict[str, Any] = {}
    for part in parts:
        started, load = time.monotonic(), os.getloadavg()[0]
        if part == "outage":
            figures["arbiter"] = arbiter_outages(runs, workdir, prefix=prefix, wal_segsize_mb=wal_segsize_mb)
            for advert in ADVERTS:
                figures[f"keepalived_{advert:g}"] = keepalived_outages(runs, workdir, advert, prefix)
        elif part == "cost":
            figures["cost"] = [arbiter_cost(workdir / f"cost-{n}", cost_s, n - 1, prefix) for n in (2, 10)]
        elif part == "monitored":
            figures["monitored_cost"] = monitored_cost(workdir / "monitored", cost_s, prefix)
        elif part == "soak":
            figures["soak_arbiter"] = arbiter_soak(workdir / "soak", soak_s, prefix=prefix)
        elif part == "soak-keepalived":
            figures[f"soak_keepalived_{SOAK_ADVERT:g}"] = keepalived_soak(workdir / "soak-ka", soak_s, SOAK_ADVERT,
                                                                          prefix)
        elif part == "budget":
            figures["arbiter_budget"] = arbiter_outages(runs, workdir, budget=True, prefix=prefix,
                                                        wal_segsize_mb=wal_segsize_mb)
            figures["arbiter_budget"]["soak"] = arbiter_soak(workdir / "soak-budget", budget_soak_s, budget=True,
                                                             prefix=prefix)
        elif part == "endurance" and endurance > 0:
            figures["endurance"] = run_endurance(endurance, workdir / "endurance", prefix)
        figures.setdefault("ran", {})[part] = {"seconds": round(time.monotonic() - started),
                                               "load_average_at_start": round(load, 2),
                                               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return figures


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Parts run later replace the same parts of an earlier run; the rest is kept."""
    out = {**old, **new}
    out["ran"] = {**old.get("ran", {}), **new.get("ran", {})}
    return out


def render(f: dict[str, Any]) -> str:
    """The bench table: one column per contender, '-' where a figure does not apply or did not run."""
    cols = [("arbiter", "arbiter (defaults)"), ("arbiter_budget", "arbiter, 1/4 core"),
            ("keepalived_1", "keepalived advert 1"), ("keepalived_0.1", "keepalived advert 0.1")]
    soaks = {"arbiter": f.get("soak_arbiter"), "arbiter_budget": f.get("arbiter_budget", {}).get("soak"),
             "keepalived_0.1": f.get("soak_keepalived_0.1")}

    def row(label: str, get) -> tuple[str, ...]:
        return (label, *(_cell(get(key)) for key, _ in cols))

    def fig(key: str, *path: str) -> Any:
        value: Any = f.get(key)
        for p in path:
            value = value.get(p) if isinstance(value, dict) else None
        return value

    rows = [("", *(title for _, title in cols)),
            row("power-loss runs (passed)", lambda k: fig(k, "runs")),
            row("runs that failed (not in the figures)", lambda k: fig(k, "failed_runs")),
            row("median outage (s)", lambda k: fig(k, "median_s")),
            row("max outage (s)", lambda k: fig(k, "max_s")),
            row("fence to writes, median (s)", lambda k: fig(k, "fence_to_writable", "median_s")),
            row("billing's longest gap, max (s)", lambda k: fig(k, "billing_longest_gap", "max_s")),
            row("soak length (s)", lambda k: (soaks.get(k) or {}).get("seconds")),
            row("soak: false failovers / takeovers", lambda k: _false(soaks.get(k))),
            row("soak: freezes / noise bursts", lambda k: _faults(soaks.get(k)))]
    for c in f.get("cost", []):
        rows.append((f"daemon CPU s/hour, {c['servers']} servers", _cell(c["cpu_s_per_hour"]), "-", "-", "-"))
        rows.append((f"daemon peak RSS MiB, {c['servers']} servers", _cell(c["peak_rss_mib"]), "-", "-", "-"))
    m = f.get("monitored_cost")
    if m:
        for label, key in (("not polled", "unpolled"), ("HTTP+SNMP polled 1/s", "polled")):
            rows.append((f"daemon CPU s/hour, {label}", _cell(m[f"cpu_s_per_hour_{key}"]), "-", "-", "-"))
            rows.append((f"daemon RSS MiB, {label}", _cell(m[f"rss_mib_{key}"]), "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    steps = fig("arbiter", "steps_median_s")
    if steps:
        lines.append("arbiter step medians (s): " + ", ".join(f"{k[:-2]} {v}" for k, v in steps.items())
                     + f" (PostgreSQL WAL segments of {fig('arbiter', 'pg_wal_segsize_mb') or 16} MB)")
    if "arbiter_budget" in f:
        lines.append(f"budget: {f['arbiter_budget'].get('budget') or '-'}")
    e = f.get("endurance")
    if e:
        lines.append(f"endurance: {e['completed']}/{e['requested']} failovers, split brains {e['split_brains']}, "
                     f"acknowledged {e['acked_tx']}, lost {e['lost_tx']}, outage median {e['outage_s']['median']} s "
                     f"p90 {e['outage_s']['p90']} s max {e['outage_s']['max']} s")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _false(soak: dict[str, Any] | None) -> Any:
    if not soak:
        return None
    return soak.get("false_failovers", soak.get("false_takeovers"))


def _faults(soak: dict[str, Any] | None) -> str | None:
    return None if not soak else f"{soak['freezes']} x {soak['freeze_s']:g} s / {soak['noise_bursts']}"


def plot(f: dict[str, Any], path: Path) -> None:
    """The outage of every run per contender, as points over a box plot."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a rig
    import matplotlib.pyplot as plt

    series = [(label, f[key]["outages"]) for key, label in (
        ("arbiter", "arbiter\n(defaults)"), ("arbiter_budget", "arbiter\n(1/4 core)"),
        ("keepalived_1", "keepalived\nadvert 1"), ("keepalived_0.1", "keepalived\nadvert 0.1"))
        if f.get(key, {}).get("outages")]
    if f.get("endurance", {}).get("outages"):
        series.append(("arbiter\nendurance", f["endurance"]["outages"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if series:
        ax.boxplot([s for _, s in series], tick_labels=[label for label, _ in series], showfliers=False)
        for i, (_, values) in enumerate(series, start=1):
            ax.scatter([i + 0.08 * ((j % 5) - 2) for j in range(len(values))], values, s=12, alpha=0.6)
    ax.axhline(0.30, linestyle="--", linewidth=1, color="grey")
    ax.set_ylabel("client-visible outage on power loss (s)")
    ax.set_title("arbiter-hil bench: outage per run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
