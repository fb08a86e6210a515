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

from qubus import __version__, logs, stackfile
from qubus.client import Client, stage_rows, status_of, task_record
from qubus.config import Settings
from qubus.errors import QubusError
from qubus.messages import SubmitRequest
from qubus.natsserver import NatsServer
from qubus.stack import Supervisor, stack_specs

DESCRIPTION = """\
qubus schedules quantum circuits across a fleet of emulated QPUs over NATS JetStream.

The quickest start is `qubus run FILE`: it starts a private stack (embedded NATS and every
service), runs the circuits and prints their counts. For a stack that stays up, run
`qubus up` in one terminal and `qubus submit`, `status`, `result`, `trace` and `nodes` in
another: they find the stack `qubus up` recorded in ~/.qubus/stack.json, or the server in
QUBUS_NATS_URL. Every QUBUS_* environment variable is a setting (see docs/architecture.md).
"""

EPILOG = "Formats: OpenQASM 2 (.qasm), OpenQASM 3 (.qasm3), Cirq JSON (.json)."


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

    def submission_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("files", nargs="+", metavar="FILE", help="circuit files to run")
        p.add_argument("--shots", type=int, default=1000, help="shots per circuit (default 1000)")
        p.add_argument("--priority", type=int, default=0, help="task priority 0-10 (default 0)")
        p.add_argument("--node", help="pin the tasks to this QPU node (see `qubus nodes`)")
        p.add_argument(
            "--format",
            choices=["qasm2", "qasm3", "cirq-json"],
            help="circuit format (default: from the file's extension and text)",
        )
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
    run.add_argument("--noiseless", action="store_true", help="run the QPU emulators without noise")

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
        help="list QPU nodes: kind, qubits, calibration summary, queue depth",
        description="List the QPU nodes that have reported to KV qubus_nodes.",
    )
    nodes.add_argument("--json", action="store_true", help="print JSON")

    service = sub.add_parser(
        "service",
        help="run one service process (what `qubus up` and the Procfile start)",
        description="Run one service in the foreground until SIGTERM/SIGINT.",
    )
    service.add_argument("name", choices=importlib.import_module("qubus_services").SERVICES)
    service.add_argument("--node", help="the QPU node id (required for the qpu service)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "service":
        return _service(args)
    logs.configure("cli", f"cli-{os.getpid()}", os.environ.get("QUBUS_CLI_LOG_LEVEL", "warning"))
    if args.command == "up":
        return _run_async(_up(args))
    try:
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
    """One request per file, the format from --format or the file's extension."""
    requests = []
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text()
        except OSError as exc:
            raise QubusError(f"cannot read {name}: {exc.strerror}", code="file.unreadable") from exc
        fmt = args.format or {".qasm3": "qasm3", ".json": "cirq-json"}.get(path.suffix)
        requests.append(
            SubmitRequest(
                circuit=text,
                format=fmt,
                shots=args.shots,
                priority=args.priority,
                node=args.node,
                source=name,
            )
        )
    return requests


async def _run(args: argparse.Namespace) -> int:
    requests = read_requests(args)
    async with ephemeral_stack(noiseless=args.noiseless) as url:
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
async def ephemeral_stack(*, noiseless: bool = False) -> AsyncIterator[str]:
    """A private embedded NATS server and every service; everything is removed afterwards."""
    server = NatsServer()
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-logs-"))
    url = server.start()
    env = {"QUBUS_NOISELESS": "true"} if noiseless else {}
    supervisor = Supervisor(url, stack_specs(_fleet()), log_dir=log_dir, env=env)
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
            f"  node       {', '.join(record['nodes'])}",
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


async def _status(args: argparse.Namespace) -> int:
    async with connected() as client:
        events = await client.events(args.task_id)
    if not events:
        raise QubusError(f"no task {args.task_id}", code="task.unknown")
    status = status_of(events)
    print(json.dumps({"task_id": args.task_id, "status": status}) if args.json else status)
    return 0


async def _result(args: argparse.Namespace) -> int:
    async with connected() as client:
        events = await client.events(args.task_id)
    if not events:
        raise QubusError(f"no task {args.task_id}", code="task.unknown")
    record = task_record(args.task_id, events)
    print(json.dumps(record) if args.json else format_record(record))
    return 0


async def _trace(args: argparse.Namespace) -> int:
    async with connected() as client:
        events = await client.events(args.task_id)
    if not events:
        raise QubusError(f"no task {args.task_id}", code="task.unknown")
    rows = stage_rows(events)
    if args.json:
        print(json.dumps({"task_id": args.task_id, "trace_id": events[0].trace_id, "stages": rows}))
        return 0
    print(f"task {args.task_id}  trace {events[0].trace_id}")
    origin = events[0].published
    for row, stored in zip(rows, events, strict=True):
        offset = (stored.published - origin) * 1000
        print(
            f"  +{offset:9.1f} ms  {row['event']:<13} {row['service']:<10} "
            f"{row['instance']:<24} {row['duration_ms']:>9.1f} ms"
        )
    return 0


async def _nodes(args: argparse.Namespace) -> int:
    async with connected() as client:
        statuses = await client.bus.node_statuses()
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
        print(json.dumps({"nodes": rows}))
        return 0
    if not rows:
        print("no QPU node has reported")
        return 0
    print(
        f"{'NODE':<18} {'KIND':<16} {'QUBITS':>6} {'QUEUE':>5}  {'STATE':<8}"
        f"{'1Q ERR':>9} {'2Q ERR':>9} {'READOUT':>8} {'T1 us':>9} {'T2 us':>9}  CALIBRATED"
    )
    for row in rows:
        cal = row["calibration"]
        state = ("busy" if row["busy"] else "idle") if row["online"] else "offline"
        print(
            f"{row['node']:<18} {row['kind']:<16} {row['qubits']:>6} {row['queue_depth']:>5}  "
            f"{state:<8}{_figure(cal.get('median_1q_error')):>9} "
            f"{_figure(cal.get('median_2q_error')):>9} "
            f"{_figure(cal.get('median_readout_error')):>8} "
            f"{_figure(cal.get('median_t1_us')):>9} {_figure(cal.get('median_t2_us')):>9}  "
            f"{str(cal.get('calibrated_at', ''))[:10]}"
        )
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _calibration_summary(device: dict[str, Any]) -> dict[str, Any]:
    from qubus.devices import Device

    return Device.model_validate(device).summary()


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
}


if __name__ == "__main__":
    sys.exit(main())
