"""Watching the watcher: the agent's clock of the appliance's polls raises agent-unobserved
once after agent.unobserved_after, and agent-observed once when polls come back."""
from host_tools.agent import Watched


def test_watched_raises_once_and_clears_once():
    w = Watched(5.0, now=100.0)
    assert w.check(104.9) is None and w.check(105.0) == "agent-unobserved" and w.check(106.0) is None
    w.polled = 106.5
    assert w.check(106.6) == "agent-observed" and w.check(107.0) is None


def test_a_server_nothing_has_polled_since_its_start_is_unobserved_too():
    """Not only after having been watched: an appliance that never comes back after a site's
    power cut would otherwise leave every rebooted server silent."""
    w = Watched(10.0, now=0.0)
    assert w.check(9.9) is None and w.check(10.0) == "agent-unobserved"
