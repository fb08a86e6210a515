// The qubus dashboard: one WebSocket feed (/ws) keeps the pages live; a task's page is
// read from /api/task/<id>. Timings of the feed are kept in window.__qubus for tests.
import { bars, colour, lines, waterfall } from "./charts.js";

// firstRenderMs: since navigation, the snapshot drawn; snapshotArrivedMs: when it arrived;
// snapshotApplyMs: building its rows; updates: each later message's handling time.
const timings = { firstRenderMs: null, snapshotArrivedMs: null, snapshotApplyMs: null, updates: [], rows: 0 };
window.__qubus = timings;

const rows = new Map(); // task id -> {data, tr}
const views = { fleet: null, flow: null, weights: null };
let openTask = null;
let taskRefresh = null;

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 3) => (v === null || v === undefined ? "" : Number(v).toFixed(digits));

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.append(td);
  return td;
}

function header(tr, names) {
  for (const name of names) {
    const th = document.createElement("th");
    th.textContent = name;
    tr.append(th);
  }
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

// ------------------------------------------------------------------ tasks table

const CELLS = ["source", "status", "node", "predicted", "measured", "latency_ms", "error"];

function fillRow(tr, data) {
  const values = {
    source: data.source,
    status: data.status,
    node: data.node,
    predicted: fmt(data.predicted),
    measured: fmt(data.measured),
    latency_ms: data.latency_ms === null ? "" : data.latency_ms.toFixed(1),
    error: data.error,
  };
  CELLS.forEach((name, i) => {
    const td = tr.cells[i + 1];
    if (td.textContent !== values[name]) td.textContent = values[name];
  });
  tr.cells[2].className = `status-${data.status}`;
  tr.dataset.status = data.status;
  tr.hidden = !matches(data);
}

function newRow(data) {
  const tr = document.createElement("tr");
  tr.dataset.id = data.id;
  cell(tr, "").append(link(`#/task/${data.id}`, data.id));
  for (const name of CELLS) cell(tr, "", ["predicted", "measured", "latency_ms"].includes(name) ? "num" : "");
  return tr;
}

function matches(data) {
  const query = $("search").value.trim().toLowerCase();
  if (!query) return true;
  return [data.id, data.source, data.status, data.node].some((v) => (v || "").toLowerCase().includes(query));
}

function upsertRows(list) {
  const fresh = document.createDocumentFragment();
  for (const data of list) {
    let entry = rows.get(data.id);
    if (!entry) {
      entry = { data, tr: newRow(data) };
      rows.set(data.id, entry);
      fresh.prepend(entry.tr); // newest first
    }
    entry.data = data;
    fillRow(entry.tr, data);
    if (openTask === data.id) scheduleTaskRefresh();
  }
  $("tasks").prepend(fresh);
  timings.rows = rows.size;
  countTasks();
}

function countTasks() {
  let shown = 0;
  for (const { tr } of rows.values()) if (!tr.hidden) shown += 1;
  $("task-count").textContent = `${shown} of ${rows.size} tasks`;
}

function filterRows() {
  for (const { data, tr } of rows.values()) tr.hidden = !matches(data);
  countTasks();
}

// ------------------------------------------------------------------ fleet, flow, weights

function renderFleet(fleet) {
  const body = $("nodes");
  body.replaceChildren();
  for (const n of fleet.nodes) {
    const tr = document.createElement("tr");
    tr.dataset.node = n.node;
    cell(tr, n.node);
    cell(tr, n.kind);
    cell(tr, n.qubits, "num");
    cell(tr, n.background ? `${n.queue} (${n.background} background)` : n.queue, "num");
    cell(tr, n.online ? (n.busy ? "busy" : "idle") : `offline ${n.status_age_s} s`, n.online ? "" : "offline");
    cell(tr, n.calibration);
    cell(tr, n.calibrated_at || "");
    cell(tr, n.recalibrations, "num");
    cell(tr, n.mean_job_ms, "num");
    const points = n.fidelity;
    cell(tr, "").append(
      lines(
        [
          { points: points.map((p) => [p[0], p[1]]), colour: colour(0), dashed: true },
          { points: points.map((p) => [p[0], p[2]]), colour: colour(1) },
        ],
        { yMin: 0, yMax: 1 },
      ),
    );
    body.append(tr);
  }
  const links = $("links");
  links.replaceChildren();
  for (const l of fleet.links) {
    const tr = document.createElement("tr");
    cell(tr, `${l.a} — ${l.b}`);
    cell(tr, fmt(l.fidelity), "num");
    cell(tr, l.latency_ms, "num");
    cell(tr, l.purify_below === null ? "" : fmt(l.purify_below), "num");
    cell(tr, l.reservations, "num");
    cell(tr, l.pairs_reserved, "num");
    cell(tr, l.pairs_served, "num");
    links.append(tr);
  }
}

function renderFlow(flow) {
  const body = $("stages");
  body.replaceChildren();
  flow.stages.forEach((s, i) => {
    const tr = document.createElement("tr");
    tr.dataset.stage = s.stage;
    cell(tr, s.stage);
    cell(tr, s.service);
    cell(tr, s.rate.toFixed(2), "num");
    cell(tr, s.handled, "num");
    cell(tr, s.errors, "num");
    cell(tr, s.lag === null ? "" : s.lag, "num");
    cell(tr, "").append(lines([{ points: s.history, colour: colour(i) }], { yMin: 0 }));
    body.append(tr);
  });
  const services = $("services");
  services.replaceChildren();
  for (const s of flow.services) {
    const tr = document.createElement("tr");
    cell(tr, s.service);
    cell(tr, s.replicas, "num");
    cell(tr, s.ids.join(", "));
    services.append(tr);
  }
}

function renderWeights(w) {
  const current = w.current;
  $("weights-meta").textContent =
    `revision ${w.revision}, source ${current.source}, ${new Date(current.updated_at * 1000).toISOString()}` +
    (current.note ? ` — ${current.note}` : "");
  const names = Object.keys(current.weights);
  const body = $("weights");
  body.replaceChildren();
  for (const name of names) {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, fmt(current.weights[name], 4), "num");
    cell(tr, current.pinned.includes(name) ? "pinned" : "");
    body.append(tr);
  }
  const head = document.createElement("tr");
  header(head, ["revision", "source", "note", ...names]);
  $("history-head").replaceChildren(head);
  const history = $("history");
  history.replaceChildren();
  for (const h of [...w.history].reverse()) {
    const tr = document.createElement("tr");
    cell(tr, h.revision, "num");
    cell(tr, h.source);
    cell(tr, h.note);
    for (const name of names) cell(tr, fmt(h.weights[name], 4), "num");
    history.append(tr);
  }
  const series = names
    .filter((name) => typeof current.weights[name] === "number" && current.weights[name] <= 1)
    .map((name, i) => ({ name, points: w.history.map((h) => [h.revision, h.weights[name]]), colour: colour(i) }));
  $("weights-chart").replaceChildren(lines(series, { width: 700, height: 130, yMin: 0 }));
}

// ------------------------------------------------------------------ a task's page

function scheduleTaskRefresh() {
  if (taskRefresh === null) taskRefresh = setTimeout(() => { taskRefresh = null; loadTask(openTask); }, 500);
}

async function loadTask(id) {
  if (id === null) return;
  const response = await fetch(`/api/task/${encodeURIComponent(id)}`);
  const body = await response.json();
  if (openTask !== id) return;
  $("task-title").textContent = `Task ${id}`;
  if (!response.ok) {
    $("task-summary").textContent = `${body.error.message} [${body.error.code}]`;
    return;
  }
  const r = body.record;
  const summary = $("task-summary");
  summary.replaceChildren();
  const facts = {
    status: r.status, source: r.source || "", nodes: r.nodes.join(", "),
    "predicted fidelity": fmt(r.predicted_fidelity), "measured fidelity": fmt(r.measured_fidelity),
    hyperscore: fmt(r.hyperscore, 2), error: r.error ? `${r.error.code}: ${r.error.message}` : "",
  };
  for (const [k, v] of Object.entries(facts)) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    summary.append(dt, dd);
  }
  $("waterfall").replaceChildren(
    waterfall(body.spans.map((s) => ({ ...s, label: `${s.event} (${s.service})` }))),
  );
  renderAllocation(body.allocation);
  renderCounts(r.counts, r.ideal_counts);
  $("task-logs").textContent = body.logs
    .map((l) => `${l.timestamp} ${l.service || ""} ${l.level || ""} ${l.event} ${l.error || ""}`.trim())
    .join("\n");
}

function renderAllocation(allocation) {
  const decision = allocation && allocation.decision;
  $("decision").textContent = decision
    ? `${decision.node} by ${decision.policy}: ${decision.reason}`
    : "not allocated";
  const scores = allocation && allocation.scores;
  if (!scores) {
    $("scores").replaceChildren();
    return;
  }
  const terms = [...new Set(scores.flatMap((s) => Object.keys(s.shapley)))];
  const table = document.createElement("table");
  table.className = "grid";
  const head = table.createTHead().insertRow();
  header(head, ["node", "eligible", "predicted", "completion s", "hyperscore", ...terms.map((t) => `φ ${t}`)]);
  const tbody = table.createTBody();
  for (const s of scores) {
    const tr = tbody.insertRow();
    cell(tr, s.node);
    cell(tr, s.eligible ? "yes" : s.reason);
    cell(tr, fmt(s.predicted_fidelity), "num");
    cell(tr, fmt(s.expected_completion_s, 3), "num");
    cell(tr, fmt(s.hyperscore, 2), "num");
    for (const t of terms) cell(tr, fmt(s.shapley[t], 2), "num");
  }
  const eligible = scores.filter((s) => s.eligible);
  const chart = bars(
    eligible.map((s) => ({ label: s.node, values: terms.map((t) => s.shapley[t] || 0) })),
    terms.map((t) => `φ ${t}`),
    { height: 160 },
  );
  $("scores").replaceChildren(table, chart);
}

function renderCounts(counts, ideal) {
  if (!counts || !ideal) {
    $("counts").textContent = "no counts yet";
    return;
  }
  const share = (table) => {
    const total = Object.values(table).reduce((a, b) => a + b, 0) || 1;
    return (o) => (table[o] || 0) / total;
  };
  const measured = share(counts);
  const expected = share(ideal);
  const outcomes = [...new Set([...Object.keys(ideal), ...Object.keys(counts)])]
    .sort((a, b) => expected(b) + measured(b) - expected(a) - measured(a))
    .slice(0, 24);
  $("counts").replaceChildren(
    bars(outcomes.map((o) => ({ label: o, values: [measured(o), expected(o)] })), ["measured", "ideal"]),
  );
}

// ------------------------------------------------------------------ routing and the feed

function route() {
  const hash = location.hash || "#/tasks";
  const [, page, id] = hash.split("/");
  openTask = page === "task" ? decodeURIComponent(id || "") : null;
  for (const section of document.querySelectorAll(".page")) section.classList.toggle("shown", section.id === `page-${page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (openTask) loadTask(openTask);
}

function apply(message) {
  if (message.type === "snapshot") {
    upsertRows(message.tasks);
    for (const name of Object.keys(views)) if (message[name]) show(name, message[name]);
  } else if (message.type === "tasks") {
    upsertRows(message.rows);
  } else {
    show(message.type, message[message.type]);
  }
}

function show(name, view) {
  views[name] = view;
  ({ fleet: renderFleet, flow: renderFlow, weights: renderWeights })[name](view);
}

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.onopen = () => { $("live").className = "on"; $("live").textContent = "live"; };
  socket.onclose = () => {
    $("live").className = "off";
    $("live").textContent = "reconnecting…";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => {
    const start = performance.now();
    const message = JSON.parse(event.data);
    apply(message);
    if (message.type === "snapshot" && timings.firstRenderMs === null) {
      timings.snapshotArrivedMs = start;
      timings.snapshotApplyMs = performance.now() - start;
      // since navigation started, once the frame holding the snapshot has been drawn
      requestAnimationFrame(() => { timings.firstRenderMs = performance.now(); });
    } else if (message.type !== "snapshot") {
      timings.updates.push({ type: message.type, size: (message.rows || []).length, ms: performance.now() - start });
    }
  };
}

$("search").addEventListener("input", filterRows);
window.addEventListener("hashchange", route);
route();
connect();
