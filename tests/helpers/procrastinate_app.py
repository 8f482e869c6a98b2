"""A procrastinate app for the tests: the real library (PyPI procrastinate, PsycopgConnector)
on the database named by PROCRASTINATE_DATABASE_URL. Its worker runs as
`procrastinate --app=helpers.procrastinate_app.app worker` with tests/ on PYTHONPATH."""

from __future__ import annotations

import os
import time

import procrastinate

URL = os.environ.get("PROCRASTINATE_DATABASE_URL", "")
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=URL))


@app.task(name="nap")
def nap(seconds: float = 0.0) -> None:
    time.sleep(seconds)


@app.task(name="broken")
def broken() -> None:
    raise RuntimeError("broken on purpose")
