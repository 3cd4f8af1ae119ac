"""A scenario's report: the keys DESIGN.md names, as JSON and as a table for people."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    scenario: str
    passed: bool = False
    failovers: int = 0
    false_failovers: int = 0
    detection_s: float | None = None  # fault injected -> fence relay opened
    outage_s: float | None = None  # longest gap the client probe saw; None where none expected
    acked_tx: int | None = None
    lost_tx: int | None = None
    alerts: list[str] = field(default_factory=list)
    split_brain: bool = False
    checks: dict[str, bool] = field(default_factory=dict)  # each expectation and whether it held
    details: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool) -> None:
        self.checks[name] = bool(ok)

    def finish(self) -> Report:
        self.passed = bool(self.checks) and all(self.checks.values())
        return self

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


# figures some scenarios measure besides the common keys
_DETAILS = (("fence_to_writable_s", "fence to standby accepting writes (s)"),
            ("billing_longest_gap_s", "billing load's longest gap (s)"),
            ("service_outage_s", "fault to the service back on the virtual IP (s)"),
            ("within_target", "service and client outages within policy.unhealthy_grace + 1.0 s"),
            ("switchover_s", "switchover done after on-battery (s)"))


def render(report: Report) -> str:
    rows = [
        ("scenario", report.scenario),
        ("result", "PASSED" if report.passed else "FAILED"),
        ("failovers", report.failovers),
        ("false failovers", report.false_failovers),
        ("detection (s)", report.detection_s),
        ("client-visible outage (s)", report.outage_s),
        ("acknowledged transactions", report.acked_tx),
        ("acknowledged transactions lost", report.lost_tx),
        ("split brain", report.split_brain),
        ("alerts received", report.alerts),
    ]
    rows += [(label, report.details[key]) for key, label in _DETAILS if key in report.details]
    rows += [(f"check: {name}", "ok" if ok else "FAILED") for name, ok in report.checks.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {_fmt(value)}" for name, value in rows)
