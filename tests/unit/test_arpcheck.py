"""The ARP check's frames, built and read without a network (the probe itself runs against
real namespaces in tests/integration/test_vip.py)."""
from __future__ import annotations

import ipaddress
import struct

from firmware.arpcheck import answer_mac, answers_filter, gratuitous, request

MAC_A = bytes.fromhex("02ba00000011")
MAC_B = bytes.fromhex("02ba00000012")
VIP = ipaddress.IPv4Address("192.0.2.100").packed
OTHER = ipaddress.IPv4Address("192.0.2.11").packed


def _is_at(sender_mac: bytes, sender_ip: bytes, op: int = 2) -> bytes:
    head = MAC_A + sender_mac + b"\x08\x06" + bytes.fromhex("000108000604") + op.to_bytes(2, "big")
    return head + sender_mac + sender_ip + MAC_A + OTHER


def test_request_is_a_broadcast_who_has_for_the_target():
    frame = request(MAC_A, OTHER, VIP)
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC_A and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01" and frame[22:28] == MAC_A and frame[28:32] == OTHER
    assert frame[38:42] == VIP


def test_an_is_at_for_the_target_names_its_sender():
    assert answer_mac(_is_at(MAC_B, VIP), VIP) == "02:ba:00:00:00:12"
    assert answer_mac(_is_at(MAC_B, VIP) + b"\x00" * 18, VIP) == "02:ba:00:00:00:12"  # padded to 60 bytes


def test_requests_other_addresses_and_short_frames_are_not_answers():
    assert answer_mac(_is_at(MAC_B, VIP, op=1), VIP) is None  # someone else asking
    assert answer_mac(_is_at(MAC_B, OTHER), VIP) is None
    assert answer_mac(_is_at(MAC_B, VIP)[:41], VIP) is None
    assert answer_mac(request(MAC_A, OTHER, VIP), VIP) is None
    not_arp = bytearray(_is_at(MAC_B, VIP))
    not_arp[12:14] = b"\x08\x00"
    assert answer_mac(bytes(not_arp), VIP) is None


def test_a_gratuitous_announcement_is_a_broadcast_is_at_for_our_own_address():
    frame = gratuitous(MAC_B, VIP)
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[6:12] == MAC_B
    assert frame[20:22] == b"\x00\x02" and frame[28:32] == VIP and frame[32:38] == b"\xff" * 6 and frame[38:42] == VIP
    assert answer_mac(frame, VIP) == "02:ba:00:00:00:12"  # what a prober hears from the new holder


def run_filter(program: bytes, frame: bytes) -> int:
    """The kernel's classic BPF, for the four instructions answers_filter uses: bytes kept."""
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x28:  # ldh [k]
            acc = int.from_bytes(frame[k:k + 2], "big") if k + 2 <= len(frame) else None
        elif code == 0x20:  # ld [k]
            acc = int.from_bytes(frame[k:k + 4], "big") if k + 4 <= len(frame) else None
        elif code == 0x15:  # jeq #k
            pc += jt if acc == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"instruction {code:#x} not modelled")
        if acc is None:
            return 0  # a load past the end drops the packet
        pc += 1


def test_the_socket_filter_lets_through_answers_for_the_address_only():
    program = answers_filter(VIP)
    assert run_filter(program, _is_at(MAC_B, VIP)) > 0
    assert run_filter(program, gratuitous(MAC_B, VIP)) > 0
    assert run_filter(program, request(MAC_A, OTHER, VIP)) == 0  # a who-has, ours or anyone's
    assert run_filter(program, _is_at(MAC_B, OTHER)) == 0
    assert run_filter(program, _is_at(MAC_B, VIP)[:24]) == 0
