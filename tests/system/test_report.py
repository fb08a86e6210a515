"""`qubus report` against a real stack: the figures match the tasks run, each node's runs never
overlap (one task at a time), and the page embeds every plot without referring outside."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import pytest_asyncio

from qubus.bus.messages import SubmitRequest
from qubus.client.aio import Client

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PIPELINE = ("ingested", "parsed", "checked", "eval.sandbox", "eval.noise", "scored", "allocated")


def section_images(page: str) -> dict[str, int]:
    """Per section id, how many PNG images it embeds (each checked to decode as a PNG)."""
    found = {}
    for part in page.split('<section id="')[1:]:
        anchor, body = part.split('"', 1)
        pngs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', body)
        assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in pngs)
        found[anchor] = len(pngs)
    return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def records(nats_url, stack) -> list[dict]:
    """Tasks run once for the module: three pinned to one node, two to another, two free,
    one rejected by the parser."""
    ghz = (EXAMPLES / "ghz.qasm").read_text()
    client = await Client.connect(nats_url)
    try:
        first, second = sorted(await client.bus.node_statuses())[:2]
        requests = [
            *(SubmitRequest(circuit=ghz, shots=200, node=first) for _ in range(3)),
            *(SubmitRequest(circuit=ghz, shots=200, node=second) for _ in range(2)),
            *(SubmitRequest(circuit=ghz, shots=200) for _ in range(2)),
            SubmitRequest(circuit=(EXAMPLES / "broken.qasm").read_text(), source="broken"),
        ]
        return await client.run(requests, timeout=180)
    finally:
        await client.close()


async def test_report_figures_match_the_tasks_run(qubus_cli, nats_url, records, tmp_path):
    out = tmp_path / "report.html"
    code, stdout, stderr = await qubus_cli(
        nats_url, "report", "--since", "30m", "--json", "--out", str(out)
    )
    assert code == 0, stderr
    figures = json.loads(stdout)
    done = [r for r in records if r["status"] == "done"]
    assert len(done) == 7 and [r["source"] for r in records if r not in done] == ["broken"]

    summary = figures["summary"]
    assert summary["tasks"] == 8
    assert summary["by_status"] == {"done": 7, "rejected": 1}
    per_node = Counter(r["nodes"][0] for r in done)
    assert len(per_node) == 2 and min(per_node.values()) >= 2  # both nodes ran pinned tasks
    assert {node: row["allocated"] for node, row in summary["nodes"].items()} == per_node
    assert {node: len(runs) for node, runs in figures["occupancy"].items()} == per_node

    for node, runs in figures["occupancy"].items():
        assert {run["task_id"] for run in runs} == {
            r["task_id"] for r in done if r["nodes"] == [node]
        }
        assert all(run["start"] < run["end"] and run["status"] == "done" for run in runs)
        for earlier, later in zip(runs, runs[1:], strict=False):
            assert earlier["end"] <= later["start"], f"{node} ran two tasks at once"

    assert {p["task_id"]: (p["predicted"], p["measured"]) for p in figures["fidelity"]} == {
        r["task_id"]: (r["predicted_fidelity"], r["measured_fidelity"]) for r in done
    }

    for node, steps in figures["queue"].items():
        assert len(steps) == 2 * per_node[node]  # one arrival and one departure per task
        assert steps[-1][1] == 0
        assert 1 <= max(n for _, n in steps) <= per_node[node]

    latency = figures["latency_ms"]
    assert {stage: len(latency[stage]) for stage in PIPELINE} == {
        "ingested": 8,
        **dict.fromkeys(PIPELINE[1:], 7),
    }
    assert len(latency["completed"]) == 7 and len(latency["rejected"]) == 1
    assert all(ms >= 0 for values in latency.values() for ms in values)
    assert figures["bench"] is None
    assert f"report of 8 tasks in {out}" in stderr


async def test_report_page_is_self_contained_with_a_plot_per_section(
    qubus_cli, nats_url, records, tmp_path
):
    out = tmp_path / "report.html"
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "seed": 1,
                "workload": "ghz-8",
                "policies": {
                    "hyperscore": {"throughput": 2.0, "mean_jct": 1.5, "mean_fidelity": 0.9},
                    "round_robin": {"throughput": 1.6, "mean_jct": 2.5, "mean_fidelity": 0.8},
                },
            }
        )
    )

    code, stdout, stderr = await qubus_cli(
        nats_url, "report", "--out", str(out), "--bench", str(bench)
    )

    assert code == 0, stderr
    assert stdout == ""
    page = out.read_text()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    assert "http" not in re.sub(r"base64,[^\"]+", "", page)  # no URL anywhere, even in text
    assert section_images(page) == {
        "summary": 0,
        "occupancy": 1,
        "fidelity": 1,
        "queue": 1,
        "latency": 1,
        "bench": 1,
    }
    assert "<th>policy</th><th>throughput</th><th>mean_jct</th><th>mean_fidelity</th>" in page
    assert "<td>round_robin</td><td>1.6</td><td>2.5</td><td>0.8</td>" in page


async def test_report_refuses_a_bad_since_or_bench(qubus_cli, nats_url, tmp_path):
    code, _, stderr = await qubus_cli(nats_url, "report", "--since", "last tuesday", "--json")
    assert code == 2 and "[report.since]" in stderr

    code, _, stderr = await qubus_cli(nats_url, "report", "--bench", str(tmp_path / "none.json"))
    assert code == 1 and "[report.bench]" in stderr and "cannot read" in stderr
