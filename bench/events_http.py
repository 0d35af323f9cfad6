#!/usr/bin/env python3
"""HTTP events -> sluice serve -> lake (`serve --lake-only`), then -> lake + DuckDB: the
events collector under a rising offered load of ~1 KB events posted as NDJSON batches (crates/server/examples/events_load.rs,
open loop: latency counts from when each request was due). Per rate step: events/s and MB/s
acknowledged (a 200 means committed in the lake), p50/p99 acknowledgement latency, requests
refused (429/503), and serve's peak RSS over the whole run.

Usage: bench/events_http.py   (env: RATES=10000,25000,50000,100000,150000  SECS=15
                               BATCH=500  SCRATCH=/var/tmp/sluice-bench)
"""
import json, os, shutil, socket, subprocess, time

from common import SLUICE, TARGET

LOAD = os.path.join(TARGET, "release", "examples", "events_load")
RATES = [int(r) for r in os.environ.get("RATES", "10000,25000,50000,100000,150000").split(",")]
SECS = float(os.environ.get("SECS", "15"))
BATCH = int(os.environ.get("BATCH", "500"))
SCRATCH = os.environ.get("SCRATCH", "/var/tmp/sluice-bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def series(lake_only):
    """One serve, the rate steps against it; its peak RSS."""
    work = os.path.join(SCRATCH, "events")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    port = free_port()
    with open(os.path.join(work, "sluice.toml"), "w") as f:
        f.write(f"""
[sources.clicks]
kind = "events"
id_field = "id"
time_field = "ts"

[serve]
listen = "127.0.0.1:{port}"
""")
    log = open(os.path.join(work, "serve.log"), "w")
    args = [SLUICE, "--config", os.path.join(work, "sluice.toml"), "serve"]
    if lake_only:
        args.append("--lake-only")
    serve = subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)  # the stream opens after the listener
        url = f"http://127.0.0.1:{port}/events/clicks"
        print("lake only (serve --lake-only)" if lake_only else "lake + DuckDB (loads beside the stream)")
        print(f"{'offered ev/s':>12} {'acked ev/s':>11} {'MB/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'refused':>8} {'failed':>7}")
        for rate in RATES:
            out = subprocess.run([LOAD, url, str(rate), str(SECS), str(BATCH)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            print(f"{rate:>12} {r['acked']:>11.0f} {r['mb_s']:>6.1f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['refused']:>8} {r['failed']:>7}", flush=True)
            time.sleep(2)
        print(f"serve peak RSS: {peak_rss_mib(serve.pid):.0f} MiB\n", flush=True)
    finally:
        serve.terminate()
        serve.wait(timeout=300)


def main():
    series(lake_only=True)
    series(lake_only=False)


if __name__ == "__main__":
    main()
