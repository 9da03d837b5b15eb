"""Reads callwatch's Parquet segments with pyarrow and DuckDB and prints what they see as JSON."""
import json
import sys

import duckdb
import pyarrow.dataset as ds

data_dir = sys.argv[1]
table = ds.dataset(f"{data_dir}/spans", format="parquet", partitioning="hive").to_table()
row = duckdb.connect().execute(
    f"""SELECT count(*), count(DISTINCT span_id), min(service_name),
               map_extract(any_value(attributes), 'http.route'), min(dt), count(DISTINCT hr)
        FROM read_parquet('{data_dir}/spans/**/*.parquet', hive_partitioning = 1)"""
).fetchone()
route = row[3][0] if isinstance(row[3], list) else row[3]
print(json.dumps({
    "pyarrow_rows": table.num_rows,
    "pyarrow_columns": table.column_names,
    "duckdb_rows": row[0],
    "duckdb_distinct_span_ids": row[1],
    "duckdb_service": row[2],
    "duckdb_route": route,
    "duckdb_dt": str(row[4]),
}))
