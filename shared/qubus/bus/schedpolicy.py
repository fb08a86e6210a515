"""The stack's processes under Linux's batch scheduling policy (``SCHED_BATCH``).

A stage is idle most of the time: each event wakes it, and so does its publication's answer.
Under the default policy a woken process preempts the one running, so on a busy machine the
stack's dozen processes take turns every few hundred microseconds, each running one message
on cold caches: a bare hop costs its stage 0.9–1.2 ms of CPU when its events arrive one at a
time, 0.24–0.34 ms when they wait for it (``benchmarks/hop.py --rate 100``, and without
``--rate``). Under ``SCHED_BATCH`` a woken process waits for the running one's time slice to
end, so events gather and each turn takes several. A woken process that finds a CPU idle
runs at once, so an idle stack's latency is unchanged.

On the development machine (2 cores, ``benchmarks/fastpath.py``'s workload, 1,500 tasks, 21
alternated pairs), with every stack process under it: 17 pairs faster, 5.3 tasks/s more on
average (about 99 → 104), and 0.77 ms less of the services' CPU a task (14 of 16 pairs).
"""

from __future__ import annotations

import os


def batch_scheduling(pid: int = 0) -> bool:
    """Put process ``pid`` (0: this one) under ``SCHED_BATCH``, which the processes it starts
    inherit; False where the system has no such policy or refuses."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(0))
    except OSError:
        return False
    return True
