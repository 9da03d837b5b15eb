"""The S3-API server of the tests: moto's server mode on 127.0.0.1, on a free port.

    python3 tests/s3/server.py BUCKET...

Creates the buckets, prints the port, then takes commands on stdin, answering `ok` to each:
`down` stops answering (the bucket goes away), `up` answers again on the same port with the
same objects. Ends when stdin closes.
"""
import logging
import sys
import urllib.request

from moto.server import ThreadedMotoServer

# One line per request would bury the tests' output.
logging.getLogger("werkzeug").setLevel(logging.ERROR)


def start(port):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


server = start(0)
port = server.get_host_and_port()[1]
for bucket in sys.argv[1:]:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT"))
print(port, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "down":
        server.stop()
    elif command == "up":
        server = start(port)
    print("ok", flush=True)
server.stop()
