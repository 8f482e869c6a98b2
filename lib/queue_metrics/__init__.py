"""Queue size and latency of background-job queues, read straight from the datastore they live in
(Redis, RabbitMQ, Postgres).

Nothing is done at import time: the CLI (`queue_metrics.cli`) builds the settings from the
environment and drives the collector.
"""

__version__ = "0.1.0"
