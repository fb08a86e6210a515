"""Child processes that die with the process that started them (Linux ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """On Linux, a function for a child to call right after its fork (a ``preexec_fn``, a
    pool's initializer) that has the kernel send it ``sig`` when the thread that forked it
    exits, so that a parent killed outright (SIGKILL) leaves nothing running; None elsewhere.

    ``prctl`` is looked up here, before the fork, so the child only makes the call; a child
    whose parent is already gone by then exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)

    return set_death_signal
