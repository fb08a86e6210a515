"""Split placement: whether and how to cut a task's circuit across QPU nodes joined by
entanglement links, weighed against running it on one node.

A split plan puts part ``i`` of the circuit on node ``i`` of a set of 2 to ``MAX_SPLIT``
online nodes that chains of links join (``Topology.path``; the link emulator swaps at the
inner nodes whether or not they run a QPU). ``qubus.network.partition`` cuts the circuit within each
node's usable qubits (``qubus.network.distributed.usable_qubits``: a node keeps one qubit for
communication), minimising the remote two-qubit gates (ebits); each consumes one EPR pair
between its two parts' nodes (telegate). The nodes are ordered by capacity, largest first;
the first leads the run.

**A plan's prediction.**

- fidelity: ``qubus.network.distributed.predict_program`` (``predict_split`` of the program built
  once) with each node pair's expected pair fidelity (``qubus.network.links.expected_pair``; 1 with
  ideal links);
- completion, ``queue_s + epr_latency_s + run_s``: the plan waits for the busiest of its
  nodes (queue depth × mean job time, as fusion counts a node's backlog), then for its EPR
  pairs: every shot consumes fresh ones, one per remote gate, generated one after another
  (shots × the expected latency of one pair on its node pair, per remote gate), then runs as
  long as its slowest part (the part's program, its operations and its side of the protocol,
  compiled for its node: ``qubus.network.distributed.SplitProgram.runtime_s``);
- emulation: the lead node emulates the whole split circuit, one qsim trajectory per shot on
  every part's qubits with the protocol's measurements (``SplitProgram.emulation_cost``), far
  more than the same circuit on one node (``qram_n20`` over quantinuum_h1_1 + ibm_manila at
  4,000 shots is estimated at about 6,300 s of an idle core, alone on quantinuum_h1_1 at 20 s).
  A plan estimated over the node's limits (``qubus.devices.cost.Limits``: the QPU's
  ``QUBUS_QPU_MAX_EMULATION_S`` and worker memory) is not made; the estimate rides in the
  plan (``SplitPlan.emulation_s``) to the lead node, whose time budget comes from it.

Not modelled: the parts' nodes are busy together in a real run; here only the lead node is
occupied, and pair generation does not overlap the gates.

**The choice.** The allocator's objective for one task, J = completion + λ·(1 − fidelity)
(``qubus.scheduling.allocation``), compares plans with each other and with the policy's single-node
decision. A task is split

- when it asks for ``k`` parts (``TaskOptions.split``): the best ``k``-node plan, its qubits
  shared as evenly as the nodes allow so that every node gets a part;
- when no node can take it alone (``alloc.no_fit``): the best plan over every ``k``;
- otherwise when the best two-node plan has a lower J than the decision (more parts only add
  remote gates to a circuit that fits one node, so they are not tried).

Plans predicted below the task's fidelity floor, and plans too large to emulate, are left out
(an automatic split then keeps the single node; a split asked for, or of a task no node holds,
whose every plan is too large is refused with ``split.too_large``, the cheapest plan's
estimate in the message); deadlines are not weighed. A
task pinned to a node or run within a pilot is never split. At most ``MAX_NODE_SETS`` node
sets are tried per ``k``: those whose busiest node frees up first, then the roomiest; an
automatic split only uses sets that need every node (a set where fewer nodes hold the circuit
is the same plan with fewer parts, or a single node the policy has already weighed).

Everything here is pure and synchronous; the allocator runs it in a thread.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cirq

from qubus.bus.limits import MAX_SPLIT
from qubus.bus.messages import NodeStatus, SplitPlan, TaskOptions
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.cost import Limits
from qubus.devices.profiles import Device, device_of
from qubus.errors import CircuitRejected, QubusError
from qubus.network.distributed import predict_program, split_program, usable_qubits
from qubus.network.links import Topology, expected_pair
from qubus.network.partition import (
    BOUND_TIME_LIMIT_S,
    Partition,
    interaction_weights,
    partition_circuit,
)
from qubus.scheduling.allocation import Decision

MAX_NODE_SETS = 6
"""Node sets partitioned and predicted per number of parts."""

NO_FIT = "alloc.no_fit"


class SplitTooLarge(QubusError):
    """A split plan the lead node could not emulate within its limits.

    Attributes:
        emulation_s: The plan's estimate (``SplitPlan.emulation_s``).
    """

    code = "split.too_large"

    def __init__(self, message: str, *, emulation_s: float) -> None:
        super().__init__(message)
        self.emulation_s = emulation_s


@dataclass(frozen=True)
class FleetView:
    """What a split plan is made from: the online nodes and the links between them.

    Attributes:
        devices: Each online node's device as calibrated now.
        queue_s: Each online node's expected wait before new work starts there, s.
        topology: The entanglement links.
    """

    devices: Mapping[str, Device]
    queue_s: Mapping[str, float]
    topology: Topology

    @classmethod
    def from_statuses(cls, statuses: Mapping[str, NodeStatus], topology: Topology) -> FleetView:
        """The view of the nodes' statuses (KV ``qubus_nodes``); the wait is queue depth ×
        mean job time."""
        return cls(
            devices={node: device_of(s) for node, s in statuses.items()},
            queue_s={node: s.backlog_s for node, s in statuses.items()},
            topology=topology,
        )

    def capacity(self, node: str) -> int:
        """Qubits of the circuit ``node`` can hold as one part."""
        return usable_qubits(self.devices[node])

    def groups(self) -> list[list[str]]:
        """The online nodes in groups joined by chains of links (each sorted, two or more)."""
        groups: list[list[str]] = []
        for node in sorted(set(self.devices) & set(self.topology.nodes)):
            group = next((g for g in groups if _joined(self.topology, g[0], node)), None)
            if group is None:
                groups.append([node])
            else:
                group.append(node)
        return [group for group in groups if len(group) > 1]

    def node_sets(self, k: int, qubits: int, *, balanced: bool = False) -> list[tuple[str, ...]]:
        """Up to ``MAX_NODE_SETS`` sets of ``k`` joined nodes that can hold ``qubits``
        together: those whose busiest node frees up first, then the roomiest; each ordered
        by capacity, largest first (the lead).

        Args:
            balanced: The qubits will be shared evenly (``balanced_capacities``), so any set
                of up to ``qubits`` nodes that holds them will do. Otherwise the partitioner
                fills the nodes in turn, and only sets that need every node are kept (those
                whose smallest node's companions cannot hold the qubits alone).
        """
        sets = []
        for group in self.groups():
            for combo in itertools.combinations(group, k):
                capacities = [self.capacity(node) for node in combo]
                needed = balanced or sum(capacities) - min(capacities) < qubits
                if sum(capacities) >= qubits >= k and needed:
                    sets.append(combo)
        sets.sort(key=lambda s: (max(self.queue_s[n] for n in s), -sum(map(self.capacity, s)), s))
        return [
            tuple(sorted(s, key=lambda n: (-self.capacity(n), n))) for s in sets[:MAX_NODE_SETS]
        ]


def _joined(topology: Topology, a: str, b: str) -> bool:
    try:
        topology.path(a, b)
    except QubusError:
        return False
    return True


def split_capacity(fleet: FleetView) -> int:
    """The most qubits a circuit split across joined online nodes can have: the largest sum
    of the ``MAX_SPLIT`` roomiest nodes' capacities in one group (0 without links)."""
    return max(
        (
            sum(sorted(map(fleet.capacity, group), reverse=True)[:MAX_SPLIT])
            for group in fleet.groups()
        ),
        default=0,
    )


def pair_counts(
    circuit: cirq.AbstractCircuit, partition: Partition, nodes: Sequence[str]
) -> dict[tuple[str, str], int]:
    """EPR pairs per pair of nodes (sorted): one per remote two-qubit gate of the circuit's
    split form (``qubus.network.partition.interaction_weights``), on the nodes of the parts it
    joins."""
    where = {q: nodes[i] for i, part in enumerate(partition.parts) for q in part}
    counts: Counter[tuple[str, str]] = Counter()
    for (a, b), weight in interaction_weights(circuit).items():
        x, y = sorted((where[a], where[b]))
        if x != y:
            counts[(x, y)] += weight
    return dict(sorted(counts.items()))


def balanced_capacities(capacities: Sequence[int], qubits: int) -> list[int] | None:
    """Capacities summing to exactly ``qubits``, each at least 1 and at most its node's, as
    even as those allow (a qubit at a time to the emptiest node with room, the first on a
    tie): every part of a partition into them is filled, so a forced split uses every node.
    None when the nodes are more than the qubits or cannot hold them."""
    if len(capacities) > qubits or sum(capacities) < qubits:
        return None
    sizes = [1] * len(capacities)
    for _ in range(qubits - len(capacities)):
        room = [i for i, (n, c) in enumerate(zip(sizes, capacities, strict=True)) if n < c]
        sizes[min(room, key=lambda i: sizes[i])] += 1
    return sizes


def partition_of(circuit: cirq.AbstractCircuit, plan: SplitPlan) -> Partition:
    """The plan's partition of ``circuit``, its qubits found by name.

    Raises:
        QubusError: ``split.invalid`` when a part names a qubit the circuit does not have.
    """
    by_name = {str(q): q for q in circuit.all_qubits()}
    unknown = sorted({name for part in plan.parts for name in part} - set(by_name))
    if unknown:
        raise QubusError(
            f"the plan names qubits the circuit lacks: {unknown}", code="split.invalid"
        )
    return Partition(
        parts=tuple(tuple(by_name[name] for name in part) for part in plan.parts),
        ebits=plan.ebits,
        lower_bound=plan.lower_bound,
        method=plan.method,
    )


def link_fidelities(
    topology: Topology, nodes: Iterable[str], *, ideal: bool
) -> dict[tuple[str, str], tuple[float, float]]:
    """Per pair of ``nodes`` (sorted): the expected fidelity and latency of one delivered pair
    (fidelity 1 with ideal links; the latency is the same)."""
    figures = {}
    for a, b in itertools.combinations(sorted(nodes), 2):
        fidelity, latency = expected_pair(topology, a, b)
        figures[(a, b)] = (1.0 if ideal else fidelity, latency)
    return figures


def make_plan(
    circuit: cirq.AbstractCircuit,
    nodes: Sequence[str],
    fleet: FleetView,
    *,
    shots: int,
    ideal_links: bool = False,
    balanced: bool = False,
    noiseless: bool = False,
    limits: Limits | None = None,
    ideal: Mapping[str, float] | None = None,
    bound_time_s: float = BOUND_TIME_LIMIT_S,
) -> SplitPlan | None:
    """The plan that runs ``circuit`` across ``nodes`` (part ``i`` on ``nodes[i]``), with its
    prediction (module docstring).

    Args:
        balanced: Share the qubits as evenly as the nodes allow (``balanced_capacities``),
            so that every node gets a part; otherwise each node may take up to its capacity.
        noiseless: The task runs without the devices' noise (its emulation's estimate).
        limits: The largest emulation the lead node accepts; None: no limit.
        ideal: The circuit's ideal distribution, when the caller has it.
        bound_time_s: Time limit of the ebits' lower bound (``qubus.network.partition``).

    Returns:
        The plan, or None when the circuit cannot be cut into a non-empty part per node (it
        needs fewer nodes, or more room).

    Raises:
        SplitTooLarge: ``split.too_large`` when the plan's emulation is over ``limits`` (the
            estimate in the message).
        QubusError: ``split.unsupported`` for a circuit telegate cannot run split (an
            operation with no controlled form, a measurement spanning parts:
            ``qubus.network.distributed.split_program``).
    """
    devices = [fleet.devices[node] for node in nodes]
    capacities: list[int] | None = [usable_qubits(d) for d in devices]
    if balanced:
        capacities = balanced_capacities(capacities, len(circuit.all_qubits()))
    if capacities is None or sum(capacities) < len(circuit.all_qubits()):
        return None
    partition = partition_circuit(circuit, capacities, bound_time_s=bound_time_s)
    if not all(partition.parts):
        return None
    pairs = pair_counts(circuit, partition, nodes)
    figures = link_fidelities(fleet.topology, nodes, ideal=ideal_links)
    pair_fidelity = {pair: f for pair, (f, _) in figures.items()}
    program = split_program(circuit, partition, devices, pair_fidelity)
    cost = program.emulation_cost(shots, noiseless=noiseless)
    too_large = None if limits is None else limits.exceeded(cost)
    if too_large is not None:
        raise SplitTooLarge(
            f"the split over {'+'.join(nodes)} is too large to emulate: {too_large}",
            emulation_s=cost.seconds,
        )
    fidelity = predict_program(program, circuit, devices, shots, ideal=ideal)
    ebits = sum(pairs.values())
    link_fidelity = sum(n * figures[pair][0] for pair, n in pairs.items()) / ebits if ebits else 1.0
    epr_latency_s = shots * sum(n * figures[pair][1] for pair, n in pairs.items())
    run_s = program.runtime_s(devices, shots)
    queue_s = max(fleet.queue_s[node] for node in nodes)
    return SplitPlan(
        nodes=list(nodes),
        parts=[[str(q) for q in part] for part in partition.parts],
        pairs=[(a, b, n) for (a, b), n in pairs.items()],
        ebits=partition.ebits,
        lower_bound=partition.lower_bound,
        method=partition.method,
        link_fidelity=min(1.0, link_fidelity),
        epr_latency_s=epr_latency_s,
        run_s=run_s,
        queue_s=queue_s,
        predicted_fidelity=fidelity,
        expected_completion_s=queue_s + epr_latency_s + run_s,
        emulation_s=cost.seconds,
    )


def objective(completion_s: float, fidelity: float, lam: float) -> float:
    """J of one task: completion + λ·(1 − fidelity), in seconds
    (``qubus.scheduling.allocation``)."""
    return completion_s + lam * (1.0 - fidelity)


def plan_objective(plan: SplitPlan, lam: float) -> float:
    """J of a split plan."""
    return objective(plan.expected_completion_s, plan.predicted_fidelity, lam)


def best_plan(
    circuit: cirq.AbstractCircuit,
    fleet: FleetView,
    parts: Iterable[int],
    *,
    shots: int,
    lam: float,
    ideal_links: bool = False,
    fidelity_floor: float | None = None,
    balanced: bool = False,
    noiseless: bool = False,
    limits: Limits | None = None,
    ideal: Mapping[str, float] | None = None,
) -> SplitPlan | None:
    """The plan with the lowest J over ``parts`` nodes (each count tried; ``balanced``,
    ``noiseless``, ``limits`` and ``ideal`` as in ``make_plan``); None if no set of nodes can
    hold the circuit, or none reaches ``fidelity_floor``. The candidates are compared without
    the ebits' lower bound (it does not enter J), which is computed for the winner alone.

    Raises:
        SplitTooLarge: Every plan that could hold the circuit is too large to emulate (the
            cheapest one's estimate in the message).
    """
    if ideal is None:
        ideal = ideal_distribution(circuit)
    qubits = len(circuit.all_qubits())
    plan_on = functools.partial(
        make_plan,
        circuit,
        fleet=fleet,
        shots=shots,
        ideal_links=ideal_links,
        balanced=balanced,
        noiseless=noiseless,
        limits=limits,
        ideal=ideal,
    )
    plans: list[SplitPlan] = []
    too_large: list[SplitTooLarge] = []
    for k in parts:
        for nodes in fleet.node_sets(k, qubits, balanced=balanced):
            try:
                plan = plan_on(nodes, bound_time_s=0.0)
            except SplitTooLarge as exc:
                too_large.append(exc)
                continue
            if plan is not None and (
                fidelity_floor is None or plan.predicted_fidelity >= fidelity_floor
            ):
                plans.append(plan)
    if not plans and too_large:
        raise min(too_large, key=lambda exc: exc.emulation_s)
    best = min(plans, key=lambda p: (plan_objective(p, lam), len(p.nodes)), default=None)
    return None if best is None else plan_on(best.nodes)


def describe(plan: SplitPlan, lam: float) -> str:
    """A plan in one line: nodes, ebits, prediction, completion, J and the emulation's
    estimate."""
    return (
        f"split over {'+'.join(plan.nodes)}: {plan.ebits} ebits, predicted fidelity "
        f"{plan.predicted_fidelity:.3f} (links {plan.link_fidelity:.3f}), completion "
        f"{plan.expected_completion_s:.2f} s (queue {plan.queue_s:.2f} + EPR "
        f"{plan.epr_latency_s:.3f} + run {plan.run_s:.2f}), J {plan_objective(plan, lam):.1f} s, "
        f"emulation about {plan.emulation_s:.3g} s"
    )


@dataclass(frozen=True)
class SplitChoice:
    """A decision to split: the plan, and why (the allocation's ``reason``)."""

    plan: SplitPlan
    reason: str


def choose_split(
    circuit: cirq.AbstractCircuit,
    options: TaskOptions,
    single: Decision | QubusError,
    fleet: FleetView,
    *,
    lam: float,
    limits: Limits | None = None,
    ideal: Mapping[str, float] | None = None,
) -> SplitChoice | None:
    """Whether to split the task rather than take the policy's outcome ``single`` (module
    docstring for the rule).

    Args:
        circuit: The task's circuit.
        options: The task's options (``split``, ``ideal_links``, floor, pin, pilot, shots).
        single: The policy's decision for the task, or why no node can take it alone.
        fleet: The online nodes and links.
        lam: λ of the objective, s per unit of fidelity.
        limits: The largest emulation a lead node accepts (None: no limit).
        ideal: The circuit's ideal distribution (the sandbox's), when the caller has it.

    Returns:
        The split, or None to keep ``single`` (a decision).

    Raises:
        CircuitRejected: ``split.infeasible`` when ``k`` parts were asked for and no ``k``
            joined nodes can hold the circuit; ``single`` itself when it is an error and no
            split can rescue the task (``alloc.no_fit``: the message then says so).
        QubusError: ``split.unsupported`` when the task must be split (asked for, or no node
            holds it) but telegate cannot run the circuit split (``make_plan``);
            ``split.too_large`` (``SplitTooLarge``) when it must be split and every plan is
            too large to emulate.
    """
    forced = options.split
    keep_single = options.node is not None or options.pilot is not None
    if isinstance(single, QubusError) and (keep_single or single.code != NO_FIT):
        raise single
    if keep_single:
        return None
    no_fit = isinstance(single, QubusError)
    try:
        plan = best_plan(
            circuit,
            fleet,
            [forced] if forced else range(2, MAX_SPLIT + 1) if no_fit else [2],
            shots=options.shots,
            lam=lam,
            ideal_links=options.ideal_links,
            fidelity_floor=options.fidelity_floor,
            balanced=forced is not None,
            noiseless=options.noiseless,
            limits=limits,
            ideal=ideal,
        )
    except SplitTooLarge as exc:
        if forced:
            raise
        if isinstance(single, QubusError):
            message = f"{single.message}; {exc.message}"
            raise SplitTooLarge(message, emulation_s=exc.emulation_s) from None
        return None  # too large to emulate split: it stays on its node
    except QubusError:
        if forced or no_fit:
            raise
        return None  # the circuit cannot run split: it stays on its node
    if plan is None:
        if forced or isinstance(single, QubusError):
            raise _unsplittable(circuit, options, single, fleet)
        return None
    text = describe(plan, lam)
    if forced:
        return SplitChoice(plan, f"{forced} parts asked for; {text}")
    if isinstance(single, QubusError):
        return SplitChoice(plan, f"no single node can take the task; {text}")
    single_j = objective(single.expected_completion_s, single.predicted_fidelity, lam)
    if plan_objective(plan, lam) >= single_j:
        return None
    return SplitChoice(
        plan,
        f"{text} beats {single.node} (completion {single.expected_completion_s:.2f} s, "
        f"predicted fidelity {single.predicted_fidelity:.3f}, J {single_j:.1f} s)",
    )


def _unsplittable(
    circuit: cirq.AbstractCircuit,
    options: TaskOptions,
    single: Decision | QubusError,
    fleet: FleetView,
) -> CircuitRejected:
    """Why no split plan can run the task: ``split.infeasible`` when parts were asked for,
    else the single-node ``alloc.no_fit`` extended."""
    floor = options.fidelity_floor
    below = "" if floor is None else f", none predicted at or above the floor {floor:g}"
    qubits = len(circuit.all_qubits())
    if options.split:
        return CircuitRejected(
            f"no {options.split} online nodes joined by links can hold the circuit's {qubits} "
            f"qubits in {options.split} non-empty parts{below}",
            code="split.infeasible",
        )
    message = single.message if isinstance(single, QubusError) else ""
    return CircuitRejected(
        f"{message}; nor can online nodes joined by links take it split (they hold "
        f"{split_capacity(fleet)} qubits together for the circuit's {qubits}{below})",
        code=NO_FIT,
    )
