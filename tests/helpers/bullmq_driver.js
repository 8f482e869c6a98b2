// Drives the real BullMQ (6 or 5) or Bull (4) library for the tests: one JSON command per line on
// stdin, one JSON reply per line on stdout. Usage: node bullmq_driver.js <lib> <redis url> [prefix]
// with <lib> one of bullmq, bullmq5, bull (the packages of tests/node_modules).
"use strict";
const path = require("path");
const readline = require("readline");

const modules = path.join(__dirname, "..", "node_modules");
const [lib, url, prefix = "bull"] = process.argv.slice(2);
const isBull = lib === "bull";
const library = require(path.join(modules, lib));
const Redis = require(path.join(modules, "ioredis"));

const queues = new Map();
const workers = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function connection() {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port), maxRetriesPerRequest: null };
}

function queue(name) {
  if (!queues.has(name)) {
    queues.set(
      name,
      isBull
        ? new library(name, { redis: connection(), prefix })
        : new library.Queue(name, { connection: connection(), prefix }),
    );
  }
  return queues.get(name);
}

function described(job) {
  return { id: String(job.id), timestamp: job.timestamp, delay: job.opts.delay || 0, name: job.name };
}

async function process_(job) {
  // A job's data says how long it runs, and whether it fails.
  if (job.data.ms) await sleep(job.data.ms);
  if (job.data.fail) throw new Error("failed on purpose");
  return null;
}

const commands = {
  async add({ queue: name, name: jobName = "job", data = {}, opts = {}, count = 1 }) {
    const added = [];
    for (let index = 0; index < count; index += 1) {
      // Bull runs a named job only with a processor of that name: its jobs keep the default name.
      const job = isBull ? await queue(name).add(data, opts) : await queue(name).add(jobName, data, opts);
      added.push(described(job));
    }
    return added;
  },
  async pause({ queue: name }) {
    await queue(name).pause();
    return true;
  },
  async resume({ queue: name }) {
    await queue(name).resume();
    return true;
  },
  async flow({ queue: name, children = 1 }) {
    const producer = new library.FlowProducer({ connection: connection(), prefix });
    const tree = await producer.add({
      name: "parent",
      queueName: name,
      data: {},
      children: Array.from({ length: children }, (_, index) => ({ name: `child${index}`, queueName: name, data: {} })),
    });
    await producer.close();
    return { parent: described(tree.job), children: tree.children.map((child) => described(child.job)) };
  },
  // The library's own counts: getJobCounts(), getWaitingCount(), and with BullMQ 6 the due
  // delayed jobs (getDelayedCount(now + 1): those due at now or before).
  async counts({ queue: name }) {
    const target = queue(name);
    const reply = {
      counts: await target.getJobCounts(),
      waiting: await target.getWaitingCount(),
      paused: await target.isPaused(),
      now: Date.now(),
    };
    if (!isBull && lib === "bullmq") reply.due = await target.getDelayedCount(reply.now + 1);
    return reply;
  },
  // The jobs waiting, as the library lists them (wait, paused, prioritized).
  async waiting({ queue: name }) {
    const target = queue(name);
    const types = isBull ? ["waiting", "paused"] : ["waiting", "prioritized"];
    const jobs = await target.getJobs(types, 0, -1);
    return jobs.filter(Boolean).map(described);
  },
  // The jobs running, with the start time the library recorded (`processedOn`, ms).
  async active({ queue: name }) {
    const jobs = await queue(name).getJobs(["active"], 0, -1);
    return jobs.filter(Boolean).map((job) => ({ ...described(job), processedOn: job.processedOn }));
  },
  async worker({ queue: name, concurrency = 1 }) {
    if (isBull) {
      queue(name).process(concurrency, process_);
    } else {
      workers.push(new library.Worker(name, process_, { connection: connection(), prefix, concurrency }));
    }
    return true;
  },
  async close() {
    await Promise.all(workers.map((worker) => worker.close(true)));
    await Promise.all([...queues.values()].map((target) => target.close()));
    return true;
  },
};

const lines = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
lines.on("line", (line) => {
  chain = chain.then(async () => {
    let reply;
    try {
      const command = JSON.parse(line);
      reply = { ok: await commands[command.op](command) };
    } catch (error) {
      reply = { error: String(error && error.stack ? error.stack : error) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  });
});
lines.on("close", () => chain.then(() => process.exit(0)));
// So the tests know it is ready.
process.stdout.write(JSON.stringify({ ok: "ready", redis: typeof Redis }) + "\n");
