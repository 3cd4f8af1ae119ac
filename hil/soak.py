"""The soak: a long calm-but-noisy stretch in which nothing may fail over.

For its whole length every LAN port loses 5 % of its packets (nftables) and a CPU hog runs
beside the appliance; on top of that a seeded schedule freezes a server (SIGSTOP) for half
the appliance's dead time every few seconds and sends bursts of noise down a server's serial
line. keepalived gets the same loss, hog and freezes (it has no serial line) on its own site.
Whatever takes over while every server is alive is a false failover.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from firmware.config import Timing
from hil import netns
from hil.budget import CpuBudget
from hil.keepalived import Keepalived, on_pair
from hil.rig import Rig, RigOptions
from hil.scenarios import noise
from hil.site import DEFAULT_PREFIX, Site

LOSS_PERCENT = 5
FREEZE_EVERY_S = 5.0
NOISE_EVERY_S = 15.0
NOISE_BURST_S = 2.0
HOG = "while True:\n    pass\n"
FREEZE_PRIORITY = 90  # above anything the appliance or a server may run at


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the soak began
    kind: str  # "freeze" or "noise"
    server: str
    seconds: float


def schedule(seconds: float, servers: list[str], freeze_s: float, seed: int = 18) -> list[Fault]:
    """Freezes every FREEZE_EVERY_S and noise bursts every NOISE_EVERY_S, each at a jittered
    time on a server drawn from ``servers``; the same seed gives every contender the same soak."""
    rnd = random.Random(seed)
    out = []
    for kind, every, length in (("freeze", FREEZE_EVERY_S, freeze_s), ("noise", NOISE_EVERY_S, NOISE_BURST_S)):
        t = every / 2
        while t + length < seconds:
            out.append(Fault(round(t + rnd.uniform(-every / 4, every / 4), 3), kind, rnd.choice(servers), length))
            t += every
    return sorted(out, key=lambda f: f.at)


def freeze(site: Site, host: str, seconds: float) -> float:
    """SIGSTOP every process of the host, SIGCONT ``seconds`` later; the process list is read
    once, and the thaw is timed from a real-time thread, so the freeze lasts what it says (at a
    load of 20 on two cores a plain sleep of 0.1 s thawed up to 0.32 s later: longer than the
    dead time, a real hang, no longer the soak's short freeze). Returns how long it lasted."""
    pids = site.host_pids(host)
    with _realtime():
        netns.signal_pids(pids, signal.SIGSTOP)
        t0 = time.monotonic()
        time.sleep(seconds)
        netns.signal_pids(pids, signal.SIGCONT)
        return time.monotonic() - t0


@contextmanager
def _realtime(priority: int = FREEZE_PRIORITY) -> Iterator[None]:
    """The calling thread at SCHED_FIFO ``priority`` for the block (Linux: per thread)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


def _play(faults: list[Fault], seconds: float, do_freeze, do_noise) -> dict[str, Any]:
    """Injects the faults on time; returns what was injected, each fault with the wall time it
    began (the daemon's journal stamps its events in wall time too). Noise bursts run on a
    thread of their own, a freeze inline: it is short."""
    start = time.monotonic()
    frozen: list[float] = []
    bursts: list[threading.Thread] = []
    played: list[tuple[float, Fault]] = []
    for f in faults:
        time.sleep(max(0.0, start + f.at - time.monotonic()))
        at = time.time()
        if f.kind == "freeze":
            frozen.append(do_freeze(f.server, f.seconds))
            f = replace(f, seconds=frozen[-1])  # what it lasted
        elif do_noise is not None:
            t = threading.Thread(target=do_noise, args=(f.server, f.seconds), daemon=True)
            t.start()
            bursts.append(t)
        played.append((at, f))
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    for t in bursts:
        t.join(NOISE_BURST_S + 5)
    return {"freezes": len(frozen), "longest_freeze_s": round(max(frozen, default=0.0), 3),
            "noise_bursts": len(bursts), "played": played}


LOOK_BACK_S = 1.0  # a fault that ended this long before a server was called dead may have caused it


def causes(events: list[dict[str, Any]], played: list[tuple[float, Fault]], event: str) -> dict[str, int]:
    """For each journal alert ``event`` on a server, the faults on that server that overlapped
    the second before it ("freeze", "noise", "freeze+noise", or "none": only the loss and the
    hog were there), counted: which fault the detector mistook for a death."""
    out: dict[str, int] = {}
    for e in events:
        if e.get("event") != event or "wall" not in e:
            continue
        near = sorted({f.kind for at, f in played
                       if f.server == e.get("server") and at <= e["wall"] <= at + f.seconds + LOOK_BACK_S})
        key = "+".join(near) or "none"
        out[key] = out.get(key, 0) + 1
    return out


def _hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True)


def arbiter_soak(workdir: Path, seconds: float, budget: bool = False,
                 prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The appliance at its shipped defaults on a pair; ``budget``: the appliance and the hog
    share a quarter of one core (hil.budget)."""
    dead = Timing().dead_time
    faults = schedule(seconds, ["master", "standby"], dead / 2)
    with Rig(RigOptions(prefix=prefix), workdir) as rig, CpuBudget(enabled=budget, prefix=prefix) as cpu:
        rig.wait_ready()
        hog = _hog()
        try:
            cpu.add(rig.arbiter_pid)
            cpu.add(hog.pid)
            for host in rig.servers + ["arbiter"]:
                rig.site.loss(host, LOSS_PERCENT)
            before = len(rig.journal())
            played = _play(faults, seconds, lambda s, t: freeze(rig.site, s, t),
                           lambda s, t: noise(rig, t, s))
        finally:
            hog.kill()
            hog.wait(5)
        rig.site.clear_faults()
        time.sleep(2.0)
        journal = rig.journal()[before:]
        events = [r.get("event", "") for r in journal]
        st = rig.status()
    played_faults = played.pop("played")
    return {"seconds": seconds, "false_failovers": events.count("failover-started"),
            "false_failover_faults": causes(journal, played_faults, "failover-started"),
            "server_down_faults": causes(journal, played_faults, "server-down"),
            "primary_at_end": st["primary"], "phase_at_end": st["phase"],
            "link_down_alerts": events.count("link-down"), "server_down_alerts": events.count("server-down"),
            "frames_dropped": sum(st.get("frames_dropped", {}).values()), "freeze_s": dead / 2,
            "budget": cpu.method, **played}


def keepalived_soak(workdir: Path, seconds: float, advert_int: float,
                    prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The same loss, hog and freezes on a keepalived pair; every entry into MASTER state after
    the start is a false takeover (nobody died)."""
    dead = Timing().dead_time
    faults = schedule(seconds, ["master", "standby"], dead / 2)
    site, ka = on_pair(workdir, advert_int, prefix)
    try:
        hog = _hog()
        try:
            for host in ("master", "standby"):
                site.loss(host, LOSS_PERCENT)
            before = _master_entries(ka)
            played = _play(faults, seconds, lambda s, t: freeze(site, s, t), None)
            played.pop("played")
        finally:
            hog.kill()
            hog.wait(5)
        site.clear_faults()
        time.sleep(2.0)
        takeovers = _master_entries(ka) - before
        holders = ka.holder()
    finally:
        site.teardown()
    return {"seconds": seconds, "advert_int": advert_int, "false_takeovers": takeovers, "holders_at_end": holders,
            "freeze_s": dead / 2, **played}


def _master_entries(ka: Keepalived) -> int:
    """How often any server entered MASTER state, from keepalived's own log lines."""
    return sum(p.log.read_text(errors="replace").count("Entering MASTER STATE") for p in ka.procs.values())
