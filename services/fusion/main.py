"""fusion: ``eval.sandbox`` + ``eval.noise`` → ``scored``; ``completed`` → fidelity calibration.

The two evaluations of a task arrive in either order, at any replica. Each arrival merges its
part into the task's entry in KV ``qubus_joins`` with a compare-and-set on the entry's
revision; the arrival whose write completes the pair computes the scores. A redelivered part
may complete the join again; the ``scored`` event's de-duplication id keeps one.

Scores use the weights of KV ``qubus_weights`` (``qubus.weights``; the revision is recorded in
the event), the calibration of predicted against measured fidelity of KV ``qubus_calibration``
(``qubus.outcomes``) and, for a task that targets one, the pilot of KV ``qubus_pilots``
(``qubus.pilots``); all three are followed by KV watchers, not read per task. The ``outcomes``
stage counts every ``completed`` task into its node's calibration.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import msgpack
import nats.js.errors

from qubus import codec
from qubus.bus import BUCKET_CALIBRATION, BUCKET_JOINS, BUCKET_PILOTS, BUCKET_WEIGHTS
from qubus.consumer import Context, Stage
from qubus.errors import CircuitRejected, Retry
from qubus.fidelity import budget_fidelity
from qubus.kvrecords import M, RecordCache, update_record
from qubus.logs import get_logger
from qubus.messages import (
    NodePrediction,
    NodeScore,
    NodeStatus,
    NoiseEvaluation,
    SandboxEvaluation,
    TaskChecked,
    TaskCompleted,
    TaskEvent,
    TaskOptions,
    TaskScored,
)
from qubus.outcomes import CalibrationState, calibrate, calibration_key, circuit_class, observe
from qubus.pilots import PilotDescription
from qubus.scoring import DEFAULT_WEIGHTS, ScoreInputs, Weights, score
from qubus.service import Runtime
from qubus.weights import WEIGHTS_KEY, WeightsRecord, ensure_weights

log = get_logger()

PARTS = {SandboxEvaluation: "sandbox", NoiseEvaluation: "noise"}


def predicted_fidelity(prediction: NodePrediction, sandbox: SandboxEvaluation, shots: int) -> float:
    """The Hellinger fidelity expected of ``shots`` shots on the node: its noise budget applied
    to the ideal distribution (the ESP where a prediction carries no budget)."""
    if prediction.budget is None:
        return prediction.predicted_fidelity
    return budget_fidelity(prediction.budget, sandbox.ideal, shots=shots)


def _exclusion(prediction: NodePrediction, status: NodeStatus | None, options: TaskOptions) -> str:
    """Why the node cannot take the task whatever its score, or ""."""
    if status is None:
        return "node is offline"
    if options.node is not None and options.node != prediction.node:
        return f"task is pinned to {options.node}"
    return prediction.reason


def node_scores(
    checked: TaskChecked,
    sandbox: SandboxEvaluation,
    noise: NoiseEvaluation,
    statuses: dict[str, NodeStatus],
    weights: Weights,
    *,
    calibrations: Mapping[str, CalibrationState] | None = None,
    pilot: PilotDescription | None = None,
) -> list[NodeScore]:
    """Score every node for the task; ineligible nodes are kept with the reason.

    Args:
        checked: The task's checked event (options, logic score, novelty, features).
        sandbox: Its ideal distribution and ΔRepro.
        noise: Each node's prediction.
        statuses: The online nodes' statuses.
        weights: The score weights.
        calibrations: Each node's calibration for this task's circuit class (absent: the
            prior, ``qubus.outcomes``).
        pilot: The pilot the task targets, whose constraints exclude nodes.
    """
    calibrations = calibrations or {}
    scores = []
    for prediction in noise.predictions:
        status = statuses.get(prediction.node)
        reason = _exclusion(prediction, status, checked.options)
        if reason or status is None:
            scores.append(NodeScore(node=prediction.node, eligible=False, reason=reason))
            continue
        fidelity = predicted_fidelity(prediction, sandbox, checked.options.shots)
        calibrated = calibrate(calibrations.get(prediction.node), fidelity)
        completion = status.queue_depth * status.mean_job_s + prediction.expected_run_s
        common = {
            "node": prediction.node,
            "predicted_fidelity": fidelity,
            "calibration_revision": prediction.calibration_revision,
            "expected_completion_s": completion,
            "expected_run_s": prediction.expected_run_s,
            "queue_depth": status.queue_depth,
        }
        if pilot is not None:
            reason = pilot.exclusion(
                prediction.node,
                qubits=checked.features.qubits,
                queue_depth=status.queue_depth,
                fidelity=calibrated.qnc,
            )
            if reason:
                scores.append(NodeScore(eligible=False, reason=reason, **common))
                continue
        inputs = ScoreInputs(
            logic_score=checked.logic_score,
            novelty=checked.novelty,
            impact=float(checked.options.priority),
            repro=sandbox.repro,
            meta=calibrated.meta,
            qnc=calibrated.qnc,
            expected_completion_s=completion,
        )
        breakdown = score(inputs, weights, shapley=True)
        scores.append(
            NodeScore(
                eligible=True,
                hyperscore=breakdown.hyperscore,
                terms={**breakdown.terms, "time_penalty": breakdown.time_penalty},
                inputs=inputs.model_dump(),
                shapley=breakdown.shapley,
                **common,
            )
        )
    return scores


async def _followed(rt: Runtime, bucket: str, cls: type[M], *, keys: str = ">") -> RecordCache[M]:
    """A ``RecordCache`` of ``bucket`` for as long as the service runs."""
    cache = RecordCache(rt.bus, bucket, cls, keys=keys)
    await cache.start()
    rt.stack.push_async_callback(cache.stop)
    return cache


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()
    joins = await rt.bus.kv(BUCKET_JOINS)
    calibration_kv = await rt.bus.kv(BUCKET_CALIBRATION)
    await ensure_weights(await rt.bus.kv(BUCKET_WEIGHTS))
    weights = await _followed(rt, BUCKET_WEIGHTS, WeightsRecord, keys=WEIGHTS_KEY)
    calibrations = await _followed(rt, BUCKET_CALIBRATION, CalibrationState)
    pilots = await _followed(rt, BUCKET_PILOTS, PilotDescription)

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

    async def current_weights() -> tuple[Weights, int]:
        """The latest weights and their revision (the defaults, 0, if the key was deleted)."""
        stored = await weights.fetch(WEIGHTS_KEY)
        return (DEFAULT_WEIGHTS, 0) if stored is None else (stored[0].weights, stored[1])

    async def target_pilot(options: TaskOptions) -> PilotDescription | None:
        """The pilot the task targets, if any.

        Raises:
            CircuitRejected: ``pilot.unknown``.
        """
        if options.pilot is None:
            return None
        stored = await pilots.fetch(options.pilot)
        if stored is None:
            raise CircuitRejected(
                f"pilot {options.pilot!r} does not exist (`qubus pilot list` shows the pilots)",
                code="pilot.unknown",
            )
        return stored[0]

    def node_calibrations(
        checked: TaskChecked, nodes: Iterable[str]
    ) -> dict[str, CalibrationState]:
        """Each node's calibration for the task's circuit class, where one is stored."""
        cls = circuit_class(checked.features)
        return {
            node: held[0]
            for node in nodes
            if (held := calibrations.get(calibration_key(node, cls))) is not None
        }

    async def handle(event: TaskEvent, ctx: Context) -> TaskScored | None:
        parts = await join(event)
        if len(parts) < len(PARTS):
            return None
        checked = await rt.bus.last_event(event.task_id, TaskChecked)
        if checked is None:
            raise Retry("the task's checked event is not readable yet")
        pilot = await target_pilot(checked.options)
        sandbox = codec.decode(parts["sandbox"], SandboxEvaluation)
        noise = codec.decode(parts["noise"], NoiseEvaluation)
        statuses = directory.require_online(rt.settings.node_timeout_s)
        weights_now, revision = await current_weights()
        scores = node_scores(
            checked,
            sandbox,
            noise,
            statuses,
            weights_now,
            calibrations=node_calibrations(checked, statuses),
            pilot=pilot,
        )
        return TaskScored(
            task_id=event.task_id,
            circuit=checked.circuit,
            options=checked.options,
            ideal=sandbox.ideal,
            scores=scores,
            weights_revision=revision,
        )

    async def count_outcome(event: TaskCompleted) -> None:
        """Add the task's predicted and measured fidelity to its node's calibration."""
        if len(event.nodes) > 1:
            return  # a split run measures several nodes and links, not its lead node
        checked = await rt.bus.last_event(event.task_id, TaskChecked)
        if checked is None:
            log.warning("outcome.no_checked_event")
            return
        if checked.options.noiseless or rt.settings.noiseless:
            return  # a noiseless run says nothing about the node's noise
        cls = circuit_class(checked.features)
        await update_record(
            calibration_kv,
            calibration_key(event.node, cls),
            CalibrationState,
            lambda state: observe(
                state,
                node=event.node,
                cls=cls,
                task_id=event.task_id,
                predicted=event.predicted_fidelity,
                measured=event.measured_fidelity,
                now=time.time(),
            ),
        )
        log.info("outcome.counted", node=event.node, circuit_class=cls)

    async def learn(event: TaskCompleted, ctx: Context) -> None:
        """The ``outcomes`` stage. The task has ended: a failure here must never end it again
        (the wrapper would publish ``rejected``/``failed`` for an expected error, or for an
        unexpected one on the last delivery), so errors are retried as unexpected ones and
        then dropped."""
        try:
            await count_outcome(event)
        except Exception as exc:
            if ctx.deliveries < rt.settings.max_deliver:
                raise RuntimeError(f"counting the outcome failed: {exc!r}") from exc
            log.exception("outcome.dropped", deliveries=ctx.deliveries)

    await rt.consume(Stage("fusion", [SandboxEvaluation, NoiseEvaluation], handle, concurrency=4))
    await rt.consume(Stage("outcomes", [TaskCompleted], learn))
