"""What a disabled ``logging.debug`` costs, in the embedded interpreter (whose root logger
has erlang_python's handler and the level logger's primary level lets through) and in a
plain python3 (``python3 bench/logging_cost.py``). bench/logging.escript runs both.

Best of 5 timeit repeats of 200,000 calls of ``log.debug("value %s", 42)``, in ns per call.
The root level is WARNING in both: what the application sets for logger's default primary
level, notice.
"""

from __future__ import annotations

import logging
import timeit


def measure() -> float:
    logging.getLogger().setLevel(logging.WARNING)
    log = logging.getLogger("bench.disabled")
    n = 200_000
    best = min(timeit.repeat(lambda: log.debug("value %s", 42), number=n, repeat=5))
    return best / n * 1e9


if __name__ == "__main__":
    print(measure())
