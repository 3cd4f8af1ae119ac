"""The probe's analysis on hand-made timelines: outages, late replies, host changes, split
brain from flapping answers and from ARP."""
from __future__ import annotations

import pytest

from hil.probe import REPLY_TIMEOUT, ArpRecord, Record, analyse

IV = 0.01
MAC_M, MAC_S = "02:ba:00:00:00:0b", "02:ba:00:00:00:0c"


def timeline(hosts: str, t0: float = 100.0, rtt: float = 0.001) -> list[Record]:
    """One probe per character every IV: '.' unanswered, a letter the host that answered."""
    return [Record(i, t0 + i * IV, None if h == "." else t0 + i * IV + rtt, None if h == "." else h)
            for i, h in enumerate(hosts)]


def test_steady_answers_have_no_outage():
    out = analyse(timeline("m" * 50), IV)
    assert (out["sent"], out["answered"], out["outages"], out["longest_outage"]) == (50, 50, [], 0.0)
    assert out["hosts"] == [{"host": "m", "from": 100.0}]
    assert out["split_brain"] is False


def test_three_missed_intervals_are_jitter_four_are_an_outage():
    assert analyse(timeline("mm..mm"), IV)["outages"] == []
    out = analyse(timeline("mm...mm"), IV)
    assert len(out["outages"]) == 1
    outage = out["outages"][0]
    assert outage["start"] == pytest.approx(100.01) and outage["end"] == pytest.approx(100.05)
    assert outage["duration"] == pytest.approx(0.04)


def test_failover_outage_and_host_change():
    out = analyse(timeline("m" * 10 + "." * 30 + "s" * 10), IV)
    assert out["longest_outage"] == pytest.approx(0.31)
    assert [h["host"] for h in out["hosts"]] == ["m", "s"]
    assert out["hosts"][1]["from"] == pytest.approx(100.40)
    assert out["host_changes"] == 1 and out["split_brain"] is False


def test_late_replies_do_not_count_as_answers():
    """Replies released when ARP finally resolves arrive long after they were sent."""
    late = [Record(0, 100.05 + i * IV, 101.0, "s") for i in range(20)]
    joined = timeline("m" * 5) + late + timeline("s" * 5, t0=100.25)
    records = [Record(i, r.sent, r.answered, r.host) for i, r in enumerate(joined)]
    out = analyse(records, IV)
    assert out["late"] == 20 and out["answered"] == 10
    assert out["longest_outage"] == pytest.approx(0.21)
    assert analyse(records, IV, timeout=2.0)["outages"] == []


def test_reply_exactly_at_the_timeout_counts():
    out = analyse([Record(0, 1.0, 1.0 + REPLY_TIMEOUT, "m")], IV)
    assert out["answered"] == 1 and out["late"] == 0


def test_open_and_leading_outages():
    out = analyse(timeline("....." + "m" * 5 + "....."), IV)
    assert [(o.get("leading", False), o.get("open", False)) for o in out["outages"]] == [(True, False), (False, True)]
    silent = analyse(timeline("." * 10), IV)
    assert silent["answered"] == 0 and silent["outages"][0]["duration"] == pytest.approx(0.09)
    assert analyse([], IV)["outages"] == [] and analyse([], IV)["first_sent"] is None


def test_records_are_analysed_in_sequence_order():
    records = timeline("m" * 10 + "." * 10 + "s" * 10)
    assert analyse(list(reversed(records)), IV) == analyse(records, IV)


def test_one_quick_switchover_is_not_split_brain():
    assert analyse(timeline("m" * 10 + "s" * 10), IV)["split_brain"] is False


def test_answers_flapping_between_hosts_are_split_brain():
    out = analyse(timeline("msmsmsms"), IV)
    assert out["split_brain"] is True and out["close_host_changes"] == 7
    assert "changes of answering host" in out["split_brain_why"][0]


def test_returning_after_a_long_gap_is_not_flapping():
    """m, outage, s, outage, m: two changes, neither within the flap window."""
    out = analyse(timeline("mmm" + "." * 10 + "sss" + "." * 10 + "mmm"), IV)
    assert out["host_changes"] == 2 and out["split_brain"] is False


def test_arp_answered_by_two_macs_is_split_brain():
    arp = [ArpRecord(1.0, (MAC_M,)), ArpRecord(1.1, (MAC_M, MAC_S)), ArpRecord(1.2, (MAC_S,)), ArpRecord(1.3, ())]
    out = analyse(timeline("m" * 5), IV, arp)
    assert out["split_brain"] is True and out["arp_probes"] == 4
    assert out["arp_multi"] == [{"at": 1.1, "macs": [MAC_M, MAC_S]}]
    assert [r["macs"] for r in out["arp_macs"]] == [[MAC_M], [MAC_M, MAC_S], [MAC_S]]


def test_arp_moving_from_one_mac_to_another_is_not_split_brain():
    arp = [ArpRecord(1.0, (MAC_M,)), ArpRecord(1.1, ()), ArpRecord(1.2, (MAC_S,))]
    assert analyse(timeline("m" * 5), IV, arp)["split_brain"] is False
