"""Fuzz bench for the heartbeat protocol (not part of CI): at least a million inputs through
the appliance's and the agent's receive paths, reporting every exception that is not the
protocol's own ProtocolError, and the rate.

Random bytes never pass the MAC, so most inputs are mutated frames signed again with the
link's key, the way a peer holding that key could send them; they reach the parsing behind
the MAC (header fields, JSON payload, the Reply/Ack/Command/poll payload checks). The rest
are mutated frames left unsigned (the pre-MAC checks), and serial byte streams through the
deframer.

    python -m hil.bench_fuzz [--inputs 1000000] [--seed 1]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from firmware.errors import ProtocolError
from firmware.protocol import (MAC_LEN, Ack, Codec, Command, Deframer, Kind, Reply, derive_key, frame_serial,
                               poll_nonce)

MASTER = b"fuzz-master-key-0123456789"
KEY = derive_key(MASTER, "master")
PARSERS: dict[Kind, Callable[[dict[str, Any]], Any]] = {
    Kind.POLL: poll_nonce, Kind.REPLY: Reply.parse, Kind.ACK: Ack.parse, Kind.COMMAND: Command.parse}


FIELDS = ["re", "n", "id", "op", "args", "role", "healthy", "vip", "repl", "in_sync", "lag_bytes", "lag_s",
          "peer_alive", "hears_primary", "detail", "reach", "done", "ok", "x"]


def json_value(rnd: random.Random, depth: int = 0) -> Any:
    """A JSON value with the shapes that break parsers: wrong types, huge numbers, deep nests."""
    pick = rnd.random()
    if depth > 3 or pick < 0.5:
        return rnd.choice([None, True, False, 0, -1, 2**64, 2**64 - 1, -(2**63), 10**400, 1.5, 1e308, -0.0, "",
                           "primary", "standby", "x" * rnd.randint(0, 300), "\u00e9\ud7ff", rnd.getrandbits(70)])
    if pick < 0.75:
        return [json_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {rnd.choice(FIELDS): json_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def raw_bodies(rnd: random.Random) -> list[bytes]:
    """Payload bytes that are not a well-formed object: other JSON, deep nests, bad numbers, bad UTF-8."""
    out = [json.dumps(json_value(rnd), separators=(",", ":")).encode() for _ in range(3000)]
    out += [b"[" * d + b"]" * d for d in range(1, 1000, 7)]
    out += [b'{"n":1e999}', b'{"re":NaN}', b'{"lag_s":Infinity}', b'{"n":' + b"9" * 900 + b"}", b"\xff\xfe{}",
            b'{"id":"\\ud800"}', b"[]", b"", b"null"]
    out += [rnd.randbytes(rnd.randint(0, 200)) for _ in range(1000)]
    return out


class Fuzzer:
    """Each input starts from a fresh valid frame (a new sequence number, so the replay
    window lets the well-formed ones through) sent by the appliance or by the agent, and is
    read by the other side's codec on the sender's own link."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.sent_by = {"arbiter": Codec("arbiter", {"master": KEY}, 1), "master": Codec("master", {"arbiter": KEY}, 7)}
        self.read_by = {"arbiter": Codec("master", {"arbiter": KEY}, 8), "master": Codec("arbiter", {"master": KEY}, 2)}
        self.sent_seq = 0
        self.values = [json_value(self.rnd) for _ in range(3000)]
        self.bodies = raw_bodies(self.rnd)
        self.outcomes: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def fresh(self) -> tuple[str, bytes]:
        """A valid frame of either side, its payload possibly with wrong-typed fields."""
        sender = self.rnd.choice(("arbiter", "master"))
        kind = self.rnd.choice((Kind.POLL, Kind.COMMAND) if sender == "arbiter" else (Kind.REPLY, Kind.ACK))
        payload = {Kind.POLL: lambda: {"n": self.rnd.getrandbits(64)},
                   Kind.COMMAND: lambda: {"id": "arbiter-1-1", "op": "promote", "args": {}},
                   Kind.REPLY: lambda: Reply(self.rnd.getrandbits(64), True, "primary").payload(),
                   Kind.ACK: lambda: Ack("arbiter-1-1", True, True, "ok").payload()}[kind]()
        own_repl = payload.get("repl")  # built here; a dict from the pool must never be written into
        for _ in range(self.rnd.choice((0, 0, 1, 2, 3))):
            target = own_repl if own_repl is payload.get("repl") and own_repl and self.rnd.random() < 0.3 else payload
            target[self.rnd.choice(FIELDS)] = self.rnd.choice(self.values)
        to = "master" if sender == "arbiter" else "arbiter"
        try:
            self.sent_seq, raw = self.sent_by[sender].make(kind, to, payload)
        except ProtocolError:  # oversized: the plain one then
            self.sent_seq, raw = self.sent_by[sender].make(kind, to, {})
        return sender, raw

    def mutate(self, raw: bytes) -> bytes:
        """A frame's message with one to four defects (the MAC left off)."""
        msg = bytearray(raw[:-MAC_LEN])
        for _ in range(self.rnd.randint(1, 4)):
            op = self.rnd.random()
            if op < 0.35 and msg:
                msg[self.rnd.randrange(len(msg))] = self.rnd.randrange(256)
            elif op < 0.55:
                msg = self._swap_body(msg)
            elif op < 0.7 and msg:
                del msg[self.rnd.randrange(len(msg)):]
            elif op < 0.8:
                pos = self.rnd.randrange(len(msg) + 1)
                msg[pos:pos] = self.rnd.randbytes(self.rnd.randint(1, 40))
            elif op < 0.9 and len(msg) > 5:
                msg[self.rnd.choice([2, 3, 4])] = self.rnd.randrange(256)  # version, kind, sender length
            else:
                msg[5:5] = self.rnd.randbytes(self.rnd.randint(0, 3))
        return bytes(msg)

    def _swap_body(self, msg: bytearray) -> bytearray:
        """The header kept (as far as it is still whole), the payload replaced and its length fixed."""
        if len(msg) < 6:
            return msg
        receiver_at = 5 + msg[4]
        if len(msg) <= receiver_at:
            return msg
        length_at = receiver_at + 1 + msg[receiver_at] + 16
        if len(msg) < length_at + 2:
            return msg
        body = self.rnd.choice(self.bodies)
        return msg[:length_at] + len(body).to_bytes(2, "big") + body

    def one(self) -> None:
        pick = self.rnd.random()
        sender, template = self.fresh()
        if pick < 0.9:
            if pick < 0.3:
                msg = template[:-MAC_LEN]  # the payload's own fields are the defect, if any
            elif pick < 0.5:
                msg = bytes(self._swap_body(bytearray(template[:-MAC_LEN])))
            else:
                msg = self.mutate(template)
            signed = pick < 0.75
            raw = msg + (hmac.new(KEY, msg, hashlib.sha256).digest() if signed else self.rnd.randbytes(MAC_LEN))
            self.receive(sender, raw)
        else:
            stream = self.rnd.randbytes(self.rnd.randint(0, 300)) + frame_serial(template)
            self.run("deframer", lambda: [self.receive(sender, raw) for raw in Deframer().feed(stream)], stream)

    def receive(self, sender: str, raw: bytes) -> None:
        self.run("read", lambda: self._read_and_parse(self.read_by[sender], sender, raw), raw)

    def _read_and_parse(self, codec: Codec, expect: str, raw: bytes) -> None:
        before = sum(codec.dropped.values())
        frame = codec.read(raw, expect)
        if frame is None:
            if sum(codec.dropped.values()) != before + 1:
                raise AssertionError("a refused frame was not counted")
            self.outcomes[f"refused: {codec.last_error.reason}"] += 1  # type: ignore[union-attr]
            return
        if (frame.boot_id, frame.seq) != (self.sent_by[frame.sender].boot_id, self.sent_seq):
            # a mutated counter was signed and accepted: this receiver now expects that boot or seq, so
            # the next inputs would all be replays; a fresh receiver keeps the parsers behind it in reach
            self.read_by[expect] = Codec(codec.sender, {expect: KEY}, codec.boot_id)
        try:
            PARSERS[frame.kind](frame.payload)
            self.outcomes[f"accepted {frame.kind.name.lower()}"] += 1
        except ProtocolError as exc:
            self.outcomes[f"payload refused: {exc.reason}"] += 1

    def run(self, where: str, call: Callable[[], Any], data: bytes) -> None:
        try:
            call()
        except ProtocolError as exc:
            self.outcomes[f"{where} raised ProtocolError {exc.reason}"] += 1
        except Exception as exc:  # the finding: anything but the protocol's own error
            name = f"{where}: {type(exc).__name__}"
            self.unexpected[name] += 1
            if name not in self.examples:
                self.examples[name] = f"{data[:120].hex()}\n{traceback.format_exc(limit=4)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fuzz = Fuzzer(args.seed)
    started = time.perf_counter()
    for i in range(args.inputs):
        fuzz.one()
        if i and i % 200_000 == 0:
            print(f"  {i:,} inputs, {i / (time.perf_counter() - started):,.0f}/s, "
                  f"{sum(fuzz.unexpected.values())} unexpected exceptions", flush=True)
    elapsed = time.perf_counter() - started
    print(f"{args.inputs:,} inputs (seed {args.seed}) in {elapsed:.1f} s: {args.inputs / elapsed:,.0f} inputs/s, one core")
    print("outcomes:")
    for outcome, n in fuzz.outcomes.most_common():
        print(f"  {n:>9,}  {outcome}")
    total = sum(fuzz.unexpected.values())
    print(f"exceptions other than ProtocolError: {total}")
    for name, n in fuzz.unexpected.most_common():
        print(f"  {n:>9,}  {name}\n{fuzz.examples[name]}")


if __name__ == "__main__":
    main()
