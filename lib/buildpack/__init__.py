"""Build-time code of the queue-metrics buildpack (classic `bin/compile` and CNB `bin/build`).

Run by the build image's python3 as `python3 -m buildpack ...` with PYTHONPATH=<buildpack>/lib;
never copied into the slug and never installed by `pip install` (the collector is the
`queue_metrics` package alone). Standard library only: it runs before any package is installed.
"""
