"""Placement policies: which QPU node runs a task, behind one interface.

A policy sees one ``Candidate`` per known node and returns a ``Decision``. A node is eligible
when the task fits it (capacity) and it is available; policies only ever choose eligible
nodes, and with none they reject the task with ``alloc.no_fit``, naming why each node was
excluded. Policies are pure and stateless, so every allocator replica decides alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from qubus.errors import CircuitRejected, QubusError

_BY_NODE = attrgetter("node")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Candidate(_Frozen):
    """One node as a placement option for one task.

    Attributes:
        node: The node id.
        fits: The task fits the node's capacity (qubits, connectivity, limits).
        available: The node is online and accepting work.
        queue_depth: Tasks already waiting on the node.
        expected_completion_s: Expected queue wait plus run time of the task there.
        predicted_fidelity: Predicted fidelity of the task there.
        hyperscore: The task's hyper-score there (``qubus.scoring``).
        reason: Why the node cannot take the task, when it cannot (named in ``alloc.no_fit``).
    """

    node: str = Field(min_length=1)
    fits: bool
    available: bool
    queue_depth: int = Field(ge=0)
    expected_completion_s: float = Field(ge=0)
    predicted_fidelity: float = Field(ge=0, le=1)
    hyperscore: float
    reason: str = ""

    @property
    def eligible(self) -> bool:
        """The task may be placed here."""
        return self.fits and self.available


class Decision(_Frozen):
    """A placement and why.

    Attributes:
        node: The chosen node.
        policy: The policy that chose it.
        reason: One sentence a user can read.
        ranking: Every eligible node with its hyperscore, in the policy's order of preference.
    """

    node: str
    policy: str
    reason: str
    ranking: list[tuple[str, float]]


class Policy(Protocol):
    """A placement policy."""

    name: str

    def choose(self, task_id: str, candidates: Sequence[Candidate]) -> Decision:
        """Chooses the node for ``task_id``.

        Raises:
            CircuitRejected: ``alloc.no_fit`` when no candidate is eligible.
        """
        ...


def eligible(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The eligible candidates, sorted by node id.

    Raises:
        QubusError: ``alloc.duplicate_node`` when a node appears twice.
        CircuitRejected: ``alloc.no_fit`` when none is eligible; the message names why each
            node was excluded.
    """
    nodes = [c.node for c in candidates]
    if len(set(nodes)) != len(nodes):
        raise QubusError(f"candidates repeat a node: {sorted(nodes)}", code="alloc.duplicate_node")
    chosen = sorted((c for c in candidates if c.eligible), key=_BY_NODE)
    if chosen:
        return chosen
    if not candidates:
        raise CircuitRejected("no QPU node is known", code="alloc.no_fit")
    excluded = "; ".join(f"{c.node}: {_exclusion(c)}" for c in sorted(candidates, key=_BY_NODE))
    raise CircuitRejected(f"no QPU node can run this task ({excluded})", code="alloc.no_fit")


def _exclusion(candidate: Candidate) -> str:
    if candidate.reason:
        return candidate.reason
    reasons = []
    if not candidate.fits:
        reasons.append("the task does not fit")
    if not candidate.available:
        reasons.append("unavailable")
    return " and ".join(reasons)


def _ranking(ordered: Sequence[Candidate]) -> list[tuple[str, float]]:
    return [(c.node, c.hyperscore) for c in ordered]


class HyperscorePolicy:
    """Chooses the eligible node with the highest hyperscore.

    Ties go to the shorter expected completion, then to the node id that sorts first.
    """

    name = "hyperscore"

    def choose(self, task_id: str, candidates: Sequence[Candidate]) -> Decision:
        """See `Policy.choose`."""
        ordered = sorted(
            eligible(candidates), key=lambda c: (-c.hyperscore, c.expected_completion_s, c.node)
        )
        best = ordered[0]
        reason = f"highest hyperscore {best.hyperscore:.2f} of {len(ordered)} eligible node(s)"
        if len(ordered) > 1:
            runner_up = ordered[1]
            reason += f"; next {runner_up.node} at {runner_up.hyperscore:.2f}"
        return Decision(node=best.node, policy=self.name, reason=reason, ranking=_ranking(ordered))


class RoundRobinPolicy:
    """Spreads tasks evenly over the eligible nodes, taken in node-id order.

    Stateless: the starting position is a stable hash (SHA-256) of the task id modulo the number
    of eligible nodes, so every allocator replica, and a redelivered message, picks the same node
    for the same task without a shared cursor. Over many tasks each eligible node receives an
    equal share, though consecutive tasks do not visit nodes in strict cyclic order.
    """

    name = "round_robin"

    def choose(self, task_id: str, candidates: Sequence[Candidate]) -> Decision:
        """See `Policy.choose`."""
        nodes = eligible(candidates)
        digest = hashlib.sha256(task_id.encode()).digest()
        start = int.from_bytes(digest[:8], "big") % len(nodes)
        ordered = nodes[start:] + nodes[:start]
        reason = f"round robin over {len(nodes)} eligible node(s): position {start} by task id"
        return Decision(
            node=ordered[0].node, policy=self.name, reason=reason, ranking=_ranking(ordered)
        )


POLICIES: dict[str, Callable[[], Policy]] = {
    HyperscorePolicy.name: HyperscorePolicy,
    RoundRobinPolicy.name: RoundRobinPolicy,
}


def get_policy(name: str) -> Policy:
    """A new instance of the policy called ``name``.

    Raises:
        QubusError: ``policy.unknown`` for a name not in ``POLICIES`` (the message lists them).
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        valid = ", ".join(sorted(POLICIES))
        raise QubusError(
            f"unknown allocation policy {name!r}; valid: {valid}", code="policy.unknown"
        ) from None
    return factory()
