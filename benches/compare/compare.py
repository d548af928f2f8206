#!/usr/bin/env python3
"""The concurrent.futures side of `cargo bench --bench compare`.

The Rust side passes the plan as one JSON argument, so both sides run the same task counts
under the same repetition rule (rates: best of `repeat` after a warm-up; round trips:
median; seconds: least of `repeat`). Prints one JSON object on stdout, keyed like the plan.
Stand-alone: `python3 compare.py '<plan>'`, or with no argument for the default plan below.
"""

import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

DEFAULT_PLAN = {
    "repeat": 3,
    "rates": {
        "fresh": {"thread": 20000, "process": 20000, "map256": 20000},
        "reused": {"thread": 200000, "process": 50000, "map256": 200000},
    },
    "round_trip": {"thread": 2000, "process": 1000, "gap_ms": 1.0},
    "fib": {"count": 64, "n": 25},
}


def noop():
    return None


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def submit_rate(pool, n):
    """n trivial tasks: submit all, then every result; tasks per second."""
    start = time.perf_counter()
    futures = [pool.submit(noop) for _ in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - start)


def map_rate(pool, n, chunksize):
    start = time.perf_counter()
    for _ in pool.map(fib, [0] * n, chunksize=chunksize):
        pass
    return n / (time.perf_counter() - start)


def round_trip_us(pool, n, gap_s):
    """Median submit→result time; with a gap, the pool's threads park between trips."""
    for _ in range(20):
        pool.submit(noop).result()
    times = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        pool.submit(noop).result()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def fib_batch(pool, count, n):
    start = time.perf_counter()
    list(pool.map(fib, [n] * count))
    return time.perf_counter() - start


def fib_serial(count, n):
    start = time.perf_counter()
    for _ in range(count):
        fib(n)
    return time.perf_counter() - start


def best(f, n, repeat):
    """The best of `repeat` runs of `f(n)`, after a warm-up of 100 tasks (as on the Rust side)."""
    f(min(n, 100))
    return max(f(n) for _ in range(repeat))


def least(f, repeat):
    return min(f() for _ in range(repeat))


def main():
    plan = json.loads(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PLAN
    repeat = plan["repeat"]
    trip = plan["round_trip"]
    gap = trip["gap_ms"] / 1000
    out = {"python": sys.version.split()[0], "rates": {}}
    with ThreadPoolExecutor(2) as pool:
        for workload, counts in plan["rates"].items():
            n = counts["thread"]
            out["rates"].setdefault(workload, {})["thread"] = best(
                lambda k: submit_rate(pool, k), n, repeat
            )
        out["thread_round_trip_idle_us"] = round_trip_us(pool, trip["thread"], gap)
        out["thread_round_trip_busy_us"] = round_trip_us(pool, trip["thread"], 0)
    with ProcessPoolExecutor(2) as pool:
        for workload, counts in plan["rates"].items():
            n, m = counts["process"], counts["map256"]
            rates = out["rates"].setdefault(workload, {})
            rates["process"] = best(lambda k: submit_rate(pool, k), n, repeat)
            rates["map256"] = best(lambda k: map_rate(pool, k, 256), m, repeat)
        out["process_round_trip_idle_us"] = round_trip_us(pool, trip["process"], gap)
        out["process_round_trip_busy_us"] = round_trip_us(pool, trip["process"], 0)
        fib_plan = plan["fib"]
        out["fib_process2_s"] = least(
            lambda: fib_batch(pool, fib_plan["count"], fib_plan["n"]), repeat
        )
    out["fib_serial_s"] = least(lambda: fib_serial(fib_plan["count"], fib_plan["n"]), repeat)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
