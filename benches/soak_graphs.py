"""Compares the dependency graph of one window on two callwatch servers: every edge's
calls, failures, retries, timeouts, latencies and health (not its rates or live breaker
state, which depend on when the calls arrived).

    python3 benches/soak_graphs.py http://127.0.0.1:8080 http://127.0.0.1:8081 FROM TO
"""

import json
import sys
import urllib.request

a, b, start, end = sys.argv[1:5]
# What depends on when the calls arrived rather than on the calls: rates over the part of
# the window that has passed, and the breakers' live state.
LIVE = ("breaker", "breaker_state", "consumer_groups", "rate_per_s", "rate_last_minute_per_s")


def edges(server):
    url = f"{server}/api/v1/graph?from={start}&to={end}"
    with urllib.request.urlopen(url, timeout=120) as response:
        graph = json.load(response)
    return {
        (e["source"], e["target"], e.get("destination")): {
            k: v for k, v in e.items() if k not in LIVE
        }
        for e in graph["edges"]
    }


crashed, clean = edges(a), edges(b)
calls = sum(e.get("calls", 0) for e in crashed.values())
differ = [key for key in sorted(set(crashed) | set(clean), key=str) if crashed.get(key) != clean.get(key)]
print(f"graph {start} – {end}: {len(crashed)} edges and {calls:,} calls after the kills, "
      f"{len(clean)} edges replayed into a server that never crashed; {len(differ)} differ")
for key in differ[:20]:
    print(f"  {key}:\n    after kills {crashed.get(key)}\n    never crashed {clean.get(key)}")
sys.exit(1 if differ or not crashed else 0)
