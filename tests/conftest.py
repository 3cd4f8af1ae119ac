"""Test-wide settings. HYPOTHESIS_PROFILE=ci (set by .ci/run) makes the property tests draw
the same examples on every run, so a CI result can be reproduced; locally they explore anew."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _scheduling_restored():
    """A test that runs arbiterd's loop or an agent in pytest's own thread leaves that thread
    real-time (site.realtime_priority, agent.realtime_priority); every test starts as it was."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    yield
    if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
        os.sched_setscheduler(0, policy, param)
