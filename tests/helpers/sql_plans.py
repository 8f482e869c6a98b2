"""Query plans for the Postgres queue systems' SELECTs, read as the collector's session runs them
(`jit` off, TimeZone UTC: datastores/postgres/wire.py): the scans a plan makes of which table,
and a query's median execution time (EXPLAIN ANALYZE), on the machine's server through psql."""

from __future__ import annotations

import json
import statistics
from typing import Any, Dict, Iterator, List, Tuple

from helpers.postgres import psql

SESSION = "SET jit = off; SET TimeZone = 'UTC'; "


def plan(sql: str, database: str, analyze: bool = False) -> Dict[str, Any]:
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    (top,) = json.loads(psql(f"{SESSION}EXPLAIN ({options}) {sql}", database=database))
    return top


def nodes(node: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every node of a plan, subplans included."""
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def print_plan(node: Dict[str, Any], depth: int = 0) -> None:
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    relation = f" on {node['Relation Name']}" if "Relation Name" in node else ""
    print("  " * depth + node["Node Type"] + relation + index)
    for child in node.get("Plans", ()):
        print_plan(child, depth + 1)


def scans(sql: str, database: str) -> List[Tuple[str, str, str]]:
    """(node type, relation, index) of each scan of a table in `sql`'s plan; prints the plan."""
    top = plan(sql, database)
    print_plan(top["Plan"])
    return [
        (node["Node Type"], node.get("Relation Name", ""), node.get("Index Name", ""))
        for node in nodes(top["Plan"])
        if "Relation Name" in node
    ]


def seq_scans(sql: str, database: str) -> List[str]:
    """The tables `sql`'s plan reads whole."""
    return [relation for kind, relation, _ in scans(sql, database) if kind == "Seq Scan"]


def median_ms(sql: str, database: str, runs: int = 5) -> float:
    """The median execution time of `runs` EXPLAIN ANALYZE runs, in milliseconds."""
    return statistics.median(plan(sql, database, analyze=True)["Execution Time"] for _ in range(runs))
