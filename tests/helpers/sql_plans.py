"""EXPLAIN for the Postgres systems' queries: the scans a plan makes, and its median execution
time, on the machine's server through psql."""

from __future__ import annotations

import json
import statistics
from typing import Any, Iterator, List, Tuple

from helpers.postgres import psql


def nodes(plan: Any) -> Iterator[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, subplans included."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def print_plan(plan: Any, depth: int = 0) -> None:
    index = f" using {plan['Index Name']}" if "Index Name" in plan else ""
    relation = f" on {plan['Relation Name']}" if "Relation Name" in plan else ""
    print("  " * depth + plan["Node Type"] + relation + index)
    for child in plan.get("Plans", ()):
        print_plan(child, depth + 1)


def scans(sql: str, database: str) -> List[Tuple[str, str, str]]:
    """(node type, relation, index) of each scan of `sql`'s plan, and prints the plan."""
    text = psql("SET jit = off; EXPLAIN (FORMAT JSON) " + sql, database=database)
    (top,) = json.loads(text)
    print_plan(top["Plan"])
    return [
        (node["Node Type"], node.get("Relation Name", ""), node.get("Index Name", ""))
        for node in nodes(top["Plan"])
        if "Relation Name" in node
    ]


def median_ms(sql: str, database: str, runs: int = 5) -> float:
    """The median execution time of `sql` (EXPLAIN ANALYZE, `runs` times), in milliseconds."""
    times = []
    for _ in range(runs):
        (top,) = json.loads(psql("SET jit = off; EXPLAIN (ANALYZE, FORMAT JSON) " + sql, database=database))
        times.append(top["Execution Time"])
    return statistics.median(times)
