"""The `queue-metrics` command (`python -m queue_metrics` too): a bare `run` takes the lean path
(`runner`, which imports neither click nor redis-py), anything else the click CLI (`cli`).

The one place that knows both: `runner` and `cli` never import each other's way back.
"""

from __future__ import annotations

import sys
from typing import List, Optional


def main(arguments: Optional[List[str]] = None) -> None:
    """`queue-metrics run` with settings from the environment only: the lean path; anything
    else (options, other commands, --help) goes to the click CLI."""
    arguments = sys.argv[1:] if arguments is None else arguments
    if arguments == ["run"]:
        from queue_metrics.runner import load_output_settings, load_settings, run_loop

        settings = load_settings()
        run_loop(settings, load_output_settings(settings))
        return
    from queue_metrics.cli import main as cli_main
    from queue_metrics.runner import PROGRAM

    cli_main(args=arguments, prog_name=PROGRAM)


if __name__ == "__main__":
    main()
