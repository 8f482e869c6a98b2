# Makes Solid Queue's tables with ActiveRecord from Solid Queue's own files, in the database
# DATABASE_URL names:
# - 1.x: tests/payloads/solid_queue/queue_schema.rb, a copy of rails/solid_queue v1.5.0
#   lib/generators/solid_queue/install/templates/db/queue_schema.rb (what `bin/rails
#   solid_queue:install` copies to db/queue_schema.rb since 1.0);
# - 0.x: tests/payloads/solid_queue/v0.2.1/*.rb, copies of v0.2.1's db/migrate (what
#   `solid_queue:install:migrations` copied into the app then), run in order.
#
# Usage: ruby tests/helpers/solid_queue_schema.rb FILE...
#
# The gem needs Rails 7.1+, which Debian lacks; Debian's ActiveRecord 6.1 runs these files as they
# are but for the versions they name (`ActiveRecord::Schema[7.1]`, `Migration[7.0]`), which 6.1
# does not know: read here as 6.1's current ones. Both make a `datetime` a Postgres `timestamp`
# of precision 6 (7.x writes `timestamp(6)`, 6.1 `timestamp`, whose default precision is 6)
# holding UTC.
require "active_record"

if ActiveRecord::VERSION::MAJOR < 7
  known = ActiveRecord::Migration.method(:[])
  ActiveRecord::Migration.define_singleton_method(:[]) do |version|
    version.to_s.to_f > 6.1 ? ActiveRecord::Migration::Current : known.call(version)
  end
  ActiveRecord::Schema.define_singleton_method(:[]) { |_version| self }
end

ActiveRecord::Base.establish_connection(ENV.fetch("DATABASE_URL"))
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
ARGV.each do |file|
  before = ActiveRecord::Migration.descendants
  load file
  (ActiveRecord::Migration.descendants - before).each { |migration| migration.new.migrate(:up) }
end
