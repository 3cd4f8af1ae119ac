"""Prometheus metrics through the maintained ``prometheus_client``: read from the same narrow
StatusView as ``status`` at each scrape (nothing is copied or kept in step), plus the one
thing a view cannot hold, the histogram of cycle times, which the loop feeds."""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from firmware.model import LinkState, Role
from firmware.site_state import Phase
from firmware.status import StatusView, version
from firmware.events import Severity

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The loop runs every timing.interval (40 ms by default): buckets from 1 ms to 2.5 s.
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5)


class Metrics:
    def __init__(self, view: Callable[[], StatusView]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycle_seconds = Histogram("arbiter_cycle_seconds", "Time one poll-observe-decide-act cycle took",
                                       buckets=CYCLE_BUCKETS, registry=self.registry)
        self.registry.register(_ViewCollector(view))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ViewCollector(Collector):
    def __init__(self, view: Callable[[], StatusView]) -> None:
        self.view = view

    def describe(self) -> list[Metric]:
        return []  # collected fresh at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        state = v.state
        info = InfoMetricFamily("arbiter", "The appliance's site and firmware version")
        info.add_metric([], {"site": v.site, "version": version(), "mode": v.mode})
        yield info
        phase = GaugeMetricFamily("arbiter_phase", "1 for the phase the appliance is in", labels=["phase"])
        for p in Phase:
            phase.add_metric([p.value], 1.0 if p is state.phase else 0.0)
        yield phase
        yield GaugeMetricFamily("arbiter_phase_seconds", "Seconds in the current phase", value=v.now - state.since)
        yield CounterMetricFamily("arbiter_failovers", "Failovers completed since the state was created",
                                  value=state.failovers)
        yield GaugeMetricFamily("arbiter_maintenance", "1 while in maintenance (observe only)",
                                value=1.0 if state.maintenance else 0.0)
        yield GaugeMetricFamily("arbiter_alarm_severity", "The alarm relay's severity: 0 clear .. 4 critical",
                                value=int(Severity[v.alarm[0]]))
        yield from _servers(v)
        rejected = CounterMetricFamily("arbiter_frames_rejected", "Frames dropped, by reason", labels=["reason"])
        for reason, n in sorted(v.frames_dropped.items()):
            rejected.add_metric([reason], n)
        yield rejected
        alerts = CounterMetricFamily("arbiter_alerts_sent", "Alerts sent to the sinks, by event", labels=["event"])
        for event, n in sorted(v.alerts_sent.items()):
            alerts.add_metric([event], n)
        yield alerts


def _servers(v: StatusView) -> Iterator[Metric]:
    primary = GaugeMetricFamily("arbiter_primary", "1 for the server the appliance holds as primary",
                                labels=["server"])
    role = GaugeMetricFamily("arbiter_server_role", "1 for the role the server's agent reports",
                             labels=["server", "role"])
    alive = GaugeMetricFamily("arbiter_server_alive", "1 alive, 0 dead on every link, -1 unknown", labels=["server"])
    fenced = GaugeMetricFamily("arbiter_server_fenced", "1 while the server is held fenced", labels=["server"])
    link = GaugeMetricFamily("arbiter_link_state", "1 for the state of each heartbeat link",
                             labels=["server", "channel", "state"])
    rtt = GaugeMetricFamily("arbiter_link_rtt_seconds", "Round trip of the latest valid reply",
                            labels=["server", "channel"])
    lag = GaugeMetricFamily("arbiter_replication_lag_bytes", "Replication lag the agent reports", labels=["server"])
    lag_s = GaugeMetricFamily("arbiter_replication_lag_seconds", "Replication lag in time", labels=["server"])
    sync = GaugeMetricFamily("arbiter_replication_in_sync", "1 in sync, 0 not, -1 unknown", labels=["server"])
    for srv in v.obs.servers if v.obs else ():
        r = srv.report
        primary.add_metric([srv.name], 1.0 if srv.name == v.state.primary else 0.0)
        for each in Role:
            role.add_metric([srv.name, each.value], 1.0 if (r.role if r else Role.UNKNOWN) is each else 0.0)
        alive.add_metric([srv.name], _tri(srv.alive))
        fenced.add_metric([srv.name], 1.0 if srv.name in v.state.fenced else 0.0)
        for lo in srv.links:
            if lo.state is LinkState.ABSENT:
                continue
            for each_state in LinkState:
                if each_state is not LinkState.ABSENT:
                    link.add_metric([srv.name, lo.channel.value, each_state.value], 1.0 if lo.state is each_state else 0.0)
            if lo.rtt_s is not None:
                rtt.add_metric([srv.name, lo.channel.value], lo.rtt_s)
        if r is not None and r.repl.lag_bytes is not None:
            lag.add_metric([srv.name], r.repl.lag_bytes)
        if r is not None and r.repl.lag_s is not None:
            lag_s.add_metric([srv.name], r.repl.lag_s)
        sync.add_metric([srv.name], _tri(r.repl.in_sync if r else None))
    yield from (primary, role, alive, fenced, link, rtt, lag, lag_s, sync)


def _tri(value: bool | None) -> float:
    return -1.0 if value is None else float(value)
