"""Self-fencing timing: the agent's check against the appliance's config (Patroni's ttl
against loop_wait + 2 x retry_timeout, transposed)."""
from __future__ import annotations

import pytest

from host_tools.agent_config import parse, self_fence_margin, site_problems
from tests.unit.sitekit import site_config


def agent(**values: float):
    return parse({"agent": {"name": "master", "key_file": "/k", "state_file": "/s", **values}}).agent


def test_margin_at_the_defaults_with_a_three_second_isolation_timeout():
    site = site_config(policy={"fencing": "none"})
    # 10 s self_fence_wait - (3 + 0.04 peer_interval + 5 self_fence_timeout + 2 x 0.04 interval)
    assert self_fence_margin(agent(isolation_timeout=3.0), site) == pytest.approx(1.88)
    assert site_problems(agent(isolation_timeout=3.0), site, "arbiter.toml") == []


def test_self_fencing_is_required_without_a_fence_relay():
    problems = site_problems(agent(), site_config(policy={"fencing": "none"}), "arbiter.toml")
    assert problems == ["agent.isolation_timeout = 0: required while policy.fencing = 'none' in arbiter.toml (an"
                        " isolated primary must stop its own database before the appliance promotes another)"]
    assert site_problems(agent(), site_config(), "arbiter.toml") == []  # the relay fences it


def test_self_fencing_that_may_end_after_the_promotion_is_refused():
    site = site_config(policy={"fencing": "none"}, timing={"self_fence_wait": 8.0})
    problems = site_problems(agent(isolation_timeout=3.0), site, "arbiter.toml")
    assert len(problems) == 1
    assert "= 8.12 s must stay below timing.self_fence_wait = 8 s of arbiter.toml" in problems[0]
