"""The agent's virtual IP manager keeps one netlink socket from start-up, used from the thread
that opened it only (pyroute2 sets up and tears down an event loop for a call from any other),
and finds the interface's index by name each time: a socket opened per change, a dump of every
link and the calls from other threads were two thirds of a takeover's address change."""
from __future__ import annotations

import socket
import threading

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from firmware.errors import ActionError
from host_tools.vip import VipManager


@pytest.fixture
def vip():
    v = VipManager("127.0.0.1/8", "lo")
    yield v
    v.close()


def _read_again(v: VipManager) -> bool:
    v._held_at = float("-inf")
    return v.held()


def test_reads_use_the_socket_opened_at_start_up(vip):
    kept = vip._ipr
    assert kept is not None
    assert _read_again(vip) and _read_again(vip)  # 127.0.0.1 is on lo
    assert vip._ipr is kept


def test_the_index_is_the_interfaces_own_and_a_missing_interface_is_named():
    assert VipManager("127.0.0.1/8", "lo")._index() == socket.if_nametoindex("lo")
    gone = VipManager("192.0.2.1/24", "nosuch0")
    try:
        with pytest.raises(ActionError, match="vip.interface = 'nosuch0': no such interface"):
            gone.held()
        assert gone._ipr is not None  # nothing wrong with the socket
    finally:
        gone.close()


@pytest.mark.parametrize("error, kept", [(OSError(9, "bad file descriptor"), False),
                                         (NetlinkError(1, "operation not permitted"), True)])
def test_a_socket_that_failed_is_replaced_and_the_kernels_refusal_keeps_it(vip, error, kept):
    """A failed socket is dropped and the next call opens another; the kernel refusing a
    change says nothing against the socket that carried the refusal."""
    before = vip._ipr

    def failing(ipr, idx):
        raise error
    with pytest.raises(type(error)):
        vip._on_link(failing)
    if kept:
        assert vip._ipr is before
    else:
        assert vip._ipr is None
        assert _read_again(vip) and vip._ipr is not None and vip._ipr is not before


def test_every_call_runs_on_the_thread_that_opened_the_socket_after_its_entry():
    entered: list[str] = []
    vip = VipManager("127.0.0.1/8", "lo", enter=lambda: entered.append(threading.current_thread().name))
    try:
        where: list[str] = []

        def note(ipr, idx):
            where.append(threading.current_thread().name)
            return idx
        callers = [threading.Thread(target=vip._on_link, args=(note,)) for _ in range(3)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(5.0)
        assert vip._on_link(note) == socket.if_nametoindex("lo")
        assert len(entered) == 1 and set(where) == set(entered) and entered[0].startswith("netlink")
    finally:
        vip.close()


def test_close_closes_the_socket_and_later_calls_are_refused_by_name(vip):
    vip.close()
    assert vip._ipr is None
    with pytest.raises(ActionError, match="127.0.0.1/8: the agent is stopping"):
        vip._on_link(lambda ipr, idx: None)
    vip.close()  # twice is harmless
