# Usage: ruby tests/benchmarks/sidekiq_api.rb REDIS_URL TICKS
#
# What feedforce/heroku-buildpack-sidekiq-metrics does each tick, with Sidekiq's own API:
# Sidekiq::Queue.all, then size and latency of each queue. Prints "started <seconds since the
# process started>" after the first tick, waits for a line on stdin (so the harness can reset
# its counters), runs TICKS more ticks, and prints one JSON line of per-tick wall and CPU times.
require "json"
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
process_started = ENV.fetch("BENCH_START_MONOTONIC", started.to_s).to_f
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
ARGV.fetch(1).to_i.times do
  wall = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  tick
  walls << Process.clock_gettime(Process::CLOCK_MONOTONIC) - wall
  cpus << Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - cpu
end
$stdout.puts JSON.generate("wall" => walls, "cpu" => cpus)
