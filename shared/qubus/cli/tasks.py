"""The ``qubus`` commands on tasks: ``run`` and ``submit`` (submitting circuit files),
``tasks`` (listing them), ``status``, ``result``, ``trace``, ``cancel`` and ``retry`` (one task
of the running stack) and ``parse`` (a circuit file, locally), with the text they print.

What a command needs beyond its parser is imported when it runs, so that ``qubus status``
does not pay for cirq.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qubus.bus.limits import MAX_SHOTS, MAX_SPLIT
from qubus.cli.common import (
    EXIT_FAILURE,
    EXIT_UNFINISHED,
    UsageError,
    connected,
    number_in,
    parse_since,
    task_id,
)
from qubus.errors import QasmError, QubusError

if TYPE_CHECKING:
    from qubus.bus.connection import StoredEvent
    from qubus.bus.messages import SubmitReply, SubmitRequest
    from qubus.client.aio import Client

# ------------------------------------------------------------------ parsers


def add_submission_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``submit`` to the ``qubus`` subcommands."""
    run = sub.add_parser(
        "run",
        help="run circuits on a private, temporary stack and print their results",
        description="Start an embedded NATS server and every service, submit FILEs, wait for "
        "their results, print them and tear everything down. Exit status 1 if any task was "
        "rejected or failed.",
    )
    _submission_options(run)

    submit = sub.add_parser(
        "submit",
        help="submit circuits to a running stack (qubus up); print task ids",
        description="Submit FILEs to the running stack and print one task id per line; with "
        "--wait, wait and print results as `qubus run` does.",
    )
    _submission_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for results and print them")


def add_task_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``tasks``, ``status``, ``result``, ``trace``, ``cancel`` and ``retry`` to the
    ``qubus`` subcommands."""
    tasks = sub.add_parser(
        "tasks",
        help="list the stack's tasks (all the task stream keeps) with their status",
        description="List every task stream QUBUS_TASKS holds, oldest first, with its status: "
        "pending (being parsed, checked and scored), queued (placed on a node), running, "
        "done, rejected, failed or cancelled; a rejected or failed task with its cause (the "
        "stage, the error and its code: stage.dead_letter when every delivery of it killed "
        "the stage's process). `qubus retry ID` submits a failed task again.",
    )
    tasks.add_argument(
        "--status",
        choices=["pending", "queued", "running", "done", "rejected", "failed", "cancelled"],
        help="only tasks with this status",
    )
    tasks.add_argument(
        "--since",
        metavar="WHEN",
        help="only tasks submitted since WHEN: a duration back from now (90s, 15m, 2h, 1d) or "
        "an ISO 8601 time, UTC unless it has an offset",
    )
    tasks.add_argument("--json", action="store_true", help="one JSON object per task per line")

    for name, text in (
        ("status", "print a task's status (a running sweep's: points done of all)"),
        ("result", "print a task's result record"),
        ("trace", "print a task's timeline: stage, service instance, time, duration"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text[0].upper()
            + text[1:]
            + "."
            + (STATUS_EXITS if name != "trace" else "")
            + RETENTION,
        )
        p.add_argument("task_id", metavar="ID", type=task_id)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "result":
            p.add_argument("--wait", action="store_true", help="wait until the task has ended")
            _timeout_option(p)

    cancel = sub.add_parser(
        "cancel",
        help="cancel tasks, stopping those that are running",
        description="Cancel each task ID: a QPU node skips a cancelled task instead of "
        "running it, or stops it within about a second if it is running; a task that has "
        "ended is left as it is. A running sweep stops between two batches of points (those "
        "not run end cancelled); a sweep's point <sweep id>-<k> is left out if it has not "
        "run yet. Exit status 1 if any task could not be cancelled.",
    )
    cancel.add_argument("task_ids", nargs="+", metavar="ID", type=task_id)

    retry = sub.add_parser(
        "retry",
        help="submit a failed or cancelled task again",
        description="Submit your failed or cancelled task ID again as it was submitted (its "
        "circuit and options) and print the new task's id. `qubus tasks --status failed` "
        "lists failed tasks with their cause.",
    )
    retry.add_argument("task_id", metavar="ID", type=task_id)


RETENTION = (
    " A task's result (its submission, ideal counts, allocation and end) is kept "
    "QUBUS_TASK_RETENTION_S seconds of the stack (7 days by default); the other steps of its "
    "trace (parsed, checked, eval.noise, scored, running) QUBUS_TRACE_TTL_S (1 day by default)."
)
STATUS_EXITS = (
    " Exit status: 0 the task is done, 1 it was rejected, failed or cancelled (or is "
    "unknown), 3 it has not finished yet (pending, queued or running)."
)


def _timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=number_in(float, 0, None, low_open=True),
        default=300.0,
        metavar="SECONDS",
        help="seconds to wait for each task (default 300)",
    )


def add_parse_command(sub: argparse._SubParsersAction) -> None:
    """Add ``parse`` to the ``qubus`` subcommands."""
    parse = sub.add_parser(
        "parse",
        help="parse a circuit file locally and print its features",
        description="Parse FILE as the parser service does, without a stack, and print its "
        "features; with --json, one object with the features and the circuit as Cirq JSON "
        "(key `cirq`). A parse error prints FILE:LINE:COLUMN: MESSAGE [CODE] and exits 1.",
    )
    parse.add_argument("file", metavar="FILE")
    parse.add_argument("--json", action="store_true", help="print JSON")
    _format_option(parse)


def _format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=["qasm2", "qasm3", "cirq-json"],
        help="circuit format (default: from the file's extension and text)",
    )


def _submission_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="circuit files to run")
    p.add_argument(
        "--shots",
        type=number_in(int, 1, MAX_SHOTS),
        default=1000,
        help=f"shots per circuit, 1-{MAX_SHOTS} (default 1000)",
    )
    p.add_argument(
        "--priority", type=number_in(int, 0, 10), default=0, help="task priority 0-10 (default 0)"
    )
    p.add_argument("--node", help="pin the tasks to this QPU node (see `qubus nodes`)")
    p.add_argument("--pilot", help="run the tasks within this pilot (see `qubus pilot list`)")
    p.add_argument(
        "--noiseless", action="store_true", help="run the tasks on the emulators without noise"
    )
    p.add_argument(
        "--min-fidelity",
        type=number_in(float, 0, 1),
        metavar="F",
        help="only QPUs predicted to reach this Hellinger fidelity (0-1) may run the tasks",
    )
    p.add_argument(
        "--deadline",
        type=number_in(float, 0, None, low_open=True),
        metavar="SECONDS",
        help="the tasks should be complete this many seconds after submission",
    )
    p.add_argument(
        "--split",
        type=number_in(int, 2, MAX_SPLIT),
        metavar="K",
        help=f"run each circuit cut across K QPU nodes (2-{MAX_SPLIT}) joined by entanglement "
        "links, one EPR pair per remote two-qubit gate (default: split only a circuit no single "
        "QPU holds, or one predicted to finish sooner or better split); not with --node "
        "or --pilot",
    )
    p.add_argument(
        "--prefer",
        choices=["fidelity", "balanced", "time"],
        help="where the tasks stand on the fidelity-time trade-off: λ × 10, × 1 or × 0.1 "
        "(1,000, 100 or 10 s per unit of fidelity by default; default: the pilot's, else "
        "balanced)",
    )
    p.add_argument(
        "--ideal-links",
        action="store_true",
        help="every EPR pair of a split run is perfect (fidelity 1); link latency is kept",
    )
    p.add_argument(
        "--sweep",
        metavar="PARAMS.json",
        help="run each FILE, a parameterised circuit (OpenQASM 3 with `input float[64] gamma;` "
        "declarations, or Cirq JSON with sympy symbols), with every parameter set of "
        'PARAMS.json (a JSON list such as [{"gamma": 0.1, "beta": 0.2}, ...]) as one '
        "sweep: parsed, checked and compiled once, each point a task <sweep id>-<k>",
    )
    _format_option(p)
    _timeout_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object per task per line")


# ------------------------------------------------------------------ submissions


def read_requests(args: argparse.Namespace) -> list[SubmitRequest]:
    """One request per file, the format from --format or the file's extension.

    Raises:
        UsageError: ``options.invalid`` for --split with --node or --pilot.
        QubusError: ``file.unreadable``, ``file.empty``, ``file.binary``; ``payload.invalid``
            for an option the request refuses (a malformed node id).
    """
    from pydantic import ValidationError

    from qubus.bus.kvrecords import invalid
    from qubus.bus.messages import SubmitRequest
    from qubus.client.files import format_of, read_circuit_file

    if args.split is not None and (args.node is not None or args.pilot is not None):
        raise UsageError(
            "--split cannot be combined with --node or --pilot", code="options.invalid"
        )
    sweep = None if args.sweep is None else read_sweep(args.sweep)
    requests = []
    for name in args.files:
        try:
            request = SubmitRequest(
                circuit=read_circuit_file(name),
                format=args.format or format_of(name),
                shots=args.shots,
                priority=args.priority,
                node=args.node,
                pilot=args.pilot,
                noiseless=args.noiseless,
                source=name,
                fidelity_floor=args.min_fidelity,
                deadline_s=args.deadline,
                split=args.split,
                ideal_links=args.ideal_links,
                sweep=sweep,
                prefer=args.prefer,
            )
        except ValidationError as exc:
            raise invalid(exc, "submission", code="options.invalid") from None
        requests.append(request)
    return requests


def read_sweep(path: str) -> list[dict[str, float]]:
    """The parameter sets of a ``--sweep`` file: a JSON list of ``{name: number}`` objects.

    Raises:
        QubusError: ``file.unreadable``, ``file.empty``, ``file.binary``; ``sweep.invalid``
            for anything but a non-empty list of objects of numbers.
    """
    from qubus.client.files import read_circuit_file

    text = read_circuit_file(path, holds="a sweep's parameters")
    try:
        points = json.loads(text)
    except ValueError as exc:
        raise QubusError(f"{path} is not JSON: {exc}", code="sweep.invalid") from None
    valid = (
        isinstance(points, list)
        and points
        and all(
            isinstance(point, dict)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in point.values())
            for point in points
        )
    )
    if not valid:
        raise QubusError(
            f'{path} must be a non-empty JSON list of objects of numbers, like [{{"theta": 0.5}}]',
            code="sweep.invalid",
        )
    return [{name: float(value) for name, value in point.items()} for point in points]


async def _run(args: argparse.Namespace) -> int:
    from qubus.client.aio import Client

    requests = read_requests(args)
    async with ephemeral_stack() as url:
        client = await Client.connect(url)
        try:
            records = await _run_with_progress(client, requests, args.timeout)
        finally:
            await client.close()
    return print_records(records, as_json=args.json)


async def _submit(args: argparse.Namespace) -> int:
    requests = read_requests(args)
    async with connected() as client:
        if args.wait:
            return print_records(
                await _run_with_progress(client, requests, args.timeout, announce=True),
                as_json=args.json,
            )
        for request in requests:
            reply = await client.submit(request)
            if args.json:
                print(json.dumps({"task_id": reply.task_id, "source": request.source}))
            else:
                print(reply.task_id, flush=True)
            if request.sweep is not None and not args.json:
                print(
                    f"sweep of {len(request.sweep)} points: tasks {reply.task_id}-0 to "
                    f"{reply.task_id}-{len(request.sweep) - 1}",
                    file=sys.stderr,
                )
        return 0


SUBMITTING = 64
"""Submissions of one ``qubus run`` or ``qubus submit FILES --wait`` awaiting their answer at
once; the tasks themselves are all in flight. (3,000 submitted at once left ingestion's
answers beyond the client's 10 s timeout on a busy 2-core machine.)"""


async def _run_with_progress(
    client: Client, requests: list[SubmitRequest], timeout: float, *, announce: bool = False
) -> list[dict[str, Any]]:
    """Submit and wait for every request, showing progress on a terminal.

    Args:
        client: The stack's client.
        requests: The submissions.
        timeout: Seconds to wait for each task.
        announce: Print each task id (``submitted FILE as ID``, on stderr) as soon as it is
            submitted, so that an interrupted wait leaves the ids behind.

    Raises:
        QubusError: ``task.timeout``: a task did not end within ``timeout`` seconds.
    """
    from qubus.bus.ids import sweep_point_id
    from qubus.client.aio import task_record

    submitting = asyncio.Semaphore(SUBMITTING)

    async def submit(request: SubmitRequest) -> SubmitReply:
        async with submitting:
            reply = await client.submit(request)
        if announce:
            print(f"submitted {request.source} as {reply.task_id}", file=sys.stderr, flush=True)
        return reply

    replies = await asyncio.gather(*(submit(r) for r in requests))
    done = 0
    total = sum(len(r.sweep or [None]) for r in requests)
    show = sys.stderr.isatty()

    async def one(task_id: str, sweep: list[dict[str, float]] | None) -> list[dict[str, Any]]:
        """The records of the task, or of each point of a sweep."""
        nonlocal done
        try:
            if sweep is None:
                ids, traces = [task_id], [await client.wait(task_id, timeout=timeout)]
            else:
                ids = [sweep_point_id(task_id, k) for k in range(len(sweep))]
                traces = await client.wait_sweep(task_id, len(sweep), timeout=timeout)
        except TimeoutError:
            raise QubusError(
                f"task {task_id} did not finish within {timeout:g} s"
                + (f"; `qubus result {task_id} --wait` waits again" if announce else ""),
                code="task.timeout",
            ) from None
        done += len(ids)
        if show:
            print(f"\r{done}/{total} tasks finished", end="", file=sys.stderr, flush=True)
        return [task_record(i, events) for i, events in zip(ids, traces, strict=True)]

    pairs = zip(replies, requests, strict=True)
    records = await asyncio.gather(*(one(reply.task_id, request.sweep) for reply, request in pairs))
    if show:
        print(file=sys.stderr)
    return [record for each in records for record in each]


@contextlib.asynccontextmanager
async def ephemeral_stack() -> AsyncIterator[str]:
    """A private embedded NATS server and every service; everything is removed afterwards,
    the services' logs too unless the stack failed to start (the error names them)."""
    from qubus.bus.config import Settings
    from qubus.bus.natsserver import NatsServer
    from qubus.cli.common import default_fleet
    from qubus.cli.stack import Supervisor, stack_specs

    server = NatsServer(batch=Settings().sched_batch)
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-logs-"))
    keep_logs = False
    try:
        url = server.start()
        supervisor = Supervisor(url, stack_specs(default_fleet()), log_dir=log_dir)
        try:
            started = time.monotonic()
            if sys.stderr.isatty():
                print("starting qubus services...", file=sys.stderr, flush=True)
            try:
                await supervisor.start()
            except TimeoutError as exc:
                keep_logs = True
                raise QubusError(
                    f"{exc}; service logs are in {log_dir}", code="stack.start"
                ) from None
            if sys.stderr.isatty():
                print(f"stack ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
            yield url
        finally:
            await supervisor.stop()
    finally:
        server.stop()
        if not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def print_records(records: list[dict[str, Any]], *, as_json: bool) -> int:
    """Print task records; the exit status of the worst (``record_exit``)."""
    for record in records:
        print(json.dumps(record) if as_json else format_record(record))
    return max((record_exit(r["status"]) for r in records), default=0)


def record_exit(status: str) -> int:
    """The exit status a task's status gives ``status``, ``result`` and ``run``: 0 done,
    ``EXIT_UNFINISHED`` not finished, ``EXIT_FAILURE`` any other end."""
    from qubus.client.aio import FINAL_STATUSES

    if status == "done":
        return 0
    return EXIT_FAILURE if status in FINAL_STATUSES else EXIT_UNFINISHED


def format_record(record: dict[str, Any], *, top: int = 8) -> str:
    head = f"{record['source'] or record['task_id']}: {record['status']}"
    lines = [head, f"  task       {record['task_id']}"]
    if record["status"] == "done":
        counts = record["counts"]
        shots = sum(counts.values())
        lines += [
            f"  node       {', '.join(record['nodes'])}"
            + (f"   (split, {record['ebits']} ebits)" if record["ebits"] else ""),
            f"  fidelity   predicted {record['predicted_fidelity']:.3f}   "
            f"measured {record['measured_fidelity']:.3f} (Hellinger, vs ideal)",
            f"  hyperscore {record['hyperscore']:.1f}",
            f"  counts     ({shots} shots, {len(counts)} outcomes"
            + (f", top {top}" if len(counts) > top else "")
            + ")",
        ]
        for bits, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            ideal = (record["ideal_counts"] or {}).get(bits, 0)
            lines.append(f"    {bits}  {n:>7}   ideal {ideal}")
    elif record["error"]:
        error = record["error"]
        where = f" at line {error['line']}, column {error['column']}" if error["line"] else ""
        lines.append(f"  error      {error['code']}{where}: {error['message']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ a task's record


async def task_events(task_id: str) -> list[StoredEvent]:
    """The stored events of a task of the running stack (``task.unknown`` if it has none)."""
    async with connected() as client:
        events = await client.events(task_id)
    if not events:
        raise QubusError(f"no task {task_id}", code="task.unknown")
    return events


async def _tasks(args: argparse.Namespace) -> int:
    from qubus.bus.ids import submitted_at

    since = None if args.since is None else parse_since(args.since, now=time.time())
    async with connected() as client:
        tasks = await client.tasks()
        ended = args.status in (None, "failed", "rejected")
        failures = await client.failures() if ended else {}
    for task, status in tasks:
        at = submitted_at(task)
        if args.status is not None and status != args.status:
            continue
        if since is not None and (at is None or at < since):
            continue
        end = failures.get(task) if status in ("failed", "rejected") else None
        if args.json:
            error = None if end is None else {"stage": end.stage, **end.error.model_dump()}
            print(
                json.dumps({"task_id": task, "status": status, "submitted_at": at, "error": error})
            )
        else:
            stamp = "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
            cause = "" if end is None else f"  {end.stage}: {end.error.message} [{end.error.code}]"
            print(f"{task:<32} {status:<10} {stamp}{cause}")
    return 0


async def _retry(args: argparse.Namespace) -> int:
    async with connected() as client:
        reply = await client.retry(args.task_id)
    print(reply.task_id)
    return 0


async def _status(args: argparse.Namespace) -> int:
    from qubus.client.aio import progress_of, status_of

    events = await task_events(args.task_id)
    status = status_of(events)
    progress = progress_of(events) if status == "running" else None
    if args.json:
        print(json.dumps({"task_id": args.task_id, "status": status, "progress": progress}))
    elif progress is not None and "points" in progress:
        print(f"{status} ({progress['points_done']}/{progress['points']} points)")
    elif progress is not None:
        print(f"{status} ({progress['shots_done']}/{progress['shots']} shots)")
    else:
        print(status)
    return record_exit(status)


async def _result(args: argparse.Namespace) -> int:
    from qubus.client.aio import task_record

    if args.wait:
        async with connected() as client:
            try:
                events = await client.wait(args.task_id, timeout=args.timeout)
            except TimeoutError:
                raise QubusError(
                    f"task {args.task_id} did not finish within {args.timeout:g} s",
                    code="task.timeout",
                ) from None
    else:
        events = await task_events(args.task_id)
    record = task_record(args.task_id, events)
    print(json.dumps(record) if args.json else format_record(record))
    code = record_exit(record["status"])
    if code == EXIT_UNFINISHED and not args.json:
        print(
            f"qubus: task {args.task_id} has not finished ({record['status']}); "
            f"`qubus result {args.task_id} --wait` waits for it",
            file=sys.stderr,
        )
    return code


async def _cancel(args: argparse.Namespace) -> int:
    worst = 0
    async with connected() as client:
        for task in args.task_ids:
            try:
                cancelled = await client.cancel(task)
            except QubusError as exc:
                print(f"qubus: {exc.message} [{exc.code}]", file=sys.stderr)
                worst = EXIT_FAILURE
                continue
            if cancelled:
                print(f"cancelled {task}")
            else:
                print(f"qubus: task {task} has already ended [task.ended]", file=sys.stderr)
                worst = EXIT_FAILURE
    return worst


async def _trace(args: argparse.Namespace) -> int:
    from qubus.client.aio import allocation_breakdown, stage_rows

    events = await task_events(args.task_id)
    rows = stage_rows(events)
    allocation = allocation_breakdown(events)
    if args.json:
        trace = {"task_id": args.task_id, "trace_id": events[0].trace_id, "stages": rows}
        print(json.dumps({**trace, "allocation": allocation}))
        return 0
    print(f"task {args.task_id}  trace {events[0].trace_id}")
    origin = events[0].published
    for row, stored in zip(rows, events, strict=True):
        offset = (stored.published - origin) * 1000
        detail = f"  {row['detail']}" if "detail" in row else ""
        print(
            f"  +{offset:9.1f} ms  {row['event']:<13} {row['service']:<10} "
            f"{row['instance']:<24} {row['duration_ms']:>9.1f} ms{detail}"
        )
    if allocation is not None:
        print(format_allocation(allocation))
    return 0


def format_allocation(allocation: dict[str, Any]) -> str:
    """The score breakdown of ``allocation_breakdown`` as text: the decision, then per node
    its eligibility, hyperscore, predicted fidelity, expected completion, score terms and
    their Shapley attributions (score points)."""
    lines = ["allocation"]
    decision = allocation["decision"]
    if decision is not None:
        lines.append(
            f"  {decision['policy']} chose {decision['node']}: {decision['reason']}"
            f"  (ranking {', '.join(f'{node} {score:.1f}' for node, score in decision['ranking'])})"
        )
    if decision is not None and decision.get("split"):
        lines.append(format_split(decision["split"]))
    for score in allocation["scores"] or []:
        state = "eligible" if score["eligible"] else f"not eligible: {score['reason']}"
        terms = " ".join(f"{name}={value:.3g}" for name, value in sorted(score["terms"].items()))
        shapley = " ".join(f"{name}={value:+.2f}" for name, value in score["shapley"].items())
        lines.append(
            f"  {score['node']:<18} {score['hyperscore']:>7.1f}  fidelity "
            f"{score['predicted_fidelity']:.3f}  completion {score['expected_completion_s']:.3g} s"
            f"  {state}"
            + (f"\n    {terms}" if terms else "")
            + (f"\n    shapley {shapley}" if shapley else "")
        )
    return "\n".join(lines)


def format_split(plan: dict[str, Any]) -> str:
    """A split plan (``SplitPlan`` as a dict) as text: its nodes and parts, EPR pairs,
    expected link fidelity and timing."""
    lines = [
        f"  split over {len(plan['nodes'])} nodes: {plan['ebits']} ebits "
        f"(lower bound {plan['lower_bound']}, {plan['method']}), predicted fidelity "
        f"{plan['predicted_fidelity']:.3f}, link fidelity {plan['link_fidelity']:.3f}, "
        f"completion {plan['expected_completion_s']:.3g} s = queue {plan['queue_s']:.3g} + "
        f"EPR {plan['epr_latency_s']:.3g} + run {plan['run_s']:.3g}"
    ]
    for node, part in zip(plan["nodes"], plan["parts"], strict=True):
        lines.append(f"    {node:<18} {' '.join(part)}")
    for a, b, n in plan["pairs"]:
        lines.append(f"    {a} - {b}: {n} EPR pairs")
    return "\n".join(lines)


# ------------------------------------------------------------------ a circuit file


def parse(args: argparse.Namespace) -> int:
    """``qubus parse``: print a circuit file's features (exit status 1 if it does not parse)."""
    from qubus.bus.messages import SubmitRequest
    from qubus.circuits import circuit_features, circuit_to_json, load_circuit
    from qubus.circuits.ingest import detect_format
    from qubus.client.files import format_of, read_circuit_file

    text = read_circuit_file(args.file)
    declared = args.format or format_of(args.file)
    fmt = detect_format(SubmitRequest(circuit=text, format=declared))
    try:
        circuit = load_circuit(text, fmt)
    except QasmError as exc:
        print(f"{args.file}:{exc.line}:{exc.column}: {exc.message} [{exc.code}]", file=sys.stderr)
        return 1
    except QubusError as exc:
        print(f"{args.file}: {exc.message} [{exc.code}]", file=sys.stderr)
        return 1
    features = circuit_features(circuit).model_dump()
    if args.json:
        cirq_json = json.loads(circuit_to_json(circuit))
        print(
            json.dumps({"file": args.file, "format": fmt, "features": features, "cirq": cirq_json})
        )
        return 0
    print(f"{args.file} ({fmt})")
    for key, value in features.items():
        if key == "gate_counts":
            value = " ".join(f"{name}={n}" for name, n in value.items())
        elif key == "interaction_graph":
            value = " ".join(f"{a}-{b}:{n}" for a, b, n in value) or "-"
        elif key == "measured_qubits":
            value = " ".join(value) or "-"
        print(f"  {key:<18} {value}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "run": _run,
    "submit": _submit,
    "tasks": _tasks,
    "status": _status,
    "result": _result,
    "trace": _trace,
    "cancel": _cancel,
    "retry": _retry,
}
"""The commands of this module that run in an event loop (``main`` runs ``parse`` apart)."""
