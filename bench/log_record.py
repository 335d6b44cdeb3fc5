"""What one JSON log record costs (issue 11's logging overhead), in this process.

The worker's commonest line, ``step.completed`` with two extras inside a step attempt's
``log_context`` (five ids), is logged N times through settings.LOGGING's JSON handler
(formatter and filter as configured) writing to /dev/null, and N times through a logger
with a ``NullHandler`` (the call, the record, no output): the ratio is what formatting and
writing a line adds to the logging call itself. Modes are interleaved in batches and the
fastest batch of each is reported (the least disturbed by other work).

    .venv/bin/python bench/log_record.py            # = --n 20000 --batches 15
"""
from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _loggers(devnull) -> dict[str, logging.Logger]:
    from promptpilot.common.logs import logging_config

    config = logging_config(log_format="json", level="INFO")
    configurator = logging.config.DictConfigurator(config)
    formatter = configurator.configure_formatter(config["formatters"]["json"])
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(formatter)
    for name in config["handlers"]["console"]["filters"]:
        handler.addFilter(configurator.configure_filter(config["filters"][name]))

    loggers = {}
    for mode, handlers in (("null handler", [logging.NullHandler()]), ("JSON line", [handler])):
        logger = logging.getLogger(f"bench.log_record.{mode}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        for one in handlers:
            logger.addHandler(one)
        loggers[mode] = logger
    return loggers


def _batch(logger: logging.Logger, n: int) -> float:
    extra = {"step_type": "PROMPT", "tokens": 15}
    start = time.perf_counter()
    for _ in range(n):
        logger.info("step.completed", extra=extra)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="records per batch")
    parser.add_argument("--batches", type=int, default=15, help="batches per mode, interleaved")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptpilot.settings")
    from promptpilot.common.logs import log_context

    with open(os.devnull, "w") as devnull:
        loggers = _loggers(devnull)
        best = {mode: float("inf") for mode in loggers}
        with log_context(execution_id="fad4fcee-ded3-4a5b-aa31-e2ae92108931", workflow_id=1, step="summarise",
                         attempt=1):
            for logger in loggers.values():  # warm-up
                _batch(logger, 1000)
            for _ in range(args.batches):
                for mode, logger in loggers.items():
                    best[mode] = min(best[mode], _batch(logger, args.n))

    floor = best["null handler"]
    print(f"{'mode':<14} {'µs/record':>10} {'ratio':>7}")
    for mode, seconds in best.items():
        print(f"{mode:<14} {seconds * 1e6:>10.2f} {seconds / floor:>6.2f}×")


if __name__ == "__main__":
    main()
