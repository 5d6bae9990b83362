"""The one timing rule of the benchmark scripts: the median of several calls, after warm-up calls that are not
timed (tracing, compilation, caches)."""

import statistics
import time


def median_time(function, runs, warmup=1):
    """Median seconds of `runs` calls of `function()`, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
