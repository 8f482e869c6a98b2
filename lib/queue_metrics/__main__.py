"""`python -m queue_metrics` is the `queue-metrics` command."""

from queue_metrics.cli import main

if __name__ == "__main__":
    main()
