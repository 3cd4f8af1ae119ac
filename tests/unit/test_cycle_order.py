"""One cycle's order: the decision is saved, then its acting batch is handed to the executor,
and only then are the log and the journal written. The journal fsyncs every few seconds, so
the first decision of a failover after a quiet spell had its fence wait for that fsync."""
from __future__ import annotations

import dataclasses

from firmware.decide.step import Decision
from firmware.model import Fence
from firmware.site_state import Phase
from tests.unit.test_damaged_files import make_daemon


def test_a_decision_is_saved_then_acted_on_then_journaled(tmp_path, monkeypatch):
    daemon = make_daemon(tmp_path)
    try:
        calls: list[str] = []

        def fencing(state, obs, now, cfg) -> Decision:
            changed = dataclasses.replace(state, phase=Phase.NORMAL, reason="fencing master")
            return Decision(changed, (Fence("master", ref=1),), "fencing master")

        def spy(name, real):
            def wrapped(*args, **kwargs):
                calls.append(name)
                return real(*args, **kwargs)
            return wrapped

        monkeypatch.setattr("firmware.daemon.decide", fencing)
        monkeypatch.setattr(daemon.app, "save_state", spy("save", daemon.app.save_state))
        monkeypatch.setattr(daemon.app.executor, "submit", spy("submit", lambda actions: None))
        monkeypatch.setattr(daemon.app.journal, "append", spy("journal", daemon.app.journal.append))
        assert daemon._cycle() is True
        assert calls[:2] == ["save", "submit"] and "journal" in calls[2:]
    finally:
        daemon.app.close()
