"""`qubus dashboard` against a real stack, in Debian's headless Chromium (driven by Playwright,
never its downloaded browsers) and scraped by Debian's Prometheus with deploy/'s config.

The page shows submitted tasks as they flow (rows appear and reach their final status without a
reload), a task's page has a waterfall bar for every stage, and no page logs an error. A page
holding 1,000 tasks is timed: first render and each update (printed; no timed assertion).
Screenshots go to the test's temporary directory, and also to ``QUBUS_DASHBOARD_SHOTS`` when
set (``QUBUS_DASHBOARD_SHOTS=docs pytest tests/system/test_dashboard.py`` refreshes the README's).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from qubus.bus.messages import SubmitRequest
from qubus.client.aio import Client

from .test_pipeline import PIPELINE

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PROMETHEUS = "/usr/bin/prometheus"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
HAVE_PROMETHEUS = Path(PROMETHEUS).exists()
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST_BATCH = 200
PAGE_OF = 1000
SERIES = (
    "qubus_tasks_handled_total",
    "qubus_tasks_failed_total",
    "qubus_stage_latency_seconds_bucket",
    "qubus_consumer_lag",
    "qubus_qpu_queue_length",
    "qubus_fidelity_error_bucket",
    "qubus_service_replicas",
)
FINAL_ROWS = (
    "document.querySelectorAll('#tasks tr[data-status=done], #tasks tr[data-status=rejected],"
    " #tasks tr[data-status=failed]').length"
)


def dev_requests(dev_qasm: Path, count: int, shots: int) -> list[SubmitRequest]:
    """``count`` submissions of the dev circuits of 2 to 5 qubits, in turn (source: the file)."""
    manifest = (dev_qasm / "MANIFEST.tsv").read_text().splitlines()
    names = [line.split("\t")[0] for line in manifest[1:] if 2 <= int(line.split("\t")[2]) <= 5]
    circuits = [(name, (dev_qasm / name).read_text()) for name in sorted(names)]
    return [
        SubmitRequest(circuit=text, source=name, shots=shots)
        for name, text in (circuits[i % len(circuits)] for i in range(count))
    ]


async def submit_many(nats_url: str, requests: list[SubmitRequest]) -> list[str]:
    """Submit every request (twenty at a time); their task ids, in order."""
    client = await Client.connect(nats_url)
    gate = asyncio.Semaphore(20)

    async def one(request: SubmitRequest) -> str:
        async with gate:
            return (await client.submit(request)).task_id

    try:
        return list(await asyncio.gather(*(one(r) for r in requests)))
    finally:
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dashboard(nats_url: str, stack) -> AsyncIterator[str]:
    """`qubus dashboard --port 0` as its own process; its page's URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qubus.cli.main",
        "dashboard",
        "--port",
        "0",
        env={**os.environ, "QUBUS_NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("dashboard at http://"), line
        yield line.split()[2]
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), 30)
        # SIGTERM interrupts it as Ctrl-C does (exit 130), with no traceback
        assert process.returncode == 130, err.decode()[-2000:]
        assert "Traceback" not in err.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Watched:
    """A page in a fresh browser context (its own user-data), recording its errors."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    @classmethod
    async def open(cls, browser: Any, url: str) -> Watched:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        watched = cls(await context.new_page())
        await watched.page.goto(url)
        await watched.page.wait_for_selector("#live.on", timeout=15_000)
        return watched

    async def shot(
        self, tmp_path: Path, name: str, *, full_page: bool = True, docs: bool = True
    ) -> Path:
        """A screenshot in ``tmp_path`` (and in ``QUBUS_DASHBOARD_SHOTS`` if ``docs``)."""
        path = tmp_path / name
        await self.page.screenshot(path=str(path), full_page=full_page)
        if docs and os.environ.get("QUBUS_DASHBOARD_SHOTS"):
            shutil.copy(path, Path(os.environ["QUBUS_DASHBOARD_SHOTS"]) / name)
        return path

    async def close(self) -> None:
        await self.page.context.close()


async def test_tasks_appear_live_and_a_task_page_shows_every_stage(
    nats_url, dashboard, browser, dev_qasm, tmp_path
):
    watched = await Watched.open(browser, dashboard + "#/tasks")
    try:
        before = await watched.page.evaluate("document.querySelectorAll('#tasks tr').length")
        requests = dev_requests(dev_qasm, FIRST_BATCH - 1, shots=200)
        broken = (ROOT / "examples" / "broken.qasm").read_text()
        requests.append(SubmitRequest(circuit=broken, source="broken.qasm"))
        ids = await submit_many(nats_url, requests)

        # every row arrives over the WebSocket and reaches its final status, no reload
        await watched.page.wait_for_function(
            f"{FINAL_ROWS} >= {before + FIRST_BATCH}", timeout=300_000, polling=500
        )
        shown = await watched.page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#tasks tr')]"
            ".map(tr => [tr.dataset.id, tr.dataset.status]))"
        )
        client = await Client.connect(nats_url)
        try:
            statuses = dict(await client.tasks())
        finally:
            await client.close()
        assert {task: shown[task] for task in ids} == {task: statuses[task] for task in ids}
        assert shown[ids[-1]] == "rejected"
        assert sum(shown[task] == "done" for task in ids) >= FIRST_BATCH - 10
        await watched.shot(tmp_path, "dashboard-tasks.png", full_page=False)

        await watched.page.fill("#search", "broken")
        visible = await watched.page.evaluate(
            "[...document.querySelectorAll('#tasks tr')].filter(tr => !tr.hidden)"
            ".map(tr => tr.dataset.id)"
        )
        assert visible == [ids[-1]]
        await watched.page.fill("#search", "")

        done = next(task for task in ids if shown[task] == "done")
        await watched.page.goto(f"{dashboard}#/task/{done}")
        await watched.page.wait_for_selector("#waterfall g.span", timeout=15_000)
        events = await watched.page.eval_on_selector_all(
            "#waterfall g.span", "gs => gs.map(g => g.dataset.event)"
        )
        assert set(PIPELINE) <= set(events)
        phis = await watched.page.eval_on_selector_all(
            "#scores th", "ths => ths.map(th => th.textContent)"
        )
        assert {"φ qnc", "φ logic", "φ novelty"} <= set(phis)
        assert await watched.page.locator("#counts svg rect").count() > 2
        logs = await watched.page.text_content("#task-logs")
        assert "task.ingested" in logs
        await watched.shot(tmp_path, "dashboard-task.png")

        for page, selector in (("fleet", "#nodes tr"), ("flow", "#stages tr")):
            await watched.page.goto(f"{dashboard}#/{page}")
            await watched.page.wait_for_selector(selector, timeout=15_000)
            await watched.shot(tmp_path, f"dashboard-{page}.png")
        nodes = await watched.page.eval_on_selector_all(
            "#nodes tr", "trs => trs.map(tr => tr.dataset.node)"
        )
        assert sorted(nodes) == sorted(stack_nodes := await _nodes(nats_url))
        assert stack_nodes
        parser_handled = await watched.page.text_content(
            "#stages tr[data-stage=parser] td:nth-child(4)"
        )
        assert int(parser_handled) >= FIRST_BATCH
        await watched.page.goto(f"{dashboard}#/weights")
        await watched.page.wait_for_selector("#weights tr", timeout=15_000)
        assert await watched.page.locator("#weights tr").count() >= 6
        await watched.shot(tmp_path, "dashboard-weights.png")
        assert watched.errors == []
    finally:
        await watched.close()


async def _nodes(nats_url: str) -> list[str]:
    client = await Client.connect(nats_url)
    try:
        return list(await client.bus.node_statuses())
    finally:
        await client.close()


async def test_a_page_of_a_thousand_tasks_renders_and_updates(
    nats_url, dashboard, browser, dev_qasm, tmp_path
):
    first = await Watched.open(browser, dashboard + "#/tasks")
    try:
        held = await first.page.evaluate("window.__qubus.rows")
        requests = dev_requests(dev_qasm, max(0, PAGE_OF - held), shots=100)
        submitting = asyncio.create_task(submit_many(nats_url, requests))
        await first.page.wait_for_function(
            f"window.__qubus.rows >= {PAGE_OF}", timeout=300_000, polling=500
        )
        await submitting
    finally:
        await first.close()

    # a fresh page gets the 1,000 rows in its snapshot, then the updates as the tasks finish
    watched = await Watched.open(browser, dashboard + "#/tasks")
    try:
        await watched.page.wait_for_function(
            "window.__qubus.firstRenderMs !== null", timeout=30_000
        )
        await watched.page.wait_for_function(
            f"{FINAL_ROWS} >= {PAGE_OF}", timeout=600_000, polling=1000
        )
        timings = await watched.page.evaluate("window.__qubus")
        search_ms = await watched.page.evaluate(
            """() => { const box = document.getElementById('search');
                       const start = performance.now(); box.value = 'qft';
                       box.dispatchEvent(new Event('input'));
                       return performance.now() - start; }"""
        )
        await watched.shot(tmp_path, "dashboard-1000.png", full_page=False, docs=False)
        assert timings["rows"] >= PAGE_OF
        assert watched.errors == []
    finally:
        await watched.close()
    # and once every task has ended and the stack is idle
    idle = await Watched.open(browser, dashboard + "#/tasks")
    try:
        await idle.page.wait_for_function("window.__qubus.firstRenderMs !== null", timeout=30_000)
        idle_timings = await idle.page.evaluate("window.__qubus")
        assert idle_timings["rows"] >= PAGE_OF and idle.errors == []
    finally:
        await idle.close()
    updates = [u for u in timings["updates"] if u["type"] == "tasks"]
    assert updates, "no task rows were pushed while the tasks ran"
    ms = sorted(u["ms"] for u in updates)
    print(
        f"\npage of {timings['rows']} tasks: first render {timings['firstRenderMs']:.0f} ms "
        f"after navigation (snapshot arrived at {timings['snapshotArrivedMs']:.0f} ms, its rows "
        f"built in {timings['snapshotApplyMs']:.0f} ms); {len(ms)} row updates "
        f"({sum(u['size'] for u in updates)} rows): "
        f"median {statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms, "
        f"max {ms[-1]:.1f} ms; search over all rows {search_ms:.1f} ms; on the idle stack: "
        f"first render {idle_timings['firstRenderMs']:.0f} ms (snapshot arrived at "
        f"{idle_timings['snapshotArrivedMs']:.0f} ms, rows built in "
        f"{idle_timings['snapshotApplyMs']:.0f} ms)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a local test server)
        return json.loads(response.read())


async def test_prometheus_scrapes_every_series_with_the_shipped_config(
    nats_url, dashboard, tmp_path
):
    if not HAVE_PROMETHEUS:
        pytest.skip(f"{PROMETHEUS} is missing (apt-get install prometheus; .ci/run does)")
    ghz = (ROOT / "examples" / "ghz.qasm").read_text()
    broken = (ROOT / "examples" / "broken.qasm").read_text()
    client = await Client.connect(nats_url)
    try:
        await client.run([SubmitRequest(circuit=ghz, shots=100), SubmitRequest(circuit=broken)])
    finally:
        await client.close()

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [dashboard.removeprefix("http://").rstrip("/")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        names: set[str] = set()
        for _ in range(90):  # the shipped interval is 10 s: a few scrapes
            await asyncio.sleep(1)
            try:
                names = set((await asyncio.to_thread(_get, f"{api}/label/__name__/values"))["data"])
            except OSError:
                continue
            if set(SERIES) <= names:
                break
        assert set(SERIES) <= names, sorted(set(SERIES) - names)
        query = 'sum by (stage) (qubus_tasks_failed_total{stage="parser",outcome="rejected"})'
        found = await asyncio.to_thread(_get, f"{api}/query?query={urllib.request.quote(query)}")
        assert float(found["data"]["result"][0]["value"][1]) >= 1
        targets = await asyncio.to_thread(_get, f"{api}/targets")
        assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
