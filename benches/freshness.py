"""How long after its span is acknowledged a reported breaker state shows in
/api/v1/breakers, an inferred one (the call that fills the default window, 100 calls at
50 %), and a paired call on /api/v1/graph: each probe is a new edge, its spans sent as
OTLP/JSON, then the view read every 100 ms until the edge is there.

  python3 benches/freshness.py HTTP_ADDR OTLP_HTTP_ADDR PROBES
Prints one JSON line: p50/p99/max seconds of each view."""
import json
import os
import sys
import time
import urllib.request

http, otlp, probes = sys.argv[1], sys.argv[2], int(sys.argv[3])
tag = os.urandom(3).hex()


def post_spans(service, spans):
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}]}]}
    request = urllib.request.Request(f"http://{otlp}/v1/traces", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.read()


def span(trace, span_id, parent, kind, start_ns, duration_ns, attributes, failed=False):
    out = {"traceId": trace, "spanId": span_id, "name": "probe", "kind": kind,
           "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + duration_ns),
           "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes]}
    if parent:
        out["parentSpanId"] = parent
    if failed:
        out["status"] = {"code": 2}
    return out


def get(path):
    with urllib.request.urlopen(f"http://{http}{path}", timeout=60) as response:
        return json.load(response)


def window():
    now_ms = int(time.time() * 1000)
    return f"from={now_ms - 300_000}&to={now_ms + 60_000}"


longest_read = 0.0


def wait_for(seen):
    """Seconds from now until seen() is true, reading every 100 ms (at most 120 s); the
    longest single read goes to `longest_read`."""
    global longest_read
    acked = time.monotonic()
    longest_read = 0.0
    while time.monotonic() - acked < 120:
        asked = time.monotonic()
        shown = seen()
        longest_read = max(longest_read, time.monotonic() - asked)
        if shown:
            return time.monotonic() - acked
        time.sleep(0.1)
    raise SystemExit("a probe never showed")


def breaker_open(client):
    breakers = get(f"/api/v1/breakers?{window()}")["breakers"]
    return any(b["client"] == client and b["state"] == "open" for b in breakers)


def inferred_open(client):
    breakers = get(f"/api/v1/breakers?{window()}")["breakers"]
    return any(b["client"] == client and b["inferred_state"] == "open" for b in breakers)


def edge_shown(client):
    edges = get(f"/api/v1/graph?{window()}")["edges"]
    return any(e["source"] == client for e in edges)


def percentiles(values):
    values = sorted(values)
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 2)
    return {"p50_s": pick(0.5), "p99_s": pick(0.99), "max_s": round(values[-1], 2)}


breaker, inferred, graph = [], [], []
for probe in range(probes):
    now = time.time_ns()
    client = f"probe-{tag}-{probe}"
    # A call the client's open breaker rejected: no server span will come.
    trace = os.urandom(16).hex()
    post_spans(client, [span(trace, os.urandom(8).hex(), None, 3, now, 40_000,
                             [("peer.service", "probe-payments"),
                              ("circuit_breaker.state", "open")], failed=True)])
    breaker.append(wait_for(lambda: breaker_open(client)))
    # 100 failed calls its client saw, none reporting a state, still waiting for their
    # server half: the last fills the window and opens the inferred breaker.
    failing = f"probe-{tag}-failing-{probe}"
    post_spans(failing, [span(os.urandom(16).hex(), os.urandom(8).hex(), None, 3,
                              now + call * 50_000, 40_000, [("peer.service", "probe-orders")],
                              failed=True) for call in range(100)])
    inferred.append(wait_for(lambda: inferred_open(failing)))
    # A call both of whose halves arrive: the server's, then the client's.
    trace, client_span = os.urandom(16).hex(), os.urandom(8).hex()
    caller = f"probe-{tag}-caller-{probe}"
    post_spans("probe-orders", [span(trace, os.urandom(8).hex(), client_span, 2, now + 1_000_000,
                                     3_000_000, [])])
    post_spans(caller, [span(trace, client_span, None, 3, now, 5_000_000,
                             [("peer.service", "probe-orders")])])
    graph.append(wait_for(lambda: edge_shown(caller)))
    # Each probe on stderr with the wall clock, to be matched with the server's log.
    print(f"{time.strftime('%H:%M:%S')} probe {probe}: breaker {breaker[-1]:.2f} s, "
          f"inferred {inferred[-1]:.2f} s, graph {graph[-1]:.2f} s "
          f"(its longest read {longest_read:.2f} s)", file=sys.stderr)
print(json.dumps({"probes": probes, "breaker": percentiles(breaker),
                  "inferred": percentiles(inferred), "graph": percentiles(graph)}))
