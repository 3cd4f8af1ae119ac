"""The HTTP face against a real socket: /health follows the loop and the phase, /status is the
status report, /metrics parses as Prometheus text, the page is served, nothing else is."""
from __future__ import annotations

import dataclasses
import json
import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware.metrics import Metrics
from firmware.model import Channel, LinkObs, LinkState, Observations, Role
from firmware.site_state import Phase, State
from firmware.status import StatusView, status_report
from firmware.web import StatusWeb
from tests.unit.sitekit import dead, report, server

OBS = Observations(servers=(dataclasses.replace(server("master"), links=(
    LinkObs(Channel.SERIAL, LinkState.UP, 99.9, 0.0004), LinkObs(Channel.LAN, LinkState.DEAD, 90.0))),
    server("standby")))
VIEW = StatusView(site="s", mode="active", state=State(phase=Phase.NORMAL, primary="master", since=40.0, failovers=2),
                  obs=OBS, now=100.0, started=10.0, alarm=("WARNING", False), vip="192.0.2.100/24",
                  last_cycle=99.96, frames_dropped={"bad-mac": 3}, alerts_sent={"link-down": 1})


@pytest.fixture
def web():
    box = {"view": VIEW}
    metrics = Metrics(lambda: box["view"])
    metrics.cycle_seconds.observe(0.003)
    w = StatusWeb("127.0.0.1", 0, lambda: box["view"], metrics, lambda n: [{"kind": "decision", "reason": "r"}] * n)
    w.start()
    yield f"http://127.0.0.1:{w.port}", box
    w.stop()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_health_is_503_when_halted_stuck_or_without_primary(web):
    url, box = web
    code, _, body = get(url + "/health")
    assert code == 200 and json.loads(body)["why"] == "phase normal, primary master"
    for change, words in ((dict(last_cycle=90.0), "no working decision cycle"),
                          (dict(state=State(phase=Phase.HALTED, primary="master")), "halted"),
                          (dict(state=State(phase=Phase.STARTING)), "no primary")):
        box["view"] = dataclasses.replace(VIEW, **change)
        code, _, body = get(url + "/health")
        assert code == 503 and words in json.loads(body)["why"]


def test_status_is_the_status_report(web):
    url, _ = web
    code, ctype, body = get(url + "/status")
    assert code == 200 and ctype == "application/json"
    data = json.loads(body)
    assert data == json.loads(json.dumps(status_report(VIEW))) and data["failovers"] == 2
    assert data["vip"] == {"address": "192.0.2.100/24", "held_by": ["master"]}


def test_a_server_silent_on_every_link_is_not_shown_holding_the_virtual_ip():
    """A powered-off old primary's last report still says it holds the address; the page and
    status showed it so beside the new primary's."""
    fenced = Observations(servers=(dead("master", report(Role.PRIMARY)), server("standby", rep=report(Role.PRIMARY))))
    data = status_report(dataclasses.replace(VIEW, obs=fenced, state=State(phase=Phase.NORMAL, primary="standby")))
    assert data["vip"]["held_by"] == ["standby"]


def test_metrics_parse_and_carry_the_site(web):
    url, _ = web
    code, ctype, body = get(url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert samples[("arbiter_phase", (("phase", "normal"),))] == 1.0
    assert samples[("arbiter_phase", (("phase", "fencing"),))] == 0.0
    assert samples[("arbiter_failovers_total", ())] == 2.0
    assert samples[("arbiter_primary", (("server", "master"),))] == 1.0
    assert samples[("arbiter_server_role", (("role", "standby"), ("server", "standby")))] == 1.0
    assert samples[("arbiter_link_state", (("channel", "lan"), ("server", "master"), ("state", "dead")))] == 1.0
    assert samples[("arbiter_link_rtt_seconds", (("channel", "serial"), ("server", "master")))] == 0.0004
    assert samples[("arbiter_replication_in_sync", (("server", "standby"),))] == 1.0
    assert samples[("arbiter_replication_lag_bytes", (("server", "standby"),))] == 0.0
    assert samples[("arbiter_frames_rejected_total", (("reason", "bad-mac"),))] == 3.0
    assert samples[("arbiter_alerts_sent_total", (("event", "link-down"),))] == 1.0
    assert samples[("arbiter_alarm_severity", ())] == 2.0
    assert samples[("arbiter_cycle_seconds_bucket", (("le", "0.005"),))] == 1.0
    assert samples[("arbiter_phase_seconds", ())] == 60.0


def test_page_history_and_unknown_paths(web):
    url, _ = web
    code, ctype, body = get(url + "/")
    assert code == 200 and ctype.startswith("text/html") and b"fetch(\"status\"" in body
    code, _, body = get(url + "/history")
    assert code == 200 and len(json.loads(body)["history"]) == 25
    code, _, body = get(url + "/admin")
    assert code == 404 and "/health" in json.loads(body)["error"]
    req = urllib.request.Request(url + "/status", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 501


def test_server_alive_is_one_zero_or_minus_one_for_unknown():
    unknown = server("standby", LinkState.UNKNOWN, LinkState.UNKNOWN)
    m = Metrics(lambda: dataclasses.replace(VIEW, obs=Observations(servers=(dead("master"), unknown))))
    text = m.render().decode()
    assert 'arbiter_server_alive{server="master"} 0.0' in text
    assert 'arbiter_server_alive{server="standby"} -1.0' in text


def test_a_client_that_left_before_its_answer_is_a_debug_line_not_a_traceback(capsys, caplog):
    w = StatusWeb("127.0.0.1", 0, lambda: VIEW, Metrics(lambda: VIEW), lambda n: [])
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "Connection reset by peer")):
            try:
                raise error
            except ConnectionError:
                with caplog.at_level(logging.DEBUG, logger="arbiter.http"):
                    w.server.handle_error(None, ("192.0.2.14", 49792))
        try:
            raise ValueError("a bug")
        except ValueError:
            w.server.handle_error(None, ("192.0.2.14", 49793))
    finally:
        w.server.server_close()
    assert "Exception occurred during processing of request" not in capsys.readouterr().err  # socketserver's
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "arbiter.http"]
    assert [lv for lv, _ in levels] == [logging.DEBUG, logging.DEBUG, logging.ERROR]
    assert "left before its answer" in levels[0][1] and "192.0.2.14" in levels[2][1]
