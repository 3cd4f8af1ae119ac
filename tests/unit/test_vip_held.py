"""The virtual IP flag every reply carries is read from the kernel at most every HELD_FRESH_S."""
from __future__ import annotations

import time

from host_tools.vip import HELD_FRESH_S, VipManager


class CountingVip(VipManager):
    def __init__(self) -> None:
        super().__init__("127.0.0.1/8", "lo")
        self.reads = 0

    def _read_held(self) -> bool:
        self.reads += 1
        return super()._read_held()


def test_replies_reuse_a_fresh_reading_and_read_again_once_it_is_old():
    vip = CountingVip()
    assert vip.held() and vip.held() and vip.held()  # 127.0.0.1 is on lo
    assert vip.reads == 1
    time.sleep(HELD_FRESH_S + 0.05)
    assert vip.held() and vip.reads == 2
