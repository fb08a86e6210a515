"""The ``qubus`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from qubus import __version__, cli_bench, cli_weights, logs, stackfile
from qubus.bus import STREAM, TASK_SUBJECTS, StoredEvent, stored_event
from qubus.client import Client, allocation_breakdown, stage_rows, status_of, task_record
from qubus.config import Settings
from qubus.errors import QasmError, QubusError
from qubus.ingest import detect_format
from qubus.messages import MAX_SPLIT, SubmitRequest
from qubus.natsserver import NatsServer
from qubus.progress import Progress
from qubus.stack import Supervisor, stack_specs

DESCRIPTION = """\
qubus schedules quantum circuits across a fleet of emulated QPUs over NATS JetStream.

The quickest start is `qubus run FILE`: it starts a private stack (embedded NATS and every
service), runs the circuits and prints their counts. For a stack that stays up, run
`qubus up` in one terminal and `qubus submit`, `status`, `result`, `trace`, `nodes`, `ps`
and `logs` in another: they find the stack `qubus up` recorded in ~/.qubus/stack.json, or
the server in QUBUS_NATS_URL. Every QUBUS_* environment variable is a setting (see
docs/architecture.md).
"""

EPILOG = "Formats: OpenQASM 2 (.qasm), OpenQASM 3 (.qasm3), Cirq JSON (.json)."
SUFFIX_FORMATS = {".qasm3": "qasm3", ".json": "cirq-json"}


def _fleet() -> tuple[str, ...]:
    from qubus.devices import DEFAULT_FLEET as fleet

    return tuple(fleet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qubus",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qubus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def format_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=["qasm2", "qasm3", "cirq-json"],
            help="circuit format (default: from the file's extension and text)",
        )

    def submission_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("files", nargs="+", metavar="FILE", help="circuit files to run")
        p.add_argument("--shots", type=int, default=1000, help="shots per circuit (default 1000)")
        p.add_argument("--priority", type=int, default=0, help="task priority 0-10 (default 0)")
        p.add_argument("--node", help="pin the tasks to this QPU node (see `qubus nodes`)")
        p.add_argument("--pilot", help="run the tasks within this pilot (see `qubus pilot list`)")
        p.add_argument(
            "--noiseless", action="store_true", help="run the tasks on the emulators without noise"
        )
        p.add_argument(
            "--min-fidelity",
            type=float,
            metavar="F",
            help="only QPUs predicted to reach this Hellinger fidelity (0-1) may run the tasks",
        )
        p.add_argument(
            "--deadline",
            type=float,
            metavar="SECONDS",
            help="the tasks should be complete this many seconds after submission",
        )
        p.add_argument(
            "--split",
            type=int,
            choices=range(2, MAX_SPLIT + 1),
            metavar="K",
            help="run each circuit cut across K QPU nodes (2-8) joined by entanglement links, "
            "one EPR pair per remote two-qubit gate (default: split only a circuit no single "
            "QPU holds, or one predicted to finish sooner or better split); not with --node "
            "or --pilot",
        )
        p.add_argument(
            "--ideal-links",
            action="store_true",
            help="every EPR pair of a split run is perfect (fidelity 1); link latency is kept",
        )
        format_option(p)
        p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per run")
        p.add_argument("--json", action="store_true", help="one JSON object per task per line")

    run = sub.add_parser(
        "run",
        help="run circuits on a private, temporary stack and print their results",
        description="Start an embedded NATS server and every service, submit FILEs, wait for "
        "their results, print them and tear everything down. Exit status 1 if any task was "
        "rejected or failed.",
    )
    submission_options(run)

    submit = sub.add_parser(
        "submit",
        help="submit circuits to a running stack (qubus up); print task ids",
        description="Submit FILEs to the running stack and print one task id per line; with "
        "--wait, wait and print results as `qubus run` does.",
    )
    submission_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for results and print them")

    up = sub.add_parser(
        "up",
        help="run a whole stack in the foreground until Ctrl-C",
        description="Start an embedded nats-server on a free loopback port (unless "
        "QUBUS_NATS_URL is set, then only the services) and every service as a child process; "
        "restart any that dies; stop everything on Ctrl-C. The NATS URL is printed and "
        "recorded so other qubus commands on this machine find the stack.",
    )
    up.add_argument(
        "--fleet",
        default=",".join(_fleet()),
        help="comma-separated QPU node ids, one qpu process each (default: %(default)s)",
    )
    up.add_argument("--log-dir", type=Path, help="service logs (default: ~/.qubus/logs)")
    up.add_argument("--store-dir", help="JetStream store of the embedded server (default: temp)")

    for name, text in (
        ("status", "print a task's status"),
        ("result", "print a task's result record"),
        ("trace", "print a task's timeline: stage, service instance, time, duration"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("task_id", metavar="ID")
        p.add_argument("--json", action="store_true", help="print JSON")

    nodes = sub.add_parser(
        "nodes",
        help="list QPU nodes (kind, qubits, calibration summary, queue depth) and links",
        description="List the QPU nodes that have reported to KV qubus_nodes, then the "
        "entanglement links the link service publishes there: fresh-pair fidelity F0, the "
        "expected fidelity and latency of one delivered pair (after memory decay and "
        "purification), the purification floor, and the pairs served and reserved.",
    )
    nodes.add_argument("--json", action="store_true", help="print JSON")

    ps = sub.add_parser(
        "ps",
        help="list running service instances: version, uptime, handled, errors, queue lag",
        description="Ask every service instance for its statistics ($SRV.STATS, the nats.micro "
        "convention) and list the answers: handled and errored messages summed over the "
        "instance's stages and request subjects, and queue lag (messages pending plus "
        "unacknowledged on its consumers).",
    )
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.add_argument(
        "--timeout", type=float, default=0.5, help="seconds to collect answers (default 0.5)"
    )
    ps.add_argument("--expect", type=int, help="stop once this many instances have answered")

    logs_cmd = sub.add_parser(
        "logs",
        help="print service log lines (stored for a day in stream QUBUS_LOGS)",
        description="Print the log lines services published on qubus.log.<service>, as stored "
        "in the JetStream stream QUBUS_LOGS (one day of them); with --follow, keep printing "
        "new lines until Ctrl-C. With --task, only that task's lines, from its submission on.",
    )
    logs_cmd.add_argument("--service", help="only this service's lines (e.g. parser, qpu)")
    logs_cmd.add_argument("--task", metavar="ID", help="only lines about this task")
    logs_cmd.add_argument("--follow", action="store_true", help="keep printing new lines")
    logs_cmd.add_argument("--json", action="store_true", help="print each line as stored (JSON)")

    parse = sub.add_parser(
        "parse",
        help="parse a circuit file locally and print its features",
        description="Parse FILE as the parser service does, without a stack, and print its "
        "features; with --json, one object with the features and the circuit as Cirq JSON "
        "(key `cirq`). A parse error prints FILE:LINE:COLUMN: MESSAGE [CODE] and exits 1.",
    )
    parse.add_argument("file", metavar="FILE")
    parse.add_argument("--json", action="store_true", help="print JSON")
    format_option(parse)

    report = sub.add_parser(
        "report",
        help="write an HTML report: QPU occupancy, fidelity, queues, stage latency, policies",
        description="Read the stored task events (stream QUBUS_TASKS) of the running stack and "
        "write one self-contained HTML page (plots embedded as PNG): QPU occupancy per node, "
        "predicted against measured fidelity, queue length per node over time, stage latency "
        "distributions, a summary table and, with --bench, a comparison of scheduling policies. "
        "With --json, print the figures the plots show (and write HTML only if --out is given).",
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="only events stored since WHEN: a duration back from now (90s, 15m, 2h, 1d) or an "
        "ISO 8601 time, UTC unless it has an offset (default: every stored event)",
    )
    report.add_argument("--out", type=Path, help="HTML file to write (default report.html)")
    report.add_argument(
        "--bench", type=Path, metavar="FILE", help="output of `qubus bench schedule --json`"
    )
    report.add_argument("--json", action="store_true", help="print the report's figures as JSON")

    service = sub.add_parser(
        "service",
        help="run one service process (what `qubus up` and the Procfile start)",
        description="Run one service in the foreground until SIGTERM/SIGINT.",
    )
    service.add_argument("name", choices=importlib.import_module("qubus_services").SERVICES)
    service.add_argument("--node", help="the QPU node id (required for the qpu service)")
    cli_weights.add_parsers(sub)
    cli_bench.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "service":
        return _service(args)
    logs.configure("cli", f"cli-{os.getpid()}", os.environ.get("QUBUS_CLI_LOG_LEVEL", "warning"))
    if args.command == "up":
        return _run_async(_up(args))
    try:
        if args.command == "parse":
            return _parse(args)
        if args.command == "bench":
            return cli_bench.run(args)
        if args.command in cli_weights.HANDLERS:
            return _run_async(_with_client(cli_weights.HANDLERS[args.command], args))
        return _run_async(COMMANDS[args.command](args))
    except QubusError as exc:
        print(f"qubus: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2


def _run_async(coro: Any) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


def _service(args: argparse.Namespace) -> int:
    from qubus.service import run_service

    if args.name == "qpu" and not args.node:
        print("qubus: the qpu service needs --node ID", file=sys.stderr)
        return 2
    module = importlib.import_module(f"qubus_services.{args.name}.main")
    run_service(args.name, module.setup, node=args.node)
    return 0


# ------------------------------------------------------------------ submissions


def read_requests(args: argparse.Namespace) -> list[SubmitRequest]:
    """One request per file, the format from --format or the file's extension.

    Raises:
        QubusError: ``options.invalid`` for --split with --node or --pilot;
            ``file.unreadable``.
    """
    if args.split is not None and (args.node is not None or args.pilot is not None):
        raise QubusError(
            "--split cannot be combined with --node or --pilot", code="options.invalid"
        )
    requests = []
    for name in args.files:
        requests.append(
            SubmitRequest(
                circuit=read_text(name),
                format=args.format or SUFFIX_FORMATS.get(Path(name).suffix),
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
            )
        )
    return requests


def read_text(name: str) -> str:
    """The text of circuit file ``name``.

    Raises:
        QubusError: ``file.unreadable``.
    """
    try:
        return Path(name).read_text()
    except OSError as exc:
        raise QubusError(f"cannot read {name}: {exc.strerror}", code="file.unreadable") from exc


async def _run(args: argparse.Namespace) -> int:
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
    client = await Client.connect(stackfile.resolve_nats_url(Settings()))
    try:
        if args.wait:
            return print_records(
                await _run_with_progress(client, requests, args.timeout), as_json=args.json
            )
        for request in requests:
            reply = await client.submit(request)
            if args.json:
                print(json.dumps({"task_id": reply.task_id, "source": request.source}))
            else:
                print(reply.task_id)
        return 0
    finally:
        await client.close()


async def _run_with_progress(
    client: Client, requests: list[SubmitRequest], timeout: float
) -> list[dict[str, Any]]:
    """Submit and wait for every request, showing progress on a terminal."""
    replies = await asyncio.gather(*(client.submit(r) for r in requests))
    done = 0
    show = sys.stderr.isatty()

    async def one(task_id: str) -> dict[str, Any]:
        nonlocal done
        record = task_record(task_id, await client.wait(task_id, timeout=timeout))
        done += 1
        if show:
            print(f"\r{done}/{len(replies)} tasks finished", end="", file=sys.stderr, flush=True)
        return record

    records = await asyncio.gather(*(one(r.task_id) for r in replies))
    if show:
        print(file=sys.stderr)
    return list(records)


@contextlib.asynccontextmanager
async def ephemeral_stack() -> AsyncIterator[str]:
    """A private embedded NATS server and every service; everything is removed afterwards."""
    server = NatsServer()
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-logs-"))
    url = server.start()
    supervisor = Supervisor(url, stack_specs(_fleet()), log_dir=log_dir)
    try:
        started = time.monotonic()
        if sys.stderr.isatty():
            print("starting qubus services...", file=sys.stderr, flush=True)
        try:
            await supervisor.start()
        except TimeoutError as exc:
            raise QubusError(f"{exc}; service logs are in {log_dir}", code="stack.start") from exc
        if sys.stderr.isatty():
            print(f"stack ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield url
    finally:
        await supervisor.stop()
        server.stop()


def print_records(records: list[dict[str, Any]], *, as_json: bool) -> int:
    """Print task records; exit status 1 if any task did not complete."""
    for record in records:
        print(json.dumps(record) if as_json else format_record(record))
    return 0 if all(r["status"] == "done" for r in records) else 1


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


# ------------------------------------------------------------------ inspection


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[Client]:
    client = await Client.connect(stackfile.resolve_nats_url(Settings()))
    try:
        yield client
    finally:
        await client.close()


async def _with_client(handler: cli_weights.Handler, args: argparse.Namespace) -> int:
    """Run a command that takes a client of the running stack."""
    async with connected() as client:
        return await handler(client, args)


async def task_events(task_id: str) -> list[StoredEvent]:
    """The stored events of a task of the running stack (``task.unknown`` if it has none)."""
    async with connected() as client:
        events = await client.events(task_id)
    if not events:
        raise QubusError(f"no task {task_id}", code="task.unknown")
    return events


async def _status(args: argparse.Namespace) -> int:
    events = await task_events(args.task_id)
    status = status_of(events)
    print(json.dumps({"task_id": args.task_id, "status": status}) if args.json else status)
    return 0


async def _result(args: argparse.Namespace) -> int:
    events = await task_events(args.task_id)
    record = task_record(args.task_id, events)
    print(json.dumps(record) if args.json else format_record(record))
    return 0


async def _trace(args: argparse.Namespace) -> int:
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
        print(
            f"  +{offset:9.1f} ms  {row['event']:<13} {row['service']:<10} "
            f"{row['instance']:<24} {row['duration_ms']:>9.1f} ms"
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


async def _nodes(args: argparse.Namespace) -> int:
    async with connected() as client:
        statuses = await client.bus.node_statuses()
        links = [link.model_dump() for link in await client.bus.link_statuses()]
    now = time.time()
    rows = []
    for node in sorted(statuses):
        status = statuses[node]
        rows.append(
            {
                "node": node,
                "kind": status.kind,
                "qubits": status.n_qubits,
                "max_circuit_qubits": status.max_circuit_qubits,
                "queue_depth": status.queue_depth,
                "busy": status.busy,
                "online": now - status.updated_at <= Settings().node_timeout_s,
                "calibration_revision": status.calibration_revision,
                "calibration": _calibration_summary(status.device),
            }
        )
    if args.json:
        print(json.dumps({"nodes": rows, "links": links}))
        return 0
    if not rows:
        print("no QPU node has reported")
    else:
        print(
            f"{'NODE':<18} {'KIND':<16} {'QUBITS':>6} {'QUEUE':>5}  {'STATE':<8}"
            f"{'1Q ERR':>9} {'2Q ERR':>9} {'READOUT':>8} {'T1 us':>9} {'T2 us':>9}  CALIBRATED"
        )
    for row in rows:
        print(_node_line(row))
    if links:
        print()
        print(
            f"{'LINK':<34} {'F0':>5} {'PAIR F':>7} {'LATENCY ms':>10} {'PURIFY <':>8} "
            f"{'SERVED':>7} {'RESERVED':>9}"
        )
    for link in links:
        floor = "-" if link["purify_below"] is None else f"{link['purify_below']:.2f}"
        pair_f = "-" if link["expected_fidelity"] is None else f"{link['expected_fidelity']:.3f}"
        print(
            f"{link['a'] + ' - ' + link['b']:<34} {link['f0']:>5.2f} {pair_f:>7} "
            f"{link['expected_latency_s'] * 1e3:>10.2f} {floor:>8} {link['pairs_served']:>7} "
            f"{link['pairs_reserved']:>9}"
        )
    return 0


def _node_line(row: dict[str, Any]) -> str:
    """One row of ``qubus nodes``."""
    cal = row["calibration"]
    state = ("busy" if row["busy"] else "idle") if row["online"] else "offline"
    return (
        f"{row['node']:<18} {row['kind']:<16} {row['qubits']:>6} {row['queue_depth']:>5}  "
        f"{state:<8}{_figure(cal.get('median_1q_error')):>9} "
        f"{_figure(cal.get('median_2q_error')):>9} "
        f"{_figure(cal.get('median_readout_error')):>8} "
        f"{_figure(cal.get('median_t1_us')):>9} {_figure(cal.get('median_t2_us')):>9}  "
        f"{str(cal.get('calibrated_at', ''))[:10]}"
    )


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _calibration_summary(device: dict[str, Any]) -> dict[str, Any]:
    from qubus.devices import Device

    return Device.model_validate(device).summary()


async def _ps(args: argparse.Namespace) -> int:
    async with connected() as client:
        replies = await client.services("STATS", timeout=args.timeout, expected=args.expect)
    rows = [instance_row(reply) for reply in replies]
    if args.json:
        print(json.dumps({"instances": rows}))
        return 0
    if not rows:
        print("no service instance answered")
        return 0
    print(
        f"{'SERVICE':<10} {'NODE':<18} {'ID':<28} {'VERSION':<8} {'UPTIME':>8} "
        f"{'HANDLED':>8} {'ERRORS':>6} {'LAG':>5}"
    )
    for row in rows:
        lag = "-" if row["lag"] is None else str(row["lag"])
        print(
            f"{row['service']:<10} {row['node'] or '-':<18} {row['id']:<28} {row['version']:<8} "
            f"{_duration(row['uptime_s']):>8} {row['handled']:>8} {row['errored']:>6} {lag:>5}"
        )
    return 0


def instance_row(stats: dict[str, Any]) -> dict[str, Any]:
    """One ``qubus ps`` row from an instance's ``stats_response``: its identity and its
    endpoints' figures summed (``lag`` is None when it has no consumer)."""
    metadata = stats.get("metadata") or {}
    endpoints = stats.get("endpoints") or []
    lags = [e["data"]["lag"] for e in endpoints if "lag" in (e.get("data") or {})]
    return {
        "service": metadata.get("service", stats["name"]),
        "node": metadata.get("node"),
        "name": stats["name"],
        "id": stats["id"],
        "instance": metadata.get("instance"),
        "pid": metadata.get("pid"),
        "version": stats["version"],
        "started": stats.get("started"),
        "uptime_s": stats.get("uptime_s"),
        "handled": sum(e["num_requests"] for e in endpoints),
        "errored": sum(e["num_errors"] for e in endpoints),
        "lag": sum(lags) if lags else None,
        "endpoints": endpoints,
        "logs": stats.get("logs"),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


async def _logs(args: argparse.Namespace) -> int:
    async with connected() as client:
        since = None
        if args.task:
            events = await client.events(args.task)
            if not events:
                raise QubusError(f"no task {args.task}", code="task.unknown")
            since = events[0].published - 1.0
        async for line in client.log_lines(service=args.service, since=since, follow=args.follow):
            if args.task and line.get("task_id") != args.task:
                continue
            print(json.dumps(line) if args.json else format_log_line(line), flush=True)
    return 0


def format_log_line(line: dict[str, Any]) -> str:
    """A log line as ``time service[node] LEVEL event key=value ...``."""
    fields = dict(line)
    stamp = str(fields.pop("timestamp", ""))[11:23]
    who = fields.pop("service", "?")
    node = fields.pop("node", None)
    fields.pop("instance", None)
    fields.pop("trace_id", None)
    level = str(fields.pop("level", "")).upper()
    event = fields.pop("event", "")
    rest = " ".join(f"{key}={value}" for key, value in fields.items())
    source = f"{who}[{node}]" if node else who
    return f"{stamp} {source:<22} {level:<7} {event} {rest}".rstrip()


def _parse(args: argparse.Namespace) -> int:
    from qubus.circuits import circuit_features, circuit_to_json, load_circuit

    text = read_text(args.file)
    declared = args.format or SUFFIX_FORMATS.get(Path(args.file).suffix)
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


async def _report(args: argparse.Namespace) -> int:
    from qubus import report  # matplotlib: imported only for this command

    since = None if args.since is None else report.parse_since(args.since, now=time.time())
    bench = None if args.bench is None else report.load_bench(args.bench)
    async with connected() as client:
        events = await read_task_events(client, since=since)
    figures = report.build_figures(events, since=since, bench=bench)
    out = args.out if args.out is not None or args.json else Path("report.html")
    if out is not None:
        out.write_text(report.render_html(figures))  # noqa: ASYNC240 (the command's last step)
        print(f"qubus: report of {figures.summary['tasks']} tasks in {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures.to_json()))
    return 0


async def read_task_events(client: Client, *, since: float | None) -> list[StoredEvent]:
    """Every task event in stream ``QUBUS_TASKS`` stored at or after Unix time ``since``
    (all if None), in stream order, with a progress bar on a terminal. Events stored after
    the reading starts are not read."""
    with Progress(0, "reading task events") as progress:
        msgs = client.read_stream(STREAM, TASK_SUBJECTS, since=since, progress=progress)
        return [event async for msg in msgs if (event := stored_event(msg)) is not None]


async def _up(args: argparse.Namespace) -> int:
    settings = Settings()
    fleet = [node for node in args.fleet.split(",") if node]
    server = None
    url = settings.nats_url
    if not url:
        server = NatsServer(args.store_dir)
        url = server.start()
    log_dir = args.log_dir or stackfile.stack_file().parent / "logs"
    supervisor = Supervisor(url, stack_specs(fleet), log_dir=log_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"qubus: NATS at {url}", flush=True)
        started = time.monotonic()
        await supervisor.start()
        if server is not None:
            stackfile.record(url, os.getpid())
        labels = ", ".join(supervisor.children)
        print(
            f"qubus: {len(supervisor.children)} services ready in "
            f"{time.monotonic() - started:.1f} s ({labels}); logs in {log_dir}; Ctrl-C stops",
            flush=True,
        )
        await stop.wait()
        print("qubus: stopping", flush=True)
    finally:
        stackfile.forget(os.getpid())
        await supervisor.stop()
        if server is not None:
            server.stop()
    return 0


COMMANDS = {
    "run": _run,
    "submit": _submit,
    "status": _status,
    "result": _result,
    "trace": _trace,
    "nodes": _nodes,
    "ps": _ps,
    "logs": _logs,
    "report": _report,
}


if __name__ == "__main__":
    sys.exit(main())
