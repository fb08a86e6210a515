// A qubus client that is not Python: it knows only the README's section "Submitting from any
// NATS client". It submits one circuit as JSON on `qubus.submit`, reads the task's events from
// the JetStream stream `QUBUS_TASKS` on `qubus.task.<task_id>.>` until `completed`, `rejected`
// or `failed`, and prints one JSON line:
//
//   {"task_id", "duplicate", "status", "events", "node", "shots", "counts",
//    "predicted_fidelity", "measured_fidelity", "error"}
//
// `status` is `done`, `rejected` or `failed`, or `refused` when `qubus.submit` answered with an
// error (then `error` is its `{code, message, line, column}` body and `task_id` is null).
//
// Usage: node submit.mjs [--server URL] [--shots N] [--timeout SECONDS] CIRCUIT_FILE
// The server defaults to $NATS_URL. Exit status: 0 when a line was printed, 1 when the task
// did not end in time or NATS failed, 2 on bad usage.

import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

import { decode as decodeMsgpack } from "@msgpack/msgpack";
import { connect, headers } from "nats";

const TERMINAL = { completed: "done", rejected: "rejected", failed: "failed" };
const NODE_EVENTS = new Set(["running", "completed", "replace"]);

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node submit.mjs [--server URL] [--shots N] [--timeout S] CIRCUIT_FILE\n`,
  );
  process.exit(2);
}

// A body as the README describes it: JSON when Content-Type says so, msgpack otherwise.
function decodeBody(msg) {
  const type = msg.headers?.get("Content-Type") ?? "";
  if (type === "application/json") {
    return JSON.parse(new TextDecoder().decode(msg.data));
  }
  return decodeMsgpack(msg.data);
}

async function submit(nc, request) {
  const h = headers();
  h.set("Content-Type", "application/json");
  const reply = await nc.request("qubus.submit", new TextEncoder().encode(JSON.stringify(request)), {
    timeout: 10_000,
    headers: h,
  });
  const code = reply.headers?.get("Nats-Service-Error-Code") ?? "";
  return { refused: code !== "", body: decodeBody(reply) };
}

// Every event of the task, in stream order, up to and including its terminal event.
async function readEvents(nc, taskId, timeoutMs) {
  const js = nc.jetstream();
  // An ordered consumer starts at the stream's first message unless told otherwise. Do not pass
  // deliver_policy "all": the `nats` 2.x package then also sends opt_start_seq, the server
  // refuses that pair, and the client retries for ever (nats-io/nats.js#113).
  const prefix = `qubus.task.${taskId}.`;
  const consumer = await js.consumers.get("QUBUS_TASKS", { filterSubjects: `${prefix}>` });
  const messages = await consumer.consume();
  const timer = setTimeout(() => messages.stop(), timeoutMs);
  const events = [];
  const allocated = new Set();
  try {
    for await (const msg of messages) {
      // qubus.task.<task_id>.<event>, where <event> may itself hold dots: `eval.sandbox`,
      // `allocated.<node>`, and a node's own events `running.<node>`, `completed.<node>`.
      const name = msg.subject.slice(prefix.length);
      const [event, node] = name.split(".");
      if (event === "allocated") {
        allocated.add(node);
      } else if (NODE_EVENTS.has(event) && node && !allocated.has(node)) {
        continue; // a node's event for a task it was never given: another node's forgery
      }
      events.push({ name, event, body: decodeBody(msg) });
      if (event in TERMINAL) {
        return events;
      }
    }
  } finally {
    clearTimeout(timer);
    messages.stop();
  }
  throw new Error(`task ${taskId} did not end within ${timeoutMs / 1000} s`);
}

function record(taskId, duplicate, events) {
  const out = {
    task_id: taskId,
    duplicate,
    status: null,
    events: events.map((e) => e.name),
    node: null,
    shots: null,
    counts: null,
    predicted_fidelity: null,
    measured_fidelity: null,
    error: null,
  };
  for (const { name, event, body } of events) {
    if (event === "allocated") {
      out.node = body.node;
      out.predicted_fidelity = body.predicted_fidelity;
    } else if (event === "completed") {
      out.node = body.node;
      out.shots = body.shots;
      out.counts = body.counts;
      out.predicted_fidelity = body.predicted_fidelity;
      out.measured_fidelity = body.measured_fidelity;
    } else if (event === "rejected" || event === "failed") {
      out.error = body.error;
    }
    out.status = TERMINAL[event] ?? name;
  }
  return out;
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      server: { type: "string", default: process.env.NATS_URL ?? "" },
      shots: { type: "string", default: "1000" },
      timeout: { type: "string", default: "120" },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) usage("one circuit file is required");
  if (!values.server) usage("no server: pass --server URL or set NATS_URL");
  const shots = Number(values.shots);
  const timeoutMs = Number(values.timeout) * 1000;
  if (!Number.isInteger(shots) || !(timeoutMs > 0)) usage("--shots and --timeout must be numbers");

  const path = positionals[0];
  const request = { circuit: await readFile(path, "utf8"), shots, source: basename(path) };
  const nc = await connect({ servers: values.server, name: "qubus-foreign-client" });
  try {
    const { refused, body } = await submit(nc, request);
    if (refused) {
      console.log(JSON.stringify({ task_id: null, status: "refused", error: body }));
      return 0;
    }
    const events = await readEvents(nc, body.task_id, timeoutMs);
    console.log(JSON.stringify(record(body.task_id, body.duplicate, events)));
    return 0;
  } finally {
    await nc.drain();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`submit.mjs: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
