# Usage: ruby tests/helpers/sidekiq_client.rb REDIS_URL [NAMESPACE] < plan.json
#
# The real Sidekiq client and API, driven by the tests. Reads a JSON plan from stdin:
#   {"enqueue": {"default": 3, "low": 1}}   pushes that many jobs with Sidekiq::Client
#   {"jobs": [{"class": "SleepyJob", "args": [30], "in": 3600}]}   pushes those jobs (to
#                                           `default`; "in": scheduled that many seconds ahead;
#                                           other keys, such as "retry", go into the job)
# then prints Sidekiq's own view of every queue as JSON on stdout:
#   {"now": <epoch s>, "queues": {"default": {"size": 3, "latency": 1.2}, ...},
#    "stats": {"retry": 1, "processes": 1, "busy": 1, ...},
#    "work": [{"queue": "default", "run_at": <epoch s>}], "due": {"default": 2}, "due_at": <epoch s>}
# "stats" is what Sidekiq::Stats and Sidekiq::ProcessSet report; ProcessSet.new(false) does not
# prune the processes whose heartbeat expired, it only skips them.
require "json"
require "sidekiq"
require "sidekiq/api"
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

url = ARGV.fetch(0)
namespace = ARGV[1]
options = { url: url }
options[:namespace] = namespace if namespace && !namespace.empty?
Sidekiq.configure_client { |config| config.redis = options }

plan = JSON.parse($stdin.read)
(plan["enqueue"] || {}).each do |queue, count|
  count.times do |index|
    Sidekiq::Client.push("class" => "HardWorker", "queue" => queue, "args" => [index, "x" * 10])
  end
end
(plan["jobs"] || []).each do |job|
  item = { "queue" => "default", "args" => [] }.merge(job.reject { |key, _| key == "in" })
  item["at"] = Time.now.to_f + job["in"] if job["in"]
  Sidekiq::Client.push(item)
end
sleep(plan["sleep"]) if plan["sleep"]

stats = Sidekiq::Stats.new
process_set = Sidekiq::ProcessSet.new(false)
processes = process_set.to_a
stats = {
  "scheduled" => stats.scheduled_size, "retry" => stats.retry_size, "dead" => stats.dead_size,
  "processed" => stats.processed, "failed" => stats.failed, "processes" => processes.size,
  "busy" => processes.sum { |process| process["busy"] }, "concurrency" => process_set.total_concurrency,
}

queues = {}
Sidekiq::Queue.all.each do |queue|
  queues[queue.name] = { "size" => queue.size, "latency" => queue.latency }
end
# The jobs the processes' threads run (Sidekiq::Workers: queue, run_at), and the due jobs of the
# scheduled and retry sets per queue (what a poller would move now: score <= now).
work = []
Sidekiq::Workers.new.each { |_process, _thread, job| work << { "queue" => job["queue"], "run_at" => job["run_at"] } }
due_at = Time.now.to_f
due = Hash.new(0)
[Sidekiq::ScheduledSet.new, Sidekiq::RetrySet.new].each do |set|
  set.each { |entry| due[entry.queue] += 1 if entry.score <= due_at }
end
puts JSON.generate(
  "now" => Time.now.to_f, "version" => Sidekiq::VERSION, "queues" => queues, "stats" => stats,
  "work" => work, "due" => due, "due_at" => due_at
)
