"""Wire types, codec, ingress rules, ids and trace context (no NATS)."""

from __future__ import annotations

import json
import multiprocessing

import msgpack
import pytest
from pydantic import ValidationError

from qubus.bus import codec
from qubus.bus.ids import (
    TASK_ID,
    idempotency_kv_key,
    new_task_id,
    seed_for,
    split_task_subject,
    submitted_at,
    task_subject,
)
from qubus.bus.messages import (
    TYPES,
    SubmitRequest,
    TaskAllocated,
    TaskOptions,
    TaskRejected,
    TaskRunning,
    believed,
    event_of,
)
from qubus.bus.tracing import TraceContext
from qubus.circuits.ingest import check_circuit, detect_format
from qubus.errors import InvalidPayload


def test_every_type_name_is_versioned_and_unique():
    assert all(name.rsplit(".", 1)[-1].startswith("v") for name in TYPES)
    assert len({cls for cls in TYPES.values()}) == len(TYPES)


def test_msgpack_round_trip_keeps_the_model():
    event = TaskRejected(
        task_id="u.t1", stage="parser", error={"code": "qasm.syntax", "message": "m", "line": 3}
    )
    assert codec.decode(codec.encode(event), TaskRejected) == event
    assert codec.decode_typed(codec.encode(event), "task.rejected.v1") == event


def test_json_body_is_accepted_with_its_content_type():
    body = json.dumps({"circuit": "OPENQASM 2.0;", "shots": 10}).encode()
    request = codec.decode(body, SubmitRequest, content_type=codec.JSON)
    assert request.shots == 10 and request.priority == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xc1\xc1", "payload.undecodable"),
        (msgpack.packb([1, 2]), "payload.not_a_map"),
        (msgpack.packb({"circuit": ""}), "payload.invalid"),
        (msgpack.packb({"circuit": "x", "shots": 0}), "payload.invalid"),
        (msgpack.packb({"circuit": "x", "surprise": 1}), "payload.invalid"),
        (msgpack.packb({"circuit": "x", "node": "Not A Node!"}), "payload.invalid"),
    ],
)
def test_bad_bodies_are_invalid_payloads_with_codes(body, code):
    with pytest.raises(InvalidPayload) as raised:
        codec.decode(body, SubmitRequest)
    assert raised.value.code == code


def test_validation_message_names_every_bad_field():
    body = msgpack.packb({"circuit": 42, "shots": "many"})
    with pytest.raises(InvalidPayload, match="circuit.*shots"):
        codec.decode(body, SubmitRequest)


def test_unknown_type_name_is_refused():
    with pytest.raises(InvalidPayload) as raised:
        codec.decode_typed(b"\x80", "task.nothing.v1")
    assert raised.value.code == "payload.unknown_type"


def test_allocation_subject_names_the_node_but_dedup_id_does_not():
    event = TaskAllocated(
        task_id="u.t9",
        node="ibm_nairobi",
        policy="hyperscore",
        reason="",
        ranking=[],
        predicted_fidelity=0.9,
        hyperscore=150.0,
        circuit="{}",
        options=TaskOptions(shots=1),
        ideal={},
    )
    assert event.subject() == "qubus.task.u.t9.allocated.ibm_nairobi"
    assert event.msg_id() == "u.t9.allocated"


def test_a_nodes_events_name_it_in_subject_and_dedup_id_and_are_believed_on_their_own_subject():
    running = TaskRunning(task_id="u.t9", node="ibm_nairobi", queue_wait_s=0.0)
    assert running.subject() == "qubus.task.u.t9.running.ibm_nairobi"
    assert running.msg_id() == "u.t9.running.ibm_nairobi"
    assert TaskRunning.subjects() == "qubus.task.*.*.running.*"
    assert running.stored_on(running.subject())
    assert running.stored_on("qubus.task.u.t9.running")  # stored before nodes were named
    assert not running.stored_on("qubus.task.u.t9.running.quantinuum_h2_2")
    assert not running.stored_on("qubus.task.u.t8.running.ibm_nairobi")
    with pytest.raises(ValidationError):
        TaskRunning(task_id="u.t9", node="*", queue_wait_s=0.0)


def test_a_nodes_event_is_believed_only_from_a_node_the_task_was_allocated_to():
    tails = ["ingested", "allocated.a", "running.b", "completed.b", "replace.a", "running.a"]
    tails += ["completed.a", "allocated.c", "completed.c", "failed"]
    assert believed(tails) == [True, True, False, False, True, True, True, True, False, True]
    assert believed(["completed"]) == [True]  # stored before nodes were named


@pytest.mark.parametrize(
    ("text", "declared", "expected"),
    [
        ("OPENQASM 2.0;\nqreg q[1];", None, "qasm2"),
        ("// header\nOPENQASM 3.0;\nqubit q;", None, "qasm3"),
        ("OPENQASM 3;", None, "qasm3"),
        ("qreg q[1];", None, "qasm2"),
        ('  {"cirq_type": "Circuit"}', None, "cirq-json"),
        ("OPENQASM 2.0;", "qasm3", "qasm3"),
    ],
)
def test_format_is_detected_from_the_text_unless_declared(text, declared, expected):
    assert detect_format(SubmitRequest(circuit=text, format=declared)) == expected


def test_cirq_json_must_be_a_json_object():
    check_circuit('{"cirq_type": "Circuit"}', "cirq-json")
    for text in ("[1]", "{nope"):
        with pytest.raises(InvalidPayload):
            check_circuit(text, "cirq-json")


def test_task_ids_name_their_owner_are_unique_and_sort_by_time():
    ids = [new_task_id("alice", now=1000.0 + i) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(TASK_ID.match(i) and i.split(".")[0] == "alice" for i in ids)
    assert len({new_task_id("alice", now=5.0) for _ in range(200)}) == 200
    assert submitted_at(ids[0]) == 1000.0 and submitted_at("alice.t1") is None


def test_seeds_are_fixed_by_task_and_purpose():
    assert seed_for("u.t", "qpu") == seed_for("u.t", "qpu")
    assert seed_for("u.t", "qpu") != seed_for("u.t", "ideal")
    assert 0 <= seed_for("u.t", "qpu") < 2**32


def test_idempotency_key_is_a_valid_kv_key_for_any_text():
    key = idempotency_kv_key("alice", "any text / with spaces * and > wildcards")
    assert len(key) == 64 and key.isalnum()
    assert idempotency_kv_key("bob", "k") != idempotency_kv_key("alice", "k")


def test_trace_context_round_trips_and_children_keep_the_trace():
    trace = TraceContext.new()
    assert TraceContext.extract({"traceparent": trace.traceparent}) == trace
    child = trace.child()
    assert child.trace_id == trace.trace_id and child.span_id != trace.span_id
    assert TraceContext.extract({"traceparent": child.traceparent}) == child
    spans = {trace.child().span_id for _ in range(1000)}
    assert len(spans) == 1000 and all(len(span) == 16 and span != "0" * 16 for span in spans)


def _first_span(trace: TraceContext, out: multiprocessing.SimpleQueue) -> None:
    out.put(trace.child().span_id)


def test_forked_processes_draw_different_spans():
    trace = TraceContext.new()
    fork = multiprocessing.get_context("fork")
    out = fork.SimpleQueue()
    children = [fork.Process(target=_first_span, args=(trace, out)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    assert out.get() != out.get()


@pytest.mark.parametrize("header", [None, "", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
def test_missing_or_invalid_traceparent_starts_a_new_trace(header):
    headers = None if header is None else {"traceparent": header}
    trace = TraceContext.extract(headers)
    assert len(trace.trace_id) == 32 and trace.trace_id != "0" * 32


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"circuit": "x", "deadline_s": Infinity}', "deadline_s"),
        (b'{"circuit": "x", "deadline_s": NaN}', "deadline_s"),
        (b'{"circuit": "x", "deadline_s": 1e400}', "deadline_s"),
        (b'{"circuit": "x", "deadline_s": 1e12}', "deadline_s"),
        (b'{"circuit": "x", "fidelity_floor": -Infinity}', "fidelity_floor"),
        (b'{"circuit": "x", "shots": true}', "shots"),
        (b'{"circuit": "x", "shots": 10.0}', "shots"),
        (b'{"circuit": "x", "priority": "3"}', "priority"),
        (b'{"circuit": "x", "noiseless": "yes"}', "noiseless"),
    ],
)
def test_non_finite_out_of_range_and_wrongly_typed_numbers_are_refused_at_ingress(body, field):
    with pytest.raises(InvalidPayload, match=field) as raised:
        codec.decode(body, SubmitRequest, content_type=codec.JSON)
    assert raised.value.code == "payload.invalid"


def test_json_nested_100k_deep_is_refused_with_a_code():
    body = b'{"circuit": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidPayload) as raised:
        codec.decode(body, SubmitRequest, content_type=codec.JSON)
    assert raised.value.code == "payload.too_deep"


def test_a_stored_event_with_a_non_finite_option_is_invalid_for_the_stage_reading_it():
    options = {"shots": 10, "deadline_s": float("inf")}
    body = msgpack.packb(
        {"task_id": "u.t1", "format": "qasm2", "text": "x", "options": options, "submitted_at": 1.0}
    )
    with pytest.raises(InvalidPayload, match="deadline_s"):
        codec.decode(body, TYPES["task.ingested.v1"])


@pytest.mark.parametrize(
    "task_id",
    ["*", ">", "*.*", "alice.*", "alice.>", "*.t1", "t1", "a.b.c", "", ".t1", "a." + "x" * 65],
)
def test_task_ids_that_are_not_an_owner_and_an_id_token_are_refused(task_id):
    with pytest.raises(InvalidPayload) as raised:
        task_subject(task_id, ">")
    assert raised.value.code == "task.invalid_id"
    body = msgpack.packb({"task_id": task_id, "stage": "s", "error": {"code": "c", "message": ""}})
    with pytest.raises(InvalidPayload):
        codec.decode(body, TaskRejected)


def test_a_plain_task_id_makes_its_subject():
    assert task_subject("alice.018f3a2b1c4d5e6f7a8b9", "allocated.*") == (
        "qubus.task.alice.018f3a2b1c4d5e6f7a8b9.allocated.*"
    )


def test_a_task_subject_splits_back_into_its_task_id_and_tail():
    subject = task_subject("alice.018f3a2b1c4d5e6f7a8b9", "allocated.ibm_nairobi")
    assert split_task_subject(subject) == ("alice.018f3a2b1c4d5e6f7a8b9", "allocated.ibm_nairobi")


def test_a_subject_tail_names_its_event_and_for_allocations_and_node_events_the_node():
    assert event_of("eval.noise") == ("eval.noise", "")
    assert event_of("parsed") == ("parsed", "")
    assert event_of("allocated.ibm_nairobi") == ("allocated", "ibm_nairobi")
    assert event_of("completed.ibm_nairobi") == ("completed", "ibm_nairobi")
    assert event_of("completed") == ("completed", "")  # stored before nodes were named
