"""Measurements of benches/ballista.sh, which starts the servers and the cluster.

    python3 ballista.py same LOCAL_HTTP BALLISTA_HTTP
        Runs every query of tests/sql/distributed.sql on both query nodes; prints whether
        the answers are equal and how long each took. Exits non-zero if one differs.
    python3 ballista.py time NAME HTTP SCHEDULER EXECUTOR_PIDS REPEAT [WORK]
        Times the two benchmark queries on a query node, medians of REPEAT runs. With a
        scheduler: the CPU seconds each executor process spent and the bytes the job's stages
        wrote to shuffle files (from the scheduler's REST API). Prints one JSON line.
    python3 ballista.py duckdb DATA_DIR REPEAT
        The same two queries in DuckDB over the segment files the manifests list.
"""

import glob
import json
import os
import statistics
import sys
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
        "SELECT service_name, date_trunc('hour', start_time) AS hour, count(*) AS spans "
        "FROM read_parquet({spans}) GROUP BY 1, 2 ORDER BY 1, 2"
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


def same(local, distributed):
    different = 0
    for query in fixed_list():
        expected, local_s = sql(local, query)
        answer, distributed_s = sql(distributed, query)
        verdict = "equal" if answer == expected else "DIFFERENT"
        different += answer != expected
        print(f"{verdict:9} {len(expected):5} rows  one node {local_s:7.2f} s  "
              f"ballista {distributed_s:7.2f} s  {' '.join(query.split())[:70]}")
    if different:
        raise SystemExit(f"{different} queries answered differently")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def job_ids(scheduler):
    jobs = get_json(f"http://{scheduler}/api/jobs")
    return {job.get("job_id") or job.get("id") for job in jobs}


def shuffle_bytes(scheduler, job):
    """Bytes the job's stages wrote to shuffle files, from the stages' metrics."""
    stages = get_json(f"http://{scheduler}/api/job/{job}/stages")
    total = 0

    def walk(value, key=""):
        nonlocal total
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and "write_bytes" in value or "shuffle" in key:
            pass
        if isinstance(value, (int, float)) and "bytes" in key and "shuffle" in key:
            total += value
        if isinstance(value, str) and key == "metrics":
            pass

    walk(stages)
    for text in json.dumps(stages).split('"'):
        if text.startswith("output_bytes=") or text.startswith("shuffle_write_bytes="):
            total += int(text.split("=")[1].split()[0])
    return total


def timed(name, http, scheduler, executors, repeat):
    pids = [int(p) for p in executors.split(",") if p]
    result = {"engine": name}
    for label, query in QUERIES.items():
        walls, cpus, shuffles = [], [], []
        for _ in range(repeat):
            before = [cpu_seconds(pid) for pid in pids]
            seen = job_ids(scheduler) if scheduler else set()
            _, wall = sql(http, query)
            walls.append(wall)
            cpus.append([round(cpu_seconds(pid) - b, 2) for pid, b in zip(pids, before)])
            if scheduler:
                new = job_ids(scheduler) - seen
                shuffles.append(sum(shuffle_bytes(scheduler, job) for job in new))
        result[label] = {
            "median_s": round(statistics.median(walls), 2),
            "runs_s": [round(w, 2) for w in walls],
        }
        if pids:
            result[label]["executor_cpu_s"] = cpus[len(cpus) // 2]
            result[label]["shuffle_bytes"] = shuffles[len(shuffles) // 2]
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


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "same":
        same(sys.argv[2], sys.argv[3])
    elif mode == "time":
        timed(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif mode == "duckdb":
        duckdb_times(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
