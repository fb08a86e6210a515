"""Versioned wire types of qubus.

Every message on the bus is one of these frozen pydantic models, encoded by ``qubus.bus.codec``.
Its type name (``task.parsed.v1``) travels in the ``Qubus-Type`` header; ``EVENT`` is the last
part of the subject ``qubus.task.<task_id>.<event>`` and of the de-duplication id
``<task_id>.<event>``. A task id is ``<owner>.<id>``: two subject tokens, the first the user
who submitted it (``qubus.bus.auth``), so permissions on ``qubus.task.<owner>.>`` can say who
reads which tasks. A retired version keeps its class here so old messages still decode.

This module imports neither cirq nor numpy: services that only route messages stay light.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qubus.bus.ids import ANY_TASK, TASK_ID
from qubus.bus.limits import MAX_SHOTS, MAX_SPLIT, MAX_SWEEP_POINTS

NODE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Format = Literal["qasm2", "qasm3", "cirq-json"]
Preference = Literal["fidelity", "balanced", "time"]
"""Where on the fidelity–time trade-off a task stands (``qubus.scheduling.allocation``)."""


MAX_DEADLINE_S = 7 * 24 * 3600.0
"""Latest deadline a task may ask for: the task stream's retention."""


class Model(BaseModel):
    """Base of every wire type: immutable, strict about unknown fields, and every float
    finite (an ``Infinity`` or ``NaN`` from a client or an old event is invalid input to the
    stage that reads it, never a number it computes with)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    TYPE: ClassVar[str] = ""


class ErrorInfo(Model):
    """A structured, user-facing error: the shape of every rejection."""

    code: str
    message: str
    line: int | None = None
    column: int | None = None


# ---------------------------------------------------------------- ingress (request/reply)


class SubmitRequest(Model):
    """The public ingress payload on ``qubus.submit`` (msgpack or JSON).

    Attributes:
        circuit: The circuit text: OpenQASM 2/3 source or Cirq JSON.
        format: ``qasm2``, ``qasm3`` or ``cirq-json``; guessed from the text when omitted.
        shots: Repetitions to run on the QPU.
        priority: The task's declared value (0–10); the scorer's Impact term.
        pilot: Run only on the QPU nodes of this pilot, within its constraints
            (``qubus.scheduling.pilots``); an unknown pilot rejects the task (``pilot.unknown``).
        idempotency_key: The same key always maps to the same task id.
        node: Pin the task to this QPU node.
        noiseless: Run the task on its QPU's emulator without noise (every gate ideal, no
            relaxation, no readout flips); the node's compilation and timing are unchanged.
        source: Where the circuit came from (a file name), for the user's own records.
        fidelity_floor: Only nodes predicted to reach at least this Hellinger fidelity may
            run the task; none rejects it (``alloc.no_fit``); a recalibration that drops the
            node below it re-places the task.
        deadline_s: Seconds after submission by which the task should be complete; the
            allocator prefers nodes that can make it and says when none can. At most
            ``MAX_DEADLINE_S`` (7 days).
        split: Run the circuit split across this many QPU nodes (2–8) joined by entanglement
            links, whatever a single node would offer (``qubus.network.splitplan``); without it
            the allocator splits a circuit only when no single node can hold it or a split is
            predicted to do better. Not with ``node`` or ``pilot``.
        ideal_links: Every EPR pair a split run uses is perfect (fidelity 1); the links'
            latency is still modelled.
        sweep: Parameter sets (``{symbol: value}``, each naming every parameter of the
            circuit) to run the parameterised circuit with: one task whose points run as
            tasks ``<task id>-<k>`` (``qubus.circuits.sweeps``). Not with ``split``.
        prefer: ``fidelity``, ``balanced`` or ``time``: how the allocator weighs this task's
            fidelity against its completion time (None: its pilot's setting, else balanced).
    """

    TYPE: ClassVar[str] = "submit.request.v1"
    # Strict types: ``shots: true`` or ``"noiseless": "yes"`` is an error, not 1 or True.
    model_config = ConfigDict(strict=True)

    circuit: str = Field(min_length=1)
    format: Format | None = None
    shots: int = Field(default=1000, ge=1, le=MAX_SHOTS)
    priority: int = Field(default=0, ge=0, le=10)
    pilot: str | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    node: str | None = None
    noiseless: bool = False
    source: str | None = Field(default=None, max_length=1024)
    fidelity_floor: float | None = Field(default=None, ge=0, le=1)
    deadline_s: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_S)
    split: int | None = Field(default=None, ge=2, le=MAX_SPLIT)
    ideal_links: bool = False
    sweep: list[dict[str, float]] | None = Field(
        default=None, min_length=1, max_length=MAX_SWEEP_POINTS
    )
    prefer: Preference | None = None

    @field_validator("node", "pilot")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        if value is not None and not NODE_ID.match(value):
            raise ValueError(f"{value!r} must match {NODE_ID.pattern}")
        return value

    @model_validator(mode="after")
    def _split_alone(self) -> SubmitRequest:
        if self.split is not None and (self.node is not None or self.pilot is not None):
            raise ValueError("split cannot be combined with node or pilot")
        if self.split is not None and self.sweep is not None:
            raise ValueError("split cannot be combined with sweep")
        return self


class SubmitReply(Model):
    TYPE: ClassVar[str] = "submit.reply.v1"

    task_id: str
    duplicate: bool = False


# ---------------------------------------------------------------- task events


class TaskEvent(Model):
    """Base of the events in stream ``QUBUS_TASKS``; every one names its task."""

    EVENT: ClassVar[str] = ""
    TERMINAL: ClassVar[bool] = False
    EXPIRES: ClassVar[bool] = False
    """Whether the event is part of the task's trace only and is stored with a per-message TTL
    (``QUBUS_TRACE_TTL_S``) rather than for the stream's whole age: one no stage reads once
    the next has consumed it and no part of ``qubus result`` shows. Kept for the stream's age:
    ``ingested`` (``qubus retry``, the ingress's idempotency), ``eval.sandbox`` (the ideal
    counts of a result), a sweep's ``eval.ideals`` (its points' measured fidelities),
    ``allocated`` (which node's ``completed`` to believe), a sweep's ``points`` (its end) and
    the terminal events."""

    task_id: str = Field(pattern=TASK_ID.pattern)

    def subject(self) -> str:
        return f"qubus.task.{self.task_id}.{self.EVENT}"

    def msg_id(self) -> str:
        return f"{self.task_id}.{self.EVENT}"

    @classmethod
    def subjects(cls, task: str = ANY_TASK) -> str:
        """The subject pattern of this event for ``task`` (every task by default)."""
        return f"qubus.task.{task}.{cls.EVENT}"

    def stored_on(self, subject: str) -> bool:
        """Whether ``subject`` is this event's own (``subject()``), or its plain
        ``qubus.task.<id>.<event>``, which events stored before a node's events named the
        node had and which no identity but the operator may publish on a secured bus.

        An event on another subject was published by someone the subject's permissions
        did not bind (a node naming another node in its payload) and is not believed.
        """
        return subject in (self.subject(), TaskEvent.subject(self))


class NodeEvent(TaskEvent):
    """An event a QPU node publishes about a task it runs: its subject and de-duplication id
    end with the node, ``qubus.task.<id>.<event>.<node>``, and a node's identity may publish
    only on its own (``qubus.bus.auth.qpu_grant``). So one node cannot speak for another, and
    a node's forgery for a task it was never given is stored apart from the real node's
    event (never in its place) and not believed (``believed``)."""

    node: str = Field(pattern=NODE_ID.pattern)

    def subject(self) -> str:
        return f"{super().subject()}.{self.node}"

    def msg_id(self) -> str:
        return f"{super().msg_id()}.{self.node}"

    @classmethod
    def subjects(cls, task: str = ANY_TASK) -> str:
        return f"{super().subjects(task)}.*"


class TaskOptions(Model):
    """What the user asked for, carried unchanged from stage to stage (``SubmitRequest``).

    ``split``, ``ideal_links``, ``sweep`` and ``prefer`` are absent (None, False, None, None)
    in events stored before them. ``sweep`` makes the task a sweep (``qubus.circuits.sweeps``):
    its circuit is parameterised and every stage handles all its points in one message.
    """

    shots: int
    priority: int = 0
    node: str | None = None
    noiseless: bool = False
    pilot: str | None = None
    source: str | None = None
    fidelity_floor: float | None = None
    deadline_s: float | None = None
    split: int | None = None
    ideal_links: bool = False
    sweep: list[dict[str, float]] | None = None
    prefer: Preference | None = None

    @property
    def total_shots(self) -> int:
        """Shots the task runs in all: ``shots`` for each of its points."""
        return self.shots * (1 if self.sweep is None else len(self.sweep))


class TaskIngested(TaskEvent):
    TYPE: ClassVar[str] = "task.ingested.v1"
    EVENT: ClassVar[str] = "ingested"

    format: Format
    text: str
    options: TaskOptions
    submitted_at: float


class Features(Model):
    """What the pipeline needs to know about a circuit, computed once by the parser stage.

    Attributes:
        qubits: Qubits the circuit acts on.
        clbits: Measurement bits (distinct keys, each counted with its width).
        depth: Moments of the circuit re-packed from its operations in order (earliest).
        gate_counts: Operations per lower-case gate name (``"h"``, ``"cnot"``, ``"measure"``).
        two_qubit_gates: Non-measurement operations on exactly two qubits.
        multi_qubit_gates: Non-measurement operations on three or more qubits.
        measured_qubits: Names of measured qubits, sorted.
        classical_control: Whether any operation is classically controlled.
        interaction_graph: ``(a, b, n)``: ``n`` multi-qubit operations touch both ``a < b``.
        fingerprint: SHA-256 hex of the wire form of the re-packed circuit
            (``qubus.circuits.ir.circuit_to_wire``, which is canonical).
    """

    qubits: int
    clbits: int
    depth: int
    gate_counts: dict[str, int]
    two_qubit_gates: int
    multi_qubit_gates: int
    measured_qubits: list[str]
    classical_control: bool
    interaction_graph: list[tuple[str, str, int]]
    fingerprint: str


class TaskParsed(TaskEvent):
    """The circuit in its wire form, with its features and novelty (``qubus.circuits.novelty``).

    The ``circuit`` of this event and of ``TaskChecked``, ``TaskScored`` and ``TaskAllocated``
    is ``qubus.circuits.ir.circuit_to_wire``'s text: compact, or Cirq JSON where the circuit
    has no compact form. Events stored with Cirq JSON read the same way.

    ``novelty`` and ``feature_vector`` are absent (0.0, empty) in events stored before the
    parser computed them.
    """

    TYPE: ClassVar[str] = "task.parsed.v1"
    EVENT: ClassVar[str] = "parsed"
    EXPIRES: ClassVar[bool] = True

    circuit: str  # the wire form
    features: Features
    options: TaskOptions
    novelty: float = Field(default=0.0, ge=0.0, le=1.0)
    feature_vector: list[float] = Field(default_factory=list)


def wire_operations(wire: str) -> int | None:
    """The number of operations a circuit in the compact wire form declares (``TaskParsed``;
    ``qubus.circuits.ir.circuit_to_wire``: ``[1,<qubits>,<operations>,...``), read from the
    start of its text without decoding it (the reader checks it against the operations it
    reads); None for Cirq JSON, or a text that declares no number."""
    if not wire.startswith("["):
        return None
    try:
        return int(wire[1:64].split(",", 3)[2])
    except (IndexError, ValueError):
        return None


class CheckResult(Model):
    """The outcome of one logic check on one circuit (see ``qubus.circuits.checks.CHECKS``)."""

    code: str
    name: str
    hard: bool
    passed: bool
    message: str
    weight: float


class TaskChecked(TaskEvent):
    """The parsed task with its logic checks; ``novelty`` and ``feature_vector`` as parsed."""

    TYPE: ClassVar[str] = "task.checked.v1"
    EVENT: ClassVar[str] = "checked"
    EXPIRES: ClassVar[bool] = True

    circuit: str
    features: Features
    options: TaskOptions
    checks: list[CheckResult]
    logic_score: float
    novelty: float = Field(default=0.0, ge=0.0, le=1.0)
    feature_vector: list[float] = Field(default_factory=list)


class SandboxEvaluation(TaskEvent):
    """The ideal (noiseless) behaviour of the circuit.

    ``ideal`` keeps at most ``qubus.bus.config.Settings.ideal_max_outcomes`` of the most likely
    outcomes; ``truncated_mass`` is the probability left out.

    ``repro`` (ΔRepro) is the Hellinger fidelity between ``simulator``'s distribution and a
    second simulator's on the same circuit; ``repro_simulator`` names the second simulator
    (``"cirq"``), or starts with ``"skipped: "`` and says why, in which case ``repro`` is
    ``1 − norm_error`` (the norm check alone). Events written before ΔRepro existed decode
    with ``repro`` 0 and an empty ``repro_simulator``.

    For a sweep, ``sweep_ideals`` holds the ideal distributions of a sample of its points
    (``qubus.devices.sweeps.sample_points``: the first, the last and others evenly spaced; in
    events stored before ``SweepIdeals``, every point's), from which fusion predicts each
    node's fidelity; ``ideal``, ``ideal_counts`` and ΔRepro are the first point's (empty
    otherwise). Every point's follows in ``SweepIdeals``.
    """

    TYPE: ClassVar[str] = "task.eval.sandbox.v1"
    EVENT: ClassVar[str] = "eval.sandbox"

    ideal: dict[str, float]
    ideal_counts: dict[str, int]
    truncated_mass: float
    norm_error: float
    simulator: str
    elapsed_s: float
    repro: float = 0.0
    repro_simulator: str = ""
    sweep_ideals: list[dict[str, float]] = Field(default_factory=list)


class SweepIdeals(TaskEvent):
    """Every point's ideal distribution of a sweep, in the sweep's order, each checked
    numerically (``norm_error`` is the largest norm error over them): published by the
    sandbox after its ``SandboxEvaluation``, so that the sweep is scored and placed on a
    sample of its points while the others are simulated; its QPU nodes measure each point's
    fidelity and predict the mean over every point with it."""

    TYPE: ClassVar[str] = "task.eval.ideals.v1"
    EVENT: ClassVar[str] = "eval.ideals"

    ideals: list[dict[str, float]]
    norm_error: float


class NoiseBudget(Model):
    """A node's noise as it reaches the measured bits of one compiled circuit
    (``qubus.devices.prediction.noise_budget``), applied to the ideal distribution by
    ``qubus.devices.fidelity.budget_fidelity``.

    ``scrambles`` lists, per set of bit positions (0 = the leftmost bit of an outcome), the
    chance that quantum errors scramble those bits; ``flips``, per set of bit positions, the
    chance that errors flip exactly those bits together (optional: budgets without it decode
    as before); ``confusion`` holds per bit position the read-out matrix ``M[read][prepared]``
    flattened row by row (T1 decay before the read and the readout flips).
    """

    scrambles: list[tuple[list[int], float]]
    confusion: list[tuple[float, float, float, float]]
    flips: list[tuple[list[int], float]] = Field(default_factory=list)


class NodePrediction(Model):
    """``predicted_fidelity`` is the ESP; ``budget`` turns it into a predicted Hellinger
    fidelity once the ideal distribution is known (in fusion). ``emulation_s`` is the
    estimated wall time of the node's emulation of the task (``qubus.devices.cost``; 0: not
    recorded), from which the node takes the run's time budget. ``job_s`` is the part of
    ``expected_run_s`` a job pays whatever its shots (``JOB_OVERHEAD_S``; 0 in events stored
    before it): a chunk of a sweep pays it in full."""

    node: str
    fits: bool
    reason: str = ""
    predicted_fidelity: float = 0.0
    budget: NoiseBudget | None = None
    expected_run_s: float = 0.0
    calibration_revision: str = ""
    swaps: int = 0
    emulation_s: float = Field(default=0.0, ge=0)
    job_s: float = Field(default=0.0, ge=0)


class NoiseEvaluation(TaskEvent):
    TYPE: ClassVar[str] = "task.eval.noise.v1"
    EVENT: ClassVar[str] = "eval.noise"
    EXPIRES: ClassVar[bool] = True

    predictions: list[NodePrediction]


class NodeScore(Model):
    """Fusion's score of one node (``qubus.scheduling.scoring``).

    ``predicted_fidelity`` is the noise model's prediction (before the calibration of
    ``qubus.scheduling.outcomes``); ``calibration_revision`` is the node calibration it was
    computed on. ``inputs`` are the score's inputs by name (``logic_score``, ``novelty``,
    ``impact``, ``repro``, ``meta``, ``qnc``: the calibrated fidelity, ``expected_completion_s``);
    ``terms`` the weighted terms of V and ``time_penalty``; ``shapley`` each term's Shapley
    value, summing to ``hyperscore`` minus the score with every term absent.
    ``expected_run_s`` is the task's modelled run time on the node, the part of
    ``expected_completion_s`` that is not queue (0: not recorded; the allocator then shares
    the completion time evenly among the queue and the task); ``emulation_s`` the noise
    service's estimate of the node's emulation time and ``job_s`` the fixed part of the run
    (``NodePrediction``). Fields added later are empty in events stored before them.
    """

    node: str
    eligible: bool
    reason: str = ""
    predicted_fidelity: float = 0.0
    calibration_revision: str = ""
    expected_completion_s: float = 0.0
    queue_depth: int = 0
    hyperscore: float = 0.0
    terms: dict[str, float] = Field(default_factory=dict)
    inputs: dict[str, float] = Field(default_factory=dict)
    shapley: dict[str, float] = Field(default_factory=dict)
    expected_run_s: float = 0.0
    emulation_s: float = Field(default=0.0, ge=0)
    job_s: float = Field(default=0.0, ge=0)


class TaskScored(TaskEvent):
    """Every node's score; ``weights_revision`` is the revision of the weights in KV
    ``qubus_weights`` they were computed with (0: the built-in defaults, and in events stored
    before it was recorded)."""

    TYPE: ClassVar[str] = "task.scored.v1"
    EVENT: ClassVar[str] = "scored"
    EXPIRES: ClassVar[bool] = True

    circuit: str
    options: TaskOptions
    ideal: dict[str, float]
    scores: list[NodeScore]
    weights_revision: int = 0


class SplitPlan(Model):
    """A circuit cut across QPU nodes joined by entanglement links (``qubus.network.splitplan``).

    Part ``i`` of the circuit runs on ``nodes[i]``; ``nodes[0]`` leads: it receives the
    allocation, reserves the EPR pairs and runs the whole split circuit. Every remote
    two-qubit gate consumes one EPR pair between its two parts' nodes (telegate).

    Attributes:
        nodes: The nodes, one per part; the first leads.
        parts: The circuit's qubit names (``str(qubit)``) of each part.
        pairs: ``(a, b, n)``: ``n`` EPR pairs between nodes ``a < b``; the ``n`` sum to ``ebits``.
        ebits: Remote two-qubit gates (EPR pairs) of the partition.
        lower_bound: A proven lower bound on ``ebits`` for these nodes' capacities.
        method: The partitioner (``qubus.network.partition``): ``kl`` or ``greedy``.
        link_fidelity: Expected Werner fidelity of one delivered pair, averaged over
            ``pairs`` weighted by their counts (1: ideal links).
        epr_latency_s: Expected time to generate every pair, one after another.
        run_s: Modelled run time of the slowest part.
        queue_s: Expected wait until every node of the plan is free.
        predicted_fidelity: Predicted Hellinger fidelity of the split run.
        expected_completion_s: ``queue_s + epr_latency_s + run_s``.
        emulation_s: Estimated time of the lead node's emulation of the split run on this
            machine, idle (``qubus.network.distributed.SplitProgram.emulation_cost``); its
            time budget comes from it. 0 in plans made before it was estimated.
    """

    nodes: list[str] = Field(min_length=2, max_length=MAX_SPLIT)
    parts: list[list[str]]
    pairs: list[tuple[str, str, int]]
    ebits: int = Field(ge=0)
    lower_bound: int = Field(default=0, ge=0)
    method: str = ""
    link_fidelity: float = Field(ge=0, le=1)
    epr_latency_s: float = Field(ge=0)
    run_s: float = Field(ge=0)
    queue_s: float = Field(ge=0)
    predicted_fidelity: float = Field(ge=0, le=1)
    expected_completion_s: float = Field(ge=0)
    emulation_s: float = Field(default=0.0, ge=0)


class SweepChunk(Model):
    """The points of a sweep one allocation runs (``qubus.scheduling.sweepchunks``): points
    ``first`` to ``stop - 1`` (from 0), chunk ``index`` of ``chunks``, each on its own node."""

    index: int = Field(ge=0)
    chunks: int = Field(ge=1)
    first: int = Field(ge=0)
    stop: int = Field(ge=1)


class TaskAllocated(TaskEvent):
    """The placement decision, published on ``qubus.task.<id>.allocated.<node>``.

    It is also the QPU node's work item: one message, so a redelivered allocator can never
    send the same task to two nodes (de-duplication keeps the first decision).

    ``predicted_fidelity`` was computed on the node's calibration ``calibration_revision``
    (empty in events stored before it was recorded); a node whose calibration has changed
    since recomputes it for the one the task runs on (``TaskCompleted``).

    ``attempt`` counts re-placements (``TaskReplace``): the first decision is attempt 0 with
    de-duplication id ``<task_id>.allocated``, a re-placement ``n`` has
    ``<task_id>.allocated.<n>``; a node runs only the task's latest allocation and skips
    superseded ones. ``expected_completion_s`` (from the decision, on its batch's schedule),
    ``deadline_met`` (None: no deadline), ``batch_size`` and ``score`` (fusion's score of the
    chosen node, its breakdown and Shapley terms) are empty in events stored before them.

    ``split`` is the plan when the task runs split across several nodes; ``node`` is then
    the plan's lead node and ``predicted_fidelity`` the plan's (None: one node, as before).

    ``chunk`` is set for a sweep cut into chunks of points (``SweepChunk``): one allocation
    per chunk, each to its own node, de-duplicated by ``<task_id>.allocated.c<index>``. A
    sweep's allocation without one (stored before chunks, or a re-placement) runs every point.
    """

    TYPE: ClassVar[str] = "task.allocated.v1"
    EVENT: ClassVar[str] = "allocated"

    node: str
    policy: str
    reason: str
    ranking: list[tuple[str, float]]
    predicted_fidelity: float
    hyperscore: float
    circuit: str
    options: TaskOptions
    ideal: dict[str, float]
    calibration_revision: str = ""
    attempt: int = Field(default=0, ge=0)
    expected_completion_s: float = 0.0
    deadline_met: bool | None = None
    batch_size: int = 1
    score: NodeScore | None = None
    split: SplitPlan | None = None
    chunk: SweepChunk | None = None

    def subject(self) -> str:
        return f"{super().subject()}.{self.node}"

    def msg_id(self) -> str:
        base = super().msg_id()
        if self.chunk is not None and self.chunk.chunks > 1:
            base = f"{base}.c{self.chunk.index}"
        return f"{base}.{self.attempt}" if self.attempt else base

    @classmethod
    def subjects(cls, task: str = ANY_TASK) -> str:
        return f"{super().subjects(task)}.*"


class TaskReplace(NodeEvent):
    """Asks the allocator to place an allocated task again, away from ``node``.

    Published by the allocator when ``node`` has gone offline with the task still queued
    there, or by the node itself when its calibration changed since the allocation and the
    task's prediction on it fell below the task's floor or by more than
    ``QUBUS_REPLACE_DROP`` (``predicted_fidelity`` is then the new prediction, on
    ``calibration_revision``). ``attempt`` is the allocation being replaced; the
    de-duplication id ``<task_id>.replace.<node>.<attempt>`` makes one re-placement per attempt.
    ``chunk`` is the index of the chunk of a sweep to place again (``TaskAllocated.chunk``),
    alone, with ``attempt`` that chunk's (de-duplication id
    ``<task_id>.replace.<node>.c<chunk>.<attempt>``); None for a whole task.
    """

    TYPE: ClassVar[str] = "task.replace.v1"
    EVENT: ClassVar[str] = "replace"
    EXPIRES: ClassVar[bool] = True

    attempt: int = Field(ge=0)
    reason: str
    predicted_fidelity: float | None = None
    calibration_revision: str = ""
    chunk: int | None = Field(default=None, ge=0)

    def msg_id(self) -> str:
        base = super().msg_id() if self.chunk is None else f"{super().msg_id()}.c{self.chunk}"
        return f"{base}.{self.attempt}"


class TaskRunning(NodeEvent):
    TYPE: ClassVar[str] = "task.running.v1"
    EVENT: ClassVar[str] = "running"
    EXPIRES: ClassVar[bool] = True

    queue_wait_s: float


class TaskProgress(NodeEvent):
    """How far a long emulation on a QPU node has got: ``shots_done`` of ``shots`` (the shots
    of the trajectories finished). One event per step, de-duplicated by ``shots_done``."""

    TYPE: ClassVar[str] = "task.progress.v1"
    EVENT: ClassVar[str] = "progress"
    EXPIRES: ClassVar[bool] = True

    node: str
    shots_done: int = Field(ge=0)
    shots: int = Field(ge=1)

    def msg_id(self) -> str:
        return f"{super().msg_id()}.{self.shots_done}"


class SweepProgress(NodeEvent):
    """How far a chunk of a sweep (``TaskAllocated.chunk``) has got on its node: ``done`` of
    its ``points`` points have ended (``completed`` or ``cancelled`` one by one), ``completed``
    of them with counts, whose measured fidelities sum to ``fidelity_sum``; ``emulated_s`` is
    the chunk's modelled run time so far. Published after every batch of points, on the
    sweep's task id; a sweep's progress is the sum over its chunks' latest
    (``qubus.scheduling.sweepchunks.sweep_progress``). De-duplicated by chunk and ``done``."""

    TYPE: ClassVar[str] = "task.points.v1"
    EVENT: ClassVar[str] = "points"

    chunk: int = Field(ge=0)
    chunks: int = Field(ge=1)
    points: int = Field(ge=1)
    done: int = Field(ge=0)
    completed: int = Field(ge=0)
    fidelity_sum: float = Field(ge=0)
    predicted_fidelity: float
    emulated_s: float = Field(ge=0)

    def msg_id(self) -> str:
        return f"{super().msg_id()}.{self.chunk}.{self.done}"


class TaskCompleted(NodeEvent):
    """The task's counts and fidelities, from the node's calibration ``calibration_revision``.

    ``predicted_fidelity`` is the prediction for the run as it happened: the allocation's
    (``allocated_fidelity``) when the task ran on the calibration the allocation was computed
    on; recomputed on the calibration it ran on when that had changed (drift); for a noiseless
    run, the Hellinger fidelity expected of ``shots`` perfect samples. ``allocated_fidelity`` is
    None in events stored before it was recorded.

    ``nodes`` lists every node the run used: ``[node]``, or for a split run
    (``TaskAllocated.split``) the plan's nodes, ``node`` (the lead) first; ``ebits`` counts the
    EPR pairs a split run consumed (0 on one node). Both are empty in events stored before
    them.
    """

    TYPE: ClassVar[str] = "task.completed.v1"
    EVENT: ClassVar[str] = "completed"
    TERMINAL: ClassVar[bool] = True

    counts: dict[str, int]
    shots: int
    seed: int
    predicted_fidelity: float
    measured_fidelity: float
    emulated_s: float
    calibration_revision: str
    allocated_fidelity: float | None = None
    ebits: int = Field(default=0, ge=0)
    nodes: list[str] = Field(default_factory=list)


def event_of(tail: str) -> tuple[str, str]:
    """The event and the node named by a task subject's tail (after the task id):
    ``("completed", "ibm_nairobi")`` for ``completed.ibm_nairobi``, ``("eval.noise", "")`` for
    ``eval.noise``. Allocations and a node's events (``NodeEvent``) end with the node; other
    events' names may hold a dot."""
    event, _, node = tail.partition(".")
    if event == TaskAllocated.EVENT or event in {c.EVENT for c in NodeEvent.__subclasses__()}:
        return event, node
    return tail, ""


def believed(tails: Sequence[str]) -> list[bool]:
    """Which of one task's events to believe, given their subjects' tails after the task id
    (``allocated.ibm_nairobi``, ``completed.ibm_nairobi``, ``parsed``) in stream order: every
    one but a node's event (``NodeEvent``) naming a node the task was never allocated to,
    which that node's identity forged (it may publish for any task, but only under its own
    name), and but a second ``completed``: a node that had lost the task to a re-placement
    while it ran it (stopped, then resumed) may complete it too, and the first result stands,
    as when both shared one de-duplication id."""
    named = [event_of(tail) for tail in tails]
    allocated = {node for event, node in named if event == TaskAllocated.EVENT}
    believe = []
    completed = False
    for event, node in named:
        kept = not node or node in allocated
        if kept and event == TaskCompleted.EVENT:
            kept, completed = not completed, True
        believe.append(kept)
    return believe


class TaskRejected(TaskEvent):
    """The task cannot run as submitted; ``error`` says why and where."""

    TYPE: ClassVar[str] = "task.rejected.v1"
    EVENT: ClassVar[str] = "rejected"
    TERMINAL: ClassVar[bool] = True

    stage: str
    error: ErrorInfo
    failures: list[ErrorInfo] = Field(default_factory=list)


class TaskFailed(TaskEvent):
    """The task was accepted but could not be completed."""

    TYPE: ClassVar[str] = "task.failed.v1"
    EVENT: ClassVar[str] = "failed"
    TERMINAL: ClassVar[bool] = True

    stage: str
    error: ErrorInfo


class TaskCancelled(TaskEvent):
    """The user cancelled the task (``qubus cancel``); a QPU node skips a cancelled task
    instead of running it, and stops it if it is running. Published by the client, not by a
    stage."""

    TYPE: ClassVar[str] = "task.cancelled.v1"
    EVENT: ClassVar[str] = "cancelled"
    TERMINAL: ClassVar[bool] = True

    reason: str = ""


# ---------------------------------------------------------------- fleet state (KV qubus_nodes)


class NodeStatus(Model):
    """A QPU node's calibration and status, the value of its key in KV ``qubus_nodes``.

    ``device`` is a ``qubus.devices.profiles.Device`` dumped to JSON-compatible data (kept untyped
    here so that light services need not import the device code). ``queue_depth`` counts the
    node's own waiting and running tasks plus ``background_jobs``, other users' jobs replayed
    from a real queue (``qubus.devices.load``; 0 when background load is off, and in statuses stored
    before it existed). ``mean_job_s`` is the mean modelled duration of the node's tasks, or
    before its first, the per-job overhead of its kind (``qubus.devices.emulation.JOB_OVERHEAD_S``).
    """

    TYPE: ClassVar[str] = "node.status.v1"

    node: str
    kind: str
    n_qubits: int
    max_circuit_qubits: int
    device: dict[str, Any]
    calibration_revision: str
    queue_depth: int
    mean_job_s: float
    busy: bool
    instance: str
    updated_at: float
    background_jobs: int = 0

    @property
    def backlog_s(self) -> float:
        """The wait, in modelled seconds, before a task sent to the node now could start: every
        task it holds runs its mean job time."""
        return self.queue_depth * self.mean_job_s


class LinkStatus(Model):
    """A link's figures and usage, the value of ``link.<a>.<b>`` in KV ``qubus_nodes``.

    ``expected_fidelity`` and ``expected_latency_s`` are those of one pair delivered on this
    link alone, after memory decay and purification (``qubus.network.links.expected_pair``).
    ``purify_rounds`` BBPSSW rounds lift its pairs to ``purify_below`` (0 without a floor).
    ``reservations`` counts the reservations whose path uses the link, ``pairs_reserved``
    their pairs over it, and ``pairs_purified`` the extra raw pairs purification consumed on
    it. Fields after ``updated_at`` are absent (defaults) in statuses stored before them.
    """

    TYPE: ClassVar[str] = "link.status.v1"

    a: str
    b: str
    expected_latency_s: float
    f0: float
    coherence_s: float
    pairs_served: int
    updated_at: float
    expected_fidelity: float | None = None
    purify_below: float | None = None
    purify_rounds: int = 0
    reservations: int = 0
    pairs_reserved: int = 0
    pairs_purified: int = 0


class EprRequest(Model):
    TYPE: ClassVar[str] = "link.epr.request.v1"

    a: str
    b: str
    hold_s: float = Field(default=0.0, ge=0.0)
    task_id: str | None = None


class EprReply(Model):
    TYPE: ClassVar[str] = "link.epr.reply.v1"

    a: str
    b: str
    fidelity: float
    latency_s: float
    attempts: int
    path: list[str]


class EprReserve(Model):
    """A task's request for ``count`` EPR pairs between nodes ``a`` and ``b`` (either order), on
    ``qubus.link.reserve``.

    The same ``(task_id, a, b)`` always gets the same ``EprReservation``, whatever the order
    of ``a`` and ``b`` (oriented as asked) and the other fields of later requests.

    Attributes:
        task_id: The task the pairs are for.
        a: One node.
        b: The other node.
        count: EPR pairs wanted.
        hold_s: How long the task keeps each pair after delivery before using it.
        ideal: Perfect pairs (fidelity 1); their latency is still modelled.
    """

    TYPE: ClassVar[str] = "link.reserve.request.v1"

    task_id: str = Field(pattern=TASK_ID.pattern)
    a: str = Field(pattern=NODE_ID.pattern)
    b: str = Field(pattern=NODE_ID.pattern)
    count: int = Field(ge=1, le=10_000)
    hold_s: float = Field(default=0.0, ge=0.0)
    ideal: bool = False


class EprReservation(Model):
    """The pairs reserved for a task (``qubus.network.links.reserve_pairs``).

    Attributes:
        task_id: The task.
        a: The first node, as the request named it.
        b: The other node.
        path: Nodes from ``a`` to ``b`` (entanglement swapping at the inner ones).
        fidelities: One per delivered pair, as used (after decay, purification and hold).
        latency_s: From the request until the last pair is delivered.
        attempts: Generation attempts over every hop and pair.
        purified: Extra raw pairs that purification consumed.
    """

    TYPE: ClassVar[str] = "link.reserve.reply.v1"

    task_id: str
    a: str
    b: str
    path: list[str]
    fidelities: list[float]
    latency_s: float
    attempts: int
    purified: int = 0


class ServiceReady(Model):
    """Announced on ``qubus.svc.ready`` once a service's consumers are bound."""

    TYPE: ClassVar[str] = "service.ready.v1"

    service: str
    instance: str
    pid: int
    node: str | None = None


TYPES: dict[str, type[Model]] = {
    cls.TYPE: cls
    for cls in (
        SubmitRequest,
        SubmitReply,
        TaskIngested,
        TaskParsed,
        TaskChecked,
        SandboxEvaluation,
        SweepIdeals,
        NoiseEvaluation,
        TaskScored,
        TaskAllocated,
        TaskReplace,
        TaskRunning,
        TaskProgress,
        SweepProgress,
        TaskCompleted,
        TaskRejected,
        TaskFailed,
        TaskCancelled,
        NodeStatus,
        LinkStatus,
        EprRequest,
        EprReply,
        EprReserve,
        EprReservation,
        ServiceReady,
    )
}
"""Every wire type by its ``Qubus-Type`` name, retired versions included."""
