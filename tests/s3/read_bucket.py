"""Reads callwatch's segments in an S3 bucket with pyarrow's S3FileSystem, as a user's
notebook would, and prints every span id and every call's key as JSON.

    python3 tests/s3/read_bucket.py PORT BUCKET/PREFIX
"""
import json
import sys

import pyarrow.dataset as ds
import pyarrow.fs as fs

port, root = sys.argv[1], sys.argv[2]
s3 = fs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                     endpoint_override=f"127.0.0.1:{port}", scheme="http")


def table(name, columns):
    found = ds.dataset(f"{root}/{name}", filesystem=s3, format="parquet", partitioning="hive")
    return found.to_table(columns=columns).to_pylist()


spans = table("spans", ["span_id", "dt"])
calls = table("calls", ["trace_id", "client_span_id", "server_span_id", "client", "server"])
print(json.dumps({
    "span_ids": sorted(row["span_id"] for row in spans),
    "partitions": sorted({str(row["dt"]) for row in spans}),
    "calls": sorted(
        [row["trace_id"], row["client_span_id"] or "", row["server_span_id"] or "",
         row["client"], row["server"]]
        for row in calls
    ),
}))
