"""Measurements of benches/ballista.sh, which starts the servers and the cluster.

    python3 ballista.py same LOCAL_HTTP BALLISTA_HTTP
        Runs every query of tests/sql/distributed.sql on both query nodes; prints whether
        the answers are equal and how long each took. Exits non-zero if one differs.
    python3 ballista.py time NAME HTTP EXECUTOR_PIDS WORK_DIRS REPEAT
        Times the two benchmark queries on a query node, medians of REPEAT runs. With
        executors (comma-separated pids and work directories): the CPU seconds each spent
        and the bytes it wrote to shuffle files in the median run. Prints one JSON line.
    python3 ballista.py duckdb DATA_DIR REPEAT
        The same two queries in DuckDB over the segment files the manifests list.
    python3 ballista.py graph HTTP FROM_MS TO_MS EXECUTOR_PIDS REPEAT
        /api/v1/graph of the window on a query node with --ballista, alternately with
        engine=local and engine=ballista, REPEAT times each (the first local one makes the
        graph's pieces of every hour; the later ones use them); whether the edges agree
        and the time, query node and executor CPU of each. Exits non-zero if they differ.
"""

import glob
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

EDGE_PERCENTILES = (
    "SELECT client, server, count(*) AS calls, "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY client_duration_ns) AS p50, "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY client_duration_ns) AS p95, "
    "percentile_cont(0.99) WITHIN GROUP (ORDER BY client_duration_ns) AS p99 "
    "FROM calls GROUP BY 1, 2 ORDER BY 1, 2"
)
BY_SERVICE_AND_HOUR = (
    "SELECT service_name, date_trunc('hour', start_time) AS hour, count(*) AS spans "
    "FROM spans GROUP BY 1, 2 ORDER BY 1, 2"
)
DUCKDB = {
    "edge percentiles": (
        "SELECT client, server, count(*) AS calls, "
        "quantile_cont(client_duration_ns, 0.5), quantile_cont(client_duration_ns, 0.95), "
        "quantile_cont(client_duration_ns, 0.99) "
        "FROM read_parquet({calls}) GROUP BY 1, 2 ORDER BY 1, 2"
    ),
    "service by hour": (
        "SELECT service_name, epoch_ns(start_time) // 3600000000000 AS hour, "
        "count(*) AS spans FROM read_parquet({spans}) GROUP BY 1, 2 ORDER BY 1, 2"
    ),
}
QUERIES = {"edge percentiles": EDGE_PERCENTILES, "service by hour": BY_SERVICE_AND_HOUR}
LIST = os.path.join(os.path.dirname(__file__), "..", "tests", "sql", "distributed.sql")


def sql(http, query):
    request = urllib.request.Request(
        f"http://{http}/api/v1/sql",
        data=json.dumps({"sql": query}).encode(),
        headers={"content-type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{query}: {error.code} {error.read().decode()}")
    return body["rows"], time.monotonic() - started


def fixed_list():
    text = "\n".join(
        line for line in open(LIST) if not line.lstrip().startswith("--")
    )
    return [query.strip() for query in text.split(";") if query.strip()]


def largest_difference(answer, expected):
    """The largest relative difference between numbers in the same place of two answers,
    or None if they differ otherwise (rows, text)."""
    if len(answer) != len(expected):
        return None
    largest = 0.0
    for row, other in zip(answer, expected):
        for a, b in zip(row, other):
            if a == b:
                continue
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                return None
            largest = max(largest, abs(a - b) / max(abs(a), abs(b)))
    return largest


def same(local, distributed):
    for query in fixed_list():
        expected, local_s = sql(local, query)
        answer, distributed_s = sql(distributed, query)
        if answer == expected:
            verdict = "equal"
        else:
            difference = largest_difference(answer, expected)
            verdict = "DIFFERENT" if difference is None else f"within {difference:.2%}"
        print(f"{verdict:14} {len(expected):5} rows  one node {local_s:7.2f} s  "
              f"ballista {distributed_s:7.2f} s  {' '.join(query.split())[:60]}", flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_bytes(root):
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(directory, name))
            except OSError:
                pass
    return total


class ShuffleWatch:
    """The bytes each executor's work directory grew by during a job (its shuffle files,
    the last stage's output among them), sampled every 0.2 s."""

    def __init__(self, work_dirs):
        self.dirs = work_dirs
        self.base = [tree_bytes(d) for d in work_dirs]
        self.peak = list(self.base)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample)
        self.thread.start()

    def sample(self):
        while not self.done.wait(0.2):
            self.peak = [max(p, tree_bytes(d)) for p, d in zip(self.peak, self.dirs)]

    def stop(self):
        self.done.set()
        self.thread.join()
        self.peak = [max(p, tree_bytes(d)) for p, d in zip(self.peak, self.dirs)]
        return [p - b for p, b in zip(self.peak, self.base)]


def timed(name, http, executors, work_dirs, repeat):
    pids = [int(p) for p in executors.split(",") if p]
    dirs = [d for d in work_dirs.split(",") if d]
    result = {"engine": name}
    for label, query in QUERIES.items():
        walls, cpus, shuffles = [], [], []
        for _ in range(repeat):
            before = [cpu_seconds(pid) for pid in pids]
            watch = ShuffleWatch(dirs)
            _, wall = sql(http, query)
            shuffles.append(watch.stop())
            walls.append(wall)
            cpus.append([round(cpu_seconds(pid) - b, 2) for pid, b in zip(pids, before)])
        middle = sorted(range(repeat), key=lambda i: walls[i])[repeat // 2]
        result[label] = {
            "median_s": round(walls[middle], 2),
            "runs_s": [round(w, 2) for w in walls],
        }
        if pids:
            result[label]["executor_cpu_s"] = cpus[middle]
            result[label]["shuffle_bytes"] = shuffles[middle]
    print(json.dumps(result))


def manifest_files(data):
    files = {"spans": [], "calls": []}
    for manifest in glob.glob(os.path.join(data, "_callwatch", "nodes", "*", "manifest.json")):
        for segment in json.load(open(manifest))["segments"]:
            files[segment.get("table", "spans")].append(os.path.join(data, segment["path"]))
    return files


def duckdb_times(data, repeat):
    import duckdb

    files = manifest_files(data)
    connection = duckdb.connect()
    connection.execute(f"SET threads = {os.cpu_count()}")
    result = {"engine": "duckdb " + duckdb.__version__}
    for label, query in DUCKDB.items():
        query = query.format(spans=repr(files["spans"]), calls=repr(files["calls"]))
        walls = []
        for _ in range(repeat):
            started = time.monotonic()
            connection.execute(query).fetchall()
            walls.append(time.monotonic() - started)
        result[label] = {
            "median_s": round(statistics.median(walls), 2),
            "runs_s": [round(w, 2) for w in walls],
        }
    print(json.dumps(result))


def graph(http, from_ms, to_ms, executors, repeat):
    pids = [int(p) for p in executors.split(",") if p]
    node = int(os.environ["NODE_PID"])
    path = f"/api/v1/graph?from={from_ms}&to={to_ms}"
    runs = {"local": [], "ballista": []}
    answers = {}
    for _ in range(repeat):
        for engine in runs:
            before = [cpu_seconds(pid) for pid in [node] + pids]
            started = time.monotonic()
            with urllib.request.urlopen(f"http://{http}{path}&engine={engine}",
                                        timeout=3600) as response:
                answer = json.load(response)
            wall = time.monotonic() - started
            cpu = [round(cpu_seconds(pid) - b, 2) for pid, b in zip([node] + pids, before)]
            runs[engine].append({"wall_s": round(wall, 2), "node_cpu_s": cpu[0],
                                 "executor_cpu_s": cpu[1:]})
            # The last minute's rate moves with the clock: compared without it.
            answers[engine] = [{k: v for k, v in edge.items() if k != "rate_last_minute_per_s"}
                               for edge in answer["edges"]]
    same = answers["local"] == answers["ballista"]
    calls = sum(edge["calls"] for edge in answers["local"])
    print(json.dumps({"edges": len(answers["local"]), "calls": calls, "same": same, **runs}))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "same":
        same(sys.argv[2], sys.argv[3])
    elif mode == "time":
        timed(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif mode == "duckdb":
        duckdb_times(sys.argv[2], int(sys.argv[3]))
    elif mode == "graph":
        graph(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        raise SystemExit(__doc__)
