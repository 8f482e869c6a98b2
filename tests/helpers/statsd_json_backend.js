// A backend for the real `statsd` daemon, used by the tests: every flush appends one JSON line
// {"counters": {...}, "gauges": {...}} to the file named by the `jsonFile` setting, so a test
// reads back exactly what the daemon aggregated.
var fs = require("fs");

exports.init = function (startupTime, config, events) {
  fs.writeFileSync(config.jsonFile, "");
  events.on("flush", function (timestamp, metrics) {
    var line = JSON.stringify({ timestamp: timestamp, counters: metrics.counters, gauges: metrics.gauges });
    fs.appendFileSync(config.jsonFile, line + "\n");
  });
  return true;
};
