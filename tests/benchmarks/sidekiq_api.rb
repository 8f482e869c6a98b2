# Usage: ruby tests/benchmarks/sidekiq_api.rb REDIS_URL TICKS [BUDGET_SECONDS]
#
# What feedforce/heroku-buildpack-sidekiq-metrics does each tick, with Sidekiq's own API:
# Sidekiq::Queue.all, then size and latency of each queue. Prints "started <seconds since the
# process started>" after the first tick, waits for a line on stdin (so the harness can reset
# its counters), runs TICKS more ticks (fewer when BUDGET_SECONDS run out, but at least one), and
# prints one JSON line of per-tick wall and CPU times.
require "json"
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
require "sidekiq"
require "sidekiq/api"
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
Sidekiq.configure_client { |config| config.redis = { url: ARGV.fetch(0) } }

def tick
  Sidekiq::Queue.all.map { |queue| [queue.name, queue.size, queue.latency] }
end

tick
$stdout.puts "started #{Process.clock_gettime(Process::CLOCK_MONOTONIC) - started}"
$stdout.flush
$stdin.gets
walls = []
cpus = []
budget = (ARGV[2] || "1e9").to_f
spent = 0.0
ARGV.fetch(1).to_i.times do
  break if spent > budget
  wall = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  tick
  walls << Process.clock_gettime(Process::CLOCK_MONOTONIC) - wall
  spent += walls.last
  cpus << Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - cpu
end
$stdout.puts JSON.generate("wall" => walls, "cpu" => cpus)
