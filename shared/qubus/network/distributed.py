"""Running a circuit split across QPUs over EPR pairs (telegate, teledata), as one simulation.

Protocol (telegate: Eisert, Jacobs, Papadopoulos and Plenio, PRA 62, 052317 (2000), in the
cat-entangler/disentangler form of Yimsiriwattana and Lomonaco, quant-ph/0402148). The circuit
is first put in :func:`qubus.network.partition.split_form`, so each remote gate ``G`` is
block-diagonal in a control ``c`` on QPU A, its other qubit ``t`` being on QPU B. With an EPR pair
``(e_A, e_B)``:

1. cat-entangler: A applies CNOT(c, e_A) and measures e_A (bit m); B applies X^m to e_B, which
   then holds a copy of c's computational-basis value (``Σ α_x |x⟩_c |x⟩_e_B``);
2. B applies ``G(e_B, t)``, which acts as ``G(c, t)`` because G is block-diagonal in c;
3. cat-disentangler: B applies H to e_B and measures it (bit m'); A applies Z^m' to c.

One EPR pair per remote gate (``ebits`` = ``Partition.ebits``) and two classical bits, each
steering a classically controlled correction (feed-forward). Every QPU with a remote gate keeps
one communication qubit (:data:`COMM` in its program), reset before it receives each new half,
so the simulation holds the data qubits plus one qubit per QPU used, whatever the ebits.

Teledata (``scheme="teledata"``, Bennett et al., PRL 70, 1895 (1993)): when a qubit's next
``TELEDATA_MIN_RUN`` or more remote gates (with only one-qubit gates between them) are all
with one QPU B that has room for two communication qubits, the qubit is teleported into B's
:data:`COMM` (A: CNOT(q, e_A), H(q), measure both; B: X and Z corrections), the run is local
to B, and the qubit is teleported back onto its own data qubit: two pairs instead of one per
gate. While B hosts it, B's protocols use :data:`SPARE_COMM` (so a QPU has at most two
communication qubits); every other remote gate is a telegate.

Execution (:func:`split_program`, :func:`run_split`):

* Each QPU's *program* (its data operations and its side of every protocol, in circuit order)
  is compiled for its device (``qubus.devices.compile.compile_for_device``: layout, routing, native
  gates, schedule) and, unless ``noiseless``, given that device's noise as the single-QPU
  emulator gives it (``qubus.devices.emulation.noisy_moments``: depolarizing completing each gate's
  reported error, relaxation from T1/T2 over the schedule).
* The programs are interleaved into one circuit on ``cirq.GridQubit(part, physical qubit)``:
  an operation runs once the earlier operations on its qubits have, its classical controls are
  measured, and, for a pair's delivery (a reset of the communication qubit, tagged with the
  pair), once both halves are due: then the pair is made (H, CNOT) and one half passes a
  one-qubit ``depolarize(1 − F)``, which gives exactly the Werner state of fidelity F (each of
  X, Y, Z maps the Bell state to an orthogonal one).
* Feed-forward: qsim cannot run classically controlled operations, so by default
  (``feed_forward="coherent"``) each correction is applied as the same gate controlled by the
  measured qubit, which is left untouched from its measurement until its correction has run:
  by the deferred-measurement principle the statistics are exactly those of the classical
  feed-forward. ``feed_forward="classical"`` keeps the classical controls (cirq's simulator),
  and so does the circuit's own classical control (``qubus.circuits.simulate.run`` then falls back
  to cirq's simulator, which is much slower).
* Readout errors flip the circuit's measured bits with the calibration of the qubit each was
  read from (``qubus.devices.emulation.readout_flips``); protocol bits steer their corrections
  unflipped, as bits steering classical control do in the single-QPU emulator.
* ``noiseless`` drops every device's noise, not the links': a perfect link is ``F = 1``.

Not modelled: waiting. Each QPU's qubits relax along its own schedule only; the time a QPU
waits for a pair or for a classical bit from another QPU does not decohere them. Link latency
enters only through the pair fidelity given (``qubus.network.links`` decays a pair with its age).

Prediction (:func:`predict_split`) composes the single-QPU noise budgets of the parts'
compiled programs into one budget over the circuit's bits (which bits each error flips or
scrambles, and each bit's read-out matrix), applied to the ideal distribution by
``qubus.devices.fidelity.budget_fidelity`` (the expected Hellinger fidelity of ``shots`` samples).
Each part's program is walked as the single-QPU budget walks a circuit
(``qubus.devices.prediction.walk_errors``: Pauli errors followed as bit flips through Clifford
parts, scrambling their light cone past non-Cliffords, harmless when they reach the measurements as
Z's or meet an eigenstate; an error before a reset is erased), its protocol bits measured like
any other. A protocol bit that flips steers its correction wrongly, which is a Pauli right
after that correction in the part that applies it, followed by that part's walk in turn:

* cat-entangler bit m: X on e_B after X^m. The copy of c is wrong, so G(e_B, t) acts as if c
  were flipped: for a CNOT-like G the walk carries it on as an X on t (often flipping a few
  bits); the X on e_B ends as a Z at the disentangler's measurement, harmless;
* disentangler bit m': Z on c after Z^m', harmless when it reaches the measurements as Z's;
* a teleport's bits: X (``x``) or Z (``z``) on the moved qubit after its corrections.

The bits such a Pauli flips may be protocol bits of later pairs, resolved the same way (later
pairs first), so an error is followed across parts until it reaches the circuit's bits: it
flips their XOR when every step flips exactly, else it scrambles all it reaches. A pair's
Werner error is X, Y or Z with chance ``(1 − F)/3`` each, put on e_B after X^m (a telegate:
X and Y make the copy wrong, Z and Y flip m') or on the moved qubit after its corrections (a
teleport); outcomes with one effect are one event. Approximations: those of the single-QPU
budget (scrambled bits are taken as uniform, which errs low for errors past non-Cliffords in
broad circuits, more so here as errors travel further; relaxation is Pauli-twirled, which errs
low for outputs near all-zeros), independence of different errors, the received half and a
teleport's landing qubit taken as unknown states after their (classically controlled)
corrections, while a half is tracked as the reset's 0 before them (a Z on it there counts as
harmless, though it would flip m').
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import cirq
import numpy as np

from qubus.bus.messages import NoiseBudget
from qubus.circuits.simulate import (
    bits_from_result,
    counts_from_bits,
    ideal_distribution,
    measurement_keys,
    run,
)
from qubus.devices.compile import CompiledCircuit, compile_for_device
from qubus.devices.cost import SPLIT, CostModel, EmulationCost, trajectories_cost
from qubus.devices.emulation import emulated_runtime_s, noisy_moments, readout_flips
from qubus.devices.fidelity import budget_fidelity
from qubus.devices.prediction import ErrorWalk, noise_budget, walk_errors
from qubus.devices.profiles import Device
from qubus.errors import QubusError
from qubus.network.partition import Partition, control_qubit, split_form

COMM = cirq.NamedQubit("_comm")
"""The communication qubit of a QPU's program; it holds that QPU's half of each EPR pair."""

SPARE_COMM = cirq.NamedQubit("_comm2")
"""A QPU's second communication qubit, used while :data:`COMM` holds a teleported qubit."""

TELEDATA_MIN_RUN = 3
"""Teledata moves a qubit for a run of at least this many remote gates with one QPU: two
pairs (there and back) instead of one per gate."""

Scheme = Literal["telegate", "teledata"]

KEY_PREFIX = "_epr"
"""Measurement keys of the protocol: ``_epr<j>a`` (cat-entangler) and ``_epr<j>b``
(disentangler) of a telegate pair ``j``, ``_epr<j>x`` and ``_epr<j>z`` of a teleport."""


@dataclass(frozen=True)
class SplitRun:
    """The result of a split run.

    Attributes:
        counts: Bit string → count, in ``qubus.circuits.simulate``'s convention for the circuit.
        ebits: EPR pairs consumed.
        nodes: The ids of the devices used (those given a non-empty part), in part order.
        predicted_fidelity: :func:`predict_split` of this run.
        run_s: Its modelled run time (:meth:`SplitProgram.runtime_s`).
    """

    counts: dict[str, int]
    ebits: int
    nodes: list[str]
    predicted_fidelity: float
    run_s: float


@dataclass(frozen=True)
class SplitProgram:
    """A split circuit as the one circuit that simulates it.

    Attributes:
        circuit: Every QPU's compiled program (with its noise unless noiseless) and every EPR
            pair, interleaved, on ``cirq.GridQubit(part, physical qubit)``.
        keys: The original circuit's measurement keys and widths (its bit strings).
        bit_qubits: The qubit each bit of a bit string is read from.
        compiled: Each part's compiled program (None for an unused part).
        pair_fidelities: The Werner fidelity of each EPR pair, in protocol order.
        routes: The (sender, receiver) parts of each EPR pair, in protocol order.
        teleported: Per EPR pair, whether it teleported a qubit (teledata) rather than
            served a telegate.
    """

    circuit: cirq.Circuit
    keys: list[tuple[str, int]]
    bit_qubits: tuple[cirq.GridQubit, ...]
    compiled: tuple[CompiledCircuit | None, ...]
    pair_fidelities: tuple[float, ...]
    routes: tuple[tuple[int, int], ...]
    teleported: tuple[bool, ...]

    @property
    def ebits(self) -> int:
        """EPR pairs the program consumes."""
        return len(self.pair_fidelities)

    def runtime_s(self, devices: Sequence[Device], shots: int) -> float:
        """Modelled run time: the slowest part's compiled program (its data operations and its
        side of the protocol), as ``qubus.devices.emulation.emulated_runtime_s`` times a job on one
        node; the wait for pairs is not in it."""
        return max(
            (
                emulated_runtime_s(compiled, device, shots)
                for compiled, device in zip(self.compiled, devices, strict=True)
                if compiled is not None
            ),
            default=0.0,
        )

    def emulation_cost(
        self, shots: int, *, noiseless: bool = False, model: CostModel = SPLIT
    ) -> EmulationCost:
        """The estimated cost of :func:`run_split`'s simulation of this program on this
        machine, idle (``qubus.devices.cost.trajectories_cost``). qsim runs one trajectory per
        shot, each on every qubit of every part (communication qubits included, no light cone):
        the protocol's mid-circuit measurements and resets, and the noise channels, rule out
        sampling one final state; only a noiseless program without either is simulated once.
        Its operations are counted as for one node: the parts' compiled operations and two per
        pair made (H and CNOT), the noise channels being in the model's constants."""
        ops = list(self.circuit.all_operations())
        dynamic = not self.circuit.are_all_measurements_terminal() or any(
            isinstance(op.gate, cirq.ResetChannel) for op in ops
        )
        operations = 2 * self.ebits + sum(
            len(list(c.circuit.all_operations())) for c in self.compiled if c is not None
        )
        runs = shots if dynamic or not noiseless else 1
        return trajectories_cost(operations, len(self.circuit.all_qubits()), runs, model=model)


@dataclass(frozen=True)
class _Pair:
    """Tag of the reset that readies a communication qubit for EPR pair ``index``."""

    index: int


def usable_qubits(device: Device) -> int:
    """Data qubits a device can give a part: its largest usable connected set less one, which
    is kept as the communication qubit."""
    return max(0, device.max_circuit_qubits - 1)


def split_program(
    circuit: cirq.AbstractCircuit,
    partition: Partition,
    devices: Sequence[Device],
    link_fidelity: Mapping[tuple[str, str], float],
    *,
    noiseless: bool = False,
    feed_forward: Literal["coherent", "classical"] = "coherent",
    scheme: Scheme = "telegate",
) -> SplitProgram:
    """Build the one circuit that runs ``circuit`` split by ``partition`` (module docstring).

    Args:
        circuit: The circuit, on the qubits of ``partition``.
        partition: Part ``i`` runs on ``devices[i]``.
        devices: One device per part.
        link_fidelity: Werner fidelity of the pairs between two nodes, keyed by the sorted
            pair of node ids.
        noiseless: Leave out the devices' noise (the links' stays).
        feed_forward: ``"coherent"`` (for qsim) or ``"classical"`` (classically controlled
            corrections).
        scheme: ``"telegate"`` (every remote gate) or ``"teledata"`` (runs of remote gates
            with one QPU by teleporting the qubit there and back, the rest by telegate).

    Raises:
        QubusError: ``split.no_link`` when two parts that share a gate have no link fidelity;
            ``split.unsupported`` for a measurement spanning QPUs or a clash with the
            protocol's names; ``device.too_small`` (from compilation) when a part and its
            communication qubit do not fit its device.
        ValueError: The devices do not match the parts, or a qubit is in no part.
    """
    if len(devices) != len(partition.parts):
        raise ValueError(f"{len(partition.parts)} parts but {len(devices)} devices")
    home = {q: i for i, part in enumerate(partition.parts) for q in part}
    missing = circuit.all_qubits() - home.keys()
    if missing:
        raise ValueError(f"qubits in no part: {sorted(map(str, missing))}")
    keys = measurement_keys(circuit)
    if {COMM, SPARE_COMM} & home.keys() or any(key.startswith(KEY_PREFIX) for key, _ in keys):
        raise QubusError(
            f"the circuit uses a protocol qubit ({COMM}, {SPARE_COMM}) or a key starting "
            f"{KEY_PREFIX!r}",
            code="split.unsupported",
        )
    hosts = {
        i
        for i, (part, device) in enumerate(zip(partition.parts, devices, strict=True))
        if scheme == "teledata" and len(part) + 2 <= device.max_circuit_qubits
    }
    programs, build = _programs(split_form(circuit), home, len(devices), hosts)
    fidelities = tuple(
        _pair_fidelity(link_fidelity, devices[a].id, devices[b].id) for a, b in build.routes
    )
    compiled = tuple(
        compile_for_device(program, device) if program.all_qubits() else None
        for program, device in zip(programs, devices, strict=True)
    )
    streams = [
        _stream(part, program, device, noiseless=noiseless)
        for part, (program, device) in enumerate(zip(compiled, devices, strict=True))
        if program is not None
    ]

    def make_pair(index: int, a: cirq.Qid, b: cirq.Qid) -> list[cirq.Operation]:
        ops = [cirq.H(a), cirq.CNOT(a, b)]
        if fidelities[index] < 1:
            ops.append(cirq.depolarize(1 - fidelities[index]).on(b))
        return ops

    ops = _interleave(streams, make_pair, coherent=feed_forward == "coherent")
    global_circuit = cirq.Circuit(ops)
    return SplitProgram(
        circuit=global_circuit,
        keys=keys,
        bit_qubits=_bit_qubits(global_circuit, keys),
        compiled=compiled,
        pair_fidelities=fidelities,
        routes=tuple(build.routes),
        teleported=tuple(build.teleported),
    )


def predict_split(
    circuit: cirq.AbstractCircuit,
    partition: Partition,
    devices: Sequence[Device],
    link_fidelity: Mapping[tuple[str, str], float],
    shots: int,
    *,
    scheme: Scheme = "telegate",
    ideal: Mapping[str, float] | None = None,
) -> float:
    """Predicted Hellinger fidelity of :func:`run_split` with ``shots`` shots (module docstring);
    ``ideal`` is the circuit's ideal distribution when the caller has it.

    Raises:
        QubusError, ValueError: As :func:`split_program`.
    """
    program = split_program(circuit, partition, devices, link_fidelity, scheme=scheme)
    return predict_program(program, circuit, devices, shots, ideal=ideal)


def run_split(
    circuit: cirq.AbstractCircuit,
    partition: Partition,
    devices: Sequence[Device],
    link_fidelity: Mapping[tuple[str, str], float],
    shots: int,
    *,
    seed: int,
    noiseless: bool = False,
    scheme: Scheme = "telegate",
    ideal: Mapping[str, float] | None = None,
) -> SplitRun:
    """Run a circuit split across devices as one simulation (module docstring).

    Args:
        circuit: The circuit.
        partition: From ``qubus.network.partition.partition_circuit``; part ``i`` on ``devices[i]``.
        devices: One device per part.
        link_fidelity: Werner fidelity per sorted pair of node ids.
        shots: Repetitions.
        seed: Seeds the simulator and the readout flips.
        noiseless: Leave out the devices' noise; the links' Werner noise stays (pass
            fidelity 1 for perfect links).
        scheme: ``"telegate"`` or ``"teledata"`` (:func:`split_program`).
        ideal: The circuit's ideal distribution, when the caller has it (else computed).

    Returns:
        Counts, ebits, the nodes used and the predicted fidelity of this run.

    Raises:
        QubusError, ValueError: As :func:`split_program`.
    """
    program = split_program(
        circuit, partition, devices, link_fidelity, noiseless=noiseless, scheme=scheme
    )
    nodes = [device.id for device, part in zip(devices, partition.parts, strict=True) if part]
    rng = np.random.default_rng(seed)
    simulator_seed = int(rng.integers(2**31))
    if program.keys:
        bits = bits_from_result(run(program.circuit, shots, seed=simulator_seed), program.keys)
        if not noiseless:
            bits = _readout(bits, program.bit_qubits, devices, rng)
        counts = counts_from_bits(bits)
    else:
        counts = {"": shots}
    return SplitRun(
        counts=counts,
        ebits=program.ebits,
        nodes=nodes,
        predicted_fidelity=predict_program(
            program, circuit, devices, shots, noiseless=noiseless, ideal=ideal
        ),
        run_s=program.runtime_s(devices, shots),
    )


def _pair_fidelity(link_fidelity: Mapping[tuple[str, str], float], a: str, b: str) -> float:
    key = (min(a, b), max(a, b))
    if key not in link_fidelity:
        raise QubusError(f"no link fidelity given between {a} and {b}", code="split.no_link")
    return link_fidelity[key]


def _programs(
    circuit: cirq.Circuit, home: dict[cirq.Qid, int], k: int, hosts: set[int]
) -> tuple[list[cirq.Circuit], _Builder]:
    """Each QPU's program, and the builder that records the EPR pairs.

    Teledata moves a qubit into a part of ``hosts`` for a run of at least
    ``TELEDATA_MIN_RUN`` remote gates with it (:func:`_teledata_move`); every other remote
    gate is a telegate. When every measurement of the circuit is terminal and nothing is
    classically controlled, each part's measurements close its program in a moment after its
    last protocol step, so that compilation keeps them terminal (on the final positions of
    their qubits).
    """
    ops = list(circuit.all_operations())
    build = _Builder(home, k)
    final: list[list[cirq.Operation]] = [[] for _ in range(k)]
    static = circuit.are_all_measurements_terminal() and not any(
        op.classical_controls for op in ops
    )
    returns: dict[int, list[cirq.Qid]] = {}
    for index, op in enumerate(ops):
        if len({build.part(q) for q in op.qubits}) > 1:
            if cirq.is_measurement(op):
                raise QubusError(
                    f"measurement {op} spans QPUs; measure each qubit under its own key",
                    code="split.unsupported",
                )
            move = _teledata_move(ops, index, build, hosts)
            if move is not None:
                qubit, host, last = move
                build.visit(qubit, host)
                returns.setdefault(last, []).append(qubit)
        parts = {build.part(q) for q in op.qubits}
        if len(parts) > 1:
            build.telegate(op)
        else:
            (part,) = parts
            measured = static and cirq.is_measurement(op)
            (final if measured else build.programs)[part].append(build.local(op))
        for qubit in returns.pop(index, []):
            build.go_home(qubit)
    # One moment per operation keeps the order built here, which compilation replays: an
    # earliest-moment circuit would let a part run a later protocol step ahead of an earlier
    # one on other qubits, and routing's SWAPs could then make two parts wait on each other.
    circuits = [
        cirq.Circuit(program, strategy=cirq.InsertStrategy.NEW) for program in build.programs
    ]
    for part_circuit, last in zip(circuits, final, strict=True):
        if last:
            part_circuit.append(cirq.Moment(last))
    return circuits, build


class _Builder:
    """The QPUs' programs, built gate by gate, with where each of the circuit's qubits is.

    A QPU's communication qubit is :data:`COMM`, or :data:`SPARE_COMM` while :data:`COMM`
    holds a teleported qubit (a *guest*; at most one per QPU).
    """

    def __init__(self, home: dict[cirq.Qid, int], k: int) -> None:
        self.home = home
        self.programs: list[list[cirq.Operation]] = [[] for _ in range(k)]
        self.routes: list[tuple[int, int]] = []
        self.teleported: list[bool] = []
        self.where: dict[cirq.Qid, tuple[int, cirq.Qid]] = {q: (p, q) for q, p in home.items()}
        self.guests: dict[int, cirq.Qid] = {}

    def part(self, qubit: cirq.Qid) -> int:
        return self.where[qubit][0]

    def local(self, op: cirq.Operation) -> cirq.Operation:
        """The operation on the qubits that now hold its qubits."""
        return op.transform_qubits(lambda q: self.where[q][1])

    def comm(self, part: int) -> cirq.Qid:
        return SPARE_COMM if part in self.guests else COMM

    def _pair(self, sender: int, receiver: int, *, teleport: bool) -> int:
        self.routes.append((sender, receiver))
        self.teleported.append(teleport)
        return len(self.routes) - 1

    def telegate(self, op: cirq.Operation) -> None:
        """Both sides of the telegate protocol (module docstring) for a remote gate."""
        inner = op.without_classical_controls()
        control = control_qubit(inner)
        (target,) = (q for q in inner.qubits if q != control)
        (sender, c), (receiver, t) = self.where[control], self.where[target]
        e_a, e_b = self.comm(sender), self.comm(receiver)
        index = self._pair(sender, receiver, teleport=False)
        sent, received = f"{KEY_PREFIX}{index}a", f"{KEY_PREFIX}{index}b"
        remote = inner.transform_qubits({control: e_b, target: t})
        self.programs[sender] += [
            _delivery(index, e_a),
            cirq.CNOT(c, e_a),
            cirq.measure(e_a, key=sent),
        ]
        self.programs[receiver] += [
            _delivery(index, e_b),
            cirq.X(e_b).with_classical_controls(sent),
            remote.with_classical_controls(*op.classical_controls),
            cirq.H(e_b),
            cirq.measure(e_b, key=received),
        ]
        self.programs[sender].append(cirq.Z(c).with_classical_controls(received))

    def _teleport(self, qubit: cirq.Qid, receiver: int, landing: cirq.Qid) -> None:
        """Teleport a qubit's state onto ``landing`` (which receives the pair's other half)."""
        sender, source = self.where[qubit]
        half = self.comm(sender)
        index = self._pair(sender, receiver, teleport=True)
        x_key, z_key = f"{KEY_PREFIX}{index}x", f"{KEY_PREFIX}{index}z"
        self.programs[sender] += [
            _delivery(index, half),
            cirq.CNOT(source, half),
            cirq.H(source),
            cirq.measure(source, key=z_key),
            cirq.measure(half, key=x_key),
        ]
        self.programs[receiver] += [
            _delivery(index, landing),
            cirq.X(landing).with_classical_controls(x_key),
            cirq.Z(landing).with_classical_controls(z_key),
        ]
        self.where[qubit] = (receiver, landing)

    def visit(self, qubit: cirq.Qid, host: int) -> None:
        """Teleport a qubit (at home) into the host's communication qubit."""
        self._teleport(qubit, host, COMM)
        self.guests[host] = qubit

    def go_home(self, qubit: cirq.Qid) -> None:
        """Teleport a guest back onto its own data qubit."""
        host = self.part(qubit)
        self._teleport(qubit, self.home[qubit], qubit)
        del self.guests[host]


def _teledata_move(
    ops: list[cirq.Operation], index: int, build: _Builder, hosts: set[int]
) -> tuple[cirq.Qid, int, int] | None:
    """Which qubit of the remote gate ``ops[index]`` to teleport, into which part, and the
    index of the last gate of its run there; None when no run is long enough.

    A run: the qubit's next operations (from this gate) while they are unconditioned
    one-qubit gates or two-qubit gates with qubits now in that part, counting the latter.
    """
    best: tuple[int, cirq.Qid, int, int] | None = None
    for qubit in ops[index].qubits:
        (other,) = (q for q in ops[index].qubits if q != qubit)
        host = build.part(other)
        if host not in hosts or host in build.guests or build.where[qubit][1] != qubit:
            continue
        count, last = 0, index
        for later in range(index, len(ops)):
            op = ops[later]
            if qubit not in op.qubits:
                continue
            if op.classical_controls or cirq.is_measurement(op):
                break
            if len(op.qubits) == 2:
                (partner,) = (q for q in op.qubits if q != qubit)
                if build.part(partner) != host:
                    break
                count, last = count + 1, later
        if count >= TELEDATA_MIN_RUN and (best is None or count > best[0]):
            best = (count, qubit, host, last)
    return None if best is None else best[1:]


def _delivery(index: int, qubit: cirq.Qid) -> cirq.Operation:
    """The reset that readies ``qubit`` to receive its half of EPR pair ``index``."""
    return cirq.reset(qubit).with_tags(_Pair(index))


def _stream(
    part: int, compiled: CompiledCircuit, device: Device, *, noiseless: bool
) -> list[cirq.Operation]:
    """A part's compiled operations (with its noise) in order, on ``GridQubit(part, physical)``."""
    moments = compiled.circuit if noiseless else noisy_moments(compiled, device)
    return [
        op.transform_qubits(lambda q: cirq.GridQubit(part, q.x))
        for moment in moments
        for op in moment
    ]


def _interleave(
    streams: list[list[cirq.Operation]],
    make_pair: Callable[[int, cirq.Qid, cirq.Qid], list[cirq.Operation]],
    *,
    coherent: bool,
) -> list[cirq.Operation]:
    """One operation order for all parts (module docstring): per-qubit order, measured
    controls, pair deliveries met; coherent corrections read their frozen measured qubit."""
    ops = [op for stream in streams for op in stream]
    queues: dict[cirq.Qid, deque[int]] = {}
    deliveries: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        for q in op.qubits:
            queues.setdefault(q, deque()).append(index)
        pair = _pair_of(op)
        if pair is not None:
            deliveries.setdefault(pair, []).append(index)
    measured: set[str] = set()
    frozen: dict[str, cirq.Qid] = {}  # protocol key → the measured qubit holding it
    out: list[cirq.Operation] = []

    def due(index: int) -> bool:
        return all(queues[q] and queues[q][0] == index for q in ops[index].qubits)

    def ready(index: int) -> bool:
        op = ops[index]
        pair = _pair_of(op)
        together = deliveries[pair] if pair is not None else [index]
        held = set(frozen.values())
        return all(
            due(i) and held.isdisjoint(ops[i].qubits) for i in together
        ) and measured.issuperset(map(str, cirq.control_keys(op)))

    def emit(index: int) -> int:
        op = ops[index]
        pair = _pair_of(op)
        if pair is not None:
            first, second = deliveries[pair]
            for i in (first, second):
                queues[ops[i].qubits[0]].popleft()
            out.extend([ops[first], ops[second]])
            out.extend(make_pair(pair, ops[first].qubits[0], ops[second].qubits[0]))
            return 2
        for q in op.qubits:
            queues[q].popleft()
        keys = [str(key) for key in cirq.control_keys(op)]
        if coherent and keys and all(key.startswith(KEY_PREFIX) for key in keys):
            (key,) = keys
            op = op.without_classical_controls().controlled_by(frozen.pop(key))
        out.append(op)
        for key in cirq.measurement_key_names(op):
            measured.add(key)
            if coherent and key.startswith(KEY_PREFIX):
                frozen[key] = op.qubits[0]
        return 1

    remaining = len(ops)
    while remaining:
        fronts = sorted({queue[0] for queue in queues.values() if queue})
        done = 0
        for index in fronts:
            if due(index) and ready(index):
                done += emit(index)
        if not done:
            raise RuntimeError("the split programs wait on each other (a protocol bug)")
        remaining -= done
    return out


def _pair_of(op: cirq.Operation) -> int | None:
    for tag in op.tags:
        if isinstance(tag, _Pair):
            return tag.index
    return None


def _bit_qubits(circuit: cirq.Circuit, keys: list[tuple[str, int]]) -> tuple[cirq.GridQubit, ...]:
    """The qubit behind every bit: the qubits of each key's last measurement, in key order."""
    last: dict[str, tuple[cirq.Qid, ...]] = {}
    for op in circuit.all_operations():
        inner = op.without_classical_controls()
        if cirq.is_measurement(inner):
            last[inner.gate.key] = inner.qubits
    return tuple(q for key, width in keys for q in (*last[key], *[last[key][-1]] * width)[:width])


def _readout(
    bits: np.ndarray,
    bit_qubits: Sequence[cirq.GridQubit],
    devices: Sequence[Device],
    rng: np.random.Generator,
) -> np.ndarray:
    """Each bit through the readout errors of the qubit it was read from."""
    bits = bits.copy()
    for part, device in enumerate(devices):
        columns = [k for k, q in enumerate(bit_qubits) if q.row == part]
        if columns:
            physical = [bit_qubits[k].col for k in columns]
            bits[:, columns] = readout_flips(bits[:, columns], physical, device, rng)
    return bits


def predict_program(
    program: SplitProgram,
    circuit: cirq.AbstractCircuit,
    devices: Sequence[Device],
    shots: int,
    *,
    noiseless: bool = False,
    ideal: Mapping[str, float] | None = None,
) -> float:
    """The prediction of the module docstring for a program already built by
    :func:`split_program` (what :func:`predict_split` computes, without building it again);
    ``ideal`` is the circuit's ideal distribution when the caller has it."""
    width = len(program.bit_qubits)
    model = _ErrorModel(program, devices)
    scrambles: list[tuple[list[int], float]] = []
    flips: list[tuple[list[int], float]] = []

    def add(effect: _Effect, chance: float) -> None:
        exact, mask = effect
        if mask:
            bits = [k for k in range(width) if mask >> k & 1]
            (flips if exact else scrambles).append((bits, chance))

    for index, f in enumerate(program.pair_fidelities):
        if f < 1:  # X, Y and Z exclude each other: those with one effect are one event
            outcomes: dict[_Effect, float] = {}
            for pauli in "XYZ":
                effect = model.werner(index, pauli)
                outcomes[effect] = outcomes.get(effect, 0.0) + (1 - f) / 3
            for effect, chance in outcomes.items():
                add(effect, chance)
    confusion = [(1.0, 0.0, 0.0, 1.0)] * width
    if not noiseless:
        for part, device in enumerate(devices):
            view, walk = model.views[part], model.walks[part]
            if view is None or walk is None:
                continue
            for mask, chance in walk.scrambles.items():
                add(model.expand(part, mask, exact=False), chance)
            for mask, chance in walk.flips.items():
                add(model.expand(part, mask), chance)
            matrices = noise_budget(view, device).confusion
            for k, matrix in enumerate(matrices):
                bit = model.circuit_bit(part, k)
                if bit is not None:
                    confusion[bit] = matrix
    budget = NoiseBudget(scrambles=scrambles, flips=flips, confusion=confusion)
    if ideal is None:
        ideal = ideal_distribution(circuit)
    return budget_fidelity(budget, ideal, shots=shots)


_Effect = tuple[bool, int]
"""What an error does to the circuit's bits (a mask): flips exactly those (True) or scrambles
them."""

_Place = tuple[int, int, int]
"""Where a Pauli is injected: part, moment of its compiled program, physical qubit."""


class _ErrorModel:
    """The errors of a split program as they reach the circuit's bits (module docstring).

    Each part's errors, and the Paulis injected into it, are followed by the single-QPU walk
    (``qubus.devices.prediction.walk_errors``) to that part's bits. A flipped protocol bit is a
    Pauli right after the correction it steers, in the part that applies it: X on the received half
    for the cat-entangler's bit (``a``), Z on the control for the disentangler's (``b``), X or Z
    on the moved qubit for a teleport's (``x``, ``z``); what flipping it does is that Pauli's
    walk, resolved in turn (a flip only reaches bits measured after it, so this ends).
    """

    def __init__(self, program: SplitProgram, devices: Sequence[Device]) -> None:
        self.views = [None if c is None else _budget_view(c) for c in program.compiled]
        offsets: dict[str, int] = {}
        start = 0
        for key, width in program.keys:
            offsets[key] = start
            start += width
        # Each part's bits: (key, the circuit's bit or None for a protocol bit).
        self._bits = [
            [
                (key, None if key.startswith(KEY_PREFIX) else offsets[key] + i)
                for key, width in ([] if view is None else measurement_keys(view.circuit))
                for i in range(width)
            ]
            for view in self.views
        ]
        self._corrections: dict[str, _Place] = {}
        for part, compiled in enumerate(program.compiled):
            if compiled is None:
                continue
            for moment, ops in enumerate(compiled.circuit):
                for op in ops:
                    keys = [str(key) for key in cirq.control_keys(op)]
                    if len(keys) == 1 and keys[0].startswith(KEY_PREFIX):
                        self._corrections[keys[0]] = (part, moment, op.qubits[0].x)
        self._teleported = program.teleported
        wanted = sorted({place for index in range(program.ebits) for place in self._places(index)})
        self.walks: list[ErrorWalk | None] = []
        self._injected: dict[tuple[_Place, str], tuple[int | None, int]] = {}
        for part, view in enumerate(self.views):
            mine = [(place, pauli) for place, pauli in wanted if place[0] == part]
            if view is None:
                self.walks.append(None)
                continue
            walk = walk_errors(view, devices[part], [(m, q, pauli) for (_, m, q), pauli in mine])
            self.walks.append(walk)
            self._injected.update(zip(mine, walk.paulis, strict=True))
        self._resolved: dict[str, _Effect] = {}
        for index in reversed(range(program.ebits)):  # later pairs first: shallow recursion
            for end in "zx" if program.teleported[index] else "ba":
                self.protocol_bit(f"{KEY_PREFIX}{index}{end}")

    def circuit_bit(self, part: int, k: int) -> int | None:
        """The circuit's bit that a part's bit ``k`` is (None for a protocol bit)."""
        return self._bits[part][k][1]

    def _correction(self, key: str) -> _Place:
        if key not in self._corrections:
            raise RuntimeError(f"no correction steered by {key} (a protocol bug)")
        return self._corrections[key]

    def _place(self, index: int) -> _Place:
        """Where pair ``index``'s Werner error lands: after the cat-entangler's correction
        (on the received half), or after a teleport's last correction (on the moved qubit)."""
        if self._teleported[index]:
            return max(self._correction(f"{KEY_PREFIX}{index}{end}") for end in "xz")
        return self._correction(f"{KEY_PREFIX}{index}a")

    def _places(self, index: int) -> list[tuple[_Place, str]]:
        wanted = [(self._place(index), pauli) for pauli in "XYZ"]
        if not self._teleported[index]:
            wanted.append((self._correction(f"{KEY_PREFIX}{index}b"), "Z"))
        return wanted

    def werner(self, index: int, pauli: str) -> _Effect:
        """What a Pauli error on pair ``index`` (on the received half, equivalently on the
        moved qubit) does to the circuit's bits."""
        return self._pauli(self._place(index), pauli)

    def _pauli(self, place: _Place, pauli: str) -> _Effect:
        flipped, scrambled = self._injected[place, pauli]
        if flipped is None:
            return self.expand(place[0], scrambled, exact=False)
        return self.expand(place[0], flipped)

    def protocol_bit(self, key: str) -> _Effect:
        """What flipping a protocol bit does to the circuit's bits."""
        if key not in self._resolved:
            index, end = int(key[len(KEY_PREFIX) : -1]), key[-1]
            place = self._place(index) if end in "xz" else self._correction(key)
            self._resolved[key] = self._pauli(place, "X" if end in "ax" else "Z")
        return self._resolved[key]

    def expand(self, part: int, mask: int, *, exact: bool = True) -> _Effect:
        """A part's bits (a walk's mask) as the circuit's bits: flipped exactly if ``exact``
        and every protocol bit among them flips exactly, else scrambled (all they reach)."""
        flipped = reached = 0
        k = 0
        while mask >> k:
            if mask >> k & 1:
                key, bit = self._bits[part][k]
                is_exact, bits = (True, 1 << bit) if bit is not None else self.protocol_bit(key)
                exact &= is_exact
                flipped ^= bits
                reached |= bits
            k += 1
        return (True, flipped) if exact else (False, reached)


def _budget_view(compiled: CompiledCircuit) -> CompiledCircuit:
    """The part's program with its disentangler corrections (Z^m' on a control) unconditioned.

    The noise budget treats a classically controlled operation conservatively (its qubit's
    state and its errors' flip patterns become unknown). A Pauli correction on the control
    changes neither its flip patterns nor whether it is in a basis state, so the budget is
    computed as if it were always applied; the cat-entangler's X^m stays controlled, which
    rightly leaves the received half (half of a Bell pair) untracked.
    """
    circuit = cirq.Circuit(
        cirq.Moment(
            op.without_classical_controls() if _corrects_control(op) else op for op in moment
        )
        for moment in compiled.circuit
    )
    return replace(compiled, circuit=circuit.freeze(), shape=None)  # not its fill's circuit


def _corrects_control(op: cirq.Operation) -> bool:
    keys = [str(key) for key in cirq.control_keys(op)]
    return bool(keys) and all(k.startswith(KEY_PREFIX) and k.endswith("b") for k in keys)
