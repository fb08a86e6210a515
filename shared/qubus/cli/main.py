"""The ``qubus`` command line: its root parser and ``main``, which runs the command given.

The commands are in their groups' modules: ``tasks``, ``ops``, ``weights`` and ``bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from qubus import __version__
from qubus.bus import logs
from qubus.bus.auth import OPERATOR
from qubus.cli import bench as cli_bench
from qubus.cli import ops, tasks
from qubus.cli import weights as cli_weights
from qubus.cli.common import connected
from qubus.errors import QubusError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qubus",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qubus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (  # in the order `qubus --help` lists the commands
        tasks.add_submission_commands,  # run, submit
        ops.add_up_command,
        tasks.add_task_commands,  # status, result, trace
        ops.add_inspection_commands,  # nodes, ps, logs
        tasks.add_parse_command,
        ops.add_report_command,
        ops.add_service_command,
        cli_weights.add_parsers,  # weights, feedback, pilot
        cli_bench.add_parsers,  # bench
    ):
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "service":
        return ops.service(args)
    logs.configure("cli", f"cli-{os.getpid()}", os.environ.get("QUBUS_CLI_LOG_LEVEL", "warning"))
    if args.command == "up":
        return _run_async(ops.up(args))
    try:
        if args.command == "parse":
            return tasks.parse(args)
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


async def _with_client(handler: cli_weights.Handler, args: argparse.Namespace) -> int:
    """Run a command that takes a client of the running stack (weights, feedback, pilots:
    the operator's, on a secured ``qubus up``)."""
    async with connected(OPERATOR) as client:
        return await handler(client, args)


COMMANDS = {**tasks.COMMANDS, **ops.COMMANDS}
"""The commands ``main`` runs in an event loop, by name."""


if __name__ == "__main__":
    sys.exit(main())
