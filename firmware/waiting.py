"""The one deadline wait: poll a condition until it holds or the time is up."""
from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.005,
               clock: Callable[[], float] = time.monotonic) -> bool:
    """True as soon as ``check()`` holds, False once ``timeout`` seconds of ``clock`` have
    passed without it; ``check`` runs at least once, then every ``step`` seconds."""
    deadline = clock() + timeout
    while not check():
        if clock() >= deadline:
            return False
        time.sleep(step)
    return True
