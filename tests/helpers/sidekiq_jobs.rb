# Usage: REDIS_URL=... [SIDEKIQ_NAMESPACE=...] sidekiq -r ./tests/helpers/sidekiq_jobs.rb -c 3 -q default
#
# Jobs for a real Sidekiq server process in the tests: one that sleeps (a busy thread), one that
# fails into the retry set (retried only an hour later, so it stays there), one that fails
# straight into the dead set (pushed with "retry" => 0: a job pushed by class name carries the
# client's defaults, not the class's sidekiq_options), and one that does nothing.
require "sidekiq"
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

options = { url: ENV.fetch("REDIS_URL") }
namespace = ENV.fetch("SIDEKIQ_NAMESPACE", "")
options[:namespace] = namespace unless namespace.empty?
Sidekiq.configure_server { |config| config.redis = options }
# SIDEKIQ_POLL_INTERVAL: the scheduled and retry sets' poller runs about every that many seconds,
# from the start (by default it first waits 10 to 15 s).
poll = ENV.fetch("SIDEKIQ_POLL_INTERVAL", "")
Sidekiq.options[:poll_interval_average] = Float(poll) unless poll.empty?
Sidekiq.configure_client { |config| config.redis = options }

class SleepyJob
  include Sidekiq::Worker

  def perform(seconds)
    sleep(seconds)
  end
end

class FailingJob
  include Sidekiq::Worker
  sidekiq_options retry: 5
  sidekiq_retry_in { |_count, _exception| 3600 }

  def perform
    raise "fails on purpose, retried in an hour"
  end
end

class DoomedJob
  include Sidekiq::Worker

  def perform
    raise "fails on purpose, straight to the dead set"
  end
end

class QuickJob
  include Sidekiq::Worker

  def perform; end
end
