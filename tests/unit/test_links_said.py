"""A reply that says what the last one said is not parsed again (links.reply_report), and
is held to the protocol's types all the same."""
from __future__ import annotations

import pytest

from firmware.errors import ProtocolError
from firmware.links import reply_report
from firmware.protocol import Reply

SAYS = Reply(re=1, healthy=True, role="primary", vip=True, in_sync=True, lag_bytes=0, lag_s=0.0, peer_alive=True,
             detail="postgres primary", sync_standbys=("standby",)).payload()


def said_again(**changes):
    first_nonce, said = reply_report(None, SAYS)
    assert first_nonce == 1
    return reply_report(said, {**SAYS, "re": 2, **changes}), said


def test_the_same_words_give_the_same_report_and_the_new_nonce():
    (nonce, again), first = said_again()
    assert nonce == 2 and again is first
    assert again.report.role.value == "primary" and again.report.repl.sync_standbys == ("standby",)


def test_new_words_are_parsed():
    (nonce, again), first = said_again(detail="postgres primary, checkpoint")
    assert nonce == 2 and again is not first and again.report.detail == "postgres primary, checkpoint"


@pytest.mark.parametrize("changes", [{"healthy": 1}, {"vip": 1.0}, {"repl": {**SAYS["repl"], "in_sync": 1}},
                                     {"repl": {**SAYS["repl"], "lag_bytes": False}}, {"re": -1}, {"re": True}])
def test_equal_is_not_enough_the_types_count(changes):
    """1 == True in Python; the protocol takes no 1 for true, from a first reply or a repeat."""
    with pytest.raises(ProtocolError, match="bad-reply"):
        said_again(**changes)
    with pytest.raises(ProtocolError, match="bad-reply"):
        reply_report(None, {**SAYS, **changes})


def test_a_repeat_without_a_nonce_is_refused():
    _, said = reply_report(None, SAYS)
    with pytest.raises(ProtocolError, match="bad-reply"):
        reply_report(said, {k: v for k, v in SAYS.items() if k != "re"})
