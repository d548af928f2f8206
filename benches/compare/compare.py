#!/usr/bin/env python3
"""The concurrent.futures side of `cargo bench --bench compare`: the same workloads as the
Rust side, with ThreadPoolExecutor(2) and ProcessPoolExecutor(2). Prints one JSON object
(tasks/s, latencies in microseconds, seconds) on stdout. Stand-alone: python3 compare.py."""

import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


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


def round_trip_us(pool, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        pool.submit(noop).result()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def fib_batch(pool, count, n):
    start = time.perf_counter()
    list(pool.map(fib, [n] * count))
    return time.perf_counter() - start


def best(f, repeat=3):
    return max(f() for _ in range(repeat))


def least(f, repeat=3):
    return min(f() for _ in range(repeat))


def main():
    quick = "--quick" in sys.argv
    scale = 4 if quick else 1
    out = {"python": sys.version.split()[0]}
    with ThreadPoolExecutor(2) as pool:
        submit_rate(pool, 1000)
        out["thread_submit_rate"] = best(lambda: submit_rate(pool, 20000 // scale))
        out["thread_round_trip_us"] = round_trip_us(pool, 2000 // scale)
    with ProcessPoolExecutor(2) as pool:
        submit_rate(pool, 500)
        out["process_submit_rate"] = best(lambda: submit_rate(pool, 5000 // scale))
        out["process_map256_rate"] = best(lambda: map_rate(pool, 200000 // scale, 256))
        out["process_round_trip_us"] = round_trip_us(pool, 1000 // scale)
        out["fib25x64_process2_s"] = least(lambda: fib_batch(pool, 64, 25))
    start = time.perf_counter()
    for _ in range(64):
        fib(25)
    out["fib25x64_serial_s"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
