"""The operator's commands on scoring: ``qubus weights``, ``qubus feedback``, ``qubus pilot``.

Each reads or writes the KV buckets of the running stack (``qubus_weights``, ``qubus_pilots``)
directly; ``qubus.cli.main`` adds the parsers and runs the handlers with a connected client.
``weights tune`` tunes on the scheduling benchmark's workload or on the stack's own completed
tasks, replayed (``qubus.scheduling.benchtune``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qubus.cli.common import UsageError, parse_since, read_task_events, task_id
from qubus.errors import QubusError

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from qubus.client.aio import Client
    from qubus.scheduling.benchtune import BenchTuning
    from qubus.scheduling.pilots import PilotDescription
    from qubus.scheduling.weights import WeightsRecord

Handler = Callable[["Client", argparse.Namespace], Awaitable[int]]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``weights``, ``feedback`` and ``pilot`` to the ``qubus`` subcommands."""
    weights = sub.add_parser(
        "weights",
        help="show or change the score weights (KV qubus_weights, by revision)",
        description="Show the hyper-score weights fusion scores with, and their revisions, or "
        "make a new revision: set values, pin weights (tuning and feedback never change a "
        "pinned weight) or unpin them. NAME is one of the weights `qubus weights show` lists.",
    )
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="current weights, revision, source and history")
    show.add_argument("--json", action="store_true", help="print JSON")
    set_ = actions.add_parser("set", help="set weights: a new revision (source `set`)")
    set_.add_argument("values", nargs="+", metavar="NAME=VALUE")
    for verb, text in (("pin", "never tune or nudge"), ("unpin", "let tuning and feedback change")):
        p = actions.add_parser(verb, help=f"{text} these weights: a new revision")
        p.add_argument("names", nargs="+", metavar="NAME")
    add_tune_parser(actions)

    feedback = sub.add_parser(
        "feedback",
        help="rate a task's placement 1-5; nudges the weights of the terms that drove it",
        description="Rate the placement of task ID from 1 (bad) to 5 (good). The weights of the "
        "terms that drove the decision move by their Shapley share of the chosen node's score "
        "(a small step, renormalised, pinned weights untouched): a new weights revision unless "
        "the rating is 3. A task is rated once, within QUBUS_TRACE_TTL_S of its scoring (1 day "
        "by default: its scores are then gone, feedback.expired).",
    )
    feedback.add_argument("task_id", metavar="ID", type=task_id)
    feedback.add_argument("--rating", type=int, choices=range(1, 6), required=True)
    feedback.add_argument("--json", action="store_true", help="print JSON")

    pilot = sub.add_parser(
        "pilot",
        help="create, list or delete pilots: named sets of QPU nodes with constraints",
        description="A pilot names QPU nodes and optional constraints; a task submitted with "
        "--pilot NAME runs only on a node of the pilot that meets them.",
    )
    pilot_actions = pilot.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = pilot_actions.add_parser("create", help="create a pilot")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--nodes", required=True, help="comma-separated QPU node ids")
    create.add_argument("--min-fidelity", type=float, help="least predicted fidelity (0-1)")
    create.add_argument("--max-queue", type=int, help="largest queue depth of a node")
    create.add_argument("--max-qubits", type=int, help="widest circuit the pilot takes")
    create.add_argument(
        "--prefer",
        choices=["fidelity", "balanced", "time"],
        help="the trade-off of the pilot's tasks that set none (submit --prefer)",
    )
    listing = pilot_actions.add_parser("list", help="list the pilots")
    listing.add_argument("--json", action="store_true", help="print JSON")
    delete = pilot_actions.add_parser(
        "delete", help="delete a pilot (tasks naming it afterwards are rejected)"
    )
    delete.add_argument("name", metavar="NAME")


def add_tune_parser(actions: argparse._SubParsersAction) -> None:
    """``weights tune --from-bench | --from-outcomes``."""
    tune = actions.add_parser(
        "tune",
        help="tune the unpinned weights by Bayesian optimisation on replayed outcomes",
        description="Maximise -(mean completion time + 100 s x (1 - mean measured fidelity)) "
        "of a workload replayed through the scheduling simulator (qubus bench schedule) under "
        "the hyperscore policy with candidate weights, by a Gaussian process with expected "
        "improvement (qubus.scheduling.tuning), starting from the current weights and leaving "
        "pinned ones "
        "alone; then compare the start and tuned weights on held-out tasks. --from-bench "
        "replays the benchmark's workload (held out: another seed); --from-outcomes replays "
        "the tasks this stack completed (their circuits, arrival times and nodes, with their "
        "measured fidelities; other nodes' fidelities from cached emulations; held out: the "
        "latest third). With --apply, store the tuned weights as a new revision (source "
        "`tuned`) if they do better on the held-out tasks.",
    )
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-bench", action="store_true", help="replay the scheduling benchmark's workload"
    )
    source.add_argument(
        "--from-outcomes", action="store_true", help="replay the tasks this stack completed"
    )
    tune.add_argument("--since", metavar="DURATION", help="with --from-outcomes: e.g. 2h, 3d")
    tune.add_argument("--budget", type=int, default=20, help="evaluations (default 20)")
    tune.add_argument("--seed", type=int, default=1, help="tuning workload seed (default 1)")
    tune.add_argument("--holdout-seed", type=int, default=2, help="held-out seed (default 2)")
    tune.add_argument("--tasks", type=int, default=48, help="tasks per workload (default 48)")
    tune.add_argument("--qpus", type=int, default=8, help="fleet size, 1-32 (default 8)")
    tune.add_argument("--arrivals", choices=["poisson", "bursty"], default="poisson")
    tune.add_argument(
        "--no-background", action="store_true", help="no background queues on the nodes"
    )
    tune.add_argument("--apply", action="store_true", help="store the tuned weights if better")
    tune.add_argument("--json", action="store_true", help="print JSON")


async def _bucket(client: Client, name: str) -> KeyValue:
    """The stack's bucket ``name``.

    Raises:
        QubusError: ``stack.unavailable`` if it does not exist (no service has started).
    """
    import nats.js.errors

    try:
        return await client.bus.kv(name)
    except nats.js.errors.BucketNotFoundError:
        raise QubusError(
            f"KV bucket {name} does not exist: has a qubus stack run on this server?",
            code="stack.unavailable",
        ) from None


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else "-"


def record_json(record: WeightsRecord, revision: int) -> dict[str, Any]:
    """A weights revision as ``qubus weights show --json`` prints it."""
    return {"revision": revision, **record.model_dump(mode="json")}


def format_weights(record: WeightsRecord, revision: int, history: list[dict[str, Any]]) -> str:
    """``qubus weights show``: the weights (pinned ones marked), then every kept revision."""
    stored = f"revision {revision}" if revision else "built-in defaults (none stored)"
    lines = [f"weights {stored} ({record.source}, {_stamp(record.updated_at)}): {record.note}"]
    for name, value in record.weights.model_dump().items():
        lines.append(f"  {name:<11} {value:>9.4f}" + ("  pinned" if name in record.pinned else ""))
    if history:
        lines.append("history (oldest first)")
        lines += [
            f"  rev {h['revision']:>4}  {h['source']:<8} {_stamp(h['updated_at'])}  {h['note']}"
            for h in history
        ]
    return "\n".join(lines)


async def _weights(client: Client, args: argparse.Namespace) -> int:
    from qubus.bus.connection import BUCKET_WEIGHTS
    from qubus.scheduling.weights import (  # numpy (AHP): imported only for these commands
        change_weights,
        current_weights,
        parse_assignments,
        weights_history,
        with_pins,
        with_values,
    )

    kv = await _bucket(client, BUCKET_WEIGHTS)
    if args.action == "show":
        record, revision = await current_weights(kv)
        history = [record_json(r, rev) for r, rev in await weights_history(client.bus)]
        if args.json:
            print(json.dumps({**record_json(record, revision), "history": history}))
        else:
            print(format_weights(record, revision, history))
        return 0
    if args.action == "tune":
        return await _tune(client, kv, args)
    try:
        if args.action == "set":
            values = parse_assignments(args.values)
            record, revision = await change_weights(
                kv, lambda current: with_values(current, values, now=time.time())
            )
        else:
            pinned = args.action == "pin"
            record, revision = await change_weights(
                kv, lambda current: with_pins(current, args.names, pinned=pinned, now=time.time())
            )
    except QubusError as exc:
        if exc.code.startswith("weights."):  # a bad NAME or VALUE on the command line
            raise UsageError(exc.message, code=exc.code) from None
        raise
    print(f"weights revision {revision} ({record.source}): {record.note}")
    return 0


async def _tune(client: Client, kv: KeyValue, args: argparse.Namespace) -> int:
    """``weights tune``: tune, report, and with ``--apply`` store if better on the held-out
    tasks (exit status 1 if not)."""
    from qubus.scheduling.weights import change_weights, current_weights, tuned

    if args.budget < 2:
        raise QubusError("--budget must be at least 2", code="tuning.args")
    start, start_revision = await current_weights(kv)
    if args.from_outcomes:
        result, tuning, holdout = await _tune_on_outcomes(client, args, start)
    else:
        result, tuning, holdout = await _tune_on_bench(args, start)
    values = [step.value for step in result.steps]
    better = result.tuned_holdout > result.start_holdout
    note = (
        f"{tuning['label']}: {values[0]:.2f} -> {max(values):.2f}; {holdout['label']}: "
        f"{result.start_holdout:.2f} -> {result.tuned_holdout:.2f}"
    )
    applied = None
    if args.apply and better:

        def apply(current: WeightsRecord) -> WeightsRecord:
            if (current.weights, current.pinned) != (start.weights, start.pinned):
                raise QubusError(
                    "the weights changed while tuning; tune again", code="weights.changed"
                )
            return tuned(current, result.weights, note=note, now=time.time())

        applied = (await change_weights(kv, apply))[1]
    report = {
        "start_revision": start_revision,
        "start": start.weights.model_dump(),
        "weights": result.weights.model_dump(),
        "pinned": start.pinned,
        "tuning": {**tuning, "values": values},
        "holdout": {**holdout, "start": result.start_holdout, "tuned": result.tuned_holdout},
        "applied_revision": applied,
    }
    print(json.dumps(report) if args.json else format_tuning(report))
    return 1 if args.apply and applied is None else 0


async def _tune_on_bench(
    args: argparse.Namespace, start: WeightsRecord
) -> tuple[BenchTuning, dict[str, Any], dict[str, Any]]:
    from qubus.scheduling import schedsim  # cirq and the emulators: imported only for this command
    from qubus.scheduling.benchtune import tune_on_bench

    if not 1 <= args.qpus <= 32 or args.tasks < 1:
        raise QubusError("--qpus must be 1-32, --tasks at least 1", code="tuning.args")
    workload = schedsim.Workload(
        seed=args.seed,
        tasks=args.tasks,
        qpus=args.qpus,
        arrivals=args.arrivals,
        background=not args.no_background,
    )
    result = await asyncio.to_thread(
        tune_on_bench,
        workload,
        start.weights,
        start.pinned,
        budget=args.budget,
        seed=args.seed,
        holdout_seed=args.holdout_seed,
    )
    tuning = {"label": f"bench seed {args.seed}", "seed": args.seed}
    holdout = {"label": f"held-out seed {args.holdout_seed}", "seed": args.holdout_seed}
    return result, tuning, holdout


async def _tune_on_outcomes(
    client: Client, args: argparse.Namespace, start: WeightsRecord
) -> tuple[BenchTuning, dict[str, Any], dict[str, Any]]:
    from qubus.bus.config import Settings
    from qubus.cli import report  # the event grouping of `qubus report`
    from qubus.scheduling.benchtune import holdout_count, outcomes_of, tune_on_outcomes

    since = None if args.since is None else parse_since(args.since, now=time.time())
    outcomes = outcomes_of(report.by_task(await read_task_events(client, since=since)))
    window_s = Settings().batch_window_ms / 1000
    result = await asyncio.to_thread(
        tune_on_outcomes,
        outcomes,
        start.weights,
        start.pinned,
        budget=args.budget,
        seed=args.seed,
        window_s=window_s,
    )
    held = holdout_count(len(outcomes))
    tuning = {"label": f"{len(outcomes) - held} completed tasks", "tasks": len(outcomes) - held}
    holdout = {"label": f"the latest {held} tasks", "tasks": held}
    return result, tuning, holdout


def format_tuning(report: dict[str, Any]) -> str:
    """``weights tune`` as text: objectives, then each weight from start to tuned."""
    values, holdout = report["tuning"]["values"], report["holdout"]
    lines = [
        f"tuned from revision {report['start_revision']} on {report['tuning']['label']}, "
        f"{len(values)} evaluations: objective {values[0]:.2f} -> {max(values):.2f}",
        f"{holdout['label']}: start {holdout['start']:.2f}, tuned {holdout['tuned']:.2f}",
    ]
    for name, value in report["weights"].items():
        pin = "  pinned" if name in report["pinned"] else ""
        lines.append(f"  {name:<11} {report['start'][name]:>9.4f} -> {value:>9.4f}{pin}")
    applied = report["applied_revision"]
    lines.append(
        f"stored as weights revision {applied} (tuned)"
        if applied is not None
        else "not stored (--apply stores tuned weights that do better on the held-out tasks)"
    )
    return "\n".join(lines)


async def _feedback(client: Client, args: argparse.Namespace) -> int:
    from qubus.scheduling.weights import give_feedback

    feedback, record, revision = await give_feedback(client.bus, args.task_id, args.rating)
    if args.json:
        print(
            json.dumps(
                {
                    "feedback": feedback.model_dump(mode="json"),
                    "weights": record_json(record, revision),
                }
            )
        )
        return 0
    print(f"task {args.task_id} on {feedback.node} rated {args.rating}/5")
    print(f"weights revision {revision} ({record.source}): {record.note}")
    return 0


def format_pilot(pilot: PilotDescription) -> str:
    """One pilot as ``NAME: nodes a, b; constraints``."""
    constraints = [
        f"{label} {value:g}"
        for label, value in (
            ("min fidelity", pilot.min_fidelity),
            ("max queue", pilot.max_queue),
            ("max qubits", pilot.max_qubits),
        )
        if value is not None
    ]
    if pilot.prefer is not None:
        constraints.append(f"prefers {pilot.prefer}")
    return f"{pilot.name}: nodes {', '.join(pilot.nodes)}" + "".join(f"; {c}" for c in constraints)


async def _pilot(client: Client, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from qubus.bus.connection import BUCKET_PILOTS
    from qubus.bus.kvrecords import invalid
    from qubus.scheduling.pilots import PilotDescription, create_pilot, delete_pilot, list_pilots

    kv = await _bucket(client, BUCKET_PILOTS)
    if args.action == "list":
        pilots = await list_pilots(client.bus)
        if args.json:
            print(json.dumps({"pilots": [p.model_dump(mode="json") for p in pilots]}))
        else:
            print("\n".join(map(format_pilot, pilots)) if pilots else "no pilot defined")
        return 0
    if args.action == "delete":
        await delete_pilot(kv, args.name)
        print(f"deleted pilot {args.name}")
        return 0
    try:
        pilot = PilotDescription(
            name=args.name,
            nodes=[node.strip() for node in args.nodes.split(",") if node.strip()],
            min_fidelity=args.min_fidelity,
            max_queue=args.max_queue,
            max_qubits=args.max_qubits,
            prefer=args.prefer,
        )
    except ValidationError as exc:
        raise invalid(exc, "pilot", code="pilot.invalid") from None
    await create_pilot(kv, pilot)
    print(f"created pilot {format_pilot(pilot)}")
    return 0


HANDLERS: dict[str, Handler] = {"weights": _weights, "feedback": _feedback, "pilot": _pilot}
"""The commands of this module, each run with a client of the running stack."""
