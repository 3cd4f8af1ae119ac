"""The decision core: ``decide(state, obs, now, cfg) -> Decision``. Pure: no I/O, no clock.

Each cycle: take operator requests, raise events on real changes (links, servers, standbys,
UPSes, returning old primaries), then run the handler of the current phase (see the table
in firmware/site_state.py). Every branch leaves a one-line human reason.

The safety rules of the design, and where they live:
1. dead means silent on every channel ........ ServerObs.alive, phases.normal
2. fence before promote ....................... operations.start_failover, .fencing
   (no relay: the standby confirms) .......... eligibility.standby_objects, requests (--force too)
3. only a healthy, in-sync standby ............ eligibility.why_not_eligible
   (in sync as the primary sees it) .......... eligibility.as_primary_sees
4. the standby's own view of the primary ...... eligibility.standby_objects
5. hold-down, no failback, old primary out .... phases, watching
6. bad safety settings stop start-up .......... firmware.config
7. frames authenticated ....................... firmware.protocol (bad frames never get here)
8. a primary that does not serve is failed .... service.primary_failing, service.watch_network
9. one holder of the virtual IP, always ....... service.audit_vip

The parts: ``step`` (one call's working state), ``requests`` (operator requests),
``watching`` (events on real changes), ``eligibility`` (who may take over), ``service``
(a primary that answers but does not serve, the virtual IP audit), ``phases``
(the steady phases and the phase table), ``operations`` (the steps of a failover or a
switchover, and resuming them after a restart).
"""
from __future__ import annotations

from firmware.config import Config
from firmware.decide.continuity import results
from firmware.decide.eligibility import as_primary_sees
from firmware.decide.operations import resume
from firmware.decide.phases import PHASES, status_led
from firmware.decide.requests import take_requests
from firmware.decide.step import Decision, Step
from firmware.decide.watching import watch
from firmware.model import Observations
from firmware.site_state import State

__all__ = ["Decision", "decide"]


def decide(state: State, obs: Observations, now: float, cfg: Config) -> Decision:
    unsent = state.alerts if state.seen_run != obs.run else ()  # saved, perhaps never sent
    step = Step(state.evolve(alerts=()) if state.alerts else state, as_primary_sees(obs, state.primary), now, cfg)
    resume(step, unsent)
    take_requests(step)
    watch(step)
    results(step)
    PHASES[step.state.phase](step)
    status_led(step)
    reason = "; ".join(step.reasons) or step.state.reason
    step.update(reason=reason)
    return Decision(step.state, tuple(step.actions), reason, tuple(step.warnings), tuple(step.verdicts),
                    tuple(step.hurry))
