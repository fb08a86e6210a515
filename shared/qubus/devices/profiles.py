"""Device profiles of the emulated QPUs, built from real published calibration data.

A :class:`Device` is the one description of a QPU node that compilation, prediction and
emulation share. It is a frozen pydantic model so that a node can publish it to the NATS KV
bucket and any process can read it back (``Device.model_validate(d)``).

Sanitising rules, applied by every loader (real calibration files contain each trap):

* A qubit is unusable when T1 or T2 is missing or not positive, when its single-qubit gate
  error is 1 or more, or when either readout flip probability is 0.5 or more (the bit carries
  no information).
* T2 is clamped to ``2·T1`` (the physical bound; several IBM snapshots report more).
* Edges are undirected. A pair is usable only when every reported direction of its
  two-qubit gate has an error below 1 and both ends are usable; the pair keeps the worst
  reported error and the longest reported duration.

Node ids: ``ibm_<name>`` (conf/props JSON of qiskit-ibm-runtime's fake backends),
``quantinuum_<machine>`` such as ``quantinuum_h2_2`` (the newest row of Quantinuum's emulator
parameters), ``ionq_aria`` and ``ionq_forte`` (transcribed published averages), and
``ibm_perth``, whose calibration is a series of daily snapshots (:func:`drift_devices`).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import statistics
import tarfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from qubus.bus.messages import NodeStatus
from qubus.errors import QubusError

DEFAULT_FLEET: tuple[str, ...] = ("ibm_nairobi", "ibm_manila", "quantinuum_h1_1", "ionq_aria")
"""Nodes started by default: small enough that noisy emulation stays fast."""

READOUT_UNUSABLE = 0.5
"""A qubit whose readout flips a bit with this probability or more is unusable."""

QUANTINUUM_QUBITS = {"h1": 20, "h2": 56}
"""Qubit counts from Quantinuum's product data sheets (H1-1/H1-2: 20; H2-1/H2-2: 56)."""

# Quantinuum publishes no durations or T1/T2 in the files we ship. These are round, documented
# assumptions of the order of the published H-series figures (gates tens to hundreds of µs
# including transport; memory coherence of seconds), not measurements.
QUANTINUUM_ASSUMED = {
    "one_qubit_ns": 25_000.0,
    "two_qubit_ns": 250_000.0,
    "readout_ns": 150_000.0,
    "t1_us": 60e6,
    "t2_us": 3e6,
}

# IonQ T1/T2 from Microsoft's Azure Quantum page for Aria (T1 "10-100 s", T2 "1 s"); we take
# the pessimistic end and apply them to Forte too.
IONQ_T1_US = 10e6
IONQ_T2_US = 1e6
IONQ_SNAPSHOT = "2025-01-01T00:00:00+00:00"
"""Nominal date: the transcribed IonQ averages carry no calibration date."""

IONQ_TARGETS = {"ionq_aria": ("ionq_aria_25", "ms"), "ionq_forte": ("ionq_forte_36", "zz")}


class DeviceNotFound(QubusError):
    """A node id for which no calibration data is shipped."""

    code = "device.unknown"


class QubitCal(BaseModel):
    """Calibration of one physical qubit.

    ``p01`` is P(read 1 | prepared 0) and ``p10`` is P(read 0 | prepared 1).
    """

    model_config = ConfigDict(frozen=True)

    index: int
    t1_us: float | None
    t2_us: float | None
    p01: float
    p10: float
    one_qubit_error: float
    usable: bool

    @property
    def readout_error(self) -> float:
        """Mean readout flip probability ``(p01 + p10) / 2``."""
        return (self.p01 + self.p10) / 2


class EdgeCal(BaseModel):
    """A usable, undirected pair ``a < b`` with its native two-qubit gate."""

    model_config = ConfigDict(frozen=True)

    a: int
    b: int
    gate: str
    error: float
    duration_ns: float


class Device(BaseModel):
    """A QPU node's profile: qubits, coupling, native gates, durations and errors.

    For an all-to-all device ``edges`` is empty and ``all_to_all_edge`` describes the gate
    between any two usable qubits (its ``a``/``b`` are 0 and 1 and mean nothing).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    kind: Literal["superconducting", "trapped-ion"]
    n_qubits: int
    qubits: list[QubitCal]
    edges: list[EdgeCal]
    all_to_all: bool
    all_to_all_edge: EdgeCal | None = None
    native_gates: list[str]
    one_qubit_duration_ns: float
    readout_duration_ns: float
    calibrated_at: str
    revision: str
    source: str

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Device:
        """A copy with ``update`` applied, validated, and stamped with a fresh revision.

        Unlike pydantic's default, derived views (``coupling``, ``distances``...) are not
        carried over stale, and a changed calibration gets a new ``revision`` so that caches
        keyed by it (compilation) do not serve results of the old one. ``deep`` is accepted
        for compatibility; the copy is always independent.
        """
        return _finish({**self.model_dump(), **(update or {})})

    @cached_property
    def usable_qubits(self) -> tuple[int, ...]:
        """Indices of the usable qubits, ascending."""
        return tuple(q.index for q in self.qubits if q.usable)

    @cached_property
    def coupling(self) -> dict[int, tuple[int, ...]]:
        """Adjacency of usable qubits over usable edges (every usable pair if all-to-all)."""
        usable = self.usable_qubits
        if self.all_to_all:
            return {q: tuple(p for p in usable if p != q) for q in usable}
        neighbours: dict[int, list[int]] = {q: [] for q in usable}
        for edge in self.edges:
            neighbours[edge.a].append(edge.b)
            neighbours[edge.b].append(edge.a)
        return {q: tuple(sorted(n)) for q, n in neighbours.items()}

    @cached_property
    def max_circuit_qubits(self) -> int:
        """Size of the largest connected component of usable qubits."""
        if self.all_to_all:
            return len(self.usable_qubits)
        seen: set[int] = set()
        best = 0
        for start in self.usable_qubits:
            if start in seen:
                continue
            component = set(_hops(self.coupling, start))
            seen |= component
            best = max(best, len(component))
        return best

    @cached_property
    def distances(self) -> dict[int, dict[int, int]]:
        """Hop counts between usable qubits over usable edges (absent: not connected)."""
        return {q: _hops(self.coupling, q) for q in self.usable_qubits}

    @cached_property
    def _edge_index(self) -> dict[tuple[int, int], EdgeCal]:
        return {(e.a, e.b): e for e in self.edges}

    def edge(self, a: int, b: int) -> EdgeCal:
        """The calibration of the usable pair ``{a, b}``.

        Raises:
            KeyError: If the pair is not usable.
        """
        if self.all_to_all and self.all_to_all_edge is not None:
            if a != b and self.qubits[a].usable and self.qubits[b].usable:
                return self.all_to_all_edge
            raise KeyError((a, b))
        return self._edge_index[(min(a, b), max(a, b))]

    @property
    def two_qubit_gate(self) -> str:
        """Name of the native two-qubit gate ("cx", "cz", "ecr", "ms", "zz"); "" if none."""
        edge = self.all_to_all_edge or (self.edges[0] if self.edges else None)
        return edge.gate if edge else ""

    def summary(self) -> dict[str, Any]:
        """A short, JSON-ready digest for status displays."""
        usable = [self.qubits[i] for i in self.usable_qubits]
        errors_2q = [e.error for e in self.edges] or (
            [self.all_to_all_edge.error] if self.all_to_all_edge else []
        )
        return {
            "id": self.id,
            "kind": self.kind,
            "qubits": self.n_qubits,
            "usable_qubits": len(usable),
            "max_circuit_qubits": self.max_circuit_qubits,
            "median_1q_error": _median(q.one_qubit_error for q in usable),
            "median_2q_error": _median(errors_2q),
            "median_readout_error": _median(q.readout_error for q in usable),
            "median_t1_us": _median(q.t1_us for q in usable if q.t1_us is not None),
            "median_t2_us": _median(q.t2_us for q in usable if q.t2_us is not None),
            "calibrated_at": self.calibrated_at,
            "revision": self.revision,
        }


def _median(values: Iterable[float]) -> float | None:
    items = list(values)
    return statistics.median(items) if items else None


def _hops(coupling: dict[int, tuple[int, ...]], start: int) -> dict[int, int]:
    seen = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for n in coupling[node]:
            if n not in seen:
                seen[n] = seen[node] + 1
                queue.append(n)
    return seen


def data_dir() -> Path:
    """The calibration directory shipped inside the package."""
    return Path(str(resources.files("qubus") / "data" / "calibration"))


def load_device(node_id: str, *, calibration_dir: Path | None = None) -> Device:
    """Build the profile of a node from calibration files.

    Args:
        node_id: ``ibm_<backend>``, ``quantinuum_<machine>`` (e.g. ``quantinuum_h2_2``),
            ``ionq_aria`` or ``ionq_forte``.
        calibration_dir: Where to read from; defaults to the package data. Tests pass the
            full ``../shared/data/calibration`` to load profiles the package does not ship.

    Returns:
        The sanitised device profile.

    Raises:
        DeviceNotFound: If the id is unknown or its files are missing.
    """
    root = calibration_dir or data_dir()
    try:
        if node_id in DRIFT_NODES:
            return next(drift_devices(node_id, calibration_dir=root))
        if node_id.startswith("ibm_"):
            name = node_id.removeprefix("ibm_")
            return _load_ibm(
                node_id, root / "ibm" / f"conf_{name}.json", root / "ibm" / f"props_{name}.json"
            )
        if node_id.startswith("quantinuum_"):
            return _load_quantinuum(node_id, root / "quantinuum" / "emulator_parameters.csv")
        if node_id in IONQ_TARGETS:
            return _load_ionq(node_id, root / "ionq" / "ionq_published_specs_TRANSCRIBED.json")
    except FileNotFoundError as exc:
        raise DeviceNotFound(f"no calibration data for {node_id!r}: {exc.filename}") from exc
    raise DeviceNotFound(f"unknown node id {node_id!r}")


def _finish(fields: dict[str, Any]) -> Device:
    """Validate, then stamp the revision: a hash of exactly the calibration content."""
    body = Device.model_validate({**fields, "revision": ""}).model_dump(mode="json")
    body.pop("revision")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return Device.model_validate({**body, "revision": digest})


def _qubit(
    index: int,
    t1_us: float | None,
    t2_us: float | None,
    p01: float,
    p10: float,
    one_qubit_error: float,
) -> QubitCal:
    coherent = t1_us is not None and t2_us is not None and t1_us > 0 and t2_us > 0
    if coherent:
        t2_us = min(t2_us, 2 * t1_us)
    usable = coherent and one_qubit_error < 1 and max(p01, p10) < READOUT_UNUSABLE
    return QubitCal(
        index=index,
        t1_us=t1_us,
        t2_us=t2_us,
        p01=p01,
        p10=p10,
        one_qubit_error=one_qubit_error,
        usable=usable,
    )


def _iso(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone(UTC).isoformat()


def _load_ibm(node_id: str, conf_path: Path, props_path: Path) -> Device:
    conf = json.loads(conf_path.read_text())
    props = json.loads(props_path.read_text())
    return _ibm_device(node_id, conf, props, source=f"{conf_path.name}, {props_path.name}")


def _ibm_device(
    node_id: str, conf: dict[str, Any], props: dict[str, Any], *, source: str
) -> Device:
    """A profile from an IBM backend configuration and one properties (calibration) snapshot."""
    gates: dict[str, dict[tuple[int, ...], dict[str, float]]] = {}
    for gate in props["gates"]:
        params = {p["name"]: p["value"] for p in gate["parameters"]}
        gates.setdefault(gate["gate"], {})[tuple(gate["qubits"])] = params
    two_q = next(g for g in ("cz", "ecr", "cx") if g in conf["basis_gates"])
    sx = gates["sx"]
    qubits = []
    for index, entries in enumerate(props["qubits"]):
        values = {e["name"]: e["value"] for e in entries}
        qubits.append(
            _qubit(
                index,
                values.get("T1"),
                values.get("T2"),
                p01=values.get("prob_meas1_prep0", values.get("readout_error", 1.0)),
                p10=values.get("prob_meas0_prep1", values.get("readout_error", 1.0)),
                one_qubit_error=sx.get((index,), {}).get("gate_error", 1.0),
            )
        )
    pairs: dict[tuple[int, int], list[dict[str, float]]] = {}
    for (a, b), params in gates.get(two_q, {}).items():
        pairs.setdefault((min(a, b), max(a, b)), []).append(params)
    edges = [
        EdgeCal(
            a=a,
            b=b,
            gate=two_q,
            error=max(p.get("gate_error", 1.0) for p in reported),
            duration_ns=max(p.get("gate_length", 0.0) for p in reported),
        )
        for (a, b), reported in sorted(pairs.items())
        if all(p.get("gate_error", 1.0) < 1 for p in reported)
        and qubits[a].usable
        and qubits[b].usable
    ]
    readout_ns = [
        next((e["value"] for e in entries if e["name"] == "readout_length"), 0.0)
        for entries in props["qubits"]
    ]
    return _finish(
        {
            "id": node_id,
            "kind": "superconducting",
            "n_qubits": conf["n_qubits"],
            "qubits": qubits,
            "edges": edges,
            "all_to_all": False,
            "native_gates": [*conf["basis_gates"], "measure", "reset"],
            "one_qubit_duration_ns": statistics.median(
                p.get("gate_length", 0.0) for p in sx.values()
            ),
            "readout_duration_ns": statistics.median(readout_ns),
            "calibrated_at": _iso(props["last_update_date"]),
            "source": source,
        }
    )


def _load_quantinuum(node_id: str, csv_path: Path) -> Device:
    machine = node_id.removeprefix("quantinuum_").upper().replace("_", "-")
    with csv_path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Machine"] == machine]
    family = machine.split("-")[0].lower()
    if not rows or family not in QUANTINUUM_QUBITS:
        raise DeviceNotFound(f"no Quantinuum emulator parameters for {machine!r}")
    row = max(rows, key=lambda r: r["Date"])
    n_qubits = QUANTINUUM_QUBITS[family]
    qubits = [
        _qubit(
            i,
            QUANTINUUM_ASSUMED["t1_us"],
            QUANTINUUM_ASSUMED["t2_us"],
            p01=float(row["p_meas_0"]),
            p10=float(row["p_meas_1"]),
            one_qubit_error=float(row["p1"]),
        )
        for i in range(n_qubits)
    ]
    edge = EdgeCal(
        a=0, b=1, gate="zz", error=float(row["p2"]), duration_ns=QUANTINUUM_ASSUMED["two_qubit_ns"]
    )
    date = datetime.strptime(row["Date"], "%Y_%m_%d").replace(tzinfo=UTC)
    return _trapped_ion(
        node_id,
        qubits,
        edge,
        native_gates=["rz", "u1q", "zz", "measure", "reset"],
        one_qubit_duration_ns=QUANTINUUM_ASSUMED["one_qubit_ns"],
        readout_duration_ns=QUANTINUUM_ASSUMED["readout_ns"],
        calibrated_at=date.isoformat(),
        source=f"{csv_path.name} ({row['Date']}, {machine})",
    )


def _load_ionq(node_id: str, json_path: Path) -> Device:
    target_name, gate = IONQ_TARGETS[node_id]
    target = json.loads(json_path.read_text())["mqt_bench_2.3.0_ionq_targets"][target_name]
    spam_error = 1 - target["spam_fidelity"]
    n_qubits = target["num_qubits"]
    qubits = [
        _qubit(i, IONQ_T1_US, IONQ_T2_US, spam_error, spam_error, 1 - target["oneq_fidelity"])
        for i in range(n_qubits)
    ]
    edge = EdgeCal(
        a=0,
        b=1,
        gate=gate,
        error=1 - target["twoq_fidelity"],
        duration_ns=target["twoq_duration"] * 1e9,
    )
    return _trapped_ion(
        node_id,
        qubits,
        edge,
        native_gates=["gpi", "gpi2", gate, "measure", "reset"],
        one_qubit_duration_ns=target["oneq_duration"] * 1e9,
        readout_duration_ns=target["readout_duration"] * 1e9,
        calibrated_at=IONQ_SNAPSHOT,
        source=f"{json_path.name} ({target_name})",
    )


def _trapped_ion(node_id: str, qubits: list[QubitCal], edge: EdgeCal, **fields: Any) -> Device:
    """An all-to-all trapped-ion device: every pair of qubits shares ``edge``'s figures."""
    return _finish(
        {
            "id": node_id,
            "kind": "trapped-ion",
            "n_qubits": len(qubits),
            "qubits": qubits,
            "edges": [],
            "all_to_all": True,
            "all_to_all_edge": edge,
            **fields,
        }
    )


# ---------------------------------------------------------------- drift series (ibm_perth)

DRIFT_NODES: tuple[str, ...] = ("ibm_perth",)
"""Nodes whose calibration is a series of daily IBM props snapshots, replayed by
``qubus.devices.drift``. ``load_device`` gives the first snapshot's profile."""

DRIFT_ARCHIVES = "snapshots-*.tar.xz"
"""The snapshots of a drift node, unmodified, one xz tar per month (each member named by its
date), beside the backend's configuration: ``drift/<node>/conf_<name>.json``."""


def drift_devices(node_id: str, *, calibration_dir: Path | None = None) -> Iterator[Device]:
    """The profile of a drift node under each of its calibration snapshots, oldest first.

    Lazy: taking only the first profile reads only the first month's archive.

    Raises:
        FileNotFoundError: If the node has no drift series under ``calibration_dir``.
    """
    folder = (calibration_dir or data_dir()) / "drift" / node_id
    conf_path = folder / f"conf_{node_id.removeprefix('ibm_')}.json"
    conf = json.loads(conf_path.read_text())
    archives = sorted(folder.glob(DRIFT_ARCHIVES))
    if not archives:
        raise FileNotFoundError(errno.ENOENT, "no snapshots", str(folder / DRIFT_ARCHIVES))
    for path in archives:
        with tarfile.open(path, "r:xz") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
            for member in members:
                props = json.load(archive.extractfile(member))
                source = f"{conf_path.name}, {path.name}:{member.name}"
                yield _ibm_device(node_id, conf, props, source=source)


_BY_REVISION: dict[str, Device] = {}


def device_of(status: NodeStatus) -> Device:
    """A node's device profile from its status (KV ``qubus_nodes``), validated once per
    calibration revision (the last 64 kept), so that its cached properties are computed once."""
    device = _BY_REVISION.get(status.calibration_revision)
    if device is None:
        if len(_BY_REVISION) >= 64:
            _BY_REVISION.clear()
        device = _BY_REVISION[status.calibration_revision] = Device.model_validate(status.device)
    return device


def status_of(
    device: Device,
    *,
    queue_depth: int,
    mean_job_s: float,
    busy: bool,
    instance: str,
    background_jobs: int = 0,
) -> NodeStatus:
    """The status a QPU node publishes (KV ``qubus_nodes``) for its device now: the inverse of
    :func:`device_of`."""
    return NodeStatus(
        node=device.id,
        kind=device.kind,
        n_qubits=device.n_qubits,
        max_circuit_qubits=device.max_circuit_qubits,
        device=device.model_dump(mode="json"),
        calibration_revision=device.revision,
        queue_depth=queue_depth,
        mean_job_s=mean_job_s,
        busy=busy,
        instance=instance,
        updated_at=time.time(),
        background_jobs=background_jobs,
    )
