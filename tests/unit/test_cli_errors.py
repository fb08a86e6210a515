"""Every bad input a new user tried, through the real `qubus` command (a subprocess, no stack):
one line on stderr with a code, exit status 2 (usage) or 1 (failure), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QASM = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\nh q[0];\nmeasure q -> c;\n'
NO_NATS = {"QUBUS_NATS_URL": "nats://127.0.0.1:1"}

# (arguments, environment, exit status, text the one line must contain)
BAD_INPUTS = [
    (["submit", "{ok}", "--shots", "0"], {}, 2, "--shots: 0 is not from 1 to 100000 [usage]"),
    (["submit", "{ok}", "--shots", "-5"], {}, 2, "--shots: -5 is not from 1 to 100000 [usage]"),
    (["run", "{ok}", "--shots", "10000000000"], {}, 2, "is not from 1 to 100000 [usage]"),
    (["submit", "{ok}", "--shots", "many"], {}, 2, "'many' is not a whole number [usage]"),
    (["submit", "{ok}", "--priority", "11"], {}, 2, "--priority: 11 is not from 0 to 10 [usage]"),
    (["submit", "{ok}", "--min-fidelity", "2"], {}, 2, "--min-fidelity: 2 is not from 0 to 1"),
    (["submit", "{ok}", "--deadline", "-1"], {}, 2, "--deadline: -1 is not greater than 0"),
    (["submit", "{ok}", "--timeout", "0"], {}, 2, "--timeout: 0 is not greater than 0"),
    (["submit", "{ok}", "--split", "9"], {}, 2, "--split: 9 is not from 2 to 8 [usage]"),
    (["submit", "{ok}", "--split", "2", "--node", "x"], {}, 2, "[options.invalid]"),
    (["submit", "{ok}", "--node", "Bad Node"], {}, 1, "invalid submission: node"),
    (["result", "*"], {}, 2, "'*' is not a task id"),
    (["status", ">"], {}, 2, "'>' is not a task id"),
    (["trace", "a.b.c"], {}, 2, "'a.b.c' is not a task id"),
    (["trace", "alice.*"], {}, 2, "'alice.*' is not a task id"),
    (["status", "abc"], {}, 2, "'abc' is not a task id"),
    (["cancel", "u.ok", "*"], {}, 2, "'*' is not a task id"),
    (["feedback", "*", "--rating", "3"], {}, 2, "'*' is not a task id"),
    (["logs", "--task", "x y"], {}, 2, "'x y' is not a task id"),
    (["logs", "--service", "a b"], {}, 2, "invalid choice: 'a b' (choose from"),
    (["logs", "--service", ""], {}, 2, "invalid choice: '' (choose from"),
    (["logs", "--service", "x" * 5000], {}, 2, "--service: invalid choice"),
    (["bogus"], {}, 2, "invalid choice: 'bogus'"),
    (["up", "--fleet", "ibm_nairobi,bogus_node"], {}, 2, "unknown node id 'bogus_node'"),
    (["parse", "{empty}"], {}, 1, "is empty [file.empty]"),
    (["parse", "{binary}"], {}, 1, "is a binary file, not a circuit [file.binary]"),
    (["submit", "{empty}"], NO_NATS, 1, "is empty [file.empty]"),
    (["run", "{binary}"], {}, 1, "[file.binary]"),
    (["run", "{missing}"], {}, 1, "No such file or directory [file.unreadable]"),
    (["parse", "{latin1}"], {}, 1, "is not UTF-8 text [file.binary]"),
    (["status", "u.abc"], {"QUBUS_STATE_DIR": "{tmp}"}, 1, "[nats.unconfigured]"),
    (["submit", "{ok}"], NO_NATS, 1, "no NATS at nats://127.0.0.1:1: start `qubus up` or set"),
    (["status", "u.abc"], NO_NATS, 1, "[nats.unreachable]"),
    (["logs", "--follow"], NO_NATS, 1, "[nats.unreachable]"),
    (["tasks"], {"QUBUS_QUOTA_TASKS": "many"}, 1, "QUBUS_QUOTA_TASKS='many'"),
    (
        ["up"],
        {"QUBUS_STATE_DIR": "{tmp}", "QUBUS_TASK_RETENTION_S": "300"},
        1,
        "bad setting: QUBUS_DUPLICATE_WINDOW_S (600) is longer than QUBUS_TASK_RETENTION_S (300)",
    ),
    (
        ["status", "u.abc"],
        {"QUBUS_TASK_RETENTION_S": "99999999999999999999"},
        1,
        "QUBUS_TASK_RETENTION_S='99999999999999999999': Input should be less than or equal to",
    ),
    (["down"], {"QUBUS_STATE_DIR": "{tmp}"}, 1, "no stack is running"),
    (["bench", "schedule", "--qpus", "40"], {}, 2, "[bench.args]"),
]


def qubus(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qubus.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "ok.qasm").write_text(QASM)
    (tmp_path / "empty.qasm").write_text(" \n")
    (tmp_path / "binary.qasm").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "latin1.qasm").write_bytes("// café\n".encode("latin-1"))
    names = {name: str(tmp_path / f"{name}.qasm") for name in ("ok", "empty", "binary", "latin1")}
    return {**names, "missing": str(tmp_path / "missing.qasm"), "tmp": str(tmp_path)}


@pytest.mark.parametrize(("args", "env", "status", "message"), BAD_INPUTS)
def test_a_bad_input_is_one_line_with_a_code_and_an_exit_status(
    files: dict[str, str], args: list[str], env: dict[str, str], status: int, message: str
) -> None:
    env = {key: value.format(**files) for key, value in env.items()}
    done = qubus([arg.format(**files) for arg in args], {"QUBUS_NATS_URL": "", **env})

    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qubus"), done.stderr
    assert message in lines[0]
    assert lines[0].endswith("]")  # the code
    assert "Traceback" not in done.stderr + done.stdout


def test_a_closed_pipe_is_not_an_error() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "qubus.cli.main", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head -0`
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


def test_help_lists_the_exit_statuses_and_version_prints_the_version() -> None:
    help_text = qubus(["--help"], {}).stdout
    for line in ("0    success", "1    failure", "2    usage", "3    status and result", "130"):
        assert line in help_text
    assert qubus(["--version"], {}).stdout.startswith("qubus 0.")


def test_bash_completion_knows_commands_and_their_options() -> None:
    script = qubus(["completion", "bash"], {}).stdout
    assert "complete -o default -F _qubus qubus" in script
    top = next(line for line in script.splitlines() if line.strip().startswith('"")'))
    assert all(word in top for word in ("submit", "tasks", "cancel", "down", "completion"))
    submit = next(line for line in script.splitlines() if line.strip().startswith('"submit"'))
    assert "--shots" in submit and "--wait" in submit


def _complete(shell: list[str], script: str, call: str) -> list[str]:
    """The words the completion function ``script`` offers, run by ``shell`` with ``call``
    setting up the command line before calling it."""
    done = subprocess.run(
        [*shell, f"{script}\n{call}"], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_bash_completion_offers_the_words_of_the_command_typed_so_far() -> None:
    script = qubus(["completion", "bash"], {}).stdout
    call = 'COMP_WORDS=(qubus weights "") COMP_CWORD=2; _qubus; printf "%s\\n" "${COMPREPLY[@]}"'
    assert {"show", "set", "pin", "tune"} <= set(_complete(["bash", "-c"], script, call))


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_registers_and_offers_the_words_of_the_command_typed_so_far() -> None:
    script = qubus(["completion", "zsh"], {}).stdout
    registered = "autoload -U compinit && compinit -u -D\n" + script + "\nprint $_comps[qubus]"
    assert _complete(["zsh", "-f", "-c"], registered, "") == ["_qubus"]
    stubs = "compdef() { :; }\ncompadd() { print -l -- ${@:2}; }\n_files() { :; }\n" + script
    call = "words=(qubus submit x.qasm ''); CURRENT=4; _qubus"
    offered = _complete(["zsh", "-f", "-c"], stubs, call)
    assert "--shots" in offered and "--sweep" in offered and "show" not in offered
