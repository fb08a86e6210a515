"""Replicas per service in a local stack (`qubus up --replicas`)."""

from __future__ import annotations

import pytest

from qubus.cli.stack import parse_replicas, stack_specs


def test_replicas_add_processes_with_their_own_labels() -> None:
    specs = stack_specs(["ibm_nairobi"], replicas=parse_replicas("parser=2, noise=3"))
    labels = [spec.label for spec in specs]
    assert labels.count("parser") == 1 and "parser#2" in labels
    assert {"noise", "noise#2", "noise#3"} <= set(labels)
    assert labels.count("qpu:ibm_nairobi") == 1
    assert len(labels) == len(set(labels))


def test_without_replicas_every_service_runs_once() -> None:
    labels = [spec.label for spec in stack_specs(["ibm_nairobi"])]
    assert not any("#" in label for label in labels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qpu=2", "not one of"),
        ("parsr=2", "not one of"),
        ("parser=0", "at least 1"),
        ("parser", "at least 1"),
    ],
)
def test_bad_replicas_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_replicas(text)


def test_qubus_up_refuses_bad_replicas_in_one_line_before_starting_anything(capsys) -> None:
    from qubus.cli.main import main

    assert main(["up", "--replicas", "qpu=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[up.replicas]" in err and "'qpu' is not one of" in err
