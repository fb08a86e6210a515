"""Weights, feedback, pilots and fidelity calibration through the real stack and CLI."""

from __future__ import annotations

import asyncio
import json
import re

import nats.errors
import pytest

from qubus.bus import codec
from qubus.bus.connection import BUCKET_CALIBRATION, BUCKET_WEIGHTS
from qubus.bus.messages import SubmitRequest, TaskChecked, TaskCompleted, TaskRejected, TaskScored
from qubus.client.aio import Client
from qubus.scheduling.outcomes import CalibrationState, calibrate, calibration_key, circuit_class
from qubus.scheduling.weights import FeedbackRecord

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

BELL = "qasmbench__bell_n4.qasm"


async def run_scored(client: Client, request: SubmitRequest) -> tuple[dict, TaskScored]:
    """Run one task to completion; its record and its scored event."""
    [record] = await client.run([request], timeout=120)
    assert record["status"] == "done", record["error"]
    scored = await client.bus.last_event(record["task_id"], TaskScored)
    assert isinstance(scored, TaskScored)
    return record, scored


def eligible(scored: TaskScored) -> list:
    scores = [s for s in scored.scores if s.eligible]
    assert scores
    return scores


def revision_of(out: str) -> int:
    match = re.search(r"weights revision (\d+)", out)
    assert match, out
    return int(match.group(1))


async def test_weights_set_on_the_cli_score_the_next_task(client, qubus_cli, nats_url, dev_qasm):
    request = SubmitRequest(circuit=(dev_qasm / BELL).read_text(), shots=200)
    _, before = await run_scored(client, request)
    code, out, err = await qubus_cli(nats_url, "weights", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["revision"] == before.weights_revision > 0
    for s in eligible(before):
        assert s.terms["qnc"] == pytest.approx(shown["weights"]["w_qnc"] * s.inputs["qnc"])

    code, out, err = await qubus_cli(nats_url, "weights", "set", "w_qnc=0.9", "w_time=0")
    assert code == 0, err
    revision = revision_of(out)
    assert revision > before.weights_revision

    _, after = await run_scored(client, request)
    assert after.weights_revision == revision
    for s in eligible(after):
        assert s.terms["qnc"] == pytest.approx(0.9 * s.inputs["qnc"])
        assert s.terms["time_penalty"] == 0.0 and s.shapley["time"] == 0.0
    code, out, err = await qubus_cli(nats_url, "weights", "show", "--json")
    shown = json.loads(out)
    assert (shown["revision"], shown["source"]) == (revision, "set")
    assert shown["weights"]["w_qnc"] == 0.9
    assert [h["revision"] for h in shown["history"]][-2:] == [before.weights_revision, revision]

    code, out, err = await qubus_cli(nats_url, "weights", "set", "w_qnc=-1")
    assert code == 2 and "[weights.invalid]" in err


async def test_feedback_nudges_unpinned_weights_once_per_task(
    client, qubus_cli, nats_url, dev_qasm
):
    code, out, err = await qubus_cli(nats_url, "weights", "pin", "w_qnc")
    assert code == 0, err
    pinned_revision = revision_of(out)
    record, scored = await run_scored(
        client, SubmitRequest(circuit=(dev_qasm / BELL).read_text(), shots=200)
    )
    assert scored.weights_revision == pinned_revision
    code, out, err = await qubus_cli(
        nats_url, "feedback", record["task_id"], "--rating", "5", "--json"
    )
    assert code == 0, err
    answer = json.loads(out)
    weights = answer["weights"]
    assert weights["revision"] > pinned_revision and weights["source"] == "feedback"
    assert weights["pinned"] == ["w_qnc"]

    code, out, err = await qubus_cli(nats_url, "weights", "show", "--json")
    shown = json.loads(out)
    before = next(h for h in shown["history"] if h["revision"] == pinned_revision)
    assert shown["weights"]["w_qnc"] == before["weights"]["w_qnc"]  # pinned
    changed = [n for n in shown["weights"] if shown["weights"][n] != before["weights"][n]]
    assert changed and "w_qnc" not in changed

    kv = await client.bus.kv(BUCKET_WEIGHTS)
    stored = codec.decode((await kv.get(f"feedback.{record['task_id']}")).value, FeedbackRecord)
    assert (stored.rating, stored.node) == (5, record["nodes"][0])
    assert stored.scored_revision == pinned_revision

    code, out, err = await qubus_cli(nats_url, "feedback", record["task_id"], "--rating", "1")
    assert code == 1 and "[feedback.exists]" in err


async def test_a_pilot_restricts_placement(client, qubus_cli, nats_url, dev_qasm):
    code, out, err = await qubus_cli(
        nats_url, "pilot", "create", "h2only", "--nodes", "quantinuum_h2_2", "--max-queue", "50"
    )
    assert code == 0, err
    code, out, err = await qubus_cli(nats_url, "pilot", "list", "--json")
    assert code == 0, err
    [pilot] = [p for p in json.loads(out)["pilots"] if p["name"] == "h2only"]
    assert pilot["nodes"] == ["quantinuum_h2_2"] and pilot["max_queue"] == 50

    path = dev_qasm / BELL
    code, out, err = await qubus_cli(
        nats_url, "submit", str(path), "--pilot", "h2only", "--shots", "200", "--wait", "--json"
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["nodes"] == ["quantinuum_h2_2"]
    scored = await client.bus.last_event(record["task_id"], TaskScored)
    assert scored is not None and scored.options.pilot == "h2only"
    outside = next(s for s in scored.scores if s.node == "ibm_nairobi")
    assert not outside.eligible and outside.reason == "not in pilot h2only"

    code, out, err = await qubus_cli(nats_url, "pilot", "create", "h2only", "--nodes", "x")
    assert code == 1 and "[pilot.exists]" in err

    code, out, err = await qubus_cli(nats_url, "pilot", "delete", "h2only")
    assert code == 0 and "deleted pilot h2only" in out, err
    code, out, err = await qubus_cli(nats_url, "pilot", "list", "--json")
    assert "h2only" not in {p["name"] for p in json.loads(out)["pilots"]}
    [gone] = await client.run([SubmitRequest(circuit=path.read_text(), shots=200, pilot="h2only")])
    assert gone["status"] == "rejected" and gone["error"]["code"] == "pilot.unknown"
    code, out, err = await qubus_cli(nats_url, "pilot", "delete", "h2only")
    assert code == 1 and "[pilot.unknown]" in err


async def test_a_pilot_nobody_meets_and_an_unknown_pilot_reject_the_task(
    client, qubus_cli, nats_url, dev_qasm
):
    code, out, err = await qubus_cli(
        nats_url,
        "pilot",
        "create",
        "perfect",
        "--nodes",
        "ibm_nairobi,quantinuum_h2_2",
        "--min-fidelity",
        "0.99999",
    )
    assert code == 0, err
    text = (dev_qasm / BELL).read_text()
    strict, unknown = await client.run(
        [
            SubmitRequest(circuit=text, shots=200, pilot="perfect"),
            SubmitRequest(circuit=text, shots=200, pilot="nosuchpilot"),
        ],
        timeout=120,
    )
    assert strict["status"] == "rejected"
    assert strict["error"]["code"] == "alloc.no_fit"
    assert "below pilot perfect's 0.99999" in strict["error"]["message"]
    assert unknown["status"] == "rejected"
    assert unknown["error"]["code"] == "pilot.unknown"
    assert "nosuchpilot" in unknown["error"]["message"]
    rejected = await client.bus.last_event(unknown["task_id"], TaskRejected)
    assert rejected is not None and rejected.stage == "fusion"


async def counted(client: Client, key: str, task_id: str, timeout: float = 60.0):
    """The calibration state under ``key`` once it has counted ``task_id``."""
    kv = await client.bus.kv(BUCKET_CALIBRATION)
    watcher = await kv.watch(key)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    entry = await watcher.updates(timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                if entry is not None and entry.value:
                    state = codec.decode(entry.value, CalibrationState)
                    if task_id in state.recent:
                        return state
    finally:
        await watcher.stop()


async def test_completed_tasks_update_the_calibration_that_scores_the_next(client, dev_qasm):
    text = (dev_qasm / "qasmbench__cat_state_n4.qasm").read_text()
    node = "ibm_nairobi"
    clean, noisy = await client.run(
        [
            SubmitRequest(circuit=text, shots=500, node=node, noiseless=True),
            SubmitRequest(circuit=text, shots=500, node=node),
        ],
        timeout=120,
    )
    assert clean["status"] == noisy["status"] == "done", (clean["error"], noisy["error"])
    checked = await client.bus.last_event(noisy["task_id"], TaskChecked)
    completed = await client.bus.last_event(noisy["task_id"], TaskCompleted)
    assert checked is not None and completed is not None
    key = calibration_key(node, circuit_class(checked.features))
    state = await counted(client, key, noisy["task_id"])
    assert state.node == node and state.outcomes >= 1
    assert clean["task_id"] not in state.recent  # a noiseless run says nothing of the noise
    assert state.sx >= completed.predicted_fidelity - 1e-9
    assert state.sy >= completed.measured_fidelity - 1e-9

    _, scored = await run_scored(client, SubmitRequest(circuit=text, shots=500, node=node))
    [score] = [s for s in scored.scores if s.node == node]
    assert score.inputs["meta"] != pytest.approx(calibrate(None, score.predicted_fidelity).meta)
    assert 0.0 < score.inputs["meta"] <= 1.0


async def test_weights_tuned_on_the_bench_are_stored_only_if_better_held_out(
    client, qubus_cli, nats_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("QUBUS_STATE_DIR", str(tmp_path))  # a private emulation cache
    code, out, err = await qubus_cli(nats_url, "weights", "show", "--json")
    before = json.loads(out)
    code, out, err = await qubus_cli(
        nats_url,
        *("weights", "tune", "--from-bench", "--budget", "4", "--tasks", "12", "--qpus", "3"),
        *("--no-background", "--apply", "--json"),
        timeout=600,
    )
    report = json.loads(out)
    assert report["start_revision"] == before["revision"]
    assert len(report["tuning"]["values"]) == 4
    for name in before["pinned"]:
        assert report["weights"][name] == before["weights"][name]
    better = report["holdout"]["tuned"] > report["holdout"]["start"]
    assert (code, report["applied_revision"] is not None) == ((0, True) if better else (1, False))
    code, out, err = await qubus_cli(nats_url, "weights", "show", "--json")
    after = json.loads(out)
    if better:
        assert (after["revision"], after["source"]) == (report["applied_revision"], "tuned")
        assert after["weights"] == pytest.approx(report["weights"])
    else:
        assert after["revision"] == before["revision"]


async def test_weights_tuned_on_the_stacks_own_outcomes(
    client, qubus_cli, nats_url, dev_qasm, tmp_path, monkeypatch
):
    monkeypatch.setenv("QUBUS_STATE_DIR", str(tmp_path))  # a private emulation cache
    text = (dev_qasm / BELL).read_text()
    records = await client.run([SubmitRequest(circuit=text, shots=300) for _ in range(6)])
    assert all(r["status"] == "done" for r in records), records
    code, out, err = await qubus_cli(
        nats_url, "weights", "tune", "--from-outcomes", "--budget", "3", "--json", timeout=600
    )
    assert code == 0, err
    report = json.loads(out)
    # Every noisy single-node task of this module so far (at least the six above), the
    # latest third held out.
    total = report["tuning"]["tasks"] + report["holdout"]["tasks"]
    assert total >= 6 and report["holdout"]["tasks"] == round(total / 3)
    assert len(report["tuning"]["values"]) == 3
    assert report["holdout"]["start"] < 0 and report["holdout"]["tuned"] < 0
    assert report["applied_revision"] is None  # not asked to apply
