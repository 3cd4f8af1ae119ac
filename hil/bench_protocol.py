"""Heartbeat protocol figures: poll round trip over a socat pty pair and over UDP loopback
against a real agent (median, p99), frames per second one core authenticates (a full
receive check included), and what one core rejects per second of a LAN flood: frames with
a bad MAC, and frames over a source's rate limit (dropped before any MAC).

A pty does not pace bytes at its baud rate, so the pty figure is the software path only;
the wire time a real 115200-baud line adds is computed from the frame sizes and printed.
A UART hands a frame on a few bytes at a time: the links reader's CPU time and wake-ups are
measured with two servers' replies written whole (as the rig's socat cables carry them) and
8 and 16 bytes at a time, each part when a 115200-baud line would have carried it.

    python -m hil.bench_protocol [--polls 500] [--uart-seconds 20]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from firmware.links import BITS_PER_BYTE, Poller, RateLimit
from firmware.model import Channel
from firmware.protocol import Codec, Deframer, Frame, Kind, Reply, decode, derive_key, encode, frame_serial

ROOT = Path(__file__).resolve().parent.parent


def round_trips(poller: Poller, channel: Channel, polls: int) -> list[float]:
    out, last = [], None
    for _ in range(polls):
        poller.poll_all()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            rec = poller.snapshot()["master"][channel]
            if rec.last_seen is not None and rec.last_seen != last:
                last = rec.last_seen
                out.append(rec.rtt_s)
                break
            time.sleep(0.0002)
        time.sleep(0.005)
    return out


REPLY = Reply(re=1, healthy=True, role="standby", vip=False, in_sync=True, lag_bytes=0, lag_s=0.0,
              peer_alive=True, hears_primary=False).payload()


def auth_rate(seconds: float = 2.0) -> float:
    """Frames a second through encode, sign, verify and decode."""
    key = secrets.token_bytes(32)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        decode(encode(Frame(Kind.REPLY, "standby", "arbiter", 7, n + 1, REPLY), key), key)
        n += 1
    return n / seconds


def _rate(frames: list[bytes], check) -> float:
    started = time.perf_counter()
    for raw in frames:
        check(raw)
    return len(frames) / (time.perf_counter() - started)


def receive_rates(n: int = 100_000) -> dict[str, float]:
    """What the appliance's receive path does a second on one core: good replies read
    (sender check, key, MAC, parse, replay), forged ones (bad MAC) rejected, and a flood
    from one source dropped by its rate limit before any MAC."""
    master = secrets.token_bytes(32)
    agent = Codec("standby", {"arbiter": derive_key(master, "standby")}, 7)
    appliance = Codec("arbiter", {"standby": derive_key(master, "standby")}, 1)
    good = [agent.make(Kind.REPLY, "arbiter", REPLY)[1] for _ in range(n)]
    forged = encode(Frame(Kind.REPLY, "standby", "arbiter", 7, 1, REPLY), b"x" * 32)
    limit = RateLimit(250.0, 62.0)
    return {"read": _rate(good, lambda raw: appliance.read(raw, "standby")),
            "bad_mac": _rate([forged] * n, lambda raw: appliance.read(raw, "standby")),
            "rate_limited": _rate([forged] * n, lambda raw: limit.allow("standby") and appliance.read(raw))}


def _uart_agent(fd: int, codec: Codec, part: int, stop: threading.Event) -> None:
    """Answer every poll on a pty, the reply ``part`` bytes at a time at 115200 baud (0: whole),
    after the poll's own wire time."""
    deframer = Deframer()
    while not stop.is_set():
        try:
            data = os.read(fd, 4096)
        except OSError:  # the pty closed
            return
        for raw in deframer.feed(data):
            frame = codec.read(raw, "arbiter")
            if frame is None or frame.kind is not Kind.POLL:
                continue
            wire = frame_serial(codec.make(Kind.REPLY, "arbiter", {**REPLY, "re": frame.payload["n"]})[1])
            due = time.monotonic() + wire_ms(len(frame_serial(raw))) / 1000
            for at in range(0, len(wire), part or len(wire)):
                chunk = wire[at:at + (part or len(wire))]
                due += wire_ms(len(chunk)) / 1000
                time.sleep(max(0.0, due - time.monotonic()))
                os.write(fd, chunk)


def uart_reader(part: int, seconds: float, interval: float = 0.04) -> dict[str, float]:
    """The links reader's CPU-seconds an hour and wake-ups a second with two servers on serial
    lines whose replies come ``part`` bytes at a time (0: whole), polled every ``interval``; and
    the median round trip (a frame's end read late shows here)."""
    names = ("master", "standby")
    keys = {name: derive_key(b"bench" * 8, name) for name in names}
    stop, ends = threading.Event(), []
    for name in names:
        near, far = os.openpty()
        tty.setraw(near)
        tty.setraw(far)
        ends.append((near, far))
        threading.Thread(target=_uart_agent, args=(near, Codec(name, {"arbiter": keys[name]}, 7), part, stop),
                         daemon=True).start()
    poller = Poller(Codec("arbiter", keys, 1), [(name, os.ttyname(far), 115200, "", 0)
                                                for name, (_, far) in zip(names, ends)], bind=("127.0.0.1", 0))
    task = Path(f"/proc/self/task/{poller._reader.native_id}")

    def used() -> tuple[float, int]:
        switches = sum(int(line.split(":")[1]) for line in (task / "status").read_text().splitlines()
                       if "ctxt_switches:" in line)
        return int((task / "schedstat").read_text().split()[0]) / 1e9, switches

    rtt: list[float] = []

    def polls(until: float) -> None:
        due = time.monotonic()
        while due < until:
            poller.poll_all()
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
            rtt.extend(r for links in poller.snapshot().values() if (r := links[Channel.SERIAL].rtt_s) is not None)

    try:
        polls(time.monotonic() + 1.0)
        rtt.clear()
        (cpu0, woke0), began = used(), time.monotonic()
        polls(began + seconds)
        (cpu1, woke1), took = used(), time.monotonic() - began
    finally:
        stop.set()
        poller.close()
        for near, far in ends:
            os.close(near)
            os.close(far)
    return {"cpu_s_per_h": round((cpu1 - cpu0) / took * 3600, 1), "wakeups_per_s": round((woke1 - woke0) / took),
            "rtt_ms": round(statistics.median(rtt) * 1000, 1)}


def wire_ms(size: int, baud: int = 115200) -> float:
    return size * BITS_PER_BYTE / baud * 1000


def stats(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--uart-seconds", type=float, default=20.0, help="each paced-line measurement (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        site_key = secrets.token_hex(32).encode()
        key = tmp / "key"
        key.write_bytes(derive_key(site_key, "master"))
        a, b = tmp / "tty-a", tmp / "tty-b"
        socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                                 stderr=subprocess.DEVNULL)
        while not (a.exists() and b.exists()):
            time.sleep(0.01)
        role = tmp / "role.json"
        role.write_text(json.dumps({"role": "standby", "in_sync": True, "lag_bytes": 0, "lag_s": 0.0}))
        conf = tmp / "agent.toml"
        conf.write_text(f'[agent]\nname = "master"\nkey_file = "{key}"\nlisten = "127.0.0.1"\nport = 25405\n'
                        f'state_file = "{tmp / "agent-state.json"}"\n'
                        f'serial = "{b}"\n[replication]\nadapter = "command"\nstatus = "cat {role}"\n')
        agent = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            serial = Poller(Codec("arbiter", {"master": key.read_bytes()}, 1), [("master", str(a), 115200, "", 0)])
            udp = Poller(Codec("arbiter", {"master": key.read_bytes()}, 2), [("master", "", 0, "127.0.0.1", 25405)])
            time.sleep(1.5)
            pty = stats(round_trips(serial, Channel.SERIAL, args.polls))
            lan = stats(round_trips(udp, Channel.LAN, args.polls))
            serial.close()
            udp.close()
        finally:
            agent.kill()
            socat.kill()
    _, poll = Codec("arbiter", {"master": b"k" * 32}, 1).make(Kind.POLL, "master", {"n": 2**64 - 1})
    reply = encode(Frame(Kind.REPLY, "master", "arbiter", 1, 1, {**REPLY, "re": 2**64 - 1}), b"k" * 32)
    wire = wire_ms(len(frame_serial(poll))) + wire_ms(len(frame_serial(reply)))
    rate = auth_rate()
    receive = receive_rates()
    uart = {part: uart_reader(part, args.uart_seconds) for part in (0, 16, 8)}
    print(f"poll round trip, socat pty (software path): median {pty['median_ms']} ms, p99 {pty['p99_ms']} ms "
          f"over {pty['n']} polls")
    print(f"  + wire time at 115200 baud 8N1: poll {len(frame_serial(poll))} B + reply {len(frame_serial(reply))} B"
          f" = {wire:.1f} ms; expected on a real line: ~{pty['median_ms'] + wire:.1f} ms median")
    print(f"poll round trip, UDP loopback: median {lan['median_ms']} ms, p99 {lan['p99_ms']} ms over {lan['n']} polls")
    print(f"authentication (encode+sign+verify+decode of a reply), one core: {rate:,.0f} frames/s")
    print(f"receive path, one core: {receive['read']:,.0f} good replies read/s (sender, key, MAC, parse, replay); "
          f"{receive['bad_mac']:,.0f} forged frames rejected/s (bad MAC); "
          f"{receive['rate_limited']:,.0f} flood frames dropped/s by a source's rate limit (no MAC)")

    for part, got in uart.items():
        print(f"links reader, two servers on 115200-baud lines, replies {f'{part} bytes at a time' if part else 'whole'}"
              f" (polled every 40 ms): {got['cpu_s_per_h']} CPU-s/h, {got['wakeups_per_s']} wake-ups/s,"
              f" round trip {got['rtt_ms']} ms (median)")


if __name__ == "__main__":
    main()
