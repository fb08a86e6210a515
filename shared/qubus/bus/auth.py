"""Who may do what on a secured bus: NATS users with nkeys, and their permissions.

Every process connects as one NATS user, identified by an nkey (an ed25519 key pair: the
server holds the public key, the process a seed file). The server checks every publish and
subscribe against that user's permissions, so a refused action never reaches a qubus process:

- ``svc-<service>``: one per service (shared by its replicas); publishes only its own task
  events, its log subject and its KV keys (its durables' floors in ``qubus_consumers``
  among them); consumes only through its own durable consumers; may create (never update
  or delete) the streams and buckets (every service ensures the topology at start).
- ``qpu-<node>``: one per node of the fleet; writes only ``node.<node>`` in ``qubus_nodes``
  and consumes only through ``qpu-<node>``, so a node outside the fleet has no identity and
  one node cannot report another's status.
- a client user (``<name>``): requests ``qubus.submit.<name>`` only, so the subject proves
  the submitter and ingestion names the task ``<name>.<id>``; publishes only its own tasks'
  ``cancelled`` events (``qubus.task.<name>.*.cancelled``); reads only
  ``qubus.task.<name>.>`` (named pull consumers with that filter, whose API subject
  ``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>`` the server checks), the log
  lines about its own tasks (``qubus.log.*.<name>``), and node and link status; replies
  reach it on its own inbox prefix ``_INBOX_<name>``.
- ``dashboard``: ``qubus dashboard``, read-only: every task's events and the log stream
  (through consumers of its own, never a stage's), node, link and weights records, and the
  ``$SRV`` verbs; it publishes nothing else, so a web page cannot change the stack.
- ``operator``: everything (weights, pilots, feedback, streams, the supervisor).

``qubus up`` writes the server's ``authorization`` block and one seed file per identity
(``<state dir>/creds/<identity>.nk``, mode 0600) with ``write_credentials``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nkeys

from qubus.bus.connection import (
    BUCKET_CALIBRATION,
    BUCKET_CONSUMERS,
    BUCKET_FEATURES,
    BUCKET_IDEMPOTENCY,
    BUCKET_LINKS,
    BUCKET_NODES,
    BUCKET_PILOTS,
    BUCKET_QUOTA,
    BUCKET_WEIGHTS,
    BUCKETS,
    EPR_SUBJECT,
    LOG_STREAM,
    READY_SUBJECT,
    RESERVE_SUBJECT,
    STREAM,
    SUBMIT_SUBJECT,
    TASK_SUBJECTS,
    inbox_prefix,
)
from qubus.bus.logs import LOG_SUBJECT_PREFIX, log_subject
from qubus.bus.messages import NodeEvent, TaskCancelled
from qubus.errors import QubusError

OPERATOR = "operator"
DASHBOARD = "dashboard"
"""The read-only identity ``qubus dashboard`` connects as."""
ANONYMOUS = "anon"
"""The owner of tasks submitted on the bare ``qubus.submit`` (a server without auth)."""
DEFAULT_USER = "local"
"""The client user ``qubus up`` creates for the commands run on its machine."""
USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_RESERVED = (OPERATOR, ANONYMOUS, DASHBOARD)
_RESERVED_PREFIXES = ("svc-", "qpu-")
SEED_SUFFIX = ".nk"
USERS_FILE = "users.json"
"""Where ``add_user`` records the users of a ``qubus up`` state dir (in its creds dir)."""
ROLES = ("client", "operator")

_API = "$JS.API"
_TASK_EVENTS = "qubus.task.*.*"


@dataclass(frozen=True)
class Grant:
    """What one service does on the bus (the catalogue its permissions are built from).

    Attributes:
        events: Task events it publishes (``<event>`` of ``qubus.task.<owner>.<id>.<event>``).
        durables: Its durable consumers on the task stream.
        serves: Request subjects it answers.
        requests: Request subjects it sends to other services.
        writes: KV buckets it writes (every key), read too.
        write_keys: KV keys it writes (``bucket``, ``key pattern``), their bucket read too.
        reads: KV buckets it only reads.
        tasks_consumers: It reads the task stream through ephemeral consumers too.
    """

    events: tuple[str, ...] = ()
    durables: tuple[str, ...] = ()
    serves: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    write_keys: tuple[tuple[str, str], ...] = ()
    reads: tuple[str, ...] = ()
    tasks_consumers: bool = False


_ENDINGS = ("rejected", "failed")
_NODE_EVENTS = tuple(cls.EVENT for cls in NodeEvent.__subclasses__())
GRANTS: dict[str, Grant] = {
    "ingestion": Grant(
        events=("ingested",),
        durables=("quota",),
        serves=(SUBMIT_SUBJECT, f"{SUBMIT_SUBJECT}.*"),
        writes=(BUCKET_IDEMPOTENCY, BUCKET_QUOTA),
    ),
    "parser": Grant(events=("parsed", *_ENDINGS), durables=("parser",), writes=(BUCKET_FEATURES,)),
    "logic": Grant(events=("checked", *_ENDINGS), durables=("logic",), reads=(BUCKET_NODES,)),
    "sandbox": Grant(events=("eval.sandbox", "eval.ideals", *_ENDINGS), durables=("sandbox",)),
    "noise": Grant(events=("eval.noise", *_ENDINGS), durables=("noise",), reads=(BUCKET_NODES,)),
    "fusion": Grant(
        events=("scored", *_ENDINGS),
        durables=("fusion", "outcomes"),
        writes=(BUCKET_CALIBRATION, BUCKET_WEIGHTS),
        reads=(BUCKET_NODES, BUCKET_PILOTS),
    ),
    "allocator": Grant(
        events=("allocated.*", "replace.*", *_ENDINGS),
        durables=("allocator", "allocator-replace"),
        reads=(BUCKET_NODES,),
        tasks_consumers=True,
    ),
    "link": Grant(
        serves=(EPR_SUBJECT, RESERVE_SUBJECT),
        writes=(BUCKET_LINKS,),
        write_keys=((BUCKET_NODES, "link.>"),),
    ),
}


def qpu_grant(node: str) -> Grant:
    """QPU node ``node``'s catalogue: its own consumer and status key, the run's events
    under its own name only (``qubus.bus.messages.NodeEvent``), and ephemeral consumers on the
    task stream (a sweep's node awaits the sweep's ideal distributions and reads its chunks'
    ends on one)."""
    return Grant(
        events=(*(f"{event}.{node}" for event in _NODE_EVENTS), *_ENDINGS),
        durables=(f"qpu-{node}",),
        requests=(RESERVE_SUBJECT,),
        write_keys=((BUCKET_NODES, f"node.{node}"),),
        tasks_consumers=True,
    )


@dataclass(frozen=True)
class Permissions:
    """A NATS user's permissions: subjects it may publish to (unless denied) and subscribe to.

    ``responses`` lets it answer the requests it receives (``allow_responses``).
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    responses: bool = False

    def to_config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "publish": {"allow": list(self.publish), "deny": list(self.deny_publish)},
            "subscribe": {"allow": list(self.subscribe)},
        }
        if self.responses:
            config["allow_responses"] = True
        return config


@dataclass(frozen=True)
class Identity:
    """One NATS user: its name and permissions (None: the operator, allowed everything)."""

    name: str
    permissions: Permissions | None = None


def _stream_reader(stream: str) -> list[str]:
    """JetStream API subjects to read ``stream`` through gets and ordered consumers (KV
    watchers, the re-placement's reads): push consumers without acknowledgements, which the
    server removes once their subscriber is gone. Never fetching from, acknowledging for or
    deleting a consumer by name: that would be another stage's durable consumer."""
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}",  # unnamed: never another's durable consumer
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _durable(stream: str, name: str) -> list[str]:
    """JetStream API subjects to create, inspect and consume through durable ``name``."""
    return [
        f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"{_API}.CONSUMER.CREATE.{stream}.{name}",
        f"{_API}.CONSUMER.CREATE.{stream}.{name}.>",
        f"{_API}.CONSUMER.INFO.{stream}.{name}",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    ]


def _topology() -> list[str]:
    """Create and inspect (never update, delete or purge) every qubus stream and bucket: an
    update could drop the task stream's limits, age or subjects; the operator makes it."""
    streams = [STREAM, LOG_STREAM, *(f"KV_{bucket}" for bucket in BUCKETS)]
    return [f"{_API}.STREAM.{verb}.{s}" for s in streams for verb in ("CREATE", "INFO")]


def service_identity(name: str, grant: Grant) -> Identity:
    """The NATS user ``name`` of a service process (``svc-parser``, ``qpu-ibm_nairobi``)."""
    publish = [log_subject(label_service(name)), READY_SUBJECT, *_topology()]
    publish += [f"{_TASK_EVENTS}.{event}" for event in grant.events]
    publish += list(grant.requests)
    publish += [
        f"{_API}.STREAM.MSG.GET.{STREAM}",
        f"{_API}.DIRECT.GET.{STREAM}",
        f"{_API}.STREAM.INFO.{STREAM}",
    ]
    for durable in grant.durables:
        publish += _durable(STREAM, durable)
    if grant.durables:
        publish.append(f"{_API}.CONSUMER.INFO.{STREAM}.*")  # queue lags, the replacement's reads
    if grant.tasks_consumers:
        publish += _stream_reader(STREAM)
    # every stage records its consumers' acknowledgement floors (qubus.bus.durable)
    write_keys = [*grant.write_keys, *((BUCKET_CONSUMERS, durable) for durable in grant.durables)]
    buckets = [*grant.writes, *grant.reads, *(bucket for bucket, _ in write_keys)]
    for bucket in dict.fromkeys(buckets):
        publish += _stream_reader(f"KV_{bucket}")
    publish += [f"$KV.{bucket}.>" for bucket in grant.writes]
    publish += [f"$KV.{bucket}.{key}" for bucket, key in write_keys]
    subscribe = [f"{inbox_prefix(name)}.>", "$SRV.>", *grant.serves]
    return Identity(name, Permissions(tuple(publish), tuple(subscribe), responses=True))


def label_service(name: str) -> str:
    """``qpu`` for ``qpu-<node>``, the service name otherwise (its log subject's token)."""
    return "qpu" if name.startswith("qpu-") else name.removeprefix("svc-")


def client_identity(user: str, *, durables: Iterable[str]) -> Identity:
    """Client user ``user``: submits as itself, reads its own tasks, logs and node status.

    Args:
        user: The user's name (the owner token of its task ids).
        durables: Every stage's durable consumer on the task stream, which a client may
            neither create, inspect nor fetch from (it could read other users' circuits).
    """
    check_user_name(user)
    publish = [
        f"{SUBMIT_SUBJECT}.{user}",
        f"qubus.task.{user}.*.{TaskCancelled.EVENT}",  # Client.cancel, its own tasks only
        f"{_API}.CONSUMER.CREATE.{STREAM}.*.qubus.task.{user}.>",
        f"{_API}.CONSUMER.INFO.{STREAM}.*",
        f"{_API}.CONSUMER.MSG.NEXT.{STREAM}.*",
        f"{_API}.CONSUMER.CREATE.{LOG_STREAM}.*.{log_subject('*', user)}",  # its tasks' lines
        f"{_API}.CONSUMER.INFO.{LOG_STREAM}.*",
        f"{_API}.CONSUMER.MSG.NEXT.{LOG_STREAM}.*",
        f"{_API}.STREAM.INFO.KV_{BUCKET_NODES}",
        f"{_API}.STREAM.MSG.GET.KV_{BUCKET_NODES}",
        f"{_API}.DIRECT.GET.KV_{BUCKET_NODES}.>",
        "$SRV.>",
    ]
    subscribe = [f"{inbox_prefix(user)}.>"]
    return Identity(user, Permissions(tuple(publish), tuple(subscribe), _deny_durables(durables)))


def dashboard_identity(*, durables: Iterable[str]) -> Identity:
    """``dashboard``: reads every task's events, the logs, KV ``qubus_nodes`` and
    ``qubus_weights`` and asks ``$SRV``; it may write nothing (no task event, KV key or
    stream change) and, like a client, may not touch a stage's durable consumer.

    Args:
        durables: Every stage's durable consumer on the task stream.
    """
    publish = ["$SRV.>"]
    for stream, subjects in ((STREAM, TASK_SUBJECTS), (LOG_STREAM, f"{LOG_SUBJECT_PREFIX}.>")):
        publish += [
            f"{_API}.CONSUMER.CREATE.{stream}.*.{subjects}",
            f"{_API}.CONSUMER.INFO.{stream}.*",
            f"{_API}.CONSUMER.MSG.NEXT.{stream}.*",
        ]
    publish.append(f"{_API}.STREAM.INFO.{STREAM}")
    for bucket in (BUCKET_NODES, BUCKET_WEIGHTS):
        publish += _stream_reader(f"KV_{bucket}")
    subscribe = (f"{inbox_prefix(DASHBOARD)}.>",)
    return Identity(DASHBOARD, Permissions(tuple(publish), subscribe, _deny_durables(durables)))


def _deny_durables(durables: Iterable[str]) -> tuple[str, ...]:
    """What a reader may not do to a stage's durable consumer (it could read other users'
    circuits, or take a stage's messages)."""
    return tuple(
        subject
        for durable in durables
        for subject in (
            f"{_API}.CONSUMER.CREATE.{STREAM}.{durable}.>",
            f"{_API}.CONSUMER.INFO.{STREAM}.{durable}",
            f"{_API}.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
        )
    )


def check_user_name(user: str) -> None:
    """Raises ``QubusError`` (``auth.bad_user``) unless ``user`` can name a client user."""
    if not USER_NAME.match(user) or user in _RESERVED or user.startswith(_RESERVED_PREFIXES):
        raise QubusError(
            f"bad user name {user!r}: use 1 to 32 of A-Z a-z 0-9 _ -, not {', '.join(_RESERVED)} "
            f"and not starting with {' or '.join(_RESERVED_PREFIXES)}",
            code="auth.bad_user",
        )


def identities(
    services: Sequence[str],
    fleet: Sequence[str],
    users: Sequence[str],
    operators: Sequence[str] = (),
) -> list[Identity]:
    """Every identity of a stack: the operator, each service, each QPU node, the dashboard,
    each client user (``users``) and each user with the operator's role (``operators``)."""
    found = [Identity(OPERATOR), *(Identity(name) for name in operators)]
    found += [service_identity(f"svc-{s}", GRANTS[s]) for s in services]
    found += [service_identity(f"qpu-{node}", qpu_grant(node)) for node in fleet]
    durables = [d for s in services for d in GRANTS[s].durables]
    durables += [d for node in fleet for d in qpu_grant(node).durables]
    found.append(dashboard_identity(durables=durables))
    found += [client_identity(user, durables=durables) for user in users]
    return found


def recorded_users(creds_dir: Path) -> dict[str, str]:
    """The users ``add_user`` recorded in ``creds_dir`` (name → role), in order added."""
    path = creds_dir / USERS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def add_user(creds_dir: Path, name: str, role: str) -> bool:
    """Record user ``name`` with ``role`` (``client`` or ``operator``) in ``creds_dir``, for
    ``qubus up`` to give it an identity (at start, and within a second while it runs), and
    write its seed (``write_credentials`` keeps an existing one).

    Returns:
        False if the user was already recorded with that role.

    Raises:
        QubusError: ``auth.bad_user`` (``check_user_name``); ``auth.bad_role``.
    """
    check_user_name(name)
    if role not in ROLES:
        raise QubusError(f"bad role {role!r}: use {' or '.join(ROLES)}", code="auth.bad_role")
    users = recorded_users(creds_dir)
    if users.get(name) == role:
        return False
    users[name] = role
    creds_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(creds_dir, 0o700)
    write_credentials(creds_dir, [Identity(name)])
    partial = creds_dir / f"{USERS_FILE}.tmp"
    partial.write_text(json.dumps(users, indent=1) + "\n")
    partial.replace(creds_dir / USERS_FILE)  # whole: qubus up may be reading it
    return True


def service_user(service: str, node: str | None) -> str:
    """The identity a service process connects as."""
    return f"qpu-{node}" if service == "qpu" else f"svc-{service}"


def write_credentials(creds_dir: Path, found: Sequence[Identity]) -> str:
    """Write a seed file per identity (keeping existing ones) and return the server's
    ``authorization`` block for them.

    Args:
        creds_dir: Where the seed files go (created mode 0700; files 0600).
        found: The identities (``identities``).
    """
    creds_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(creds_dir, 0o700)
    users = []
    for identity in found:
        seed = seed_path(creds_dir, identity.name)
        if not seed.exists():
            fd = os.open(seed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(_new_seed() + b"\n")
        public = nkeys.from_seed(bytearray(seed.read_bytes().strip())).public_key.decode()
        user: dict[str, object] = {"nkey": public}
        if identity.permissions is not None:
            user["permissions"] = identity.permissions.to_config()
        users.append(user)
    return "authorization: " + json.dumps({"users": users}, indent=1) + "\n"


def seed_path(creds_dir: Path, name: str) -> Path:
    return creds_dir / f"{name}{SEED_SUFFIX}"


def _new_seed() -> bytes:
    """A new user nkey seed (``SU...``)."""
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def user_of_seed(path: str) -> str:
    """The identity a seed file belongs to, by its name (``<identity>.nk``); "" for none."""
    return Path(path).name.removesuffix(SEED_SUFFIX) if path else ""
