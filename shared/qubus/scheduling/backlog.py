"""What the allocator knows of each node's backlog beyond the node's last status.

Fusion scores a task on each node by the backlog the node last reported (``NodeStatus.backlog_s``:
its queue depth × mean job time, in modelled seconds), and a node reports it at most every
0.25 s. The allocator places several batches in that time, each on the same backlog. In a
300-task fastpath run (``benchmarks/fastpath.py``, session 30) the last batches sent one node
tasks expected to wait 0.12–0.17 s that waited 0.57–0.62 s, and the run's last tasks finished on
that node alone. So the allocator keeps a ``Ledger`` of what it sent to each node, and places a
batch on each node's reported backlog plus the runs it sent there after that report
(:func:`with_backlogs`). In nine alternated pairs of 300-task runs the last 5 % of the tasks
took 0.21 s on average before, 0.15 s with it.

Each allocator replica knows only what it sent itself. A split run's lead node, a sweep's chunks
and a re-placement are not entered (the split's pairs and the chunk's points hold a node for
longer than a score's run; re-placements are rare): the node's next status counts them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from qubus.bus.messages import NodeStatus
from qubus.scheduling.allocation import TaskRequest


class Ledger:
    """The runs the allocator sent to each node, by when it sent them (seconds since the
    epoch, as ``NodeStatus.updated_at``)."""

    def __init__(self) -> None:
        self._sent: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def record(self, node: str, at: float, run_s: float) -> None:
        """A task of ``run_s`` modelled seconds sent to ``node`` at ``at`` (its allocation
        stored)."""
        self._sent[node].append((at, run_s))

    def backlogs(self, statuses: Mapping[str, NodeStatus]) -> dict[str, float]:
        """Each node's backlog in modelled seconds: the one its status reports, plus the runs
        sent to it after the status was written (those before it are in its queue depth, and
        are forgotten here)."""
        backlogs = {}
        for node, status in statuses.items():
            unseen = [
                (at, run_s) for at, run_s in self._sent.pop(node, ()) if at > status.updated_at
            ]
            if unseen:
                self._sent[node] = unseen
            backlogs[node] = status.backlog_s + math.fsum(run_s for _, run_s in unseen)
        return backlogs


def with_backlogs(request: TaskRequest, backlogs: Mapping[str, float]) -> TaskRequest:
    """``request`` with each eligible candidate's backlog (``Candidate.queue_s``) set to its
    node's in ``backlogs`` where given: the expected completion moves by the difference, and
    the hyperscore with it by the scorer's own time factor, ``exp(−time_rate·Δt)``
    (``candidate_from_score``)."""
    candidates = []
    for candidate in request.candidates:
        backlog = backlogs.get(candidate.node)
        if backlog is not None and candidate.eligible:
            shift = backlog - candidate.queue_s
            candidate = candidate.model_copy(
                update={
                    "expected_completion_s": candidate.run_s + backlog,
                    "hyperscore": candidate.hyperscore * math.exp(-candidate.time_rate * shift),
                }
            )
        candidates.append(candidate)
    return request.model_copy(update={"candidates": candidates})
