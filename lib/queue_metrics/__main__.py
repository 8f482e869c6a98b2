"""`python -m queue_metrics` is the `queue-metrics` command; a bare `run` takes the lean path."""

from queue_metrics.runner import main

if __name__ == "__main__":
    main()
