"""The score weights in KV ``qubus_weights``: revisions, pins, operator changes and feedback.

Key ``current`` holds a ``WeightsRecord``: the weights (``qubus.scheduling.scoring.Weights``),
where they came from (``ahp``: the initial AHP weights; ``set``: an operator's ``qubus weights
set|pin|unpin``; ``tuned``: Bayesian optimisation, ``qubus.scheduling.tuning``; ``feedback``: an
operator's rating of a decision), the pinned weights and a note. The record's **revision** is the KV
revision of its entry; the bucket keeps the last 16 of ``current`` (``qubus weights show``).
Fusion records the revision it scored with in every ``scored`` event.

**Pins.** A pinned weight is never changed by tuning or feedback; an operator may still ``set``
it.

**Feedback.** ``qubus feedback TASK --rating R`` (1–5) nudges the weights of the terms that
drove the decision, using the Shapley values of the chosen node's score (``NodeScore.shapley``).
With ``s = (R − 3)/2`` in [−1, 1] and a term's share ``φ_t/Σ|φ|`` (signed: the time term's is
negative), each unpinned weight is multiplied by ``exp(FEEDBACK_STEP·s·share_t)``; then the
unpinned V weights are rescaled so that their total is what it was (V's scale stays put; the
time weight, a different unit, is not rescaled). A good rating so strengthens the terms that
raised the chosen node's score and weakens those that lowered it; a bad one does the opposite;
3 changes nothing. A weight at 0 stays 0. Each task is rated once: the rating is stored under
``feedback.<task_id>`` (``FeedbackRecord``) before the weights change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Literal

import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import Field, ValidationError, field_validator

from qubus.bus import codec
from qubus.bus.connection import BUCKET_WEIGHTS, Bus
from qubus.bus.kvrecords import invalid, read_record, update_record
from qubus.bus.messages import Model, TaskAllocated, TaskScored
from qubus.errors import QubusError
from qubus.scheduling.scoring import AHP, DEFAULT_WEIGHTS, TERM_WEIGHTS, TERMS, V_TERMS, Weights

WEIGHTS_KEY = "current"
FEEDBACK_STEP = 0.2
"""Largest log-change of one weight by one rating (a 5 on a decision that one term drove
entirely multiplies that weight by e^0.2 ≈ 1.22 before renormalisation)."""

WEIGHT_NAMES = tuple(Weights.model_fields)

WeightsSource = Literal["ahp", "set", "tuned", "feedback"]


class WeightsRecord(Model):
    """The value of key ``current`` in KV ``qubus_weights``.

    Attributes:
        weights: The score weights.
        source: What produced them: ``ahp``, ``set``, ``tuned`` or ``feedback``.
        pinned: Weights (``Weights`` field names) that tuning and feedback leave alone, sorted.
        note: Why they changed, in words.
        updated_at: When (Unix time).
    """

    TYPE: ClassVar[str] = "weights.record.v1"

    weights: Weights
    source: WeightsSource
    pinned: list[str] = Field(default_factory=list)
    note: str = ""
    updated_at: float

    @field_validator("pinned")
    @classmethod
    def _known_weights(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(WEIGHT_NAMES)
        if unknown:
            raise ValueError(f"unknown weights {sorted(unknown)}")
        return sorted(set(value))


class FeedbackRecord(Model):
    """An operator's rating of one decision, under ``feedback.<task_id>`` in ``qubus_weights``.

    Attributes:
        task_id: The task rated.
        rating: 1 (bad) to 5 (good).
        node: The node the task was placed on.
        scored_revision: The weights revision the decision was scored with.
        shapley: The chosen node's Shapley values the nudge used.
        created_at: When (Unix time).
    """

    TYPE: ClassVar[str] = "feedback.record.v1"

    task_id: str
    rating: int = Field(ge=1, le=5)
    node: str
    scored_revision: int
    shapley: dict[str, float]
    created_at: float


def initial_record(now: float) -> WeightsRecord:
    """The AHP weights, as stored before anyone changes them."""
    return WeightsRecord(
        weights=DEFAULT_WEIGHTS,
        source="ahp",
        note=f"AHP of qubus.scheduling.ahp.SCORE_JUDGEMENTS (CR {AHP.cr:.3f})",
        updated_at=now,
    )


def _check_names(names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(WEIGHT_NAMES))
    if unknown:
        raise QubusError(
            f"unknown weight(s) {', '.join(unknown)}; valid: {', '.join(WEIGHT_NAMES)}",
            code="weights.unknown",
        )


def _validated(values: Mapping[str, float]) -> Weights:
    """``Weights`` from field values.

    Raises:
        QubusError: ``weights.invalid`` naming each field out of range.
    """
    try:
        return Weights.model_validate(values)
    except ValidationError as exc:
        raise invalid(exc, "weights", code="weights.invalid") from None


def parse_assignments(items: Sequence[str]) -> dict[str, float]:
    """``["w_qnc=0.5", "beta=4"]`` as ``{"w_qnc": 0.5, "beta": 4.0}``.

    Raises:
        QubusError: ``weights.syntax`` for an item that is not ``NAME=NUMBER``;
            ``weights.unknown`` for a name that is not a weight.
    """
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            value = float(text)
        except ValueError:
            raise QubusError(f"{item!r} is not NAME=NUMBER", code="weights.syntax") from None
        values[name.strip()] = value
    _check_names(list(values))
    return values


def with_values(record: WeightsRecord, values: Mapping[str, float], *, now: float) -> WeightsRecord:
    """The operator's ``weights set``: ``values`` replace the current ones, pinned or not.

    Raises:
        QubusError: ``weights.unknown``, ``weights.invalid``.
    """
    _check_names(list(values))
    weights = _validated({**record.weights.model_dump(), **values})
    note = "set " + ", ".join(f"{name}={value:g}" for name, value in sorted(values.items()))
    return record.model_copy(
        update={"weights": weights, "source": "set", "note": note, "updated_at": now}
    )


def with_pins(
    record: WeightsRecord, names: Sequence[str], *, pinned: bool, now: float
) -> WeightsRecord:
    """The operator's ``weights pin`` (``pinned=True``) or ``unpin``.

    Raises:
        QubusError: ``weights.unknown``.
    """
    _check_names(names)
    pins = set(record.pinned) | set(names) if pinned else set(record.pinned) - set(names)
    verb = "pinned" if pinned else "unpinned"
    return WeightsRecord(
        weights=record.weights,
        source="set",
        pinned=sorted(pins),
        note=f"{verb} {', '.join(names)}",
        updated_at=now,
    )


def nudged(
    record: WeightsRecord, shapley: Mapping[str, float], rating: int, *, note: str, now: float
) -> WeightsRecord | None:
    """The weights after a rating of a decision whose score had these Shapley values (module
    docstring); None when nothing changes (rating 3, no attribution, or every weight pinned).

    Raises:
        QubusError: ``feedback.rating`` for a rating outside 1–5.
    """
    if not 1 <= rating <= 5:
        raise QubusError(f"rating {rating} is not 1 to 5", code="feedback.rating")
    signal = (rating - 3) / 2
    total = math.fsum(abs(shapley.get(term, 0.0)) for term in TERMS)
    free = [term for term in TERMS if TERM_WEIGHTS[term] not in record.pinned]
    if signal == 0 or total == 0 or not free:
        return None
    old = record.weights.model_dump()
    new = dict(old)
    for term in free:
        share = shapley.get(term, 0.0) / total
        new[TERM_WEIGHTS[term]] *= math.exp(FEEDBACK_STEP * signal * share)
    free_v = [TERM_WEIGHTS[term] for term in free if term in V_TERMS]
    after = math.fsum(new[name] for name in free_v)
    if after > 0:
        scale = math.fsum(old[name] for name in free_v) / after
        for name in free_v:
            new[name] *= scale
    return record.model_copy(
        update={
            "weights": _validated(new),
            "source": "feedback",
            "note": note,
            "updated_at": now,
        }
    )


def tuned(record: WeightsRecord, weights: Weights, *, note: str, now: float) -> WeightsRecord:
    """The record with tuned weights.

    Raises:
        QubusError: ``weights.pinned`` if ``weights`` changes a pinned weight.
    """
    changed = [
        name for name in record.pinned if getattr(weights, name) != getattr(record.weights, name)
    ]
    if changed:
        raise QubusError(f"tuning changed pinned weight(s) {changed}", code="weights.pinned")
    return record.model_copy(
        update={"weights": weights, "source": "tuned", "note": note, "updated_at": now}
    )


# ------------------------------------------------------------------ KV


async def current_weights(kv: KeyValue) -> tuple[WeightsRecord, int]:
    """The stored record and its revision; the AHP record at revision 0 if none is stored."""
    stored = await read_record(kv, WEIGHTS_KEY, WeightsRecord)
    return stored if stored is not None else (initial_record(0.0), 0)


async def change_weights(
    kv: KeyValue, change: Callable[[WeightsRecord], WeightsRecord | None]
) -> tuple[WeightsRecord, int]:
    """A new revision ``change(current)`` (compare-and-set; ``current`` is the AHP record when
    none is stored). Returns the stored record and revision (the current ones if ``change``
    returned None)."""
    stored = await update_record(
        kv,
        WEIGHTS_KEY,
        WeightsRecord,
        lambda record: change(record if record is not None else initial_record(time.time())),
    )
    return stored if stored is not None else await current_weights(kv)


async def ensure_weights(kv: KeyValue) -> tuple[WeightsRecord, int]:
    """Store the AHP record if no weights are stored; the current record either way."""
    stored = await update_record(
        kv,
        WEIGHTS_KEY,
        WeightsRecord,
        lambda record: initial_record(time.time()) if record is None else None,
    )
    assert stored is not None
    return stored


async def weights_history(bus: Bus) -> list[tuple[WeightsRecord, int]]:
    """Every stored revision of ``current`` the bucket keeps, oldest first."""
    return [
        (codec.decode(value, WeightsRecord), revision)
        for revision, value in await bus.kv_values(BUCKET_WEIGHTS, WEIGHTS_KEY)
    ]


async def give_feedback(
    bus: Bus, task_id: str, rating: int
) -> tuple[FeedbackRecord, WeightsRecord, int]:
    """Store an operator's rating of a task's placement (its last, if it was re-placed) and
    nudge the weights by it.

    Returns:
        The stored rating, and the weights record and revision after the nudge (unchanged for
        a rating of 3).

    Raises:
        QubusError: ``task.unknown``; ``feedback.not_allocated`` if the task has no
            placement yet; ``feedback.expired`` if its scores have expired with its trace;
            ``feedback.no_attribution`` if its score carries no Shapley values
            (scored before they were recorded); ``feedback.exists`` if it was rated before;
            ``feedback.rating``.
    """
    if not 1 <= rating <= 5:
        raise QubusError(f"rating {rating} is not 1 to 5", code="feedback.rating")
    events = [stored.event for stored in await bus.task_events(task_id)]
    if not events:
        raise QubusError(f"no task {task_id}", code="task.unknown")
    scored = next((e for e in reversed(events) if isinstance(e, TaskScored)), None)
    allocated = next((e for e in reversed(events) if isinstance(e, TaskAllocated)), None)
    if allocated is None:
        raise QubusError(f"task {task_id} has not been placed", code="feedback.not_allocated")
    if scored is None:  # placed, but its trace events have expired (QUBUS_TRACE_TTL_S)
        raise QubusError(
            f"task {task_id}'s scores are no longer kept: a task's trace events expire "
            "after QUBUS_TRACE_TTL_S (1 day by default)",
            code="feedback.expired",
        )
    chosen = next(s for s in scored.scores if s.node == allocated.node)
    if not chosen.shapley:
        raise QubusError(
            f"task {task_id}'s score has no Shapley attribution", code="feedback.no_attribution"
        )
    feedback = FeedbackRecord(
        task_id=task_id,
        rating=rating,
        node=allocated.node,
        scored_revision=scored.weights_revision,
        shapley=chosen.shapley,
        created_at=time.time(),
    )
    kv = await bus.kv(BUCKET_WEIGHTS)
    try:
        await kv.create(f"feedback.{task_id}", codec.encode(feedback))
    except nats.js.errors.KeyWrongLastSequenceError:
        raise QubusError(f"task {task_id} was rated before", code="feedback.exists") from None
    note = f"task {task_id} on {allocated.node} rated {rating}/5"
    record, revision = await change_weights(
        kv,
        lambda current: nudged(current, chosen.shapley, rating, note=note, now=time.time()),
    )
    return feedback, record, revision
