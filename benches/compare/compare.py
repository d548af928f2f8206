#!/usr/bin/env python3
"""The Python side of `cargo bench --bench compare`: concurrent.futures, and Dask
distributed and Ray when this interpreter can import them.

The Rust side passes the plan as one JSON argument, so both sides run the same task counts
under the same repetition rule (rates: best of `repeat` after a warm-up; round trips:
median; seconds: least of `repeat`). Prints one JSON object on stdout, keyed like the plan.
Stand-alone: `python3 compare.py '<plan>'`, or with no argument for the default plan below.

`python3 compare.py --serve`: the Python side of a ratio measured in turns with wasmpool's
(`turns.rs`): keeps a `ProcessPoolExecutor(2)`, says `ready`, then answers each line
`map256 N` on stdin with the tasks/s of one `map(..., chunksize=256)` of N trivial tasks.

Dask and Ray run the unchunked trivial-task counts of the process pools (`process` of each
rate workload) and the process pools' round-trip count, on 2 worker processes:
`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)` and
`ray.init(num_cpus=2)`. When one is not installed (or fails), its key holds
`{"skipped": reason}` instead of numbers.
"""

import json
import os
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


def noop_arg(_):
    """The trivial task of the Dask and Ray rows (an argument, so each task is distinct)."""
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
    return median_trip_us(lambda: pool.submit(noop).result(), n, gap_s)


def median_trip_us(trip, n, gap_s):
    """The median of `n` calls of `trip` in µs, each after a pause of `gap_s` (0: none),
    after 20 to warm up."""
    for _ in range(20):
        trip()
    times = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        trip()
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


def distributed(plan, submit_rate_of, trip):
    """A distributed side's numbers under `plan`: the unchunked rate of each rate workload
    (with its process-pool count) and the idle and back-to-back round trips (with the
    process pools' count)."""
    repeat = plan["repeat"]
    rt = plan["round_trip"]
    out = {"rates": {}}
    for workload, counts in plan["rates"].items():
        out["rates"][workload] = best(submit_rate_of, counts["process"], repeat)
    out["round_trip_idle_us"] = median_trip_us(trip, rt["process"], rt["gap_ms"] / 1000)
    out["round_trip_busy_us"] = median_trip_us(trip, rt["process"], 0)
    return out


def dask_side(plan):
    """Dask distributed on a local cluster of 2 worker processes with 1 thread each:
    `client.map` of all tasks, then `client.gather`; round trips `submit(...).result()`."""
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        return {"skipped": f"not installed for {sys.executable} ({e})"}

    try:
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:

            def rate(n):
                start = time.perf_counter()
                # pure=False: equal arguments still make distinct tasks, never a cache hit.
                client.gather(client.map(noop_arg, range(n), pure=False))
                return n / (time.perf_counter() - start)

            out = distributed(
                plan, rate, lambda: client.submit(noop_arg, 0, pure=False).result()
            )
    except Exception as e:  # noqa: BLE001 - a failed side is reported, not fatal
        return {"skipped": f"failed: {type(e).__name__}: {e}"}
    out["version"] = dask.__version__
    return out


def ray_side(plan):
    """Ray on this machine with `num_cpus=2` (2 task slots; the dashboard off): a trivial
    `@ray.remote` function, `.remote()` for all tasks then `ray.get`; round trips
    `ray.get(f.remote(0))`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as e:
        return {"skipped": f"not installed for {sys.executable} ({e})"}

    try:
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            task = ray.remote(noop_arg)

            def rate(n):
                start = time.perf_counter()
                ray.get([task.remote(i) for i in range(n)])
                return n / (time.perf_counter() - start)

            out = distributed(plan, rate, lambda: ray.get(task.remote(0)))
        finally:
            ray.shutdown()
    except Exception as e:  # noqa: BLE001 - a failed side is reported, not fatal
        return {"skipped": f"failed: {type(e).__name__}: {e}"}
    out["version"] = ray.__version__
    return out


def main():
    plan = json.loads(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PLAN
    # The JSON goes to the real stdout; anything else printed (Dask's and Ray's processes
    # included, which inherit descriptor 1) goes to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    repeat = plan["repeat"]
    trip = plan["round_trip"]
    gap = trip["gap_ms"] / 1000
    out = {"python": sys.version.split()[0], "executable": sys.executable, "rates": {}}
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
    out["dask"] = dask_side(plan)
    out["ray"] = ray_side(plan)
    sys.stdout.flush()
    with os.fdopen(result_fd, "w") as result:
        result.write(json.dumps(out) + "\n")


def serve():
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    with ProcessPoolExecutor(2) as pool:
        map_rate(pool, 1000, 256)
        result.write("ready\n")
        result.flush()
        for line in sys.stdin:
            command, n = line.split()
            if command != "map256":
                raise SystemExit(f"compare.py --serve: unknown command {command!r}")
            result.write(f"{map_rate(pool, int(n), 256)}\n")
            result.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main()
