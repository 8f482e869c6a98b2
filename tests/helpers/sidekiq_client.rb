# Usage: ruby tests/helpers/sidekiq_client.rb REDIS_URL [NAMESPACE] < plan.json
#
# The real Sidekiq client and API, driven by the tests. Reads a JSON plan from stdin:
#   {"enqueue": {"default": 3, "low": 1}}   pushes that many jobs with Sidekiq::Client
# then prints Sidekiq's own view of every queue as JSON on stdout:
#   {"now": <epoch s>, "queues": {"default": {"size": 3, "latency": 1.2}, ...}}
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
sleep(plan["sleep"]) if plan["sleep"]

queues = {}
Sidekiq::Queue.all.each do |queue|
  queues[queue.name] = { "size" => queue.size, "latency" => queue.latency }
end
puts JSON.generate("now" => Time.now.to_f, "version" => Sidekiq::VERSION, "queues" => queues)
