"""Queue size and latency of Sidekiq, RQ and Celery queues, read straight from Redis.

Nothing is done at import time: the CLI (`queue_metrics.cli`) builds the settings from the
environment and drives the collector.
"""

__version__ = "0.1.0"
