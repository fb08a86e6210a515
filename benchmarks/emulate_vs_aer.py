"""Noisy emulation time: qubus against qiskit-aer, same circuits and noise.

Usage:
    python benchmarks/emulate_vs_aer.py [--set small|wide] [--shots 4000] [--aer-seconds S]
        [--only CIRCUIT ...] [--repeats 2] [--shots-per-trajectory K]
        [--aer-method automatic|statevector|matrix_product_state] [--json]
        [--trajectory-distributions T [--qubus-trajectories N]] [--aer-durations profile|backend]
        [--runs K]

``--set small`` (default): the few-qubit dev circuits of ``CIRCUITS`` on ``--node`` (exact
density matrices in qubus). ``--set wide``: the 12–20-qubit dev circuits of ``WIDE`` on the
27-qubit ``ibm_hanoi`` (qsim trajectories in qubus). Each circuit is compiled for the node by
qubus; the same compiled circuit (same layout, same native gates, idle time as explicit delays)
runs on qiskit-aer with the device noise model of qiskit-ibm-runtime's fake backend of that
node (the calibration snapshot our files are copied from; see :func:`noise_model`), with
the gate durations of qubus's profile (``--aer-durations backend``: the fake backend's, whose
shorter cx direction left aer a noisier model than qubus's), in the configuration of
:func:`aer_simulator`. Printed per circuit: qubus's wall time for
``--shots`` (best of ``--repeats``, a whole ``emulate`` call), aer's (a whole ``run`` call
including its noise passes; the noise model is built once, outside the timing), their ratio,
aer's cost per shot and fixed cost; then the Hellinger fidelities against the ideal
distribution at equal shots with their shot noise; and a goal line: qubus ``GOAL_SPEEDUP`` ×
faster than aer on every circuit, Hellinger within ``HELLINGER_TOLERANCE`` of aer's.

Why aer is slow here: with these noise models it runs every shot as its own statevector
trajectory and applies every thermal-relaxation error (after each gate and each delay) as Kraus
operators: 7–17 ns per amplitude and compiled operation on this machine (4 shots each, load
average 4–6), 0.06–0.2 s a shot at 13–14 qubits, 1.4–6 s at 15–20 and more on the longest (it
already simulates only the qubits the circuit touches, not the device's 27). So aer runs the
shots that fit in ``--aer-seconds`` of simulation and its time for ``--shots`` is extrapolated
from them (:func:`aer_run`); the line says which. The Hellinger comparison is at aer's shots:
qubus runs them again with one trajectory per shot, so that both count vectors have plain
multinomial shot noise, whose spread :func:`hellinger_spread` resamples; a difference counts as
decided only with at least ``MIN_COMPARED_SHOTS`` aer shots and a spread ≤
``HELLINGER_TOLERANCE``/3, and each row says how many aer shots that would take.
``--runs K`` repeats each circuit's comparison at K seeds ``SEED_STEP`` apart (aer seeds shot
``i`` from ``seed + i``, so nearby seeds share shots) and decides the Hellinger goal on the runs
pooled (:func:`pooled`); the speed goal still on every run.
``--shots-per-trajectory 1`` runs qubus's timed run with exact shot statistics too.
``--aer-method matrix_product_state`` runs aer on its tensor-network state instead (same
trajectories, cheaper shots on low-entanglement circuits: :func:`aer_simulator`); both goals,
speed included, are then against that method. Timings
share two cores with whatever else runs: compare ratios within one run.

``--trajectory-distributions T`` compares the Hellinger fidelities without shot noise instead
(:func:`compare_distributions`): each side's mean of its trajectories' exact output
distributions, readout included, with the spread between trajectories; no speed goal.

:func:`qiskit_circuit` is also the translation the aer reference test uses.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cirq
import numpy as np
from qiskit import QuantumCircuit
from qiskit.synthesis import OneQubitEulerDecomposer
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import ideal_distribution, measurement_keys
from qubus.cli.common import number_in
from qubus.devices import trajectories
from qubus.devices.compile import CompiledCircuit, compile_for_device, op_duration_ns
from qubus.devices.emulation import emulate, emulated_trajectory_distributions, read_out
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.profiles import Device, load_device

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
CIRCUITS = (
    "qasmbench__cat_state_n4.qasm",
    "qasmbench__fredkin_n3.qasm",
    "qasmbench__qaoa_n6.qasm",
    "qasmbench__simon_n6.qasm",
    "qasmbench__hhl_n7.qasm",
)
WIDE = (
    "qasmbench__multiply_n13.qasm",
    "qasmbench__bv_n14.qasm",
    "qasmbench__multiplier_n15.qasm",
    "qasmbench__qec9xz_n17.qasm",
    "qasmbench__qft_n18.qasm",
    "qasmbench__qram_n20.qasm",
    "mqtbench__ghz_20_indep.qasm3",
)
"""The dev circuits of 12 to 20 qubits with measurements, run on ``WIDE_NODE``."""
WIDE_NODE = "ibm_hanoi"
FAKE_BACKENDS = {
    "ibm_nairobi": "FakeNairobiV2",
    "ibm_manila": "FakeManilaV2",
    "ibm_hanoi": "FakeHanoiV2",
}
_EULER = OneQubitEulerDecomposer("ZSXX")
GOAL_SPEEDUP = 3.0
"""aer time / qubus time the issue asks for at least."""
HELLINGER_TOLERANCE = 0.01
"""Largest difference of the two Hellinger fidelities (against the ideal) the issue allows."""


def timing(device: Device, args: argparse.Namespace) -> Device | None:
    """Whose gate durations aer runs with (``--aer-durations``): ``device`` for the profile's,
    None for the fake backend's (:func:`noise_model`)."""
    return device if args.aer_durations == "profile" else None


def fake_backend(node: str):  # noqa: ANN201 (a qiskit BackendV2)
    """qiskit-ibm-runtime's offline fake backend for an IBM node."""
    from qiskit_ibm_runtime import fake_provider

    return getattr(fake_provider, FAKE_BACKENDS[node])()


def qiskit_circuit(
    compiled: CompiledCircuit,
    backend,  # noqa: ANN001
    device: Device | None = None,
) -> QuantumCircuit:
    """The compiled circuit on the backend's physical qubits, with its idle time as delays.

    Terminal measurements only. One-qubit gates become ``rz``/``sx``/``x`` (qiskit's ZSXX
    Euler decomposition, as many pulses as qubus counts); every qubit between its first and
    last operation waits, in each moment, the moment's duration minus its instruction's
    duration, so that aer's gate relaxation plus delay relaxation covers the same time as
    qubus's per-moment relaxation. The instruction's duration is the profile's
    (``op_duration_ns``) with ``device``, as in :func:`noise_model` with ``device``; else the
    backend target's, which differs for a cx run the shorter way (see :func:`noise_model`).
    Bit ``i`` of a qubus bit string is clbit ``i``.
    """
    moments = list(compiled.circuit)
    columns = {}
    measured: dict[str, tuple[int, ...]] = {}
    for op in compiled.circuit.all_operations():
        if cirq.is_measurement(op):
            measured[op.gate.key] = tuple(q.x for q in op.qubits)
    for key, _width in measurement_keys(compiled.circuit):
        for q in measured[key]:
            columns[q] = len(columns)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, moment in enumerate(moments):
        for q in moment.qubits:
            first.setdefault(q.x, index)
            last[q.x] = index
    circuit = QuantumCircuit(backend.num_qubits, len(columns))
    for index, (moment, duration) in enumerate(
        zip(moments, compiled.moment_durations_ns, strict=True)
    ):
        busy: dict[int, float] = {}
        for op in moment:
            qubits = [q.x for q in op.qubits]
            if cirq.is_measurement(op):
                for q in qubits:
                    circuit.measure(q, columns[q])
                continue
            if len(qubits) == 2:
                circuit.cx(*qubits) if op.gate == cirq.CNOT else circuit.cz(*qubits)
                names = ["cx" if op.gate == cirq.CNOT else "cz"]
            else:
                part = _EULER(cirq.unitary(op))
                circuit.compose(part, qubits, inplace=True)
                names = [inst.operation.name for inst in part.data]
            took = (
                op_duration_ns(op, device)
                if device is not None
                else sum(
                    (backend.target[name][tuple(qubits)].duration or 0.0) * 1e9
                    for name in names
                    if name != "rz"
                )
            )
            busy.update(dict.fromkeys(qubits, took))
        for q, start in first.items():
            if start <= index < last[q]:
                idle = duration - busy.get(q, 0.0)
                if idle > 1e-3:
                    circuit.delay(idle * 1e-9, q, unit="s")
    return circuit


def noise_model(backend, device: Device | None = None) -> NoiseModel:  # noqa: ANN001
    """aer's device noise model of the fake backend, from its calibration properties.

    ``NoiseModel.from_backend_properties`` is what ``NoiseModel.from_backend`` does for a
    backend with properties; on a ``BackendV2`` ``from_backend`` reads the target instead,
    which keeps only the mean readout error, so it would differ from the calibration's
    asymmetric ``prob_meas1_prep0``/``prob_meas0_prep1`` that qubus (and the device) use.

    With ``device`` (qubus's profile of the same node), every gate lasts as long as in the
    profile (``gate_lengths``): a cx on an edge the profile's one duration, the longer of the
    calibration's two directions, and a pulse its ``one_qubit_duration_ns``; errors, T1/T2
    and readout stay the calibration's, which are the profile's. The calibration's cx is
    32–64 ns shorter one way on each ``ibm_hanoi`` edge the profile keeps; without ``device``
    aer sizes that gate's depolarizing for the shorter relaxation and :func:`qiskit_circuit`
    makes up the moment with a delay, so each such cx costs the relaxation of that difference
    on both qubits on top of its reported error, which qubus does not model
    (docs/architecture.md, "Why qubus's noisy fidelity sat above aer's").
    """
    if device is None:
        return NoiseModel.from_backend_properties(backend.properties(), dt=backend.dt)
    lengths = [
        ("sx", None, device.one_qubit_duration_ns),
        ("x", None, device.one_qubit_duration_ns),
    ]
    for edge in device.edges:
        lengths += [(edge.gate, [edge.a, edge.b], edge.duration_ns)]
        lengths += [(edge.gate, [edge.b, edge.a], edge.duration_ns)]
    return NoiseModel.from_backend_properties(
        backend.properties(), dt=backend.dt, gate_lengths=lengths
    )


PROBE_SHOTS = 2
"""Shots of aer's first run, which measures its cost per shot (:func:`aer_run`)."""

MIN_COMPARED_SHOTS = 100
"""Fewer aer shots decide nothing about the Hellinger fidelities, whatever their resampled
spread (one shot resamples to itself)."""

BOOTSTRAP_DRAWS = 200
"""Multinomial resamples behind a Hellinger fidelity's shot noise (:func:`hellinger_spread`)."""


AER_METHODS = ("automatic", "statevector", "matrix_product_state")
"""aer's simulation methods ``--aer-method`` offers: those that take this noise model (its
thermal relaxation is Kraus operators, which aer's ``stabilizer`` and ``extended_stabilizer``
methods do not support)."""


def aer_simulator(model: NoiseModel, seed: int, method: str = "automatic") -> AerSimulator:
    """aer as it is compared here: its automatic method, one thread, single precision.

    On the wide circuits with these noise models the automatic method is ``statevector`` (its
    result metadata; too wide for a density matrix) and samples every shot as its own
    trajectory, applying each relaxation error as Kraus operators (result metadata ``noise:
    kraus``); it already drops the device qubits the circuit does not touch (metadata
    ``num_qubits`` 13–21 of 27), so the 27-qubit device is not what makes it slow. One thread,
    as qsim runs in qubus: with aer's default (all cores) a run of one shot of more than 14
    qubits splits every gate across threads, and on this shared, oversubscribed machine that
    was far slower per shot than one thread (16-qubit GHZ of ``emulation_width``, load average
    13: 59 s for one shot on two threads, 6.6 s a shot on one; ``qasmbench__multiplier_n15``:
    353 s for one shot at load 12–15, 5.8 s a shot in a run of four at load 4–6). Single
    precision, as qsim's state. Fusion is aer's default.

    ``method="matrix_product_state"``: aer's tensor-network state (no truncation by default, so
    exact like the state vector), still one trajectory per shot with the same Kraus noise and
    the same random stream: with one seed its counts equal the state vector's
    (``tests/unit/test_aer_reference.py``) where the state vector does not fuse gates (aer
    fuses above 14 qubits, noise included, which draws other random numbers from the same
    distribution). ``automatic`` picks a density matrix for narrow
    registers (8 qubits) and the state vector above. A shot costs with the entanglement
    (bond dimension) instead of 2^width, so low-entanglement circuits get thousands of shots.

    Seeds close together give aer nearly the same shots: ``mqtbench__ghz_20_indep`` at 4,000
    shots with its MPS, seeds 7 and 11 counted 1,472 / 663 and 1,473 / 662 of its two likeliest
    outcomes (shot ``i`` seems seeded from ``seed + i``). Runs meant to be independent take
    ``--seed`` values at least ``--shots`` apart.
    """
    return AerSimulator(
        method=method,
        noise_model=model,
        precision="single",
        max_parallel_threads=1,
        seed_simulator=seed,
    )


def aer_counts(circuit: QuantumCircuit, model: NoiseModel, shots: int, seed: int) -> dict[str, int]:
    """Counts from aer with a noise model, keyed by qubus bit strings."""
    return _aer_timed(circuit, model, shots, seed, "automatic")[0]


def _aer_timed(
    circuit: QuantumCircuit, model: NoiseModel, shots: int, seed: int, method: str
) -> tuple[dict[str, int], float, float]:
    """aer's counts, the run's wall time and aer's own simulation time (its ``time_taken``:
    the wall time less building the noisy circuit in Python and reading the result)."""
    started = time.perf_counter()
    result = aer_simulator(model, seed, method).run(circuit, shots=shots).result()
    wall_s = time.perf_counter() - started
    counts = {bits[::-1]: n for bits, n in result.get_counts().items()}
    return counts, wall_s, float(result.results[0].metadata["time_taken"])


@dataclass(frozen=True)
class AerRun:
    """What :func:`aer_run` measured.

    Attributes:
        counts: aer's counts, of ``shots_run`` shots.
        shots: Shots whose time ``seconds`` is.
        shots_run: Shots aer ran (``shots`` when it fit in the time given).
        measured_s: Wall time of that run.
        seconds: aer's wall time for ``shots`` shots: ``measured_s`` when it ran them all,
            else ``fixed_s + per_shot_s · shots``.
        fixed_s: Wall time of a run less aer's simulation time.
        per_shot_s: aer's simulation time per shot.
    """

    counts: dict[str, int]
    shots: int
    shots_run: int
    measured_s: float
    seconds: float
    fixed_s: float
    per_shot_s: float

    @property
    def extrapolated(self) -> bool:
        """Whether ``seconds`` is extrapolated rather than measured."""
        return self.shots_run < self.shots


def aer_run(
    circuit: QuantumCircuit,
    model: NoiseModel,
    shots: int,
    seed: int,
    seconds: float,
    method: str = "automatic",
) -> AerRun:
    """aer's counts and its wall time for ``shots`` shots, spending about ``seconds`` of
    simulation.

    A first run of ``PROBE_SHOTS`` shots gives aer's simulation time per shot (each shot is
    its own trajectory, so its time is a fixed cost plus a cost per shot); aer then runs again
    with as many shots as that says fit in ``seconds``, at most ``shots``, and again (at least
    twice the shots) while a run simulates for less than half of ``seconds``. If the last run
    has all the shots, its wall time is measured; else aer's time is extrapolated from it as
    its fixed cost (wall time less aer's own simulation time: building the noisy circuit in
    Python, which grows with the circuit) plus its simulation time per shot × ``shots``.
    ``method`` is aer's simulation method (:func:`aer_simulator`).
    """
    run = min(shots, PROBE_SHOTS)
    while True:
        counts, wall_s, simulate_s = _aer_timed(circuit, model, run, seed, method)
        if run >= shots or 2 * simulate_s > seconds:
            break
        run = min(shots, max(2 * run, int(run * seconds / max(simulate_s, 1e-9))))
    fixed_s, per_shot_s = max(0.0, wall_s - simulate_s), simulate_s / run
    total_s = wall_s if run >= shots else fixed_s + per_shot_s * shots
    return AerRun(counts, shots, run, wall_s, total_s, fixed_s, per_shot_s)


def hellinger_spread(counts: dict[str, int], ideal: dict[str, float], seed: int) -> float:
    """The shot noise of ``hellinger_fidelity(counts, ideal)``: its standard deviation over
    ``BOOTSTRAP_DRAWS`` multinomial resamples of the counts. For qubus counts from
    trajectories that serve several shots each this understates the spread (by up to
    √``SHOTS_PER_TRAJECTORY``, ``qubus.devices.trajectories``)."""
    outcomes = list(counts)
    shots = sum(counts.values())
    p = np.array([counts[k] for k in outcomes], float) / shots
    draws = np.random.default_rng(seed).multinomial(shots, p, size=BOOTSTRAP_DRAWS)
    return float(
        np.std([hellinger_fidelity(dict(zip(outcomes, d, strict=True)), ideal) for d in draws])
    )


def best_time(call, repeats: int) -> tuple[object, float]:  # noqa: ANN001
    """The call's last value and its fastest wall time."""
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - started)
    return value, best


def one_trajectory_per_shot(call):  # noqa: ANN001, ANN201
    """``call()`` with qubus running one trajectory per shot (exact shot statistics)."""
    saved = trajectories.SHOTS_PER_TRAJECTORY
    trajectories.SHOTS_PER_TRAJECTORY = 1
    try:
        return call()
    finally:
        trajectories.SHOTS_PER_TRAJECTORY = saved


def compare(
    name: str,
    device,  # noqa: ANN001
    backend,  # noqa: ANN001
    model: NoiseModel,
    args: argparse.Namespace,
    seed: int,
) -> dict:
    """One circuit on both emulators, both seeded from ``seed``: times, and Hellinger
    fidelities at equal shots."""
    logical = parse_qasm((DEV / name).read_text())
    ideal = ideal_distribution(logical)
    compiled = compile_for_device(logical, device)
    ours, ours_s = best_time(lambda: emulate(compiled, device, args.shots, seed=seed), args.repeats)
    circuit = qiskit_circuit(compiled, backend, timing(device, args))
    aer = aer_run(circuit, model, args.shots, seed, args.aer_seconds, args.aer_method)
    # qubus again at aer's shots, one trajectory per shot: its counts then have plain
    # multinomial shot noise, which hellinger_spread measures, and the ratio is measured
    exact, exact_s = best_time(
        lambda: one_trajectory_per_shot(
            lambda: emulate(compiled, device, aer.shots_run, seed=seed + 1)
        ),
        1,
    )
    ours_h = hellinger_fidelity(exact, ideal)
    aer_h = hellinger_fidelity(aer.counts, ideal)
    ours_spread, aer_spread = (hellinger_spread(c, ideal, seed) for c in (exact, aer.counts))
    spread = float(np.hypot(ours_spread, aer_spread))
    return {
        "circuit": name,
        "qubits": len(compiled.physical_qubits),
        "qubus_s": ours_s,
        "aer_s": aer.seconds,
        "aer_extrapolated": aer.extrapolated,
        "speedup": aer.seconds / ours_s,
        "aer_shots_run": aer.shots_run,
        "aer_per_shot_s": aer.per_shot_s,
        "aer_fixed_s": aer.fixed_s,
        "qubus_at_aer_shots_s": exact_s,
        "aer_at_aer_shots_s": aer.measured_s,
        "speedup_at_aer_shots": aer.measured_s / exact_s,
        "qubus_hellinger_all_shots": hellinger_fidelity(ours, ideal),
        "seed": seed,
        "qubus_hellinger": ours_h,
        "qubus_spread": ours_spread,
        "aer_hellinger": aer_h,
        "aer_spread": aer_spread,
        "hellinger_difference": abs(ours_h - aer_h),
        "difference_spread": spread,
        "aer_shots_for_tolerance": (
            math.ceil(aer.shots_run * (spread / (HELLINGER_TOLERANCE / 3)) ** 2)
            if aer.shots_run >= MIN_COMPARED_SHOTS
            else None
        ),
    }


SEED_STEP = 10_000
"""``--runs``: the seeds of a circuit's runs are this far apart, or ``--shots`` if more."""


def pooled(runs: list[dict]) -> dict:
    """A circuit's Hellinger comparison over runs at independent seeds: each side's mean
    fidelity, its spread the runs' shot noise combined (√Σspread² / runs), and the difference;
    with the aer shots of all runs together."""
    means, spreads = {}, {}
    for side in ("qubus", "aer"):
        means[side] = float(np.mean([r[f"{side}_hellinger"] for r in runs]))
        spreads[side] = math.sqrt(sum(r[f"{side}_spread"] ** 2 for r in runs)) / len(runs)
    return {
        "circuit": runs[0]["circuit"],
        "runs": len(runs),
        "seeds": [r["seed"] for r in runs],
        "aer_shots_run": sum(r["aer_shots_run"] for r in runs),
        "qubus_hellinger": means["qubus"],
        "qubus_spread": spreads["qubus"],
        "aer_hellinger": means["aer"],
        "aer_spread": spreads["aer"],
        "hellinger_difference": abs(means["qubus"] - means["aer"]),
        "difference_spread": math.hypot(spreads["qubus"], spreads["aer"]),
    }


MAX_DISTRIBUTION_BITS = 18
"""Widest measured register ``--trajectory-distributions`` compares: aer returns every
trajectory's whole distribution at once, 2^bits numbers each (2 MB a trajectory at 18 bits,
qft_n18's). Where the ideal is spread over many outcomes the fidelity of a mean of T
distributions grows with T (a mean of few is spikier), so both sides must run as many."""


def aer_trajectory_distributions(
    circuit: QuantumCircuit,
    model: NoiseModel,
    trajectories: int,
    seed: int,
    method: str,
    support: np.ndarray,
) -> tuple[np.ndarray, float, float]:
    """Each of aer's noisy trajectories' exact distribution of the measured bits, readout
    errors included, the run's wall time and aer's own simulation time (``_aer_timed``).

    The terminal measurements become ``save_probabilities`` on the same qubits, one vector per
    shot (each shot is its own trajectory), and each bit goes through the readout error aer's
    noise model gives its qubit's ``measure`` (:func:`aer_probabilities`). Rows are indexed as
    qubus's bit strings (the first bit most significant), restricted to the bit strings
    ``support``.
    """
    started = time.perf_counter()
    rows, result = aer_probabilities(
        circuit, model, aer_simulator(model, seed, method), trajectories, pershot=True
    )
    wall_s = time.perf_counter() - started
    return rows[:, support], wall_s, float(result.results[0].metadata["time_taken"])


def aer_distribution(circuit: QuantumCircuit, model: NoiseModel) -> np.ndarray:
    """aer's exact output distribution of the measured bits, readout errors included: its
    density-matrix method in double precision, indexed as qubus's bit strings."""
    simulator = AerSimulator(method="density_matrix", noise_model=model)
    return aer_probabilities(circuit, model, simulator, 1, pershot=False)[0][0]


def aer_probabilities(
    circuit: QuantumCircuit,
    model: NoiseModel,
    simulator: AerSimulator,
    shots: int,
    *,
    pershot: bool,
) -> tuple[np.ndarray, object]:
    """aer's distributions of the measured bits through the model's readout errors, one row
    per shot (``pershot``) or one in all, indexed as qubus's bit strings, and aer's result.

    The terminal measurements of ``circuit`` become ``save_probabilities`` on their qubits.
    """
    column = {
        circuit.find_bit(i.qubits[0]).index: circuit.find_bit(i.clbits[0]).index
        for i in circuit.data
        if i.operation.name == "measure"
    }
    qubits = sorted(column, key=column.get)
    bare = circuit.remove_final_measurements(inplace=False)
    bare.save_probabilities(qubits, pershot=pershot)
    result = simulator.run(bare, shots=shots).result()
    saved = result.data(0)["probabilities"]
    width = len(qubits)
    flips = [model._local_readout_errors[(q,)].probabilities.T for q in qubits]
    rows = [
        read_out(np.asarray(v).reshape((2,) * width).transpose(range(width - 1, -1, -1)), flips)
        for v in (saved if pershot else [saved])
    ]
    return np.array(rows), result


def distribution_fidelity(rows: np.ndarray, ideal: np.ndarray, seed: int) -> tuple[float, float]:
    """Hellinger fidelity of the mean of trajectories' distributions against the ideal (both
    on the ideal's support, all the fidelity depends on), and its spread over
    ``BOOTSTRAP_DRAWS`` resamples of the trajectories."""

    def fidelity(mean: np.ndarray) -> float:
        return float(np.sum(np.sqrt(np.clip(mean, 0, None) * ideal)) ** 2)

    draws = np.random.default_rng(seed).integers(len(rows), size=(BOOTSTRAP_DRAWS, len(rows)))
    spread = np.std([fidelity(rows[d].mean(axis=0)) for d in draws])
    return fidelity(rows.mean(axis=0)), float(spread)


def compare_distributions(
    name: str,
    device,  # noqa: ANN001
    backend,  # noqa: ANN001
    model: NoiseModel,
    args: argparse.Namespace,
) -> dict:
    """One circuit's Hellinger fidelity on both emulators without shot noise: the mean of
    ``--trajectory-distributions`` trajectories' exact output distributions on each side.

    Both sides then estimate the same quantity, the infinite-shot Hellinger fidelity of their
    noisy output against the ideal; what is left is the spread between trajectories, which the
    bootstrap over trajectories measures (for a circuit with one ideal outcome the fidelity is
    that outcome's probability, a plain mean). Far fewer trajectories than shots decide a
    difference where each trajectory's distribution is spread out (a long, noisy circuit).
    aer runs as many of the trajectories as ``PROBE_SHOTS`` trajectories say fit in
    ``--aer-seconds``; qubus runs as many as aer did, or ``--qubus-trajectories`` where the
    ideal has one outcome (the fidelity is then linear in the distribution, so unbiased at
    any number of trajectories, and qubus's cheap trajectories leave aer's spread alone).
    """
    logical = parse_qasm((DEV / name).read_text())
    compiled = compile_for_device(logical, device)
    width = sum(w for _k, w in measurement_keys(compiled.circuit))
    if width > MAX_DISTRIBUTION_BITS:
        raise SystemExit(f"{name}: {width} measured bits, more than {MAX_DISTRIBUTION_BITS}")
    outcomes = ideal_distribution(logical)
    support = np.array([int(bits, 2) for bits in outcomes])
    ideal = np.array(list(outcomes.values()))
    circuit = qiskit_circuit(compiled, backend, timing(device, args))
    _probe, _wall_s, probe_s = aer_trajectory_distributions(
        circuit, model, PROBE_SHOTS, args.seed, args.aer_method, support
    )
    runs = max(
        PROBE_SHOTS,
        min(args.trajectory_distributions, int(args.aer_seconds * PROBE_SHOTS / probe_s)),
    )
    aer_rows, aer_s, _simulate_s = aer_trajectory_distributions(
        circuit, model, runs, args.seed + 2, args.aer_method, support
    )
    ours_runs = runs
    if args.qubus_trajectories is not None:
        if len(ideal) != 1:
            raise SystemExit(f"{name}: --qubus-trajectories needs one ideal outcome")
        ours_runs = args.qubus_trajectories
    started = time.perf_counter()
    ours_rows = np.array(
        [
            row[support]
            for row in emulated_trajectory_distributions(
                compiled, device, ours_runs, seed=args.seed + 3
            )
        ]
    )
    ours_s = time.perf_counter() - started
    ours_h, ours_spread = distribution_fidelity(ours_rows, ideal, args.seed)
    aer_h, aer_spread = distribution_fidelity(aer_rows, ideal, args.seed)
    return {
        "circuit": name,
        "qubits": len(compiled.physical_qubits),
        "trajectories": runs,
        "qubus_trajectories": ours_runs,
        "qubus_s": ours_s,
        "aer_s": aer_s,
        "qubus_hellinger": ours_h,
        "qubus_spread": ours_spread,
        "aer_hellinger": aer_h,
        "aer_spread": aer_spread,
        "hellinger_difference": abs(ours_h - aer_h),
        "difference_spread": float(np.hypot(ours_spread, aer_spread)),
    }


def goal_line(
    rows: list[dict], node: str, shots: int, method: str, compared: list[dict] | None = None
) -> str:
    """The issue's two goals on these rows (aer run with ``method``): speed on every row,
    Hellinger within 0.01 on ``compared`` (the rows themselves by default; ``pooled`` ones)."""
    compared = rows if compared is None else compared
    total = sum(r["aer_s"] for r in rows) / sum(r["qubus_s"] for r in rows)
    slowest = min(rows, key=lambda r: r["speedup"])
    estimated = [r["circuit"] for r in rows if r["aer_extrapolated"]]
    speed = (
        f"emulation ≥ ×{GOAL_SPEEDUP:g} faster than aer ({method}) on {node} at {shots} shots: "
        f"{'MET' if slowest['speedup'] >= GOAL_SPEEDUP else 'NOT MET'} on every circuit "
        f"(total ×{total:.1f}; slowest ×{slowest['speedup']:.1f}, {slowest['circuit']}"
        + (f"; aer's time extrapolated on {len(estimated)} of {len(rows)}" if estimated else "")
        + ")"
    )
    decided = [
        r
        for r in compared
        if r["aer_shots_run"] >= MIN_COMPARED_SHOTS
        and r["difference_spread"] <= HELLINGER_TOLERANCE / 3
    ]
    within = [r for r in decided if r["hellinger_difference"] <= HELLINGER_TOLERANCE]
    open_ = [r for r in compared if r not in decided]
    worst = max(decided or compared, key=lambda r: r["hellinger_difference"])
    hellinger = (
        f"Hellinger within {HELLINGER_TOLERANCE:g} of aer's"
        + (f" (pooled over {compared[0]['runs']} runs)" if compared is not rows else "")
        + ": "
        + ("MET" if decided and len(within) == len(compared) else "NOT MET")
        + f" ({len(within)} within of {len(decided)} with shot noise ≤ "
        f"±{HELLINGER_TOLERANCE / 3:.4f}; largest |Δ| {worst['hellinger_difference']:.4f} ± "
        f"{worst['difference_spread']:.4f}, {worst['circuit']}"
        + (
            f"; {len(open_)} undecided, shot noise too large at the shots aer ran: "
            + ", ".join(f"{r['circuit']} ±{r['difference_spread']:.3f}" for r in open_)
            if open_
            else ""
        )
        + ")"
    )
    return f"{speed}; {hellinger}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=("small", "wide"), default="small")
    parser.add_argument("--shots", type=int, default=4000)
    parser.add_argument("--aer-seconds", type=float, default=600.0)
    parser.add_argument("--only", nargs="+", default=None, help="circuits of the set to run")
    parser.add_argument("--shots-per-trajectory", type=int, default=None)
    parser.add_argument(
        "--aer-method",
        choices=AER_METHODS,
        default="automatic",
        help="aer's simulation method; matrix_product_state makes a shot of a "
        "low-entanglement circuit cheap, so more aer shots fit in --aer-seconds",
    )
    parser.add_argument(
        "--trajectory-distributions",
        type=number_in(int, 1, None),
        default=None,
        metavar="T",
        help="compare Hellinger fidelities from up to T trajectories' exact distributions "
        "instead of shots (compare_distributions); no speed comparison",
    )
    parser.add_argument(
        "--qubus-trajectories",
        type=number_in(int, 1, None),
        default=None,
        help="with --trajectory-distributions on a circuit with one ideal outcome: qubus's "
        "trajectories (default: as many as aer ran)",
    )
    parser.add_argument(
        "--aer-durations",
        choices=("profile", "backend"),
        default="profile",
        help="gate durations of aer's noise model and delays: qubus's profile (one per edge, "
        "as qubus times the circuit) or the fake backend's (a cx shorter one way); "
        "see noise_model",
    )
    parser.add_argument("--node", default="ibm_nairobi", choices=sorted(FAKE_BACKENDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--runs",
        type=number_in(int, 1, None),
        default=1,
        help="runs per circuit at seeds SEED_STEP apart; the Hellinger goal on them pooled",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/emulate_vs_aer.py", *sys.argv[1:]])
    if not args.json:
        print(f"$ {command}")
    if args.shots_per_trajectory is not None:
        trajectories.SHOTS_PER_TRAJECTORY = args.shots_per_trajectory
    node, names = (args.node, CIRCUITS) if args.set == "small" else (WIDE_NODE, WIDE)
    names = [n for n in names if args.only is None or n in args.only]
    device = load_device(node)
    backend = fake_backend(node)
    model = noise_model(backend, timing(device, args))
    if args.trajectory_distributions is not None:
        rows = [compare_distributions(name, device, backend, model, args) for name in names]
        for r in rows:
            print(json.dumps(r) if args.json else format_distribution_row(r), flush=True)
        return
    rows, pools = [], []
    step = max(SEED_STEP, args.shots)
    for name in names:
        runs = []
        for k in range(args.runs):
            runs.append(compare(name, device, backend, model, args, args.seed + k * step))
            if not args.json:
                print(format_row(runs[-1], args.shots), flush=True)
        rows += runs
        if args.runs > 1:
            pools.append(pooled(runs))
            if not args.json:
                print(format_pooled(pools[-1]), flush=True)
    goal = goal_line(rows, node, args.shots, args.aer_method, pools or None)
    if args.json:
        report = {"command": command, "node": node, "shots": args.shots, "aer": args.aer_method}
        print(
            json.dumps(
                {**report, "rows": rows, **({"pooled": pools} if pools else {}), "goal": goal}
            )
        )
    else:
        print(f"Goal ({command}): {goal}")


def format_distribution_row(r: dict) -> str:
    """One printed line of :func:`compare_distributions`'s row, with its verdict."""
    decided = r["difference_spread"] <= HELLINGER_TOLERANCE / 3
    verdict = (
        "undecided"
        if not decided
        else "within"
        if r["hellinger_difference"] <= HELLINGER_TOLERANCE
        else "NOT within"
    )
    return (
        f"{r['circuit']:36} {r['qubits']:2}q  trajectories qubus {r['qubus_trajectories']} "
        f"in {r['qubus_s']:.1f} s, aer {r['trajectories']} in {r['aer_s']:.1f} s; Hellinger qubus "
        f"{r['qubus_hellinger']:.4f} ± {r['qubus_spread']:.4f}, aer {r['aer_hellinger']:.4f} ± "
        f"{r['aer_spread']:.4f}, |Δ| {r['hellinger_difference']:.4f} ± "
        f"{r['difference_spread']:.4f}: {verdict} {HELLINGER_TOLERANCE:g}"
    )


def format_pooled(p: dict) -> str:
    """One printed line of a circuit's :func:`pooled` comparison."""
    return (
        f"{p['circuit']}: pooled over {p['runs']} runs (seeds {p['seeds'][0]}…{p['seeds'][-1]}, "
        f"{p['aer_shots_run']} aer shots): qubus {p['qubus_hellinger']:.4f} ± "
        f"{p['qubus_spread']:.4f}, aer {p['aer_hellinger']:.4f} ± {p['aer_spread']:.4f}, "
        f"|Δ| {p['hellinger_difference']:.4f} ± {p['difference_spread']:.4f}"
    )


def format_row(r: dict, shots: int) -> str:
    """One printed line of :func:`compare`'s row."""
    aer = f"{r['aer_s']:.1f} s" + (" (extrapolated)" if r["aer_extrapolated"] else "")
    line = (
        f"{r['circuit']:36} {r['qubits']:2}q  qubus {r['qubus_s']:.2f} s  aer {aer}  "
        f"aer/qubus ×{r['speedup']:.1f}  aer {r['aer_per_shot_s']:.3f} s/shot + "
        f"{r['aer_fixed_s']:.1f} s"
    )
    at = r["aer_shots_run"]
    line += (
        f"\n    Hellinger: qubus {r['qubus_hellinger_all_shots']:.4f} at {shots} shots;"
        f" at {at} shots (qubus one trajectory per shot) qubus {r['qubus_hellinger']:.4f}"
        f" aer {r['aer_hellinger']:.4f} |Δ| {r['hellinger_difference']:.4f} ±"
        f" {r['difference_spread']:.4f}"
        + (
            f" (±{HELLINGER_TOLERANCE / 3:.4f} needs ~{r['aer_shots_for_tolerance']} shots)"
            if r["aer_shots_for_tolerance"]
            else ""
        )
        + f"\n    both at {at} shots: qubus {r['qubus_at_aer_shots_s']:.2f} s,"
        f" aer {r['aer_at_aer_shots_s']:.2f} s, ×{r['speedup_at_aer_shots']:.1f}"
    )
    return line


if __name__ == "__main__":
    main()
