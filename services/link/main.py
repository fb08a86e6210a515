"""link: the entanglement-link emulator. Request/reply on ``qubus.link.epr`` answers an EPR
pair between two nodes (fidelity, latency, path) from the Werner-state model of the topology's
links, and each link's figures are kept in KV ``qubus_nodes`` under ``link.<a>.<b>``.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from qubus import codec
from qubus.bus import BUCKET_NODES, EPR_SUBJECT, link_key
from qubus.devices import DEFAULT_FLEET
from qubus.links import Topology, deliver_epr, load_topology
from qubus.logs import get_logger
from qubus.messages import EprReply, EprRequest, LinkStatus
from qubus.service import Runtime

log = get_logger()
STATUS_INTERVAL_S = 5.0


async def setup(rt: Runtime) -> None:
    path = rt.settings.topology
    topology = load_topology(path) if path else Topology.ring(DEFAULT_FLEET)
    rng = np.random.default_rng()
    served: Counter[tuple[str, str]] = Counter()
    nodes = await rt.bus.kv(BUCKET_NODES)

    async def epr(request: EprRequest, headers: dict[str, str]) -> EprReply:
        pair = deliver_epr(topology, request.a, request.b, rng=rng, hold_s=request.hold_s)
        for hop in zip(pair.path, pair.path[1:], strict=False):
            served[topology.link(*hop).key] += 1
        return EprReply(
            a=request.a,
            b=request.b,
            fidelity=pair.fidelity,
            latency_s=pair.latency_s,
            attempts=pair.attempts,
            path=pair.path,
        )

    async def publish_status() -> None:
        for link in topology.links:
            status = LinkStatus(
                a=link.a,
                b=link.b,
                expected_latency_s=link.expected_latency_s,
                f0=link.f0,
                coherence_s=link.coherence_s,
                pairs_served=served[link.key],
                updated_at=time.time(),
            )
            await nodes.put(link_key(link.a, link.b), codec.encode(status))

    await publish_status()
    rt.every(STATUS_INTERVAL_S, publish_status)
    await rt.serve(EPR_SUBJECT, EprRequest, epr)
