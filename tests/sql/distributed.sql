-- The queries a Ballista cluster must answer exactly as one node does, but for approximate
-- percentiles, which depend on how rows are split into partial aggregates (tests/ballista.rs
-- allows them 2 %; benches/ballista.sh prints how far they are): one statement each,
-- separated by a line that ends in ";".

-- Counts by service.
SELECT service_name, count(*) AS spans, count(DISTINCT trace_id) AS traces
FROM spans GROUP BY 1 ORDER BY 1;

-- Exact percentiles per edge.
SELECT client, server, count(*) AS calls, median(client_duration_ns) AS p50,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY client_duration_ns) AS p99
FROM calls GROUP BY 1, 2 ORDER BY 1, 2;

-- Approximate percentiles per edge.
SELECT client, server,
  approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY server_duration_ns) AS p95,
  approx_distinct(trace_id) AS traces
FROM calls GROUP BY 1, 2 ORDER BY 1, 2;

-- Calls joined with the spans of their traces.
SELECT c.client, c.server, count(*) AS spans_of_their_traces
FROM calls c JOIN spans s ON c.trace_id = s.trace_id
WHERE c.failed GROUP BY 1, 2 ORDER BY 1, 2;

-- Map access to attributes.
SELECT attributes['http.route'] AS route, count(*) AS spans FROM spans
WHERE attributes['http.route'] IS NOT NULL GROUP BY 1 ORDER BY 1;

-- A window function.
SELECT service_name, span_name, n,
  rank() OVER (PARTITION BY service_name ORDER BY n DESC, span_name) AS rank
FROM (SELECT service_name, span_name, count(*) AS n FROM spans GROUP BY 1, 2)
ORDER BY 1, 4;

-- Breaker transitions.
SELECT client, server, source, from_state, to_state, count(*) AS transitions
FROM breaker_transitions GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5;

-- A time filter, which leaves out the segments outside it.
SELECT span_kind, count(*) AS spans FROM spans
WHERE start_time >= now() - INTERVAL '1 hour' GROUP BY 1 ORDER BY 1;
