"""link: the entanglement-link emulator. Request/reply on ``qubus.link.epr`` answers one EPR
pair between two nodes, and on ``qubus.link.reserve`` the pairs a task reserves, from the
Werner-state model of the topology's links (``qubus.network.links``); each link's figures and usage
are kept in KV ``qubus_nodes`` under ``link.<a>.<b>``.

A reservation is sampled from a seed fixed by its task and node pair, and stored in KV
``qubus_links`` before it is answered: the same ``(task_id, a, b)`` always gets the same pairs,
from any replica and after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.js.errors
import numpy as np
from nats.js.kv import KeyValue

from qubus.bus import codec
from qubus.bus.connection import BUCKET_LINKS, BUCKET_NODES, EPR_SUBJECT, RESERVE_SUBJECT, link_key
from qubus.bus.ids import seed_for
from qubus.bus.kvrecords import read_record
from qubus.bus.logs import get_logger
from qubus.bus.messages import EprReply, EprRequest, EprReservation, EprReserve, LinkStatus
from qubus.bus.service import Runtime
from qubus.network.links import (
    LinkPlan,
    LinkSpec,
    Reservation,
    Topology,
    deliver_epr,
    expected_pair,
    fleet_topology,
    reserve_pairs,
)

log = get_logger()
STATUS_INTERVAL_S = 5.0


@dataclass
class Usage:
    """What the links have delivered, by link key; carried over restarts through the stored
    statuses."""

    served: Counter[tuple[str, str]] = field(default_factory=Counter)
    reservations: Counter[tuple[str, str]] = field(default_factory=Counter)
    pairs_reserved: Counter[tuple[str, str]] = field(default_factory=Counter)
    purified: Counter[tuple[str, str]] = field(default_factory=Counter)

    def restore(self, status: LinkStatus) -> None:
        key = (status.a, status.b)
        self.served[key] = status.pairs_served
        self.reservations[key] = status.reservations
        self.pairs_reserved[key] = status.pairs_reserved
        self.purified[key] = status.pairs_purified

    def record(
        self, hops: Sequence[LinkSpec], purified: Sequence[int], *, pairs: int, reserved: bool
    ) -> None:
        for spec, extra in zip(hops, purified, strict=True):
            self.purified[spec.key] += extra
            if reserved:
                self.reservations[spec.key] += 1
                self.pairs_reserved[spec.key] += pairs
            else:
                self.served[spec.key] += pairs


def reservation_key(task_id: str, a: str, b: str) -> str:
    """The KV key of a task's reservation between two nodes, in either order."""
    lo, hi = sorted((a, b))
    return f"reserve.{task_id}.{lo}.{hi}"


def oriented(reservation: EprReservation, a: str, b: str) -> EprReservation:
    """The reservation as seen from ``a`` (its path reversed if it was stored from ``b``)."""
    if reservation.a == a:
        return reservation
    return reservation.model_copy(update={"a": a, "b": b, "path": reservation.path[::-1]})


def sample_reservation(topology: Topology, request: EprReserve) -> Reservation:
    """The request's pairs, sampled from the node pair in sorted order with a seed fixed by
    the task and the node pair."""
    lo, hi = sorted((request.a, request.b))
    return reserve_pairs(
        topology,
        lo,
        hi,
        request.count,
        rng=np.random.default_rng(seed_for(request.task_id, f"link.reserve.{lo}.{hi}")),
        hold_s=request.hold_s,
        ideal=request.ideal,
    )


def reservation_reply(request: EprReserve, made: Reservation) -> EprReservation:
    """The wire reply of a sampled reservation, from the end its path starts at."""
    return EprReservation(
        task_id=request.task_id,
        a=made.path[0],
        b=made.path[-1],
        path=made.path,
        fidelities=made.fidelities,
        latency_s=made.latency_s,
        attempts=made.attempts,
        purified=made.purified,
    )


def link_status(topology: Topology, spec: LinkSpec, usage: Usage) -> LinkStatus:
    """A link's status: its figures, its expected pair, and its usage."""
    fidelity, latency_s = expected_pair(topology, spec.a, spec.b)
    return LinkStatus(
        a=spec.a,
        b=spec.b,
        expected_latency_s=latency_s,
        f0=spec.f0,
        coherence_s=spec.coherence_s,
        pairs_served=usage.served[spec.key],
        updated_at=time.time(),
        expected_fidelity=fidelity,
        purify_below=spec.purify_below,
        purify_rounds=LinkPlan.of(spec).rounds,
        reservations=usage.reservations[spec.key],
        pairs_reserved=usage.pairs_reserved[spec.key],
        pairs_purified=usage.purified[spec.key],
    )


async def restored_usage(nodes: KeyValue, topology: Topology) -> Usage:
    """The usage recorded in the links' stored statuses (zero for links without one)."""
    usage = Usage()
    for spec in topology.links:
        stored = await read_record(nodes, link_key(spec.a, spec.b), LinkStatus)
        if stored is not None:
            usage.restore(stored[0])
    return usage


async def setup(rt: Runtime) -> None:
    topology = fleet_topology(rt.settings.topology)
    rng = np.random.default_rng()
    nodes = await rt.bus.kv(BUCKET_NODES)
    reservations = await rt.bus.kv(BUCKET_LINKS)
    usage = await restored_usage(nodes, topology)

    async def epr(request: EprRequest, headers: dict[str, str]) -> EprReply:
        pair = await asyncio.to_thread(
            deliver_epr, topology, request.a, request.b, rng=rng, hold_s=request.hold_s
        )
        usage.record(topology.hops(pair.path), pair.hop_purified, pairs=1, reserved=False)
        return EprReply(
            a=request.a,
            b=request.b,
            fidelity=pair.fidelity,
            latency_s=pair.latency_s,
            attempts=pair.attempts,
            path=pair.path,
        )

    async def reserve(request: EprReserve, headers: dict[str, str]) -> EprReservation:
        key = reservation_key(request.task_id, request.a, request.b)
        while (stored := await read_record(reservations, key, EprReservation)) is None:
            made = await asyncio.to_thread(sample_reservation, topology, request)
            reply = reservation_reply(request, made)
            try:
                await reservations.create(key, codec.encode(reply))
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another replica stored it first: answer with that one
            hops = topology.hops(made.path)
            usage.record(hops, made.hop_purified, pairs=request.count, reserved=True)
            await publish_status(hops)
            log.info("link.reserved", task_id=request.task_id, key=key, pairs=request.count)
            return oriented(reply, request.a, request.b)
        reservation = stored[0]
        if len(reservation.fidelities) != request.count:
            log.warning(
                "link.reservation_differs",
                key=key,
                stored_pairs=len(reservation.fidelities),
                requested_pairs=request.count,
            )
        return oriented(reservation, request.a, request.b)

    publishing = asyncio.Lock()  # the last status written carries the latest counts

    async def publish_status(links: Sequence[LinkSpec] = topology.links) -> None:
        async with publishing:
            for spec in links:
                status = link_status(topology, spec, usage)
                await nodes.put(link_key(spec.a, spec.b), codec.encode(status))

    await publish_status()
    rt.every(STATUS_INTERVAL_S, publish_status)
    await rt.serve(EPR_SUBJECT, EprRequest, epr)
    await rt.serve(RESERVE_SUBJECT, EprReserve, reserve)
