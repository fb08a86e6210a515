"""The ``qubus`` commands on the stack itself: ``up`` and ``down`` (running one, stopping it) and
``service`` (one of its processes); ``nodes``, ``ps`` and ``logs`` (what its QPU nodes, service
instances and logs say), ``report`` (its task events as an HTML page) and ``dashboard`` (a
live page and Prometheus metrics), with the text they print. What a command needs beyond its
parser is imported when it runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qubus.cli.common import (
    UsageError,
    connected,
    default_fleet,
    number_in,
    parse_since,
    read_task_events,
    task_id,
)
from qubus.errors import QubusError

if TYPE_CHECKING:
    from qubus.bus.config import Settings
    from qubus.bus.natsserver import NatsServer

STOP_WAIT_S = 30.0
"""How long ``qubus down`` waits for the stack to stop."""

# ------------------------------------------------------------------ parsers


def add_up_command(sub: argparse._SubParsersAction) -> None:
    """Add ``up`` to the ``qubus`` subcommands."""
    up = sub.add_parser(
        "up",
        help="run a whole stack in the foreground until Ctrl-C",
        description="Start an embedded nats-server on a free loopback port (unless "
        "QUBUS_NATS_URL is set, then only the services) and every service as a child process; "
        "restart any that dies; stop everything on Ctrl-C. The NATS URL is printed and "
        "recorded so other qubus commands on this machine find the stack. The embedded server "
        "is secured: every service, QPU node and user is its own NATS user (an nkey seed in "
        "<state dir>/creds/) allowed only its own subjects. Tasks' results are kept "
        "QUBUS_TASK_RETENTION_S (7 days by default), the rest of their traces "
        "QUBUS_TRACE_TTL_S (1 day by default; see `qubus result --help`). The server "
        "inherits this environment: GOMEMLIMIT=512MiB, say, has its Go runtime collect "
        "garbage harder as it nears that (a soft limit).",
    )
    up.add_argument(
        "--fleet",
        help="comma-separated QPU node ids, one qpu process each (default: the four nodes of "
        "qubus.devices.profiles.DEFAULT_FLEET: ibm_nairobi, ibm_manila, quantinuum_h1_1, "
        "ionq_aria)",
    )
    up.add_argument(
        "--replicas",
        default="",
        help="processes per service, e.g. parser=2,noise=2 (default: one each; qpu: one per "
        "node); replicas share the stage's durable consumer",
    )
    up.add_argument("--log-dir", type=Path, help="service logs (default: ~/.qubus/logs)")
    up.add_argument(
        "--store-dir",
        help="JetStream store of the embedded server, kept across restarts "
        "(default: nats/ in the state dir, $QUBUS_STATE_DIR or ~/.qubus)",
    )
    up.add_argument(
        "--users",
        default="",
        help="comma-separated client users to create besides `local` (seed files "
        "<state dir>/creds/<user>.nk)",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="no authentication on the embedded server: any client may do anything",
    )
    user = sub.add_parser(
        "user",
        help="add a user to the secured stack of this machine",
        description="Record a user in <state dir>/creds/users.json and write its nkey seed "
        "<state dir>/creds/NAME.nk (give that file to the user: QUBUS_NATS_NKEY=NAME.nk). "
        "A running `qubus up` gives it its identity within a second (the server reloads its "
        "configuration); a stopped one at its next start.",
    )
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="add (or change the role of) a user")
    add.add_argument("name", metavar="NAME", help="1-32 of A-Z a-z 0-9 _ -")
    add.add_argument(
        "--role",
        choices=["client", "operator"],
        default="client",
        help="client: submits and reads its own tasks (default); operator: everything "
        "(weights, pilots, feedback, streams)",
    )
    creds = sub.add_parser(
        "creds",
        help="write the identities of a deployed stack (deploy/)",
        description="Write an nkey seed per identity (the operator, every service, each QPU "
        "node of --fleet and each --users client) into DIR, keeping existing ones, and "
        "DIR/auth.conf, the NATS `authorization` block naming their public keys and "
        "permissions. deploy/compose.yaml mounts deploy/creds/ (compose secrets), "
        "deploy/k8s turns deploy/k8s/creds/ into Secrets (kustomize secretGenerator); see "
        "deploy/k8s/README.md.",
    )
    creds.add_argument("dir", metavar="DIR", type=Path)
    creds.add_argument(
        "--fleet", help="comma-separated QPU node ids (default: the default fleet, as qubus up)"
    )
    creds.add_argument("--users", default="", help="comma-separated client users besides local")
    sub.add_parser(
        "down",
        help="stop the stack `qubus up` runs on this machine",
        description="Send SIGTERM to the `qubus up` recorded in $QUBUS_STATE_DIR/stack.json "
        f"(default ~/.qubus) and wait up to {STOP_WAIT_S:g} s for it to stop its services.",
    )


def add_inspection_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``nodes``, ``ps`` and ``logs`` to the ``qubus`` subcommands."""
    nodes = sub.add_parser(
        "nodes",
        help="list QPU nodes (kind, qubits, calibration summary, queue depth) and links",
        description="List the QPU nodes that have reported to KV qubus_nodes, then the "
        "entanglement links the link service publishes there: fresh-pair fidelity F0, the "
        "expected fidelity and latency of one delivered pair (after memory decay and "
        "purification), the purification floor, and the pairs served and reserved.",
    )
    nodes.add_argument("--json", action="store_true", help="print JSON")

    ps = sub.add_parser(
        "ps",
        help="list running service instances: version, uptime, handled, errors, queue lag",
        description="Ask every service instance for its statistics ($SRV.STATS, the nats.micro "
        "convention) and list the answers: handled and errored messages summed over the "
        "instance's stages and request subjects, the messages its stages got redelivered (an "
        "earlier delivery was retried, ran out of its ack wait or died with its process), and "
        "queue lag (messages pending plus unacknowledged on its consumers).",
    )
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.add_argument(
        "--timeout", type=float, default=0.5, help="seconds to collect answers (default 0.5)"
    )
    ps.add_argument("--expect", type=int, help="stop once this many instances have answered")

    logs_cmd = sub.add_parser(
        "logs",
        help="print service log lines (stored for a day in stream QUBUS_LOGS)",
        description="Print the log lines services published on qubus.log.<service>, as stored "
        "in the JetStream stream QUBUS_LOGS (one day of them); with --follow, keep printing "
        "new lines until Ctrl-C. With --task, only that task's lines, from its submission on. "
        "At the default level (QUBUS_LOG_LEVEL=info) a task's lines come from ingestion, its "
        "QPU node and fusion; at debug every stage adds a stage.done line for each message it "
        "handled. `qubus trace ID` shows every stage's event and time.",
    )
    logs_cmd.add_argument(
        "--service",
        choices=service_names(),
        help="only this service's lines (every QPU node's are qpu's)",
    )
    logs_cmd.add_argument("--task", metavar="ID", type=task_id, help="only lines about this task")
    logs_cmd.add_argument("--follow", action="store_true", help="keep printing new lines")
    logs_cmd.add_argument("--json", action="store_true", help="print each line as stored (JSON)")


def add_report_command(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``qubus`` subcommands."""
    report = sub.add_parser(
        "report",
        help="write an HTML report: QPU occupancy, fidelity, queues, stage latency, policies",
        description="Read the stored task events (stream QUBUS_TASKS) of the running stack and "
        "write one self-contained HTML page (plots embedded as PNG): QPU occupancy per node, "
        "predicted against measured fidelity, queue length per node over time, stage latency "
        "distributions, a summary table and, with --bench, a comparison of scheduling policies. "
        "With --json, print the figures the plots show (and write HTML only if --out is given).",
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="only events stored since WHEN: a duration back from now (90s, 15m, 2h, 1d) or an "
        "ISO 8601 time, UTC unless it has an offset (default: every stored event)",
    )
    report.add_argument("--out", type=Path, help="HTML file to write (default report.html)")
    report.add_argument(
        "--bench", type=Path, metavar="FILE", help="output of `qubus bench schedule --json`"
    )
    report.add_argument("--json", action="store_true", help="print the report's figures as JSON")


def add_dashboard_command(sub: argparse._SubParsersAction) -> None:
    """Add ``dashboard`` to the ``qubus`` subcommands."""
    dashboard = sub.add_parser(
        "dashboard",
        help="serve a live page of the stack and its Prometheus metrics",
        description="Serve a live web page of the running stack (fleet, flow, tasks with each "
        "task's trace, weights) at / and every service's qubus_* Prometheus series at "
        "/metrics, until Ctrl-C. Connects as the read-only identity `dashboard` of a secured "
        "stack (or QUBUS_NATS_NKEY's).",
    )
    dashboard.add_argument(
        "--port", type=number_in(int, 0, 65535), default=8470, help="port (default 8470; 0: any)"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    dashboard.add_argument(
        "--since",
        metavar="WHEN",
        default="1h",
        help="show tasks stored since WHEN: a duration back from now or an ISO 8601 time "
        "(default 1h)",
    )


def service_names() -> tuple[str, ...]:
    """The services a stack runs (``qubus_services.SERVICES``), imported when asked for."""
    return importlib.import_module("qubus_services").SERVICES


def add_service_command(sub: argparse._SubParsersAction) -> None:
    """Add ``service`` to the ``qubus`` subcommands."""
    service = sub.add_parser(
        "service",
        help="run one service process (what `qubus up` and the Procfile start)",
        description="Run one service in the foreground until SIGTERM/SIGINT.",
    )
    service.add_argument("name", choices=service_names())
    service.add_argument("--node", help="the QPU node id (required for the qpu service)")


# ------------------------------------------------------------------ the stack


def check_fleet(fleet: list[str]) -> None:
    """Every node id of ``--fleet`` has shipped calibration data.

    Raises:
        UsageError: ``fleet.unknown_node`` (an empty fleet: ``fleet.empty``).
    """
    from qubus.devices.profiles import DeviceNotFound, load_device

    if not fleet:
        raise UsageError("--fleet names no node", code="fleet.empty")
    for node in fleet:
        try:
            load_device(node)
        except DeviceNotFound:
            raise UsageError(
                f"--fleet: unknown node id {node!r} (no calibration data for it)",
                code="fleet.unknown_node",
            ) from None


def check_users(text: str) -> list[str]:
    """The client users of a secured ``qubus up``: ``local`` and those ``--users`` names.

    Raises:
        UsageError: ``auth.bad_user``: a name that cannot be a user (``check_user_name``).
    """
    from qubus.bus.auth import DEFAULT_USER, check_user_name

    users = [DEFAULT_USER, *(user for user in text.split(",") if user)]
    for user in users:
        try:
            check_user_name(user)
        except QubusError as exc:
            raise UsageError(exc.message, code=exc.code) from None
    return users


async def up(args: argparse.Namespace) -> int:
    """``qubus up``: run the stack until SIGINT or SIGTERM (also while it is starting).

    Raises:
        UsageError: a bad ``--fleet`` (``check_fleet``) or ``--users`` (``check_users``).
        QubusError: ``stack.running``: a stack already runs on this state directory;
            ``stack.start``: some service did not become ready.
    """
    from qubus.bus import auth, stackfile
    from qubus.bus.config import Settings
    from qubus.bus.natsserver import NatsServer
    from qubus.cli.stack import Supervisor, parse_replicas, stack_specs

    settings = Settings()
    fleet = default_fleet() if args.fleet is None else [n for n in args.fleet.split(",") if n]
    check_fleet(list(fleet))
    try:
        replicas = parse_replicas(args.replicas)
    except ValueError as exc:
        raise UsageError(str(exc), code="up.replicas") from None
    users = check_users(args.users)
    stackfile.refuse_second()
    specs = stack_specs(fleet, replicas=replicas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = creds = None
    url = settings.nats_url
    if not url:
        authorization = ""
        if not args.insecure:
            creds = stackfile.creds_dir()
            for user in users[1:]:
                auth.add_user(creds, user, "client")
            services = sorted({spec.name for spec in specs} - {"qpu"})
            authorization = _authorization(creds, services, fleet)
        store = args.store_dir or str(stackfile.stack_file().parent / "nats")
        server = NatsServer(store, authorization=authorization, batch=settings.sched_batch)
        url = server.start()
    supervisor = None
    try:
        if creds is not None:  # the services may create the topology, only the operator change it
            await _ensure_topology(url, auth.seed_path(creds, auth.OPERATOR), settings)
        stackfile.record(url, os.getpid(), creds=creds)
        log_dir = args.log_dir or stackfile.stack_file().parent / "logs"
        supervisor = Supervisor(url, specs, log_dir=log_dir, creds_dir=creds)
        print(f"qubus: NATS at {url}", flush=True)
        if creds is not None:
            print(f"qubus: secured; users' nkey seeds in {creds}", flush=True)
        started = time.monotonic()
        if not await _until_stopped(supervisor.start(), stop):
            print("qubus: stopped before every service was ready", flush=True)
            return 130
        labels = ", ".join(supervisor.children)
        print(
            f"qubus: {len(supervisor.children)} services ready in "
            f"{time.monotonic() - started:.1f} s ({labels}); logs in {log_dir}; Ctrl-C or "
            "`qubus down` stops",
            flush=True,
        )
        if server is None:
            await stop.wait()
        elif creds is None:
            await _watch_server(server, stop)
        else:  # users added meanwhile (qubus user add) get their identity
            users_file = creds / auth.USERS_FILE
            await _watch_server(
                server, stop, users_file, lambda: _authorization(creds, services, fleet)
            )
        print("qubus: stopping", flush=True)
    except TimeoutError as exc:
        raise QubusError(f"{exc}; see their logs in {log_dir}", code="stack.start") from None
    finally:
        stop.set()
        stackfile.forget(os.getpid())
        if supervisor is not None:
            await supervisor.stop()
        if server is not None:
            server.stop()
    return 0


def _authorization(creds: Path, services: list[str], fleet: list[str]) -> str:
    """The server's authorization block for the stack's services and nodes, the user
    ``local`` and every recorded user (``qubus.bus.auth.add_user``)."""
    from qubus.bus import auth

    users = auth.recorded_users(creds)
    clients = [auth.DEFAULT_USER, *(name for name, role in users.items() if role == "client")]
    operators = [name for name, role in users.items() if role == "operator"]
    return auth.write_credentials(creds, auth.identities(services, fleet, clients, operators))


async def _ensure_topology(url: str, seed: Path, settings: Settings) -> None:
    """Bring the streams and buckets to this version's configuration, as the operator."""
    from qubus.bus.auth import OPERATOR
    from qubus.bus.connection import Bus

    bus = Bus(url, service="up", instance=f"up-{os.getpid()}", nkey=str(seed), user=OPERATOR)
    await bus.connect()
    try:
        await bus.ensure_topology(
            duplicate_window_s=settings.duplicate_window_s,
            retention_s=settings.task_retention_s,
            replicas=settings.stream_replicas,
        )
    finally:
        await bus.close()


async def _watch_server(
    server: NatsServer,
    stop: asyncio.Event,
    users_file: Path | None = None,
    authorization: Callable[[], str] | None = None,
) -> None:
    """Restart the embedded nats-server, on its port and store, whenever it has exited; and
    reload it with ``authorization()`` whenever ``users_file`` has changed."""
    seen = _mtime(users_file)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if authorization is not None and (changed := _mtime(users_file)) != seen:
            seen = changed
            server.reload(authorization())
            print("qubus: users changed; the server reloaded its configuration", flush=True)
        try:
            if not stop.is_set() and server.restart_if_dead():
                print(f"qubus: nats-server had exited; restarted at {server.url}", flush=True)
        except RuntimeError as exc:  # tried again in a second
            print(f"qubus: nats-server could not be restarted: {exc}", file=sys.stderr)


def _mtime(path: Path | None) -> float | None:
    try:
        return None if path is None else path.stat().st_mtime
    except FileNotFoundError:
        return None


async def _creds(args: argparse.Namespace) -> int:
    """``qubus creds DIR``: the seeds and the server's authorization block of a deployment.

    Raises:
        UsageError: a bad ``--fleet`` or ``--users``.
        QubusError: ``file.unwritable`` if DIR cannot be written.
    """
    from qubus.bus import auth
    from qubus_services import SERVICES

    fleet = default_fleet() if args.fleet is None else [n for n in args.fleet.split(",") if n]
    check_fleet(list(fleet))
    users = check_users(args.users)
    services = [service for service in SERVICES if service != "qpu"]
    found = auth.identities(services, fleet, users)
    try:
        block = auth.write_credentials(args.dir, found)
        (args.dir / "auth.conf").write_text(block)
    except OSError as exc:
        raise QubusError(
            f"cannot write {args.dir}: {exc.strerror}", code="file.unwritable"
        ) from None
    print(f"{len(found)} identities in {args.dir}")
    return 0


async def _user(args: argparse.Namespace) -> int:
    """``qubus user add NAME [--role R]``: record the user; a running stack picks it up.

    Raises:
        QubusError: ``auth.bad_user``; ``auth.refused`` if the running stack did not accept
            the new user's seed within 10 s.
    """
    from qubus.bus import auth, stackfile
    from qubus.client.aio import Client

    creds = stackfile.creds_dir()
    added = auth.add_user(creds, args.name, args.role)
    seed = auth.seed_path(creds, args.name)
    print(f"{'added' if added else 'kept'} user {args.name} ({args.role}); its seed: {seed}")
    record = stackfile.running()
    if record is None or not record["creds"]:
        print("qubus up gives it its identity when it starts")
        return 0
    deadline = time.monotonic() + 10.0
    while True:  # the stack reloads its server within a second
        try:
            client = await Client.connect(record["url"], nkey=str(seed))
        except QubusError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
            continue
        await client.close()
        print(f"the stack at {record['url']} accepts it")
        return 0


async def _until_stopped(starting: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``starting`` unless ``stop`` is set first (then cancel it and return False)."""
    start = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not start.done():
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        return False
    start.result()
    return True


def reap_late_children() -> None:
    """Kill the service processes whose start was under way in a thread when ``qubus up``
    stopped during start-up: the supervisor never saw them start, they would connect for
    ever to the stopped server, and the interpreter waits for its children at exit."""
    import multiprocessing

    for process in multiprocessing.active_children():
        process.kill()
        process.join(timeout=5)


def down(args: argparse.Namespace) -> int:
    """``qubus down``: stop the recorded ``qubus up`` and wait until it has stopped.

    Raises:
        QubusError: ``stack.none``: no stack is recorded as running; ``stack.stop``: it did
            not stop within ``STOP_WAIT_S``.
    """
    from qubus.bus import stackfile

    running = stackfile.running()
    if running is None:
        raise QubusError(
            f"no stack is running (none recorded in {stackfile.stack_file()})", code="stack.none"
        )
    pid = running["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while stackfile.alive(pid):
        if time.monotonic() > deadline:
            raise QubusError(
                f"the stack (pid {pid}) did not stop within {STOP_WAIT_S:g} s", code="stack.stop"
            )
        time.sleep(0.1)
    print(f"qubus: stopped the stack at {running['url']} (pid {pid})", file=sys.stderr)
    return 0


def service(args: argparse.Namespace) -> int:
    """``qubus service NAME``: run one service process until SIGTERM/SIGINT."""
    from qubus.bus.threads import one_blas_thread

    one_blas_thread()
    from qubus.bus.service import run_service

    if args.name == "qpu" and not args.node:
        print("qubus: the qpu service needs --node ID", file=sys.stderr)
        return 2
    module = importlib.import_module(f"qubus_services.{args.name}.main")
    run_service(args.name, module.setup, node=args.node)
    return 0


# ------------------------------------------------------------------ inspection


async def _nodes(args: argparse.Namespace) -> int:
    from qubus.bus.config import Settings

    async with connected() as client:
        statuses = await client.bus.node_statuses()
        links = [link.model_dump() for link in await client.bus.link_statuses()]
    now = time.time()
    rows = []
    for node in sorted(statuses):
        status = statuses[node]
        rows.append(
            {
                "node": node,
                "kind": status.kind,
                "qubits": status.n_qubits,
                "max_circuit_qubits": status.max_circuit_qubits,
                "queue_depth": status.queue_depth,
                "busy": status.busy,
                "online": now - status.updated_at <= Settings().node_timeout_s,
                "calibration_revision": status.calibration_revision,
                "calibration": _calibration_summary(status.device),
            }
        )
    if args.json:
        print(json.dumps({"nodes": rows, "links": links}))
        return 0
    if not rows:
        print("no QPU node has reported")
    else:
        print(
            f"{'NODE':<18} {'KIND':<16} {'QUBITS':>6} {'QUEUE':>5}  {'STATE':<8}"
            f"{'1Q ERR':>9} {'2Q ERR':>9} {'READOUT':>8} {'T1 us':>9} {'T2 us':>9}  CALIBRATED"
        )
    for row in rows:
        print(_node_line(row))
    if links:
        print()
        print(
            f"{'LINK':<34} {'F0':>5} {'PAIR F':>7} {'LATENCY ms':>10} {'PURIFY <':>8} "
            f"{'SERVED':>7} {'RESERVED':>9}"
        )
    for link in links:
        floor = "-" if link["purify_below"] is None else f"{link['purify_below']:.2f}"
        pair_f = "-" if link["expected_fidelity"] is None else f"{link['expected_fidelity']:.3f}"
        print(
            f"{link['a'] + ' - ' + link['b']:<34} {link['f0']:>5.2f} {pair_f:>7} "
            f"{link['expected_latency_s'] * 1e3:>10.2f} {floor:>8} {link['pairs_served']:>7} "
            f"{link['pairs_reserved']:>9}"
        )
    return 0


def _node_line(row: dict[str, Any]) -> str:
    """One row of ``qubus nodes``."""
    cal = row["calibration"]
    state = ("busy" if row["busy"] else "idle") if row["online"] else "offline"
    return (
        f"{row['node']:<18} {row['kind']:<16} {row['qubits']:>6} {row['queue_depth']:>5}  "
        f"{state:<8}{_figure(cal.get('median_1q_error')):>9} "
        f"{_figure(cal.get('median_2q_error')):>9} "
        f"{_figure(cal.get('median_readout_error')):>8} "
        f"{_figure(cal.get('median_t1_us')):>9} {_figure(cal.get('median_t2_us')):>9}  "
        f"{str(cal.get('calibrated_at', ''))[:10]}"
    )


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _calibration_summary(device: dict[str, Any]) -> dict[str, Any]:
    from qubus.devices.profiles import Device

    return Device.model_validate(device).summary()


async def _ps(args: argparse.Namespace) -> int:
    async with connected() as client:
        replies = await client.services("STATS", timeout=args.timeout, expected=args.expect)
    rows = [instance_row(reply) for reply in replies]
    if args.json:
        print(json.dumps({"instances": rows}))
        return 0
    if not rows:
        print("no service instance answered")
        return 0
    print(
        f"{'SERVICE':<10} {'NODE':<18} {'ID':<28} {'VERSION':<8} {'UPTIME':>8} "
        f"{'HANDLED':>8} {'ERRORS':>6} {'REDELIVERED':>11} {'LAG':>5}"
    )
    for row in rows:
        lag = "-" if row["lag"] is None else str(row["lag"])
        print(
            f"{row['service']:<10} {row['node'] or '-':<18} {row['id']:<28} {row['version']:<8} "
            f"{_duration(row['uptime_s']):>8} {row['handled']:>8} {row['errored']:>6} "
            f"{row['redelivered']:>11} {lag:>5}"
        )
    return 0


def instance_row(stats: dict[str, Any]) -> dict[str, Any]:
    """One ``qubus ps`` row from an instance's ``stats_response``: its identity and its
    endpoints' figures summed (``lag`` is None when it has no consumer)."""
    metadata = stats.get("metadata") or {}
    endpoints = stats.get("endpoints") or []
    lags = [e["data"]["lag"] for e in endpoints if "lag" in (e.get("data") or {})]
    return {
        "service": metadata.get("service", stats["name"]),
        "node": metadata.get("node"),
        "name": stats["name"],
        "id": stats["id"],
        "instance": metadata.get("instance"),
        "pid": metadata.get("pid"),
        "version": stats["version"],
        "started": stats.get("started"),
        "uptime_s": stats.get("uptime_s"),
        "handled": sum(e["num_requests"] for e in endpoints),
        "errored": sum(e["num_errors"] for e in endpoints),
        "redelivered": sum((e.get("data") or {}).get("redelivered", 0) for e in endpoints),
        "lag": sum(lags) if lags else None,
        "endpoints": endpoints,
        "logs": stats.get("logs"),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


async def _logs(args: argparse.Namespace) -> int:
    async with connected() as client:
        since = None
        if args.task:
            events = await client.events(args.task)
            if not events:
                raise QubusError(f"no task {args.task}", code="task.unknown")
            since = events[0].published - 1.0
        async for line in client.log_lines(service=args.service, since=since, follow=args.follow):
            if args.task and line.get("task_id") != args.task:
                continue
            print(json.dumps(line) if args.json else format_log_line(line), flush=True)
    return 0


def format_log_line(line: dict[str, Any]) -> str:
    """A log line as ``time service[node] LEVEL event key=value ...``."""
    fields = dict(line)
    stamp = str(fields.pop("timestamp", ""))[11:23]
    who = fields.pop("service", "?")
    node = fields.pop("node", None)
    fields.pop("instance", None)
    fields.pop("trace_id", None)
    level = str(fields.pop("level", "")).upper()
    event = fields.pop("event", "")
    rest = " ".join(f"{key}={value}" for key, value in fields.items())
    source = f"{who}[{node}]" if node else who
    return f"{stamp} {source:<22} {level:<7} {event} {rest}".rstrip()


# ------------------------------------------------------------------ the report


async def _report(args: argparse.Namespace) -> int:
    from qubus.cli import report  # matplotlib: imported only for this command

    since = None if args.since is None else parse_since(args.since, now=time.time())
    bench = None if args.bench is None else report.load_bench(args.bench)
    async with connected() as client:
        events = await read_task_events(client, since=since)
    figures = report.build_figures(events, since=since, bench=bench)
    out = args.out if args.out is not None or args.json else Path("report.html")
    if out is not None:
        out.write_text(report.render_html(figures))  # noqa: ASYNC240 (the command's last step)
        print(f"qubus: report of {figures.summary['tasks']} tasks in {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures.to_json()))
    return 0


async def _dashboard(args: argparse.Namespace) -> int:
    from qubus.bus.auth import DASHBOARD
    from qubus.bus.config import Settings
    from qubus.dashboard.server import Dashboard, serve

    since = parse_since(args.since, now=time.time())
    async with connected(DASHBOARD) as client:
        dashboard = Dashboard(client, since=since, node_timeout_s=Settings().node_timeout_s)

        def ready(url: str) -> None:
            print(f"dashboard at {url} (metrics at {url}metrics); Ctrl-C stops it", flush=True)

        try:
            await serve(dashboard, host=args.host, port=args.port, ready=ready)
        except OSError as exc:
            raise QubusError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port",
                code="dashboard.listen",
            ) from None
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "user": _user,
    "creds": _creds,
    "nodes": _nodes,
    "ps": _ps,
    "logs": _logs,
    "report": _report,
    "dashboard": _dashboard,
}
"""The commands of this module that run in an event loop (``main`` runs ``up`` and ``service``
apart)."""
