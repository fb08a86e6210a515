"""allocator: ``scored`` → ``allocated`` on ``qubus.task.<id>.allocated.<node>``.

The decision is one message, which is also the chosen QPU node's work item; its
de-duplication id ``<task_id>.allocated`` makes a redelivered ``scored`` unable to place the
task twice.
"""

from __future__ import annotations

from qubus.allocation import Candidate, get_policy
from qubus.consumer import Context, Stage
from qubus.messages import TaskAllocated, TaskScored
from qubus.service import Runtime


def allocate(event: TaskScored, policy_name: str) -> TaskAllocated:
    """Choose a node for the task among its scored nodes (raises ``CircuitRejected``)."""
    candidates = [
        Candidate(
            node=s.node,
            fits=s.eligible,
            available=s.eligible,
            queue_depth=s.queue_depth,
            expected_completion_s=s.expected_completion_s,
            predicted_fidelity=s.predicted_fidelity,
            hyperscore=s.hyperscore,
            reason=s.reason,
        )
        for s in event.scores
    ]
    decision = get_policy(policy_name).choose(event.task_id, candidates)
    chosen = next(s for s in event.scores if s.node == decision.node)
    return TaskAllocated(
        task_id=event.task_id,
        node=decision.node,
        policy=decision.policy,
        reason=decision.reason,
        ranking=decision.ranking,
        predicted_fidelity=chosen.predicted_fidelity,
        hyperscore=chosen.hyperscore,
        circuit=event.circuit,
        options=event.options,
        ideal=event.ideal,
        calibration_revision=chosen.calibration_revision,
    )


async def setup(rt: Runtime) -> None:
    policy = rt.settings.policy
    get_policy(policy)  # an unknown policy stops the service at start, not at the first task

    async def handle(event: TaskScored, ctx: Context) -> TaskAllocated:
        return allocate(event, policy)

    await rt.consume(Stage("allocator", [TaskScored], handle, concurrency=4))
