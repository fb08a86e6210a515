"""fusion: ``eval.sandbox`` + ``eval.noise`` → ``scored``; ``completed`` → fidelity calibration.

The two evaluations of a task arrive in either order, at any replica; both are already in the
task stream when they arrive. Each arrival reads the other part's stored event by subject
(one direct read): the part stored *later* (higher stream sequence) computes the scores, the
earlier one does nothing, because the later one is bound to find it. So exactly one arrival
scores a task, with no join state it depends on; a redelivered later part may score it again,
and the ``scored`` event's de-duplication id keeps one. A replica remembers the evaluations it
handled until their join (``SEEN``, with their sequences; not one with large ideal
distributions): the other part handled here is not read again, nor the ``checked`` event it
read for the scores when the task's outcome is counted.

Scores use the weights of KV ``qubus_weights`` (``qubus.scheduling.weights``; the revision is
recorded in the event), the calibration of predicted against measured fidelity of KV
``qubus_calibration`` (``qubus.scheduling.outcomes``) and, for a task that targets one, the pilot
of KV ``qubus_pilots`` (``qubus.scheduling.pilots``); all three are followed by KV watchers,
not read per task. A task that sets no fidelity–time preference (``TaskOptions.prefer``)
takes its pilot's. The ``outcomes`` stage counts every ``completed`` task into its node's
calibration.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from qubus.bus.connection import (
    BUCKET_CALIBRATION,
    BUCKET_PILOTS,
    BUCKET_WEIGHTS,
    NodeDirectory,
)
from qubus.bus.consumer import Context, Stage
from qubus.bus.ids import is_sweep_point
from qubus.bus.kvrecords import M, RecordCache
from qubus.bus.logs import get_logger
from qubus.bus.messages import (
    NodePrediction,
    NodeScore,
    NodeStatus,
    NoiseEvaluation,
    SandboxEvaluation,
    TaskChecked,
    TaskCompleted,
    TaskOptions,
    TaskScored,
)
from qubus.bus.metrics import FIDELITY_ERROR
from qubus.bus.service import Runtime
from qubus.devices.fidelity import mean_predicted_fidelities
from qubus.errors import CircuitRejected, Retry
from qubus.lru import Lru
from qubus.scheduling.outcomes import (
    CalibrationState,
    calibrate,
    calibration_key,
    circuit_class,
    observe,
)
from qubus.scheduling.pilots import PilotDescription
from qubus.scheduling.replacement import allocated_to
from qubus.scheduling.scoring import DEFAULT_WEIGHTS, ScoreInputs, Weights, score
from qubus.scheduling.weights import WEIGHTS_KEY, WeightsRecord, ensure_weights

log = get_logger()

SEEN = 4096
"""Tasks a replica remembers: the evaluations it handled and the circuit class it scored."""
SEEN_OUTCOMES = 4096
"""An evaluation is remembered only if its ideal distributions hold at most this many
outcomes in all (a wide circuit's may hold millions)."""
CONCURRENCY = 16
"""Evaluations fusion handles at once: a busy fusion finds several ready each time it wakes
(4 until session 31; measured with ``qubus.bus.workers.LANED_CONCURRENCY``)."""
OUTCOME_LINGER_S = 0.1
"""How long a completed task's count waits for others of its node and circuit class to share
its calibration update (``RecordCache.update``): one update a task cost the bus a write, its
answer and its watcher's delivery (since session 33)."""
OUTCOMES_CONCURRENCY = 64
"""Completed tasks the ``outcomes`` stage holds at once: those of ``OUTCOME_LINGER_S`` at 640
tasks a second (each idle holder asks the server again every
``qubus.bus.consumer.FETCH_WAIT_S``)."""


def _small(event: SandboxEvaluation | NoiseEvaluation) -> bool:
    """Whether the evaluation is small enough to remember (``SEEN_OUTCOMES``)."""
    if isinstance(event, NoiseEvaluation):
        return True
    held = len(event.ideal) + sum(len(ideal) for ideal in event.sweep_ideals)
    return held <= SEEN_OUTCOMES


def _exclusion(prediction: NodePrediction, status: NodeStatus | None, options: TaskOptions) -> str:
    """Why the node cannot take the task whatever its score, or ""."""
    if status is None:
        return "node is offline"
    if options.node is not None and options.node != prediction.node:
        return f"task is pinned to {options.node}"
    return prediction.reason


def _node_score(
    checked: TaskChecked,
    sandbox: SandboxEvaluation,
    prediction: NodePrediction,
    status: NodeStatus,
    weights: Weights,
    *,
    fidelity: float,
    calibration: CalibrationState | None,
    pilot: PilotDescription | None,
) -> NodeScore:
    """The score for the task of a node not excluded (``node_scores``), or why the pilot
    excludes it.

    Args:
        prediction: The noise service's prediction for the node.
        status: The node's status.
        fidelity: The Hellinger fidelity predicted on the node (``mean_predicted_fidelities``).
        calibration: The node's calibration for the task's circuit class (None: the prior).
    """
    calibrated = calibrate(calibration, fidelity)
    completion = status.backlog_s + prediction.expected_run_s
    common = {
        "node": prediction.node,
        "predicted_fidelity": fidelity,
        "calibration_revision": prediction.calibration_revision,
        "expected_completion_s": completion,
        "expected_run_s": prediction.expected_run_s,
        "emulation_s": prediction.emulation_s,
        "job_s": prediction.job_s,
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
            return NodeScore(eligible=False, reason=reason, **common)
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
    return NodeScore(
        eligible=True,
        hyperscore=breakdown.hyperscore,
        terms={**breakdown.terms, "time_penalty": breakdown.time_penalty},
        inputs=inputs.model_dump(),
        shapley=breakdown.shapley,
        **common,
    )


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
    """Score every node for the task; ineligible nodes are kept with the reason. The nodes'
    predicted fidelities are worked out together (``mean_predicted_fidelities``).

    Args:
        checked: The task's checked event (options, logic score, novelty, features).
        sandbox: Its ideal distribution and ΔRepro.
        noise: Each node's prediction.
        statuses: The online nodes' statuses.
        weights: The score weights.
        calibrations: Each node's calibration for this task's circuit class (absent: the
            prior, ``qubus.scheduling.outcomes``).
        pilot: The pilot the task targets, whose constraints exclude nodes.
    """
    calibrations = calibrations or {}
    reasons = [
        _exclusion(prediction, statuses.get(prediction.node), checked.options)
        for prediction in noise.predictions
    ]
    open_ = [p for p, reason in zip(noise.predictions, reasons, strict=True) if not reason]
    # A sweep's mean over a sample of its points (its QPU nodes predict over every point).
    ideals = sandbox.sweep_ideals or [sandbox.ideal]
    fidelities = dict(
        zip(
            (prediction.node for prediction in open_),
            mean_predicted_fidelities(open_, ideals, checked.options.shots),
            strict=True,
        )
    )
    return [
        NodeScore(node=prediction.node, eligible=False, reason=reason)
        if reason
        else _node_score(
            checked,
            sandbox,
            prediction,
            statuses[prediction.node],
            weights,
            fidelity=fidelities[prediction.node],
            calibration=calibrations.get(prediction.node),
            pilot=pilot,
        )
        for prediction, reason in zip(noise.predictions, reasons, strict=True)
    ]


async def _followed(rt: Runtime, bucket: str, cls: type[M], *, keys: str = ">") -> RecordCache[M]:
    """A ``RecordCache`` of ``bucket`` for as long as the service runs."""
    cache = RecordCache(rt.bus, bucket, cls, keys=keys)
    await cache.start()
    rt.stack.push_async_callback(cache.stop)
    return cache


class Fusion:
    """Fusion's handlers: the join of a task's two evaluations into its scores, and the
    count of completed tasks into the calibration.

    Args:
        rt: The service's runtime (its bus and settings).
        directory: The fleet's node statuses.
        weights: The followed score weights.
        calibrations: The followed calibrations.
        pilots: The followed pilots.
    """

    def __init__(
        self,
        rt: Runtime,
        directory: NodeDirectory,
        weights: RecordCache[WeightsRecord],
        calibrations: RecordCache[CalibrationState],
        pilots: RecordCache[PilotDescription],
    ) -> None:
        self._bus = rt.bus
        self._settings = rt.settings
        self._directory = directory
        self._weights = weights
        self._calibrations = calibrations
        self._pilots = pilots
        self._evaluations = Lru(2 * SEEN)  # (task id, event) → (evaluation, its sequence)
        self._classes = Lru(SEEN)  # task id → (circuit class, noiseless)

    async def _other_part(
        self, event: SandboxEvaluation | NoiseEvaluation, sequence: int
    ) -> SandboxEvaluation | NoiseEvaluation | None:
        """The task's other evaluation if this one, stored at ``sequence``, completes the join:
        it is stored, and before this one."""
        other = NoiseEvaluation if isinstance(event, SandboxEvaluation) else SandboxEvaluation
        if _small(event):
            self._evaluations.put((event.task_id, event.EVENT), (event, sequence))
        stored = self._evaluations.pop((event.task_id, other.EVENT))
        if stored is None:
            stored = await self._bus.last_stored(event.task_id, other)
        if stored is None or stored[1] > sequence:
            return None
        return stored[0]

    async def _current_weights(self) -> tuple[Weights, int]:
        """The latest weights and their revision (the defaults, 0, if the key was deleted)."""
        stored = await self._weights.fetch(WEIGHTS_KEY)
        return (DEFAULT_WEIGHTS, 0) if stored is None else (stored[0].weights, stored[1])

    async def _target_pilot(self, options: TaskOptions) -> PilotDescription | None:
        """The pilot the task targets, if any.

        Raises:
            CircuitRejected: ``pilot.unknown``.
        """
        if options.pilot is None:
            return None
        stored = await self._pilots.fetch(options.pilot)
        if stored is None:
            raise CircuitRejected(
                f"pilot {options.pilot!r} does not exist (`qubus pilot list` shows the pilots)",
                code="pilot.unknown",
            )
        return stored[0]

    def _node_calibrations(
        self, checked: TaskChecked, nodes: Iterable[str]
    ) -> dict[str, CalibrationState]:
        """Each node's calibration for the task's circuit class, where one is stored."""
        cls = circuit_class(checked.features)
        return {
            node: held[0]
            for node in nodes
            if (held := self._calibrations.get(calibration_key(node, cls))) is not None
        }

    async def handle(
        self, event: SandboxEvaluation | NoiseEvaluation, ctx: Context
    ) -> TaskScored | None:
        """The ``fusion`` stage: the task's scores, from the later-stored of its two
        evaluations."""
        other = await self._other_part(event, ctx.sequence)
        if other is None:
            return None
        sandbox, noise = (event, other) if isinstance(event, SandboxEvaluation) else (other, event)
        checked = await self._bus.last_event(event.task_id, TaskChecked)
        if checked is None:
            raise Retry("the task's checked event is not readable yet")
        noiseless = checked.options.noiseless
        self._classes.put(event.task_id, (circuit_class(checked.features), noiseless))
        pilot = await self._target_pilot(checked.options)
        statuses = self._directory.require_online(self._settings.node_timeout_s)
        weights, revision = await self._current_weights()
        scores = node_scores(
            checked,
            sandbox,
            noise,
            statuses,
            weights,
            calibrations=self._node_calibrations(checked, statuses),
            pilot=pilot,
        )
        options = checked.options if pilot is None else pilot.options_for(checked.options)
        return TaskScored(
            task_id=event.task_id,
            circuit=checked.circuit,
            options=options,
            ideal=sandbox.ideal,
            scores=scores,
            weights_revision=revision,
        )

    async def _count_outcome(self, event: TaskCompleted) -> None:
        """Add the task's predicted and measured fidelity to its node's calibration."""
        if len(event.nodes) > 1:
            return  # a split run measures several nodes and links, not its lead node
        if not await allocated_to(self._bus, event.task_id, event.node):
            log.warning("outcome.not_allocated", node=event.node)
            return
        scored = self._classes.pop(event.task_id)
        if scored is None:
            checked = await self._bus.last_event(event.task_id, TaskChecked)
            if checked is None:
                log.warning("outcome.no_checked_event")
                return
            scored = circuit_class(checked.features), checked.options.noiseless
        cls, noiseless = scored
        if noiseless or self._settings.noiseless:
            return  # a noiseless run says nothing about the node's noise
        await self._calibrations.update(
            calibration_key(event.node, cls),
            lambda state: observe(
                state,
                node=event.node,
                cls=cls,
                task_id=event.task_id,
                predicted=event.predicted_fidelity,
                measured=event.measured_fidelity,
                now=time.time(),
            ),
            linger_s=OUTCOME_LINGER_S,
        )
        log.info("outcome.counted", node=event.node, circuit_class=cls)

    async def learn(self, event: TaskCompleted, ctx: Context) -> None:
        """The ``outcomes`` stage. The task has ended: a failure here must never end it again
        (the wrapper would publish ``rejected``/``failed`` for an expected error, or for an
        unexpected one on the last delivery), so errors are retried as unexpected ones and
        then dropped."""
        try:
            await self._count_outcome(event)
            FIDELITY_ERROR.labels(event.node).observe(
                event.predicted_fidelity - event.measured_fidelity
            )
        except Exception as exc:
            if ctx.deliveries < self._settings.max_deliver:
                raise RuntimeError(f"counting the outcome failed: {exc!r}") from exc
            log.exception("outcome.dropped", deliveries=ctx.deliveries)


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()
    await ensure_weights(await rt.bus.kv(BUCKET_WEIGHTS))
    weights = await _followed(rt, BUCKET_WEIGHTS, WeightsRecord, keys=WEIGHTS_KEY)
    calibrations = await _followed(rt, BUCKET_CALIBRATION, CalibrationState)
    pilots = await _followed(rt, BUCKET_PILOTS, PilotDescription)
    fusion = Fusion(rt, directory, weights, calibrations, pilots)
    await rt.consume(
        Stage(
            "fusion", [SandboxEvaluation, NoiseEvaluation], fusion.handle, concurrency=CONCURRENCY
        )
    )
    # A sweep counts once, by its own completion (the mean of its points), not each point.
    await rt.consume(
        Stage(
            "outcomes",
            [TaskCompleted],
            fusion.learn,
            concurrency=OUTCOMES_CONCURRENCY,
            skip=is_sweep_point,
        )
    )
