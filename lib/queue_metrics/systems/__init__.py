"""The queue systems the collector reads: one row each. A fourth system is one module plus one
row here (see README, "Adding a queue system")."""

from __future__ import annotations

from typing import Tuple

from queue_metrics.systems import celery, rq, sidekiq
from queue_metrics.systems.contract import SystemSpec

SYSTEMS: Tuple[SystemSpec, ...] = (sidekiq.SYSTEM, rq.SYSTEM, celery.SYSTEM)
