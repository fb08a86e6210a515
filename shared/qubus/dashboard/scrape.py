"""The dashboard's ``/metrics``: every service process's ``qubus_*`` series in one exposition.

Each process puts its registry (``qubus.bus.metrics``) in its ``$SRV.STATS`` reply under
``metrics``; the dashboard asks every process each round and serves the last round's series
with two labels added, ``service`` and ``instance`` (the micro id), so that the same series of
two replicas stay apart. It adds what belongs to no single process:

- ``qubus_consumer_lag{stage}``: a stage's durable consumer's messages not yet delivered plus
  those unacknowledged (one consumer shared by every replica, so one figure per stage);
- ``qubus_service_replicas{service}``: instances that answered the round.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class StackCollector(Collector):
    """A Prometheus collector of the last ``$SRV.STATS`` round (``update``)."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.lag: dict[str, int] = {}

    def update(self, replies: list[dict[str, Any]], lag: dict[str, int]) -> None:
        """Serve ``replies`` (one round's STATS answers) and the stages' ``lag`` from now."""
        self.replies, self.lag = replies, lag

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        replicas: dict[str, int] = {}
        for reply in self.replies:
            service = reply.get("metadata", {}).get("service", reply.get("name", ""))
            replicas[service] = replicas.get(service, 0) + 1
            extra = {"service": service, "instance": reply.get("id", "")}
            for family in text_string_to_metric_families(reply.get("metrics", "")):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    merged.samples.append(sample._replace(labels={**sample.labels, **extra}))
        yield from families.values()
        lag = GaugeMetricFamily(
            "qubus_consumer_lag",
            "Messages of a stage's durable consumer not yet delivered or not yet acknowledged",
            labels=["stage"],
        )
        for stage, value in sorted(self.lag.items()):
            lag.add_metric([stage], value)
        yield lag
        counted = GaugeMetricFamily(
            "qubus_service_replicas",
            "Instances of a service answering $SRV.STATS",
            labels=["service"],
        )
        for service, count in sorted(replicas.items()):
            counted.add_metric([service], count)
        yield counted
