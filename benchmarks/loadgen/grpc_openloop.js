// Open-loop gRPC load generator (issue 24): single-text Embed calls with Poisson arrivals at a
// fixed rate, from a process of its own (no Python in the server's interpreter or beside it).
//
//   node grpc_openloop.js ADDRESS RATE DURATION_S SEED TEXTS_FILE [MODEL]
//
// TEXTS_FILE holds a JSON list of strings, sent in turn. Every request is due at its arrival time
// whatever the earlier ones did (open loop): latency counts from that due time, not from the
// moment the request went out, so a generator that falls behind shows as latency, never as a
// quieter server (no coordinated omission). One channel, as a gRPC client has: every call is a
// stream on it. Prints one line: AE_RESULT {requests, errors, duration_us, p50_us, p99_us, max_us}.
"use strict";
const path = require("path");
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [address, rateArg, durationArg, seedArg, textsFile, model = "hf"] = process.argv.slice(2);
const rate = Number(rateArg);
const durationMs = Number(durationArg) * 1000;
const texts = JSON.parse(fs.readFileSync(textsFile, "utf8"));
const DEADLINE_MS = 10000;

// mulberry32: a seeded generator, so that runs with one seed offer the same arrivals
let state = (Number(seedArg) * 2654435761) >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const proto = path.resolve(__dirname, "../../protos");
const definition = loader.loadSync(path.join(proto, "aios/embeddings/v1/embeddings.proto"), {
  keepCase: true, longs: Number, defaults: false, includeDirs: [proto],
});
const Service = grpc.loadPackageDefinition(definition).aios.embeddings.v1.EmbeddingService;
const client = new Service(address, grpc.credentials.createInsecure());

const now = () => Number(process.hrtime.bigint() / 1000n); // µs
const latencies = [];
let errors = 0;
let inFlight = 0;
let sent = 0;
let start = 0;
let stopped = false;

function send(dueUs) {
  inFlight += 1;
  const text = texts[sent % texts.length];
  sent += 1;
  client.Embed({ model, inputs: [text] }, { deadline: Date.now() + DEADLINE_MS }, (err) => {
    inFlight -= 1;
    if (err) errors += 1;
    else latencies.push(now() - dueUs);
    if (stopped && inFlight === 0) finish();
  });
}

function finish() {
  const end = now();
  latencies.sort((a, b) => a - b);
  const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  const result = {
    requests: latencies.length, errors, duration_us: Math.round(Math.min(end - start, durationMs * 1000)),
    p50_us: pick(0.5), p99_us: pick(0.99), max_us: latencies.length ? latencies[latencies.length - 1] : 0,
  };
  process.stdout.write(`AE_RESULT ${JSON.stringify(result)}\n`);
  client.close();
  process.exit(0);
}

function run() {
  start = now();
  let due = start;
  const tick = () => {
    const t = now();
    while (due <= t) { // every arrival that is due, late ones included
      if (due - start >= durationMs * 1000) {
        stopped = true;
        if (inFlight === 0) finish();
        return;
      }
      send(due);
      due += (-Math.log(1 - random()) / rate) * 1e6;
    }
    setTimeout(tick, Math.max(0, (due - t) / 1000 - 1));
  };
  tick();
}

// Connect before the clock starts: the channel's handshake is not a request's latency.
client.waitForReady(Date.now() + 10000, (err) => {
  if (err) {
    process.stderr.write(`cannot reach ${address}: ${err.message}\n`);
    process.exit(2);
  }
  run();
});
