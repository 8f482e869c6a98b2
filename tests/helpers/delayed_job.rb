# The real Delayed Job (Debian's ruby-delayed-job 4.1 and ruby-delayed-job-active-record 4.1 on
# ActiveRecord 6.1 and ruby-pg) for the tests, against the database DATABASE_URL names.
#
# Usage: ruby tests/helpers/delayed_job.rb schema [--no-queue]
#        ruby tests/helpers/delayed_job.rb enqueue QUEUE COUNT [RUN_IN_SECONDS] [NAP_SECONDS]
#        ruby tests/helpers/delayed_job.rb counts            (the gem's own counts, as JSON)
#        ruby tests/helpers/delayed_job.rb work QUEUE        (a worker, until killed)
#        ruby tests/helpers/delayed_job.rb fail QUEUE        (one job whose every attempt fails)
require "json"
require "active_record"
require "delayed_job"
require "delayed_job_active_record"

ActiveRecord::Base.establish_connection(ENV.fetch("DATABASE_URL"))
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
Delayed::Worker.destroy_failed_jobs = false
Delayed::Worker.max_attempts = 1
Delayed::Worker.sleep_delay = 0.2
Delayed::Worker.max_run_time = ENV["DJ_MAX_RUN_TIME"].to_i if ENV["DJ_MAX_RUN_TIME"]

# A job that naps for a while: what a worker holds stays put.
class NapJob < Struct.new(:seconds)
  def perform
    sleep(seconds.to_f)
  end
end

# A job that always fails.
class FailingJob
  def perform
    raise "always fails"
  end
end

# The gem's own migration template (lib/generators/delayed_job/templates/migration.rb), as a Rails
# app runs it, and its upgrade migration's `queue` column unless --no-queue.
def schema(with_queue)
  ActiveRecord::Schema.define do
    create_table :delayed_jobs do |table|
      table.integer :priority, default: 0, null: false
      table.integer :attempts, default: 0, null: false
      table.text :handler, null: false
      table.text :last_error
      table.datetime :run_at
      table.datetime :locked_at
      table.datetime :failed_at
      table.string :locked_by
      table.string :queue if with_queue
      table.timestamps null: true
    end
    add_index :delayed_jobs, %i[priority run_at], name: "delayed_jobs_priority"
  end
end

case ARGV[0]
when "schema"
  schema(!ARGV.include?("--no-queue"))
when "enqueue"
  queue, count, run_in, nap = ARGV[1], ARGV[2].to_i, ARGV[3].to_f, ARGV[4].to_f
  options = {}
  options[:queue] = queue unless queue == "-"
  options[:run_at] = Time.now + run_in if run_in != 0
  stamps = Array.new(count) do
    job = Delayed::Job.enqueue(NapJob.new(nap), **options)
    job.run_at.to_f
  end
  puts JSON.generate(stamps)
when "counts"
  worker = Delayed::Worker.new
  by_queue = Delayed::Job.ready_to_run(worker.name, Delayed::Worker.max_run_time).group(:queue).count
  puts JSON.generate(by_queue.transform_keys { |name| name || "default" })
when "work"
  Delayed::Worker.new(queues: ARGV[1] == "-" ? [] : [ARGV[1]], quiet: true).start
when "fail"
  Delayed::Job.enqueue(FailingJob.new, queue: ARGV[1])
  Delayed::Worker.new(queues: [ARGV[1]], quiet: true).work_off
else
  abort "usage: delayed_job.rb schema|enqueue|counts|work|fail"
end
