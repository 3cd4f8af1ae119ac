"""The bench's pure parts: the soak's fault schedule, merging figures from runs of separate
parts, the table and the plot."""
from __future__ import annotations

from hil.bench import merge, plot, render, spread
from hil.soak import NOISE_BURST_S, Fault, causes, schedule

ARBITER = {"runs": 3, "failed_runs": 1, "median_s": 0.25, "max_s": 0.31, "outages": [0.2, 0.25, 0.31],
           "fence_to_writable": {"runs": 3, "median_s": 0.1, "max_s": 0.12},
           "billing_longest_gap": {"runs": 3, "median_s": 0.5, "max_s": 0.7},
           "steps_median_s": {"detection_s": 0.2, "fence_s": 0.01, "promote_s": 0.05, "take_ip_s": 0.02,
                              "verify_s": 0.6}}


def test_schedule_is_the_same_soak_for_every_contender_and_fits_its_length():
    a = schedule(600, ["master", "standby"], 0.1)
    assert a == schedule(600, ["master", "standby"], 0.1)
    assert a != schedule(600, ["master", "standby"], 0.1, seed=1)
    freezes = [f for f in a if f.kind == "freeze"]
    bursts = [f for f in a if f.kind == "noise"]
    assert len(freezes) == 120 and len(bursts) == 40
    assert all(f.seconds == 0.1 for f in freezes) and all(f.seconds == NOISE_BURST_S for f in bursts)
    assert all(0 <= f.at and f.at + f.seconds < 600 + 5 for f in a)
    assert [f.at for f in a] == sorted(f.at for f in a)
    assert {f.server for f in a} == {"master", "standby"}


def test_spread_of_nothing_says_no_runs():
    assert spread([]) == {"runs": 0, "median_s": None, "max_s": None}
    assert spread([0.3, 0.1, 0.2]) == {"runs": 3, "median_s": 0.2, "max_s": 0.3}


def test_merge_keeps_earlier_parts_and_replaces_those_run_again():
    old = {"arbiter": ARBITER, "soak_arbiter": {"seconds": 60}, "ran": {"outage": {"at": "1"}, "soak": {"at": "1"}}}
    new = {"soak_arbiter": {"seconds": 600}, "ran": {"soak": {"at": "2"}}}
    got = merge(old, new)
    assert got["arbiter"] == ARBITER and got["soak_arbiter"]["seconds"] == 600
    assert got["ran"] == {"outage": {"at": "1"}, "soak": {"at": "2"}}


def test_table_shows_what_ran_and_dashes_for_the_rest():
    soak = {"seconds": 600, "false_failovers": 0, "freezes": 120, "freeze_s": 0.1, "noise_bursts": 40}
    ka = {"seconds": 600, "false_takeovers": 7, "freezes": 120, "freeze_s": 0.1}
    text = render({"arbiter": ARBITER, "soak_arbiter": soak, "soak_keepalived_0.1": {**ka, "noise_bursts": 0},
                   "cost": [{"servers": 2, "cpu_s_per_hour": 60.5, "peak_rss_mib": 30.1}],
                   "monitored_cost": {"cpu_s_per_hour_unpolled": 70.2, "cpu_s_per_hour_polled": 95.4,
                                      "rss_mib_unpolled": 48.0, "rss_mib_polled": 49.5}})
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    assert "0.25" in lines["median outage (s)"] and "0.31" in lines["max outage (s)"]
    assert lines["soak: false failovers / takeovers"].split()[-1] == "7"
    assert "60.5" in lines["daemon CPU s/hour, 2 servers"]
    assert "95.4" in lines["daemon CPU s/hour, HTTP+SNMP polled 1/s"] and "48.0" in lines["daemon RSS MiB, not polled"]
    assert "promote 0.05" in text and "endurance" not in text


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "reports" / "bench.png"
    plot({"arbiter": ARBITER, "keepalived_0.1": {"outages": [0.3, 0.33]},
          "endurance": {"outages": [0.2, 0.3, 0.25]}}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_server_called_dead_is_put_down_to_the_faults_on_it_in_the_second_before():
    freeze, noise = Fault(0, "freeze", "master", 0.1), Fault(0, "noise", "master", NOISE_BURST_S)
    played = [(100.0, freeze), (99.5, noise), (100.0, Fault(0, "freeze", "standby", 0.1))]
    events = [{"event": "server-down", "server": "master", "wall": 100.3},  # both on master then
              {"event": "server-down", "server": "master", "wall": 102.0},  # the burst ended 0.5 s before
              {"event": "server-down", "server": "master", "wall": 110.0},  # nothing on it: loss, hog
              {"event": "server-down", "server": "standby", "wall": 99.9},  # before its freeze began
              {"event": "link-down", "server": "master", "wall": 100.3}]
    assert causes(events, played, "server-down") == {"freeze+noise": 1, "noise": 1, "none": 2}
