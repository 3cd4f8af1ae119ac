"""The rig's monitoring station reads what an operator's tools would show: the primary and the
failover count from /metrics and from snmpwalk, and when each first showed a value."""
from __future__ import annotations

from firmware.metrics import Metrics
from firmware.mib import DEFAULT_ENTERPRISE, status_oid
from firmware.model import Observations
from firmware.site_state import Phase, State
from firmware.status import StatusView
from hil.monitor import first_shown, metrics_values, shown_between, walk_values
from tests.unit.sitekit import server

BASE = f".{status_oid(DEFAULT_ENTERPRISE)}"
WALK = f"""{BASE}.1.0 = INTEGER: 2
{BASE}.2.0 = Gauge32: 41
{BASE}.3.0 = STRING: "standby"
{BASE}.4.0 = Counter32: 1
{BASE}.5.0 = INTEGER: 5
{BASE}.6.0 = INTEGER: 2
{BASE}.7.1.9.2 = Gauge32: 0
{BASE}.7.1.9.2 = No more variables left in this MIB View (It is past the end of the MIB tree)
"""


def test_metrics_as_prometheus_client_renders_them():
    view = StatusView(site="s", mode="active", state=State(phase=Phase.NORMAL, primary="standby", since=0.0,
                                                           failovers=3),
                      obs=Observations(servers=(server("master"), server("standby"))), now=9.0, started=0.0,
                      alarm=("CLEAR", False))
    text = Metrics(lambda: view).render()
    assert metrics_values(200, text) == {"metrics": "standby", "metrics_failovers": 3}


def test_metrics_that_did_not_answer_show_nothing():
    assert metrics_values(None, b"") == {"metrics": None, "metrics_failovers": None}
    assert metrics_values(503, b'arbiter_primary{server="master"} 1.0\n') == {"metrics": None,
                                                                               "metrics_failovers": None}


def test_walk_reads_the_primary_and_the_failovers():
    assert walk_values(WALK) == {"snmpwalk": "standby", "snmp_failovers": 1}
    assert walk_values("Timeout: No Response from 192.0.2.13:1161\n") == {"snmpwalk": None, "snmp_failovers": None}


def test_first_shown_counts_a_value_already_in_effect():
    changes = [{"t": 1.0, "source": "page", "value": "master"}, {"t": 5.0, "source": "page", "value": "standby"},
               {"t": 2.0, "source": "status", "value": "standby"}]
    assert first_shown(changes, "page", "standby", 3.0) == 5.0
    assert first_shown(changes, "page", "master", 3.0) == 3.0
    assert first_shown(changes, "page", "standby", 6.0) == 6.0
    assert first_shown(changes, "page", "nobody", 0.0) is None
    assert shown_between(changes, "page", 3.0, 6.0) == {"master", "standby"}
