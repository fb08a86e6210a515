"""The process's Prometheus series: counted where ``$SRV.STATS`` counts, in text format."""

from prometheus_client.parser import text_string_to_metric_families

from qubus.bus import metrics
from qubus.bus.health import Endpoint


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition())
        for s in family.samples
    }


def test_an_endpoint_counts_every_outcome_and_its_latency_into_the_series() -> None:
    endpoint = Endpoint("unit-stage", "qubus.task.*.*.x", "unit-stage", "consumer")
    before = _samples()
    endpoint.record("ok", 2_000_000)
    endpoint.record("rejected", 30_000_000)
    endpoint.record("retry", 1_000_000)
    after = _samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("qubus_tasks_handled_total", stage="unit-stage", outcome="ok") == 1
    assert grew("qubus_tasks_handled_total", stage="unit-stage", outcome="rejected") == 1
    assert grew("qubus_tasks_failed_total", stage="unit-stage", outcome="rejected") == 1
    assert grew("qubus_tasks_failed_total", stage="unit-stage", outcome="retry") == 0
    assert grew("qubus_stage_latency_seconds_count", stage="unit-stage") == 3
    assert grew("qubus_stage_latency_seconds_bucket", stage="unit-stage", le="0.005") == 2
    assert abs(grew("qubus_stage_latency_seconds_sum", stage="unit-stage") - 0.033) < 1e-9
