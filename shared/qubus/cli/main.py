"""The ``qubus`` command line: its root parser and ``main``, which runs the command given.

The commands are in their groups' modules: ``tasks``, ``ops``, ``weights`` and ``bench``;
``completion`` prints a shell completion script built from the parser. ``main`` turns every
error into one line on stderr and an exit status (``EXIT_STATUS``); ``QUBUS_DEBUG=1`` shows
the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

from qubus.cli import bench as cli_bench
from qubus.cli import ops, tasks
from qubus.cli import weights as cli_weights
from qubus.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    connected,
)
from qubus.cli.deferred import defer_imports
from qubus.errors import QubusError
from qubus.version import __version__

DESCRIPTION = """\
qubus schedules quantum circuits across a fleet of emulated QPUs over NATS JetStream.

The quickest start is `qubus run FILE`: it starts a private stack (embedded NATS and every
service), runs the circuits and prints their counts. For a stack that stays up, run
`qubus up` in one terminal and `qubus submit`, `tasks`, `status`, `result`, `trace`, `nodes`,
`ps` and `logs` in another (`qubus down` stops it): they find the stack `qubus up` recorded in
~/.qubus/stack.json, or the server in QUBUS_NATS_URL. Every QUBUS_* environment variable is a
setting (see docs/architecture.md).
"""

EXIT_STATUS = """\
Formats: OpenQASM 2 (.qasm), OpenQASM 3 (.qasm3), Cirq JSON (.json).

Exit status:
  0    success (for run, submit --wait, status and result: every task done)
  1    failure: a task rejected, failed or cancelled; no stack; a file that cannot be read
  2    usage: a bad command line (one line on stderr says what, with a [code])
  3    status and result: the task has not finished (pending, queued or running)
  130  interrupted (Ctrl-C or SIGTERM); submit --wait has printed the task ids first

Errors are one line, `qubus: MESSAGE [CODE]`; QUBUS_DEBUG=1 adds the traceback of an
unexpected one. Shell completion: `eval "$(qubus completion bash)"` (or `zsh`).
"""


class Parser(argparse.ArgumentParser):
    """argparse with errors as one line (``qubus submit: MESSAGE [usage]``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} [usage]\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qubus",
        description=DESCRIPTION,
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qubus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (  # in the order `qubus --help` lists the commands
        tasks.add_submission_commands,  # run, submit
        ops.add_up_command,  # up, user, down
        tasks.add_task_commands,  # tasks, status, result, trace, cancel
        ops.add_inspection_commands,  # nodes, ps, logs
        tasks.add_parse_command,
        ops.add_report_command,
        ops.add_dashboard_command,
        ops.add_service_command,
        cli_weights.add_parsers,  # weights, feedback, pilot
        cli_bench.add_parsers,  # bench
        _add_completion_command,
    ):
        add_commands(sub)
    return parser


QUICK_EXIT = frozenset({"parse"})
"""Commands that leave nothing to clean up (no files written, no children, no event loop):
the console script ends them without the interpreter's teardown (``entry``)."""


def entry() -> NoReturn:
    """The ``qubus`` console script: ``main``, then exit. After a ``QUICK_EXIT`` command the
    process ends at once (``os._exit`` once stdout and stderr are flushed): the teardown frees
    every module cirq imported one by one, 0.45 s of the 1.6 s ``qubus parse`` took."""
    sys.exit(main(quick_exit=True))


def main(argv: list[str] | None = None, *, quick_exit: bool = False) -> int:
    """Run ``qubus ARGV``; returns the exit status (``EXIT_STATUS``). With ``quick_exit``
    (the console script) a ``QUICK_EXIT`` command ends the process instead of returning."""
    defer_imports()  # before any command imports cirq
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        status = _dispatch(parser, args)
        if quick_exit and args.command in QUICK_EXIT:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    except UsageError as exc:
        print(f"qubus: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_USAGE
    except QubusError as exc:
        print(f"qubus: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("qubus: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `qubus ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if os.environ.get("QUBUS_DEBUG"):
            traceback.print_exc()
        print(f"qubus: {_unexpected(exc)}", file=sys.stderr)
        return EXIT_FAILURE


def _unexpected(exc: Exception) -> str:
    """One line for an error no command turned into a ``QubusError``."""
    module = type(exc).__module__
    if type(exc).__name__ == "ConnectionClosedError" and module.startswith("nats"):
        return "lost the connection to NATS: is the stack still up? [nats.lost]"
    if module.startswith("nats"):  # the connection works but the server refused something
        return f"NATS: {exc or type(exc).__name__} [nats.error]"
    if type(exc).__name__ == "ValidationError" and getattr(exc, "title", "") == "Settings":
        wrong = "; ".join(  # a check across settings (no ``loc``) names them itself
            f"QUBUS_{'_'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()  # type: ignore[attr-defined]
        )
        return f"bad setting: {wrong} [settings.invalid]"
    hint = "" if os.environ.get("QUBUS_DEBUG") else " (QUBUS_DEBUG=1 shows the traceback)"
    return f"unexpected {type(exc).__name__}: {exc}{hint} [internal]"


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "service":
        return ops.service(args)
    if args.command == "completion":
        print(completion_script(parser, args.shell))
        return 0
    if args.command == "down":
        return ops.down(args)
    if args.command == "parse":
        return tasks.parse(args)
    if args.command == "bench":
        return cli_bench.run(args)
    from qubus.bus import logs

    logs.configure("cli", f"cli-{os.getpid()}", os.environ.get("QUBUS_CLI_LOG_LEVEL", "error"))
    if args.command == "up":
        try:
            return run_interruptible(ops.up(args))
        finally:
            ops.reap_late_children()
    if args.command in cli_weights.HANDLERS:
        return run_interruptible(_with_client(cli_weights.HANDLERS[args.command], args))
    return run_interruptible(COMMANDS[args.command](args))


def run_interruptible(coro: Any) -> int:
    """Run a command's coroutine; SIGTERM interrupts it as Ctrl-C does: the coroutine is
    cancelled (its ``finally`` blocks run), then ``KeyboardInterrupt``. SIGINT too when the
    shell started the command with it ignored (``cmd &`` in a script)."""

    async def interruptible() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, interrupt)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            return await coro
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise

    return asyncio.run(interruptible())


async def _with_client(handler: cli_weights.Handler, args: argparse.Namespace) -> int:
    """Run a command that takes a client of the running stack (weights, feedback, pilots:
    the operator's, on a secured ``qubus up``)."""
    from qubus.bus.auth import OPERATOR

    async with connected(OPERATOR) as client:
        return await handler(client, args)


def _add_completion_command(sub: argparse._SubParsersAction) -> None:
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description='Print a completion script: `eval "$(qubus completion bash)"` in ~/.bashrc, '
        '`eval "$(qubus completion zsh)"` in ~/.zshrc (after `compinit`).',
    )
    completion.add_argument("shell", choices=["bash", "zsh"])


def completion_script(parser: argparse.ArgumentParser, shell: str = "bash") -> str:
    """A completion function for ``qubus`` in ``shell`` (``bash`` or ``zsh``): its commands,
    each command's options and actions (``qubus weights show``), and file names everywhere
    else."""
    paths = _completion_words(parser)
    cases = [  # the longest command path first: `weights set` before `weights`
        f'    "{name}" | "{name} "*) choices="{" ".join(words)}" ;;'
        for name, words in sorted(paths.items(), key=lambda kv: -len(kv[0]))
        if name
    ]
    # the words before the cursor that are not options name the command path
    first, current, word = (
        ("2", "CURRENT", "words[i]") if shell == "zsh" else ("1", "COMP_CWORD", "COMP_WORDS[i]")
    )
    head = [
        "_qubus() {",
        '  local key="" choices="" i',
        f"  for ((i = {first}; i < {current}; i++)); do",
        f'    case "${{{word}}}" in -*) ;; *) key="${{key:+$key }}${{{word}}}" ;; esac',
        "  done",
        '  case "$key" in',
        f'    "") choices="{" ".join(paths[""])}" ;;',
        *cases,
        "  esac",
    ]
    if shell == "zsh":
        tail = ["  compadd -- ${=choices}", "  _files", "}", "compdef _qubus qubus"]
    else:
        tail = [
            '  COMPREPLY=($(compgen -W "$choices" -- "${COMP_WORDS[COMP_CWORD]}"))',
            "}",
            "complete -o default -F _qubus qubus",
        ]
    return "\n".join(head + tail)


def _completion_words(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    """Per command path (``""``, ``"weights"``, ``"weights set"``), the words that may follow."""
    words: list[str] = []
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        words += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                words.append(name)
                found.update(_completion_words(child, f"{prefix} {name}".strip()))
        elif not action.option_strings and action.choices:
            words += [str(c) for c in action.choices]
    return {prefix: words, **found}


COMMANDS = {**tasks.COMMANDS, **ops.COMMANDS}
"""The commands ``main`` runs in an event loop, by name."""


if __name__ == "__main__":
    entry()
