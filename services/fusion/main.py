"""fusion: ``eval.sandbox`` + ``eval.noise`` → ``scored``.

The two evaluations of a task arrive in either order, at any replica. Each arrival merges its
part into the task's entry in KV ``qubus_joins`` with a compare-and-set on the entry's
revision; the arrival whose write completes the pair computes the scores. A redelivered part
may complete the join again; the ``scored`` event's de-duplication id keeps one.
"""

from __future__ import annotations

import msgpack
import nats.js.errors

from qubus import codec
from qubus.bus import BUCKET_JOINS, BUCKET_WEIGHTS
from qubus.consumer import Context, Stage
from qubus.errors import Retry
from qubus.fidelity import budget_fidelity
from qubus.messages import (
    NodePrediction,
    NodeScore,
    NodeStatus,
    NoiseEvaluation,
    SandboxEvaluation,
    TaskChecked,
    TaskEvent,
    TaskScored,
)
from qubus.scoring import DEFAULT_WEIGHTS, ScoreInputs, Weights, score
from qubus.service import Runtime

PARTS = {SandboxEvaluation: "sandbox", NoiseEvaluation: "noise"}


def predicted_fidelity(prediction: NodePrediction, sandbox: SandboxEvaluation, shots: int) -> float:
    """The Hellinger fidelity expected of ``shots`` shots on the node: its noise budget applied
    to the ideal distribution (the ESP where a prediction carries no budget)."""
    if prediction.budget is None:
        return prediction.predicted_fidelity
    return budget_fidelity(prediction.budget, sandbox.ideal, shots=shots)


def node_scores(
    checked: TaskChecked,
    sandbox: SandboxEvaluation,
    noise: NoiseEvaluation,
    statuses: dict[str, NodeStatus],
    weights: Weights,
) -> list[NodeScore]:
    """Score every node for the task; ineligible nodes are kept with the reason."""
    scores = []
    for prediction in noise.predictions:
        status = statuses.get(prediction.node)
        reason = prediction.reason
        if status is None:
            reason = "node is offline"
        elif checked.options.node is not None and checked.options.node != prediction.node:
            reason = f"task is pinned to {checked.options.node}"
        if reason or status is None:
            scores.append(NodeScore(node=prediction.node, eligible=False, reason=reason))
            continue
        fidelity = predicted_fidelity(prediction, sandbox, checked.options.shots)
        completion = status.queue_depth * status.mean_job_s + prediction.expected_run_s
        breakdown = score(
            ScoreInputs(
                logic_score=checked.logic_score,
                novelty=checked.novelty,
                impact=float(checked.options.priority),
                repro=sandbox.repro,
                meta=0.0,
                qnc=fidelity,
                expected_completion_s=completion,
            ),
            weights,
        )
        scores.append(
            NodeScore(
                node=prediction.node,
                eligible=True,
                predicted_fidelity=fidelity,
                calibration_revision=prediction.calibration_revision,
                expected_completion_s=completion,
                queue_depth=status.queue_depth,
                hyperscore=breakdown.hyperscore,
                terms={**breakdown.terms, "time_penalty": breakdown.time_penalty},
            )
        )
    return scores


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()
    joins = await rt.bus.kv(BUCKET_JOINS)
    weights_kv = await rt.bus.kv(BUCKET_WEIGHTS)

    async def join(event: TaskEvent) -> dict[str, bytes]:
        """Merge this part into the task's join; returns every part stored so far."""
        while True:
            try:
                entry = await joins.get(event.task_id)
                parts, revision = msgpack.unpackb(entry.value), entry.revision
            except nats.js.errors.KeyNotFoundError:
                parts, revision = {}, 0
            parts[PARTS[type(event)]] = codec.encode(event)
            try:
                await joins.update(event.task_id, msgpack.packb(parts), last=revision)
                return parts
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another replica wrote in between: merge again

    async def current_weights() -> Weights:
        try:
            entry = await weights_kv.get("current")
        except nats.js.errors.KeyNotFoundError:
            return DEFAULT_WEIGHTS
        return Weights.model_validate(msgpack.unpackb(entry.value))

    async def handle(event: TaskEvent, ctx: Context) -> TaskScored | None:
        parts = await join(event)
        if len(parts) < len(PARTS):
            return None
        checked = await rt.bus.last_event(event.task_id, TaskChecked)
        if checked is None:
            raise Retry("the task's checked event is not readable yet")
        sandbox = codec.decode(parts["sandbox"], SandboxEvaluation)
        noise = codec.decode(parts["noise"], NoiseEvaluation)
        statuses = directory.require_online(rt.settings.node_timeout_s)
        scores = node_scores(checked, sandbox, noise, statuses, await current_weights())
        return TaskScored(
            task_id=event.task_id,
            circuit=checked.circuit,
            options=checked.options,
            ideal=sandbox.ideal,
            scores=scores,
        )

    await rt.consume(Stage("fusion", [SandboxEvaluation, NoiseEvaluation], handle, concurrency=4))
