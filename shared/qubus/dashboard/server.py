"""The dashboard's web server (aiohttp): the page, its live feed and ``/metrics``.

Routes:

- ``/``: the page (``static/index.html``; plain ES modules, no build step); ``/static/...``.
- ``/ws``: a WebSocket; the server sends ``{"type": "snapshot", tasks, fleet, flow, weights}``
  when it opens, then every ``PUSH_INTERVAL_S`` the rows changed since (``tasks``) and each of
  ``fleet``, ``flow`` and ``weights`` that differs from the one last sent.
- ``/api/task/<id>``: a task's page: its record (``qubus result --json``'s), one span per
  event (from when its stage began handling the input to when the event was stored), its
  allocation breakdown with the Shapley terms and its log lines.
- ``/metrics``: every process's ``qubus_*`` series (``qubus.dashboard.scrape``).

What it reads, as the read-only identity ``dashboard`` of a secured stack
(``qubus.bus.auth.dashboard_identity``: every user's tasks, the logs, the node directory, the
weights and ``$SRV``; it may write nothing): the task stream through one ephemeral consumer
following ``qubus.task.>`` from ``since``; ``$SRV.STATS`` every ``STATS_INTERVAL_S``; KV
``qubus_nodes`` every ``FLEET_INTERVAL_S``; KV ``qubus_weights`` (the record and its history)
every ``WEIGHTS_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from qubus.bus import logs
from qubus.bus.connection import BUCKET_WEIGHTS, STREAM, TASK_SUBJECTS, stored_event
from qubus.bus.ids import split_task_subject
from qubus.bus.messages import event_of
from qubus.client.aio import Client, allocation_breakdown, task_record
from qubus.dashboard.scrape import StackCollector
from qubus.dashboard.state import READ_BODIES, FlowMeter, TaskBoard, fleet_view
from qubus.errors import QubusError
from qubus.scheduling.weights import current_weights, weights_history

log = logs.get_logger()

PUSH_INTERVAL_S = 0.5
STATS_INTERVAL_S = 2.0
FLEET_INTERVAL_S = 2.0
WEIGHTS_INTERVAL_S = 5.0
LOG_LINES = 200
"""Log lines a task page shows at most."""
LOG_TAIL_S = 5.0
"""Seconds after a task's last event whose log lines its page still reads."""
STATIC = resources.files("qubus.dashboard") / "static"


class Dashboard:
    """The dashboard of one stack: what it has read, and the pages watching it.

    Args:
        client: A client of the stack (``dashboard``'s on a secured stack).
        since: Unix time of the oldest task event to show.
        node_timeout_s: A node status older than this shows the node offline.
    """

    def __init__(self, client: Client, *, since: float, node_timeout_s: float) -> None:
        self.client = client
        self.since = since
        self.node_timeout_s = node_timeout_s
        self.board = TaskBoard()
        self.flow = FlowMeter()
        self.collector = StackCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.views: dict[str, Any] = {"fleet": None, "flow": None, "weights": None}
        self.sent: dict[str, str] = {}  # the last text pushed of each view
        self.revisions: dict[str, list[str]] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.last_sequence = 0

    # ---------------------------------------------------------------- reading the bus

    async def follow_tasks(self) -> None:
        """Fold every task event from ``since`` on into the board, as it is stored (after a
        lost connection, from just after the last event folded in)."""
        if self.last_sequence:
            msgs = self.client.read_stream(
                STREAM, TASK_SUBJECTS, after_seq=self.last_sequence, follow=True
            )
        else:
            msgs = self.client.read_stream(STREAM, TASK_SUBJECTS, since=self.since, follow=True)
        async for msg in msgs:
            self.last_sequence = msg.metadata.sequence.stream
            task_id, tail = split_task_subject(msg.subject)
            name, _ = event_of(tail)
            stored = stored_event(msg) if name in READ_BODIES else None
            event = stored.event if stored is not None else None
            self.board.add(task_id, name, msg.metadata.timestamp.timestamp(), event)

    async def read_stats(self) -> None:
        replies = await self.client.services("STATS", timeout=0.5)
        self.views["flow"] = self.flow.update(replies)
        self.collector.update(replies, self.flow.lag)

    async def read_fleet(self) -> None:
        nodes = await self.client.bus.node_statuses()
        links = await self.client.bus.link_statuses()
        for node, status in nodes.items():
            seen = self.revisions.setdefault(node, [])
            if not seen or seen[-1] != status.calibration_revision:
                seen.append(status.calibration_revision)
        self.views["fleet"] = fleet_view(
            nodes,
            links,
            self.board.fidelity_series(),
            self.revisions,
            now=time.time(),
            node_timeout_s=self.node_timeout_s,
        )

    async def read_weights(self) -> None:
        kv = await self.client.bus.kv(BUCKET_WEIGHTS)
        record, revision = await current_weights(kv)
        history = await weights_history(self.client.bus)
        self.views["weights"] = {
            "current": record.model_dump(mode="json"),
            "revision": revision,
            "history": [{"revision": rev, **rec.model_dump(mode="json")} for rec, rev in history],
        }

    async def push(self) -> None:
        """Send the changed rows, and each view that differs from the last one sent, to every
        open page."""
        changed = self.board.take_changed()
        if changed:
            await self._broadcast(json.dumps({"type": "tasks", "rows": changed}))
        for name, view in self.views.items():
            text = json.dumps({"type": name, name: view})
            if view is not None and text != self.sent.get(name):
                self.sent[name] = text
                await self._broadcast(text)

    async def _broadcast(self, text: str) -> None:
        for socket in list(self.sockets):
            try:
                await socket.send_str(text)
            except (ConnectionError, RuntimeError):  # the page went away meanwhile
                self.sockets.discard(socket)

    # ---------------------------------------------------------------- answering the page

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=(STATIC / "index.html").read_text(), content_type="text/html", charset="utf-8"
        )

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=20)
        await socket.prepare(request)
        snapshot = {"type": "snapshot", "tasks": self.board.all_rows(), **self.views}
        await socket.send_str(json.dumps(snapshot))
        self.sockets.add(socket)
        try:
            async for msg in socket:  # the page sends nothing; this waits for it to close
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(socket)
        return socket

    async def task(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        try:
            events = await self.client.events(task_id)
        except QubusError as exc:
            return web.json_response({"error": exc.to_dict()}, status=400)
        if not events:
            return web.json_response(
                {"error": {"code": "task.unknown", "message": f"no task {task_id}"}}, status=404
            )
        return web.json_response(
            {
                "record": task_record(task_id, events),
                "spans": [
                    {
                        "event": e.event.EVENT,
                        "service": e.service,
                        "instance": e.instance,
                        "start": e.started if e.started is not None else e.published,
                        "end": e.published,
                    }
                    for e in events
                ],
                "allocation": allocation_breakdown(events),
                "logs": await self._task_logs(task_id, events[0].published, events[-1].published),
            }
        )

    async def _task_logs(self, task_id: str, since: float, until: float) -> list[dict[str, Any]]:
        """The task's log lines, from a second before its first event to ``LOG_TAIL_S``
        after its last (at most ``LOG_LINES``)."""
        lines = []
        reader = self.client.log_lines(since=since - 1.0)
        async for line in reader:
            if _line_time(line) > until + LOG_TAIL_S:
                break
            if line.get("task_id") == task_id:
                lines.append(line)
                if len(lines) >= LOG_LINES:
                    break
        await reader.aclose()
        return lines

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(body=generate_latest(self.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/api/task/{task_id}", self.task)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_static("/static", str(STATIC))
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        """The readers and the push loop, for as long as the server runs."""
        tasks = [
            asyncio.create_task(_every(1.0, self.follow_tasks)),
            asyncio.create_task(_every(STATS_INTERVAL_S, self.read_stats)),
            asyncio.create_task(_every(FLEET_INTERVAL_S, self.read_fleet)),
            asyncio.create_task(_every(WEIGHTS_INTERVAL_S, self.read_weights)),
            asyncio.create_task(_every(PUSH_INTERVAL_S, self.push)),
        ]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for socket in list(self.sockets):
            await socket.close()


def _line_time(line: dict[str, Any]) -> float:
    """A log line's Unix time (its ISO ``timestamp``; 0 without one)."""
    try:
        return datetime.fromisoformat(line["timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


async def _every(interval_s: float, fn: Callable[[], Awaitable[None]]) -> None:
    """Call ``fn`` now and then every ``interval_s`` after it returns; a failure is logged and
    tried again."""
    while True:
        try:
            await fn()
        except Exception:
            log.warning("dashboard.read_failed", reader=fn.__name__, exc_info=True)
        await asyncio.sleep(interval_s)


async def serve(
    dashboard: Dashboard, *, host: str, port: int, ready: Callable[[str], None]
) -> None:
    """Serve ``dashboard`` on ``host:port`` (0: any free port) until cancelled; ``ready`` gets
    the page's URL once it listens."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
