// The real node-resque (9.7.1, tests/package-lock.json) for the Resque tests: it writes Resque's
// own key layout. Usage: node resque_driver.js <redis url> <command>, the command's input as JSON
// on stdin ("namespace" optional in each):
//   enqueue  {"jobs": [{"queue", "class", "args"} | {"queue", "active_job": {"job_class", "arguments"}}]}
//            -> [{"queue", "at"}]: each job's enqueue time (epoch seconds, taken just before it)
//   produce  {"queues": [{"name", "kind"}], "per_second", "seconds", "nap_ms"}: enqueues round-robin
//            at a steady rate, printing one JSON line {"id", "queue", "at", "active_job"} per job
//   work     {"queues": [[names of worker 1], ...], "timeout_ms"}: real Workers (in this one
//            process, each with its own name) until killed; prints "ready" once all are started
//   stats    {"queues"} -> node-resque's own figures: {"lengths", "workers", "working", "failed"},
//            and "started": {worker: {"queue", "at"}}, each job's start as node-resque parses it
// Jobs: "Nap" (args [id, ms]) sleeps; "Boom" throws; the ActiveJob wrapper class sleeps
// `arguments[1]` ms. ActiveJob-shaped payloads are what Rails 7.1+ enqueues through its Resque
// adapter: the wrapper class, one argument, the job data with `enqueued_at` in ISO 8601 UTC with
// nine fraction digits.
"use strict";
const { Queue, Worker } = require("node-resque");
const IORedis = require("ioredis");

const ACTIVE_JOB_WRAPPER = "ActiveJob::QueueAdapters::ResqueAdapter::JobWrapper";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function nowSeconds() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

// ISO 8601 UTC with nine fraction digits, as Ruby's Time#iso8601(9).
function iso9(seconds) {
  const whole = Math.floor(seconds);
  const nanos = Math.floor((seconds - whole) * 1e9);
  const base = new Date(whole * 1000).toISOString().slice(0, 19);
  return `${base}.${String(nanos).padStart(9, "0")}Z`;
}

let jobCounter = 0;
function activeJobData(queue, spec, at) {
  jobCounter += 1;
  return {
    job_class: spec.job_class || "ReportJob",
    job_id: `${process.pid}-${jobCounter}-${Math.random().toString(16).slice(2)}`,
    provider_job_id: null,
    queue_name: queue,
    priority: null,
    arguments: spec.arguments || [],
    executions: 0,
    exception_executions: {},
    locale: "en",
    timezone: "UTC",
    enqueued_at: spec.enqueued_at !== undefined ? spec.enqueued_at : iso9(at),
    scheduled_at: null,
  };
}

const jobs = {
  Nap: { perform: async (id, ms) => sleep(ms || 0) },
  Boom: {
    perform: async () => {
      throw new Error("boom");
    },
  },
  [ACTIVE_JOB_WRAPPER]: { perform: async (data) => sleep((data && data.arguments && data.arguments[1]) || 0) },
};

async function connectQueue(url, namespace) {
  const redis = new IORedis(url);
  const queue = new Queue({ connection: { redis, namespace: namespace || "resque" } }, jobs);
  queue.on("error", (error) => console.error(error));
  await queue.connect();
  return queue;
}

async function enqueueOne(queue, job) {
  const at = nowSeconds();
  if (job.active_job) {
    await queue.enqueue(job.queue, ACTIVE_JOB_WRAPPER, [activeJobData(job.queue, job.active_job, at)]);
  } else {
    await queue.enqueue(job.queue, job.class || "Nap", job.args || []);
  }
  return at;
}

async function main() {
  const [url, command] = process.argv.slice(2);
  const input = JSON.parse(require("fs").readFileSync(0, "utf8") || "{}");
  const queue = await connectQueue(url, input.namespace);
  if (command === "enqueue") {
    const done = [];
    for (const job of input.jobs) done.push({ queue: job.queue, at: await enqueueOne(queue, job) });
    process.stdout.write(JSON.stringify(done) + "\n");
  } else if (command === "produce") {
    // Each queue {"name", "kind"}: "plain", "active_job", or "mixed" (every other job).
    const deadline = Date.now() + input.seconds * 1000;
    const gap = 1000 / input.per_second;
    let turn = 0;
    while (Date.now() < deadline) {
      const { name, kind } = input.queues[turn % input.queues.length];
      const id = `job-${turn}`;
      const round = Math.floor(turn / input.queues.length);
      const activeJob = kind === "active_job" || (kind === "mixed" && round % 2 === 0);
      const job = activeJob
        ? { queue: name, active_job: { arguments: [id, input.nap_ms] } }
        : { queue: name, class: "Nap", args: [id, input.nap_ms] };
      const at = await enqueueOne(queue, job);
      process.stdout.write(JSON.stringify({ id, queue: name, at, active_job: activeJob }) + "\n");
      turn += 1;
      await sleep(gap);
    }
  } else if (command === "work") {
    const workers = [];
    for (const [index, queues] of input.queues.entries()) {
      const redis = new IORedis(url);
      const worker = new Worker(
        {
          connection: { redis, namespace: input.namespace || "resque" },
          queues,
          timeout: input.timeout_ms || 50,
          name: `${require("os").hostname()}:${process.pid}-${index}`,
        },
        jobs,
      );
      worker.on("error", (error) => console.error(error));
      await worker.connect();
      await worker.start();
      workers.push(worker);
    }
    process.stdout.write("ready\n");
    await new Promise(() => {}); // until killed
  } else if (command === "stats") {
    const lengths = {};
    for (const name of input.queues || []) lengths[name] = await queue.length(name);
    const working = await queue.allWorkingOn();
    // When each working worker started its job, as node-resque reads it (cleanOldWorkers).
    const started = {};
    for (const [name, data] of Object.entries(working)) {
      if (data && data.run_at) started[name] = { queue: data.queue, at: Date.parse(data.run_at) / 1000 };
    }
    const result = {
      lengths,
      workers: await queue.workers(),
      working,
      started,
      failed: await queue.failedCount(),
    };
    process.stdout.write(JSON.stringify(result) + "\n");
  } else {
    throw new Error(`unknown command ${command}`);
  }
  await queue.end();
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
