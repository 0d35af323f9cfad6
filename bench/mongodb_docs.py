#!/usr/bin/env python3
"""MongoDB -> sluice: a snapshot of 1,000,000 nested documents (~300 bytes each) and the CDC
catch-up of 200,000 changes, beside the raw limit (one `find` with the same Rust driver and
batch size, every document decoded: crates/sources/examples/mongo_find.rs), in one run
through ../shared/bench/harness.py.

Cases:
  reference  mongo_find URL docs                      (raw find loop, every document decoded)
  (a)        sluice snapshot -> lake                  `sluice sync --lake-only`, mode cdc (the
             snapshot records where the stream starts), 2 cursors over 4 `_id` chunks
  (b)        the same in one chunk                    (SecantusDB decodes the whole collection
             for every query, a range one included: this shows what chunking costs there)
  (c)        sluice CDC catch-up of 200,000 changes -> lake: 100,000 inserts and 100,000
             `$set` updates made after (a), untimed; then the timed `sync --lake-only`

The server is a private SecantusDB (the MongoDB wire-compatible server the tests use, from
/opt/secantus-venv; scripts/test.sh installs it), or the replica set BENCH_MONGO_URL names.
Usage: bench/mongodb_docs.py   (env: DOCS=1000000, CHANGES=200000, RUNS=3, SCRATCH=/var/tmp/sluice-bench)
"""
import json, os, shutil, socket, subprocess, sys, time

from common import ROOT, SLUICE, TARGET
import harness  # noqa: E402  (found through common's path)

DOCS = int(os.environ.get("DOCS", "1000000"))
CHANGES = int(os.environ.get("CHANGES", "200000"))
VENV = os.environ.get("SECANTUS_VENV", "/opt/secantus-venv")
FIND = os.path.join(TARGET, "release", "examples", "mongo_find")

LOAD = r'''
import sys, datetime, random
from decimal import Decimal
from bson import Decimal128, ObjectId
from pymongo import MongoClient
url, coll, start, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
c = MongoClient(url).get_default_database()[coll]
rnd = random.Random(start)
def doc(i):
    return {"n": i, "customer": {"name": f"customer {i % 50000:08d}", "email": f"c{i % 50000}@example.com",
            "address": {"city": rnd.choice(["Oslo", "Lima", "Rome", "Pune"]), "zip": f"{i % 99999:05d}", "country": "XX"}},
            "items": [{"sku": f"sku-{i % 997}", "qty": 1 + i % 5, "price": Decimal128(Decimal(i % 10000) / 100)},
                      {"sku": f"sku-{i % 991}", "qty": 2, "price": Decimal128("9.99")}],
            "total": Decimal128(Decimal(i % 100000) / 100), "status": "open",
            "created": datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=i),
            "tags": ["a", "b"], "note": "x" * 60}
if mode == "insert":
    for lo in range(start, start + n, 10000):
        c.insert_many([doc(i) for i in range(lo, min(lo + 10000, start + n))], ordered=False)
else:
    for lo in range(start, start + n, 10000):
        c.update_many({"n": {"$gte": lo, "$lt": min(lo + 10000, start + n)}}, {"$set": {"status": "paid"}})
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(scratch):
    """A private SecantusDB; returns (url, process)."""
    if os.environ.get("BENCH_MONGO_URL"):
        return os.environ["BENCH_MONGO_URL"], None
    data = os.path.join(scratch, "mongo-data")
    shutil.rmtree(data, ignore_errors=True)
    port = free_port()
    p = subprocess.Popen([f"{VENV}/bin/secantusd-py", "--host", "127.0.0.1", "--port", str(port),
                          "--storage-path", data, "--log-level", "WARNING"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The Python server can take longer than the driver's 10 s to answer a heartbeat while
    # two cursors have it decode a million documents.
    url = f"mongodb://127.0.0.1:{port}/bench?directConnection=true&connectTimeoutMS=60000"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return url, p
        except OSError:
            time.sleep(0.2)
    raise SystemExit("SecantusDB did not start")


def load(url, start, n, mode):
    harness.log(f"{mode}: {n} documents from {start}")
    subprocess.run([f"{VENV}/bin/python", "-c", LOAD, url, "docs", str(start), str(n), mode], check=True)


def main(env):
    scratch = os.path.join(env.get("SCRATCH", "/var/tmp/sluice-bench"), "sluice-mongodb")
    os.makedirs(scratch, exist_ok=True)
    os.makedirs(env["RESULTS"], exist_ok=True)
    url, server = start_server(scratch)
    try:
        load(url, 0, DOCS, "insert")
        lake = os.path.join(scratch, "lake")

        def config(name, chunk_rows, parallelism):
            cfg = os.path.join(scratch, name)
            with open(cfg, "w") as f:
                f.write(f'[sources.m]\nkind = "mongodb"\nurl = "{url}"\nmode = "cdc"\n'
                        f'tables = ["docs"]\nchunk_rows = {chunk_rows}\nsnapshot_parallelism = {parallelism}\n')
            return f"{SLUICE} --config {cfg} --json sync --lake-only"

        sync = config("sluice.toml", DOCS // 4, 2)
        # SecantusDB answers every query, a range one included, by decoding the whole
        # collection: one chunk shows what the chunking costs on it.
        one_chunk = config("one-chunk.toml", DOCS * 2, 1)
        fresh = f"rm -rf {lake} {scratch}/sluice-state.db"
        results = [
            harness.measure("mongo_find (raw find loop, Rust driver)", f"{FIND} {harness.q(url)} docs", DOCS, report=True),
            harness.measure("sluice snapshot -> lake (2 cursors, 4 chunks)", sync, DOCS, setup=fresh),
            harness.measure("sluice snapshot -> lake (one chunk)", one_chunk, DOCS, setup=fresh),
        ]
        # CDC: a snapshot (untimed), the changes (untimed), then the timed catch-up, once.
        subprocess.run(f"{fresh} && {one_chunk} > /dev/null", shell=True, check=True)
        load(url, DOCS, CHANGES // 2, "insert")
        load(url, 0, CHANGES - CHANGES // 2, "update")
        results.append(harness.measure("sluice CDC catch-up -> lake", sync, CHANGES, runs=1))
        return results
    finally:
        if server:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "-p", "sluice-sources", "--bins", "--examples"],
                   cwd=ROOT, check=True)
    harness.series("mongodb_docs", main)
