"""Measurements of benches/cluster.sh, which starts the servers.

    python3 cluster.py freshness OTLP_HTTP QUERY_HTTP PROBES EVERY_S
        Sends PROBES spans of new traces to a collector's OTLP/HTTP, one every EVERY_S
        seconds, and polls a query node for each until its trace is there. Prints p50, p99
        and the slowest, in seconds from the acknowledgement.
    python3 cluster.py queries NAME=HTTP...
        Times trace look-ups and the graph of the last hour on each server (all over the same
        segments), medians of REPEAT runs. Prints one JSON object per server.
"""

import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

REPEAT = int(os.environ.get("REPEAT", "5"))
TRACES = int(os.environ.get("TRACES", "20"))


def get(url, timeout=120):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def post_json(url, body):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def freshness(otlp_http, query_http, probes, every):
    delays, lock = [], threading.Lock()

    def probe(n):
        trace_id = "%032x" % random.getrandbits(128)
        now = time.time_ns()
        span = {
            "traceId": trace_id,
            "spanId": "%016x" % random.getrandbits(64),
            "name": "freshness-probe",
            "kind": 2,
            "startTimeUnixNano": str(now - 1_000_000),
            "endTimeUnixNano": str(now),
        }
        request = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "probe"}}
                        ]
                    },
                    "scopeSpans": [{"spans": [span]}],
                }
            ]
        }
        post_json(f"http://{otlp_http}/v1/traces", request)
        acked = time.monotonic()
        while True:
            try:
                status, _ = get(f"http://{query_http}/api/v1/traces/{trace_id}", timeout=30)
            except urllib.error.HTTPError as error:
                status = error.code
            if status == 200:
                break
            if time.monotonic() - acked > 600:
                raise SystemExit(f"probe {n} never became visible")
            time.sleep(0.25)
        with lock:
            delays.append(time.monotonic() - acked)

    threads = []
    for n in range(probes):
        thread = threading.Thread(target=probe, args=(n,))
        thread.start()
        threads.append(thread)
        time.sleep(every)
    for thread in threads:
        thread.join()
    print(
        json.dumps(
            {
                "probes": len(delays),
                "p50_s": round(statistics.median(delays), 2),
                "p99_s": round(percentile(delays, 0.99), 2),
                "max_s": round(max(delays), 2),
            }
        )
    )


def timed_ms(url):
    started = time.perf_counter()
    status, body = get(url)
    assert status == 200, (url, status)
    return (time.perf_counter() - started) * 1000, body


def queries(servers):
    first = servers[0][1]
    total = post_json(f"http://{first}/api/v1/sql", {"sql": "SELECT count(*) FROM spans"})
    total = total["rows"][0][0]
    ids = post_json(
        f"http://{first}/api/v1/sql",
        {
            "sql": "SELECT trace_id FROM (SELECT DISTINCT trace_id FROM spans) "
            "ORDER BY trace_id LIMIT %d" % TRACES
        },
    )["rows"]
    now = int(time.time() * 1000)
    graph = f"/api/v1/graph?from={now - 3_600_000}&to={now}"
    for name, http in servers:
        look_ups, graphs = [], []
        for _ in range(REPEAT):
            for (trace_id,) in ids:
                look_ups.append(timed_ms(f"http://{http}/api/v1/traces/{trace_id}")[0])
            took, body = timed_ms(f"http://{http}{graph}")
            graphs.append(took)
        calls = sum(edge["calls"] for edge in json.loads(body)["edges"])
        print(
            json.dumps(
                {
                    "server": name,
                    "spans": total,
                    "graph_calls": calls,
                    "trace_by_id_median_ms": round(statistics.median(look_ups), 1),
                    "graph_1h_median_ms": round(statistics.median(graphs), 1),
                }
            )
        )


if __name__ == "__main__":
    if sys.argv[1] == "freshness":
        freshness(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "queries":
        queries([arg.split("=", 1) for arg in sys.argv[2:]])
    else:
        raise SystemExit(__doc__)
