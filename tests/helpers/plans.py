"""Query plans for the Postgres queue systems' SELECTs: which scans a plan makes of which table
(EXPLAIN (FORMAT JSON), parsed), and a query's execution time (median of EXPLAIN ANALYZE runs)."""

from __future__ import annotations

import json
import statistics
from typing import Any, Dict, Iterator, List

from helpers.postgres import psql

# As the collector's session has it (datastores/postgres/wire.py sets TimeZone=UTC).
SESSION = "SET TimeZone = 'UTC'; "


def plan(sql: str, database: str, analyze: bool = False) -> Dict[str, Any]:
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    return json.loads(psql(f"{SESSION}EXPLAIN ({options}) {sql}", database=database))[0]


def nodes(node: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def scans(sql: str, database: str) -> List[str]:
    """Each scan of a table or index in the plan: 'Seq Scan good_jobs', 'Index Scan good_jobs
    index_good_jobs_on_scheduled_at', 'Bitmap Index Scan que_poll_idx'..."""
    found = []
    for node in nodes(plan(sql, database)["Plan"]):
        if "Relation Name" in node or "Index Name" in node:
            found.append(" ".join(filter(None, (node["Node Type"], node.get("Relation Name"), node.get("Index Name")))))
    return found


def median_ms(sql: str, database: str, runs: int = 5) -> float:
    """The median execution time of `runs` EXPLAIN ANALYZE runs, in milliseconds."""
    return statistics.median(plan(sql, database, analyze=True)["Execution Time"] for _ in range(runs))
