"""Query benchmark: callwatch's HTTP APIs against DuckDB over the same Parquet segments.

Run by benches/query.sh, which loads the data and starts the server. Each query runs
REPEAT times on each side; the tables give the median and the slowest run in ms.
"""

import json
import os
import statistics
import sys
import time
import urllib.request

import duckdb

HTTP = sys.argv[1]
DATA = sys.argv[2]
REPEAT = int(os.environ.get("REPEAT", "5"))
TRACES = int(os.environ.get("TRACES", "20"))


def callwatch_sql(sql):
    request = urllib.request.Request(
        f"http://{HTTP}/api/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def callwatch_get(path):
    with urllib.request.urlopen(f"http://{HTTP}{path}", timeout=120) as response:
        return json.load(response)


def timed(run):
    started = time.perf_counter()
    result = run()
    return (time.perf_counter() - started) * 1000, result


def summary(times):
    return statistics.median(times), max(times)


duck = duckdb.connect()
duck.execute("SET threads TO %d" % os.cpu_count())
# The same files callwatch reads: every committed segment.
duck.execute(
    "CREATE VIEW spans AS SELECT * FROM read_parquet('%s/spans/**/*.parquet', hive_partitioning = false)"
    % DATA
)

total = callwatch_sql("SELECT count(*) FROM spans")["rows"][0][0]
duck_total = duck.execute("SELECT count(*) FROM spans").fetchone()[0]
assert total == duck_total, (total, duck_total)
segments = sum(len(files) for _, _, files in os.walk(os.path.join(DATA, "spans")))

# Trace ids spread over the data: every n-th trace in id order.
ids = [
    row[0]
    for row in duck.execute(
        "SELECT trace_id FROM (SELECT DISTINCT trace_id FROM spans) ORDER BY hash(trace_id) LIMIT ?",
        [TRACES],
    ).fetchall()
]

results = []

# 1. One trace by id: every span with every column.
cw_times, duck_times = [], []
for trace_id in ids:
    for _ in range(REPEAT):
        took, body = timed(lambda: callwatch_get(f"/api/v1/traces/{trace_id}"))
        cw_times.append(took)
        # Fetched as Arrow: converting to Python objects would be the slow part.
        took, rows = timed(
            lambda: duck.execute("SELECT * FROM spans WHERE trace_id = ?", [trace_id]).to_arrow_table()
        )
        duck_times.append(took)
        assert len(body["spans"]) == rows.num_rows, (trace_id, len(body["spans"]), rows.num_rows)
results.append(("trace by id (GET /api/v1/traces/{id}, all columns)", cw_times, duck_times))

# 2. Per-service count and exact p50/p95/p99 duration over the last hour.
CW_SERVICES = """
SELECT service_name, count(*) AS spans,
       percentile_cont(duration_ns, 0.5) AS p50,
       percentile_cont(duration_ns, 0.95) AS p95,
       percentile_cont(duration_ns, 0.99) AS p99
FROM spans WHERE start_time >= now() - INTERVAL '1 hour'
GROUP BY service_name ORDER BY service_name
"""
DUCK_SERVICES = """
SELECT service_name, count(*) AS spans,
       quantile_cont(duration_ns, 0.5), quantile_cont(duration_ns, 0.95),
       quantile_cont(duration_ns, 0.99)
FROM spans WHERE start_time >= CAST(now() - INTERVAL 1 HOUR AS TIMESTAMPTZ_NS)
GROUP BY service_name ORDER BY service_name
"""
cw_times, duck_times = [], []
for _ in range(REPEAT):
    took, body = timed(lambda: callwatch_sql(CW_SERVICES))
    cw_times.append(took)
    took, rows = timed(lambda: duck.execute(DUCK_SERVICES).fetchall())
    duck_times.append(took)
    assert [r[:2] for r in body["rows"]] == [list(r[:2]) for r in rows], (body["rows"], rows)
    for ours, theirs in zip(body["rows"], rows):
        for a, b in zip(ours[2:], theirs[2:]):
            assert abs(a - b) <= 1e-6 * max(1, abs(b)), (ours, theirs)
results.append(("per-service count, p50/p95/p99 over 1 h (POST /api/v1/sql)", cw_times, duck_times))

# 3. The dependency graph of the last hour: calls, errors and exact client- and server-side
# p50/p95/p99 per edge. DuckDB computes the same from the calls segments.
DUCK_EDGES = """
SELECT client, server, call_type, count(*), sum(CAST(failed AS INT)),
       quantile_disc(client_duration_ns, [0.5, 0.95, 0.99]),
       quantile_disc(server_duration_ns, [0.5, 0.95, 0.99])
FROM calls WHERE start_time >= CAST(now() - INTERVAL 1 HOUR AS TIMESTAMPTZ_NS)
GROUP BY ALL ORDER BY ALL
"""
duck.execute(
    f"CREATE OR REPLACE VIEW calls AS SELECT * FROM read_parquet('{DATA}/calls/**/*.parquet', hive_partitioning=0)"
)
# The first graph query after a start computes the pieces of the segments that the
# background task has not reached yet: timed apart.
now_ms = int(time.time() * 1000)
took, _ = timed(lambda: callwatch_get(f"/api/v1/graph?from={now_ms - 3_600_000}&to={now_ms}"))
print(f"first graph query after the start: {took:.0f} ms", file=sys.stderr)
cw_times, duck_times = [], []
for _ in range(REPEAT):
    now_ms = int(time.time() * 1000)
    took, graph = timed(lambda: callwatch_get(f"/api/v1/graph?from={now_ms - 3_600_000}&to={now_ms}"))
    cw_times.append(took)
    took, rows = timed(lambda: duck.execute(DUCK_EDGES).fetchall())
    duck_times.append(took)
    ours = sum(e["calls"] for e in graph["edges"])
    theirs = sum(r[3] for r in rows)
    # Both windows end at their own "now": calls stopped arriving before either ran.
    assert ours == theirs, (ours, theirs)
total_calls = sum(e["calls"] for e in graph["edges"])
results.append((f"dependency graph over 1 h, {total_calls} calls (GET /api/v1/graph)", cw_times, duck_times))

print(f"spans: {total}, segments: {segments}, traces looked up: {len(ids)}, runs each: {REPEAT}", file=sys.stderr)
print("| query | callwatch median ms | callwatch max ms | DuckDB median ms | DuckDB max ms | ratio (median) |")
print("|---|---|---|---|---|---|")
for name, cw, dk in results:
    cw_median, cw_max = summary(cw)
    dk_median, dk_max = summary(dk)
    print(
        f"| {name} | {cw_median:.1f} | {cw_max:.1f} | {dk_median:.1f} | {dk_max:.1f} | {cw_median / dk_median:.2f} |"
    )
