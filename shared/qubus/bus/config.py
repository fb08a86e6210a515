"""Configuration, read once in each process's ``main()`` from ``QUBUS_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every tunable of a qubus process; each field is ``QUBUS_<NAME>`` in the environment.

    Attributes:
        nats_url: The NATS server. Empty means: the one ``qubus up`` recorded, if any.
        nats_nkey: This process's nkey seed file, for a server that authenticates its users
            (``qubus.bus.auth``); empty: the one ``qubus up`` recorded for a client, if any,
            else no credentials. The user is the file's name without ``.nk``.
        user: The client user name tasks are submitted as, overriding the seed file's name.
        instance: This process's instance name in logs and traces (default: host-pid).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        ack_wait_s: How long JetStream waits for an ack before redelivering a message.
        max_deliver: Deliveries of one message before its task fails: ``internal.error`` for a
            handler that keeps raising, ``stage.dead_letter`` when every delivery died with
            its process (a crash, an out-of-memory kill).
        max_submit_bytes: Largest accepted circuit text at ingress.
        quota_tasks: Tasks one user may have in flight (submitted, not yet ended); one more
            is refused at the ingress (``quota.tasks``). On a bus without authentication
            every client is the user ``anon`` and they share it.
        quota_shots: Shots one user may have in flight (a sweep's shots times its points); a
            task that would pass it is refused (``quota.shots``).
        quota_exempt: Users without quotas, comma-separated (default: the operator).
        duplicate_window_s: How long JetStream remembers ``Nats-Msg-Id`` for de-duplication.
        trace_ttl_s: How long the events of a task's trace that its result does not need
            (``TaskEvent.EXPIRES``: parsed, checked, eval.noise, scored, running, progress,
            replace) are stored, whole seconds; the rest stays for ``task_retention_s``
            (``qubus result``). A task must end within it: a stage that has not consumed
            such an event by then never sees it. 0 keeps them as long as the rest.
        task_retention_s: How long the task stream keeps an event (its ``max_age``): a
            task's result, and its trace unless ``trace_ttl_s`` removes that first; 7 days
            by default. The buckets with an entry per task or circuit (idempotency keys,
            circuits' feature vectors, EPR reservations) keep theirs as long. It bounds what
            the stream stores, and so the nats-server's memory (two index entries of some 470
            bytes per stored event), at about rate × this × a task's kept events. A task
            must end within it, and it may not be shorter than ``duplicate_window_s``
            (JetStream's own rule), nor longer than 100 years (its durations are int64
            nanoseconds). ``qubus up`` and every service set the stream to it, so give them all
            the same.
        stream_replicas: Copies of every stream and KV bucket in a JetStream cluster (3 for
            a 3-node cluster); 1 on a single server.
        sandbox_timeout_s: Wall-clock limit of one job of a worker process: an ideal simulation
            in the sandbox (``sandbox.timeout``), a QPU node's prediction or estimate, and per point
            a batch of a sweep (``qpu.timeout``); a QPU node's emulation of a task, split runs
            included, has a budget from its cost estimate.
        qpu_max_emulation_s: Longest emulation a QPU node accepts, by its cost estimate
            (``qubus.devices.cost``); a task estimated longer is refused (``qpu.too_large``)
            and the noise service marks the node unfit for it; the allocator leaves out split
            plans estimated longer (``split.too_large`` when no plan is left).
        heavy_lane: Heavy circuits (``qubus.bus.workers.is_heavy``: an 18-qubit QFT, a
            20-qubit circuit) get a lane of their own, so a light task never waits behind
            one: a second worker process in the sandbox, and at most one heavy compilation at
            a time in the noise service while light ones go on. False: one sandbox worker,
            every job in arrival order (one process less).
        qpu_starve_after_s: A QPU node runs its waiting tasks shortest first, but one that
            has waited longer than this (wall-clock seconds since its allocation) goes first
            (``qubus.scheduling.nodeorder``).
        sandbox_max_qubits: Largest circuit the sandbox simulates.
        sandbox_memory_mb: Address-space limit of the sandbox's and each QPU node's worker
            process.
        sandbox_max_depth: Deepest circuit (moments, operations re-packed) the sandbox simulates.
        ideal_max_outcomes: Most-likely outcomes kept of an ideal distribution.
        time_scale: Emulated QPU time is slept for ``time_scale`` × its modelled duration.
        noiseless: Run every task on the QPU emulators without noise (one task asks for it
            with ``SubmitRequest.noiseless``).
        policy: The allocator's policy (``qubus.scheduling.allocation.POLICIES``: ``round_robin``,
            ``least_loaded``, ``greedy_fidelity``, ``hyperscore``, ``annealing``, ``milp``,
            ``qaoa``).
        batch_window_ms: The allocator decides the tasks scored within this window (from the
            first of them) together, as one batch.
        batch_max: A batch is decided at once when it reaches this many tasks.
        fidelity_weight_s: λ of the batch objective that ``annealing``, ``milp`` and ``qaoa``
            minimise: seconds of completion time one unit of predicted fidelity is worth.
        replace_drop: A task whose predicted fidelity on its node falls by more than this
            when the node recalibrates before running it is placed again.
        max_replacements: Re-placements of one task at most; after that it stays where it is.
        topology: Path of the link topology JSON: a list of links, or a generated ``ring``,
            ``ring_chords``, ``line`` or ``star`` (examples in ``deploy/topologies/``);
            empty means a ring over the default fleet.
        node_timeout_s: A node whose status is older than this is treated as offline.
        drift_period_s: Wall-clock seconds per calibration snapshot when a QPU node with a
            drift series (``ibm_perth``) replays it; 0 keeps its first snapshot (no drift).
        background_load: Each QPU node replays a real IBM backend's queue of other users'
            jobs (``qubus.devices.load``): reported in its queue depth, and its tasks wait for them.
        load_period_s: Wall-clock seconds per 10-minute bin of that replay; the default, 6,
            compresses time as the default ``time_scale`` (0.01 × 600 s).
        profile_dir: A folder where each service process writes where its CPU went
            (``qubus.bus.sampler``: ``<service>-<pid>.txt``); empty: not sampled.
        sched_batch: Run each service process, its workers and an embedded nats-server under
            Linux's ``SCHED_BATCH`` policy (``qubus.bus.schedpolicy``: a woken process does
            not preempt the running one, so a busy stage takes its events in turns of several).
    """

    model_config = SettingsConfigDict(env_prefix="QUBUS_", extra="ignore")

    nats_url: str = ""
    nats_nkey: str = ""
    user: str = ""
    instance: str = ""
    log_level: str = "info"
    ack_wait_s: float = 10.0
    max_deliver: int = 5
    max_submit_bytes: int = 256 * 1024
    quota_tasks: int = Field(default=10_000, ge=1)
    quota_shots: int = Field(default=20_000_000, ge=1)
    quota_exempt: str = "operator"
    duplicate_window_s: float = 600.0
    trace_ttl_s: int = Field(default=24 * 3600, ge=0)
    task_retention_s: int = Field(default=7 * 24 * 3600, ge=60, le=100 * 365 * 24 * 3600)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    sandbox_timeout_s: float = 30.0
    qpu_max_emulation_s: float = Field(default=600.0, gt=0.0)
    heavy_lane: bool = True
    qpu_starve_after_s: float = Field(default=60.0, ge=0.0)
    sandbox_max_qubits: int = 24
    sandbox_memory_mb: int = 4096
    sandbox_max_depth: int = 10_000
    ideal_max_outcomes: int = 4096
    time_scale: float = 0.01
    noiseless: bool = False
    policy: str = "hyperscore"
    batch_window_ms: float = Field(default=50.0, ge=0.0)
    batch_max: int = Field(default=32, ge=1)
    fidelity_weight_s: float = Field(default=100.0, ge=0.0)
    replace_drop: float = Field(default=0.1, ge=0.0, le=1.0)
    max_replacements: int = Field(default=3, ge=0)
    topology: str = ""
    node_timeout_s: float = 15.0
    drift_period_s: float = 0.0
    background_load: bool = False
    load_period_s: float = Field(default=6.0, gt=0.0)
    profile_dir: str = ""
    sched_batch: bool = True

    @model_validator(mode="after")
    def _window_within_retention(self) -> Settings:
        if self.duplicate_window_s > self.task_retention_s:
            raise ValueError(
                f"QUBUS_DUPLICATE_WINDOW_S ({self.duplicate_window_s:g}) is longer than "
                f"QUBUS_TASK_RETENTION_S ({self.task_retention_s}): the task stream cannot "
                "remember an event's id longer than it keeps the event"
            )
        return self
