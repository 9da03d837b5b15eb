"""Checks a data directory after benches/soak.sh, with DuckDB over its committed segments:
every acknowledged span stored exactly once, no call twice, and the calls equal to those
derived from the stored spans by a server that never crashed (a client span and its server
child are one call, as are a producer span and its consumer child).

    python3 benches/soak_check.py DATA_DIR ACKED_IDS [SENT_LOG RESEND_OUT]

With a `callwatch load --sent-log`, it also writes the requests a server that never crashed
must get to hold the same spans, for `callwatch load --resend`.
"""

import json
import sys
from pathlib import Path

import duckdb

data, acked = Path(sys.argv[1]), sys.argv[2]
# Every node's manifest (one collector here).
manifests = [json.loads(m.read_text()) for m in (data / "_callwatch" / "nodes").glob("*/manifest.json")]
files = {"spans": [], "calls": []}
for segment in (s for manifest in manifests for s in manifest["segments"]):
    files[segment.get("table", "spans")].append(str(data / segment["path"]))
db = duckdb.connect()
db.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({files['spans']!r})")
db.execute(f"CREATE VIEW calls AS SELECT * FROM read_parquet({files['calls']!r})")
db.execute(f"CREATE TABLE acked AS SELECT * FROM read_csv('{acked}', header=false, columns={{'span_id': 'VARCHAR'}})")


def one(sql):
    return db.execute(sql).fetchone()


failures = []
acked_count, acked_distinct = one("SELECT count(*), count(DISTINCT span_id) FROM acked")
stored, stored_distinct = one("SELECT count(*), count(DISTINCT span_id) FROM spans")
(missing,) = one("SELECT count(*) FROM acked a ANTI JOIN spans s ON a.span_id = s.span_id")
(acked_twice,) = one(
    "SELECT count(*) FROM (SELECT span_id FROM spans SEMI JOIN acked USING (span_id) "
    "GROUP BY span_id HAVING count(*) > 1)"
)
print(f"acknowledged spans: {acked_count:,} ({acked_distinct:,} distinct); stored: {stored:,} "
      f"({stored - stored_distinct:,} twice); acknowledged and missing: {missing:,}; "
      f"acknowledged and stored twice: {acked_twice:,}")
if missing or acked_twice or stored != stored_distinct or acked_count != acked_distinct:
    failures.append("spans")

calls, call_keys = one(
    "SELECT count(*), count(DISTINCT (trace_id, coalesce(client_span_id, ''), "
    "coalesce(server_span_id, ''))) FROM calls"
)
print(f"calls: {calls:,}, {calls - call_keys:,} twice")
if calls != call_keys:
    failures.append("calls twice")

# The calls a server that never crashed derives from these spans: each client span with a
# server child, and each producer span with a consumer child. Compared per edge.
expected = db.execute(
    """
    SELECT c.service_name AS client, s.service_name AS server, count(*) AS calls,
           count(*) FILTER (WHERE s.status_code = 'ERROR' OR c.status_code = 'ERROR') AS failed
    FROM spans c JOIN spans s
      ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id
    WHERE (c.span_kind = 'CLIENT' AND s.span_kind = 'SERVER')
       OR (c.span_kind = 'PRODUCER' AND s.span_kind = 'CONSUMER')
    GROUP BY 1, 2
    """
).fetchall()
derived = db.execute(
    """
    SELECT client, server, count(*) AS calls, count(*) FILTER (WHERE failed) AS failed
    FROM calls WHERE client_span_id IS NOT NULL AND server_span_id IS NOT NULL
    GROUP BY 1, 2
    """
).fetchall()
expected, derived = sorted(expected), sorted(derived)
print(f"edges of client-server calls: {len(derived)} derived, {len(expected)} expected; "
      f"calls {sum(r[2] for r in derived):,} derived, {sum(r[2] for r in expected):,} expected")
if expected != derived:
    failures.append("graph")
    want, got = {(r[0], r[1]): r[2:] for r in expected}, {(r[0], r[1]): r[2:] for r in derived}
    for edge in sorted(set(want) | set(got)):
        if want.get(edge) != got.get(edge):
            print(f"  {edge[0]} -> {edge[1]}: expected {want.get(edge)}, derived {got.get(edge)}")
# The requests to replay into a server that never crashed: those acknowledged, and those
# that failed (the server went down meanwhile) but were stored all the same.
if len(sys.argv) > 4:
    sent, resend = sys.argv[3], sys.argv[4]
    lines = Path(sent).read_text().splitlines()
    failed = [line.split() for line in lines[1:] if " failed " in line]
    db.execute("CREATE TABLE failed (n VARCHAR, shift VARCHAR, outcome VARCHAR, span_id VARCHAR)")
    if failed:
        db.executemany("INSERT INTO failed VALUES (?, ?, ?, ?)", failed)
    stored_failed = {
        n for (n,) in db.execute("SELECT n FROM failed SEMI JOIN spans USING (span_id)").fetchall()
    }
    keep = [lines[0]] + [
        line for line in lines[1:]
        if line.endswith(" acked") or line.split()[0] in stored_failed
    ]
    Path(resend).write_text("\n".join(keep) + "\n")
    print(f"requests: {len(lines) - 1:,} sent, {len(failed):,} failed, of which "
          f"{len(stored_failed):,} stored all the same; {len(keep) - 1:,} to replay")
print("FAILED: " + ", ".join(failures) if failures else "OK: nothing lost, nothing twice")
sys.exit(1 if failures else 0)
