"""Split placement without NATS: node sets, plans and their prediction, when to split
(``qubus.network.splitplan``), the allocator's split allocation and the logic check's split
limit."""

from __future__ import annotations

from pathlib import Path

import cirq
import msgpack
import pytest

from qubus.bus import codec
from qubus.bus.messages import NodeScore, TaskAllocated, TaskCompleted, TaskOptions, TaskScored
from qubus.circuits import parse_qasm
from qubus.circuits.checks import run_checks
from qubus.cli.main import build_parser
from qubus.cli.tasks import format_record, read_requests
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import SPLIT, Limits, emulation_cost, trajectories_cost
from qubus.devices.profiles import load_device
from qubus.errors import CircuitRejected, QubusError
from qubus.network.distributed import split_program, usable_qubits
from qubus.network.links import Topology, expected_pair
from qubus.network.partition import Partition
from qubus.network.splitplan import (
    FleetView,
    SplitTooLarge,
    balanced_capacities,
    choose_split,
    describe,
    link_fidelities,
    make_plan,
    pair_counts,
    partition_of,
    plan_objective,
    split_capacity,
)
from qubus.scheduling.allocation import Decision
from qubus_services.allocator.main import split_allocation

LAM = 100.0
DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "qasm" / "dev"
RING = Topology.ring(["ibm_nairobi", "ibm_manila", "quantinuum_h1_1", "ionq_aria"])


def fleet(queues: dict[str, float], topology: Topology = RING) -> FleetView:
    """The named nodes online with these waits (s)."""
    return FleetView(
        devices={node: load_device(node) for node in queues},
        queue_s=queues,
        topology=topology,
    )


def ghz(n: int, *, joint: bool = False) -> cirq.Circuit:
    """GHZ on ``n`` qubits, each measured under its own key (as OpenQASM's ``measure q -> c``
    gives), or all under one (``joint``)."""
    q = cirq.LineQubit.range(n)
    measure = (
        [cirq.measure(*q)] if joint else [cirq.measure(x, key=f"c_{i}") for i, x in enumerate(q)]
    )
    return cirq.Circuit(
        [cirq.H(q[0]), *(cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)), *measure]
    )


def decision(node: str, completion_s: float, fidelity: float) -> Decision:
    return Decision(
        task_id="u.t1",
        node=node,
        policy="hyperscore",
        reason="best",
        ranking=[(node, 50.0)],
        expected_completion_s=completion_s,
        predicted_fidelity=fidelity,
    )


NO_FIT = CircuitRejected("no QPU node can run this task (...)", code="alloc.no_fit")
SMALL = {"ibm_nairobi": 0.0, "ibm_manila": 0.0}


def test_only_nodes_joined_by_links_are_grouped_and_sets_lead_with_the_roomiest():
    view = fleet({**SMALL, "ionq_aria": 0.0, "ibm_perth": 0.0})  # perth ends no link
    assert view.groups() == [["ibm_manila", "ibm_nairobi", "ionq_aria"]]
    sets = view.node_sets(2, qubits=8)
    assert ("ibm_nairobi", "ibm_manila") in sets  # 6 + 4 usable qubits hold 8
    assert all(view.capacity(s[0]) >= view.capacity(s[1]) for s in sets)
    assert view.node_sets(2, qubits=100) == []


def test_nodes_in_separate_link_groups_are_not_combined():
    line = Topology(links=[*RING.links[:1]])  # ibm_manila–ibm_nairobi only
    view = fleet({**SMALL, "ionq_aria": 0.0}, topology=line)
    assert view.groups() == [["ibm_manila", "ibm_nairobi"]]
    assert split_capacity(view) == sum(usable_qubits(load_device(n)) for n in SMALL)


def test_pair_counts_count_each_remote_two_qubit_gate_on_its_nodes():
    q = cirq.LineQubit.range(4)
    circuit = cirq.Circuit(
        cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[2]), cirq.CZ(q[2], q[3]), cirq.measure(*q)
    )
    partition = Partition(parts=((q[0], q[1]), (q[2], q[3])), ebits=1, lower_bound=1, method="kl")
    assert pair_counts(circuit, partition, ["b_node", "a_node"]) == {("a_node", "b_node"): 1}


def test_a_plan_adds_up_its_prediction_and_round_trips_its_partition():
    circuit = ghz(9)
    view = fleet({"ibm_nairobi": 3.0, "ibm_manila": 1.0})
    plan = make_plan(circuit, ("ibm_nairobi", "ibm_manila"), view, shots=1000)
    assert plan is not None
    assert sorted(n for part in plan.parts for n in part) == sorted(map(str, circuit.all_qubits()))
    assert plan.ebits >= 1 and sum(n for _, _, n in plan.pairs) == plan.ebits
    fidelity, latency = expected_pair(RING, "ibm_manila", "ibm_nairobi")
    assert plan.link_fidelity == pytest.approx(fidelity)
    assert plan.epr_latency_s == pytest.approx(1000 * plan.ebits * latency)  # fresh per shot
    assert plan.queue_s == 3.0 and plan.run_s > 0
    assert plan.expected_completion_s == pytest.approx(3.0 + plan.epr_latency_s + plan.run_s)
    assert 0 < plan.predicted_fidelity < 1
    partition = partition_of(circuit, plan)
    assert [[str(q) for q in part] for part in partition.parts] == plan.parts


def test_ideal_links_predict_perfect_pairs_and_no_worse_fidelity():
    circuit, nodes, view = ghz(9), ("ibm_nairobi", "ibm_manila"), fleet(SMALL)
    noisy = make_plan(circuit, nodes, view, shots=1000)
    ideal = make_plan(circuit, nodes, view, shots=1000, ideal_links=True)
    assert noisy is not None and ideal is not None
    assert ideal.link_fidelity == 1.0 and ideal.epr_latency_s == noisy.epr_latency_s
    assert ideal.predicted_fidelity >= noisy.predicted_fidelity


def test_a_circuit_no_node_holds_is_split():
    choice = choose_split(ghz(9), TaskOptions(shots=500), NO_FIT, fleet(SMALL), lam=LAM)
    assert choice is not None
    assert choice.plan.nodes == ["ibm_nairobi", "ibm_manila"]
    assert "no single node" in choice.reason and "ebits" in choice.reason


def test_a_circuit_too_wide_even_split_keeps_its_rejection_and_says_why():
    with pytest.raises(CircuitRejected) as info:
        choose_split(ghz(12), TaskOptions(shots=500), NO_FIT, fleet(SMALL), lam=LAM)
    assert info.value.code == "alloc.no_fit"
    assert "no QPU node" in info.value.message and "hold 10 qubits" in info.value.message


def test_a_forced_split_uses_that_many_nodes_even_when_one_would_do():
    options = TaskOptions(shots=500, split=2)
    choice = choose_split(
        ghz(4), options, decision("ibm_nairobi", 1.0, 0.99), fleet(SMALL), lam=LAM
    )
    assert choice is not None and len(choice.plan.nodes) == 2
    assert all(choice.plan.parts) and "2 parts asked for" in choice.reason


def test_a_forced_split_shares_the_qubits_evenly_so_every_node_gets_a_part():
    assert balanced_capacities([6, 4, 19], 7) == [3, 2, 2]
    assert balanced_capacities([6, 1, 19], 9) == [4, 1, 4]
    assert balanced_capacities([6, 4], 1) is None and balanced_capacities([2, 2], 5) is None
    view = fleet({**SMALL, "quantinuum_h1_1": 0.0})
    choice = choose_split(ghz(6), TaskOptions(shots=200, split=3), NO_FIT, view, lam=LAM)
    assert choice is not None and [len(part) for part in choice.plan.parts] == [2, 2, 2]


def test_a_forced_split_with_too_few_linked_nodes_is_infeasible():
    options = TaskOptions(shots=500, split=3)
    with pytest.raises(CircuitRejected) as info:
        choose_split(ghz(4), options, decision("ibm_nairobi", 1.0, 0.9), fleet(SMALL), lam=LAM)
    assert info.value.code == "split.infeasible"


def test_a_good_single_node_is_kept_and_a_long_wait_is_beaten_by_a_split():
    # 8 qubits: only a large node holds them alone; Nairobi and Manila hold them together.
    circuit, options, view = ghz(8), TaskOptions(shots=500), fleet(SMALL)
    assert choose_split(circuit, options, decision("ionq_aria", 1.0, 0.95), view, lam=LAM) is None
    choice = choose_split(circuit, options, decision("ionq_aria", 5000.0, 0.95), view, lam=LAM)
    assert choice is not None and "beats ionq_aria" in choice.reason
    assert plan_objective(choice.plan, LAM) < 5000.0


def test_nodes_that_would_leave_one_idle_make_no_automatic_plan():
    # Nairobi holds 5 qubits alone: the policy already weighed running there.
    late = decision("ionq_aria", 5000.0, 0.95)
    assert choose_split(ghz(5), TaskOptions(shots=500), late, fleet(SMALL), lam=LAM) is None


def test_pinned_tasks_and_other_errors_are_never_split():
    pinned = TaskOptions(shots=500, node="ibm_nairobi")
    late = decision("ionq_aria", 5000.0, 0.5)
    assert choose_split(ghz(5), pinned, late, fleet(SMALL), lam=LAM) is None
    other = CircuitRejected("bad candidates", code="alloc.duplicate_node")
    with pytest.raises(CircuitRejected) as info:
        choose_split(ghz(9), TaskOptions(shots=500), other, fleet(SMALL), lam=LAM)
    assert info.value is other


def test_a_circuit_telegate_cannot_split_is_rejected_only_when_it_must_be_split():
    circuit, options, view = ghz(9, joint=True), TaskOptions(shots=500), fleet(SMALL)
    with pytest.raises(QubusError) as info:
        choose_split(circuit, options, NO_FIT, view, lam=LAM)
    assert info.value.code == "split.unsupported"
    late = decision("ionq_aria", 5000.0, 0.5)
    assert choose_split(ghz(5, joint=True), options, late, view, lam=LAM) is None


def test_a_fidelity_floor_no_plan_reaches_rejects_the_task():
    options = TaskOptions(shots=500, fidelity_floor=0.999)
    with pytest.raises(CircuitRejected) as info:
        choose_split(ghz(9), options, NO_FIT, fleet(SMALL), lam=LAM)
    assert "floor 0.999" in info.value.message


def test_the_split_allocation_goes_to_the_lead_node_and_decodes_with_its_plan():
    options = TaskOptions(shots=500, split=2, ideal_links=True)
    single = decision("ionq_aria", 1.0, 0.9)
    choice = choose_split(ghz(4), options, single, fleet(SMALL), lam=LAM)
    assert choice is not None
    scored = TaskScored(
        task_id="u.t1",
        circuit="{}",
        options=options,
        ideal={"0000": 0.5, "1111": 0.5},
        scores=[NodeScore(node="ibm_nairobi", eligible=True, hyperscore=42.0)],
    )
    event = split_allocation(scored, choice, single, policy="hyperscore", deadline_s=None)
    assert event.subject() == "qubus.task.u.t1.allocated.ibm_nairobi"
    assert [node for node, _ in event.ranking] == ["ibm_nairobi", "ibm_manila", "ionq_aria"]
    assert event.hyperscore == 42.0 and event.predicted_fidelity == choice.plan.predicted_fidelity
    assert codec.decode(codec.encode(event), TaskAllocated) == event


def test_events_stored_before_split_placement_decode_with_its_defaults():
    old = {
        "task_id": "u.t1",
        "node": "ibm_nairobi",
        "counts": {"0": 1},
        "shots": 1,
        "seed": 1,
        "predicted_fidelity": 1.0,
        "measured_fidelity": 1.0,
        "emulated_s": 1.0,
        "calibration_revision": "r",
    }
    decoded = codec.decode(msgpack.packb(old), TaskCompleted)
    assert decoded.ebits == 0 and decoded.nodes == []
    assert TaskOptions.model_validate({"shots": 5}).split is None


def test_the_qubit_limit_passes_a_circuit_that_fits_only_split():
    circuit = ghz(9)
    assert not run_checks(circuit, fleet_max_qubits=7).passed
    report = run_checks(circuit, fleet_max_qubits=7, split_max_qubits=10)
    assert report.passed
    failed = run_checks(ghz(12), fleet_max_qubits=7, split_max_qubits=10).failures
    assert [r.code for r in failed] == ["L008"] and "hold 10 together" in failed[0].message


@pytest.mark.parametrize("command", ["run", "submit"])
def test_split_and_ideal_links_options_reach_every_request(command: str) -> None:
    args = build_parser().parse_args([command, "a.qasm", "--split", "3", "--ideal-links"])
    assert (args.split, args.ideal_links) == (3, True)
    args = build_parser().parse_args([command, "a.qasm", "--split", "2", "--node", "ibm_nairobi"])
    with pytest.raises(QubusError) as info:
        read_requests(args)
    assert info.value.code == "options.invalid"


def test_a_split_result_shows_its_nodes_and_ebits() -> None:
    record = {
        "source": "ghz.qasm",
        "task_id": "u.t1",
        "status": "done",
        "counts": {"00": 3},
        "ideal_counts": {"00": 3},
        "nodes": ["ibm_nairobi", "ibm_manila"],
        "ebits": 2,
        "predicted_fidelity": 0.9,
        "measured_fidelity": 0.95,
        "hyperscore": 0.0,
    }
    assert "ibm_nairobi, ibm_manila   (split, 2 ebits)" in format_record(record)


def test_a_split_run_is_priced_as_one_trajectory_per_shot_on_every_part_and_its_pairs():
    circuit, nodes, view = ghz(9), ("ibm_nairobi", "ibm_manila"), fleet(SMALL)
    plan = make_plan(circuit, nodes, view, shots=1000)
    assert plan is not None
    devices = [view.devices[node] for node in nodes]
    fidelity = {pair: f for pair, (f, _) in link_fidelities(RING, nodes, ideal=False).items()}
    program = split_program(circuit, partition_of(circuit, plan), devices, fidelity)
    cost = program.emulation_cost(1000)
    compiled_ops = sum(len(list(c.circuit.all_operations())) for c in program.compiled if c)
    g, width = compiled_ops + 2 * plan.ebits, 9 + 2  # the data qubits and a comm qubit a node
    assert (cost.method, cost.width, cost.operations, cost.trajectories) == (
        "trajectories",
        width,
        g,
        1000,
    )
    assert cost.seconds == pytest.approx(
        SPLIT.translate_per_op * g
        + 1000
        * (SPLIT.trajectory_per_op * g + 2**width * (SPLIT.amplitude + SPLIT.amplitude_per_op * g))
    )
    assert plan.emulation_s == pytest.approx(cost.seconds)
    # the noise channels are in the circuit, not in the count (the constants carry them)
    assert len(list(program.circuit.all_operations())) > 2 * g
    assert f"emulation about {plan.emulation_s:.3g} s" in describe(plan, LAM)


def test_limits_refuse_an_emulation_over_its_time_or_memory_and_say_the_estimate():
    cost = trajectories_cost(100, 20, 4000)
    assert cost.memory_mb == pytest.approx(1500 + 32)  # 2^20 amplitudes × 32 bytes
    assert Limits(max_s=cost.seconds * 1.01, memory_mb=4096).exceeded(cost) is None
    over_time = Limits(max_s=cost.seconds / 2, memory_mb=4096).exceeded(cost)
    assert over_time is not None and cost.describe() in over_time
    assert "QUBUS_QPU_MAX_EMULATION_S" in over_time
    over_memory = Limits(max_s=1e9, memory_mb=1000).exceeded(cost)
    assert over_memory is not None and "over its memory of 1000 MB" in over_memory


def test_a_split_too_large_to_emulate_is_not_chosen_automatically():
    circuit, options, view = ghz(8), TaskOptions(shots=500), fleet(SMALL)
    late = decision("ionq_aria", 5000.0, 0.95)
    choice = choose_split(circuit, options, late, view, lam=LAM, limits=Limits(600.0, 4096))
    assert choice is not None and choice.plan.emulation_s < 600.0
    limits = Limits(max_s=choice.plan.emulation_s / 2, memory_mb=4096)
    assert choose_split(circuit, options, late, view, lam=LAM, limits=limits) is None


def test_a_split_that_must_be_made_but_is_too_large_is_refused_with_its_estimate():
    view, nodes = fleet(SMALL), ("ibm_nairobi", "ibm_manila")
    plan = make_plan(ghz(9), nodes, view, shots=500, balanced=True)  # as --split 2 plans
    unbalanced = make_plan(ghz(9), nodes, view, shots=500)  # as a task no node holds
    assert plan is not None and unbalanced is not None
    limits = Limits(max_s=min(plan.emulation_s, unbalanced.emulation_s) / 2, memory_mb=4096)
    forced = TaskOptions(shots=500, split=2)
    with pytest.raises(SplitTooLarge) as info:
        choose_split(ghz(9), forced, NO_FIT, view, lam=LAM, limits=limits)
    assert info.value.code == "split.too_large" and info.value.outcome == "rejected"
    assert info.value.emulation_s == pytest.approx(plan.emulation_s)
    assert f"about {plan.emulation_s:.3g} s" in info.value.message
    assert f"over its limit of {limits.max_s:g} s" in info.value.message
    with pytest.raises(SplitTooLarge) as info:
        choose_split(ghz(9), TaskOptions(shots=500), NO_FIT, view, lam=LAM, limits=limits)
    assert info.value.emulation_s == pytest.approx(unbalanced.emulation_s)
    assert info.value.message.startswith("no QPU node can run this task")
    assert "too large to emulate" in info.value.message


def test_qram_n20_split_over_h1_and_manila_is_estimated_over_the_default_limit():
    """The dev-set case that ran past 850 s split, and in 11.9 CPU s alone on H1-1."""
    circuit = parse_qasm((DEV / "qasmbench__qram_n20.qasm").read_text())
    nodes = ("quantinuum_h1_1", "ibm_manila")
    view = fleet(dict.fromkeys(nodes, 0.0))
    single = emulation_cost(compile_for_device(circuit, view.devices[nodes[0]]), 4000)
    with pytest.raises(SplitTooLarge) as info:
        make_plan(
            circuit,
            nodes,
            view,
            shots=4000,
            balanced=True,
            limits=Limits(600.0, 4096),
            bound_time_s=0.0,
        )
    assert info.value.emulation_s > 5 * 600.0 and single.seconds < 600.0 / 10
    assert "of 22 qubits" in info.value.message and "× 4000 trajectories" in info.value.message
