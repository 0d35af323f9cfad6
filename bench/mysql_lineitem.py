#!/usr/bin/env python3
"""MariaDB -> sluice: TPC-H lineitem SF1 snapshot, CDC throughput and end-to-end latency,
beside the raw scan limit `mariadb --quick`, in one run through ../shared/bench/harness.py.

Cases:
  reference  mariadb --quick -N -e "select * from tpch.lineitem" > /dev/null   (raw scan, TCP)
  (a)        sluice snapshot -> lake                  `sluice sync --lake-only`, mode snapshot
  (b)        sluice snapshot -> lake -> DuckDB        `sluice sync`
  (s)        sluice snapshot -> lake of `lineitem_s`: the same rows keyed by a VARCHAR
             (`CONCAT(l_orderkey, '-', l_linenumber)`), so read as one chunk by one
             connection: peak RSS shows whether a chunk is held whole or streamed
  (c)        sluice CDC, 500,000 row changes -> lake  250k INSERTs + 250k UPDATEs in 50
             transactions of 10,000 (as series D), untimed; then the timed catch-up
  (t)        sluice CDC, one transaction of 2,000,000 row changes -> lake
             (`INSERT INTO big_txn SELECT * FROM lineitem LIMIT 2000000`, ~400 MB of row
             events): peak RSS shows whether a transaction is held whole or written ahead
             (`txn_buffer_mb`, default 64)
  (d)        latency at a steady 2,000 changes/s for 60 s (LATENCY_RATE, LATENCY_SECS):
             `sluice sync --follow` while a client commits transactions of 100 rows (20 per
             second at 2,000/s), RSS sampled every 5 s; per row, DuckDB's
             `_sluice_loaded_at` minus the row's commit time (`NOW(6)` in the row) -> p50/p99

Uses the shared private MariaDB (servers.sh, 127.0.0.1:3307, ROW binlog) and loads
tpch.lineitem from sluice's own generator when data.sh has not (same DDL as data.sh).
Usage: bench/mysql_lineitem.py     (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench, LATENCY_SECS=60,
       LATENCY_RATE=2000, LATENCY_ONLY=1 for the latency case alone)
"""
import json, os, statistics, subprocess, sys, time

from common import SF1_ROWS, SHARED, SLUICE, build, lineitem_csv
import harness  # noqa: E402  (found through common's path)

ROWS = SF1_ROWS
PORT = 3307
MY = f"mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P{PORT} -ubench -pbench"
ROOT_SQL = "mariadb --no-defaults -S {sock} -uroot --local-infile=1"

DDL = """CREATE TABLE lineitem (
    l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL, l_suppkey BIGINT NOT NULL, l_linenumber INT NOT NULL,
    l_quantity DECIMAL(15,2) NOT NULL, l_extendedprice DECIMAL(15,2) NOT NULL,
    l_discount DECIMAL(15,2) NOT NULL, l_tax DECIMAL(15,2) NOT NULL,
    l_returnflag CHAR(1) NOT NULL, l_linestatus CHAR(1) NOT NULL,
    l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL, l_receiptdate DATE NOT NULL,
    l_shipinstruct CHAR(25) NOT NULL, l_shipmode CHAR(10) NOT NULL, l_comment VARCHAR(44) NOT NULL,
    PRIMARY KEY (l_orderkey, l_linenumber)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def root(env, sql):
    """SQL as MariaDB's root over the socket, fed on stdin (no shell quoting)."""
    cmd = ROOT_SQL.format(sock=env["SCRATCH"] + "/mariadb.sock") + " -N"
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, input=sql).stdout


def ensure_lineitem(env):
    sh(f"{SHARED}/servers.sh start")
    n = root(env, "SELECT count(*) FROM information_schema.tables WHERE table_schema='tpch' AND table_name='lineitem'")
    if n.strip() == "1" and root(env, "SELECT count(*) FROM tpch.lineitem").strip() == str(ROWS):
        return
    csv = lineitem_csv(env)
    harness.log("loading tpch.lineitem into MariaDB (binlog off for the load)")
    root(env, f"SET SESSION sql_log_bin = 0; CREATE DATABASE IF NOT EXISTS tpch; USE tpch; DROP TABLE IF EXISTS lineitem; {DDL}; "
              f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE lineitem CHARACTER SET utf8mb4 "
              "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES; ANALYZE TABLE lineitem")


def ensure_string_keyed(env):
    """lineitem_s: lineitem keyed by a VARCHAR, which sluice cannot split into key ranges."""
    n = root(env, "SELECT count(*) FROM information_schema.tables WHERE table_schema='tpch' AND table_name='lineitem_s'")
    if n.strip() == "1" and root(env, "SELECT count(*) FROM tpch.lineitem_s").strip() == str(ROWS):
        return
    harness.log("creating tpch.lineitem_s (binlog off)")
    root(env, "SET SESSION sql_log_bin = 0; USE tpch; DROP TABLE IF EXISTS lineitem_s; "
              "CREATE TABLE lineitem_s (k VARCHAR(24) NOT NULL PRIMARY KEY) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
              "SELECT CONCAT(l_orderkey, '-', l_linenumber) AS k, lineitem.* FROM lineitem; ANALYZE TABLE lineitem_s")


def project(base, name, mode, tables, extra=""):
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[sources.tpch]
kind = "mysql"
url = "mysql://bench@127.0.0.1:{PORT}/tpch"
password = {{ env = "BENCH_MY_PASS" }}
mode = "{mode}"
tables = {json.dumps(tables)}
{extra}
""")
    return d


def cdc_setup(d, table):
    """A fresh table, snapshotted (empty), then 500k row changes waiting in the binlog."""
    sql = (f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id INT PRIMARY KEY, a BIGINT, b VARCHAR(40), "
           "c DECIMAL(15,2), d DATETIME(6)) ENGINE=InnoDB")
    return (f"{MY} tpch -e \"{sql}\" && rm -rf {d}/lake {d}/warehouse.duckdb && "
            f"BENCH_MY_PASS=bench {SLUICE} --config {d}/sluice.toml sync --lake-only > /dev/null && "
            f"python3 {__file__} --changes {table}")


BIG_TXN_ROWS = 2_000_000


def big_txn_setup(d):
    """An empty copy of lineitem, snapshotted, then one INSERT of 2M rows in the binlog."""
    return (f"{MY} tpch -e 'DROP TABLE IF EXISTS big_txn; CREATE TABLE big_txn LIKE lineitem' && "
            f"rm -rf {d}/lake && BENCH_MY_PASS=bench {SLUICE} --config {d}/sluice.toml sync --lake-only > /dev/null && "
            f"{MY} tpch -e 'INSERT INTO big_txn SELECT * FROM lineitem LIMIT {BIG_TXN_ROWS}'")


def write_changes(table):
    """25 transactions of 10,000 INSERTs, then 25 of 10,000 UPDATEs."""
    p = subprocess.Popen(f"{MY} tpch", shell=True, stdin=subprocess.PIPE, text=True)
    for t in range(25):
        rows = ",".join(f"({t * 10000 + i}, {i}, 'row {i}', {i}.25, NOW(6))" for i in range(10000))
        p.stdin.write(f"START TRANSACTION; INSERT INTO {table} VALUES {rows}; COMMIT;\n")
    for t in range(25):
        p.stdin.write(f"UPDATE {table} SET a = a + 1, b = 'updated' WHERE id >= {t * 10000} AND id < {(t + 1) * 10000};\n")
    p.stdin.close()
    assert p.wait() == 0


def rss_mib(pid):
    """Resident memory of a process (MiB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def latency(d, secs, rate):
    """Steady `rate` changes/s (transactions of 100 rows) for `secs` while `sync --follow`
    runs; returns p50/p99/max latency, peak RSS, and RSS sampled every 5 s (flat or growing)."""
    table = "lat"
    sh(f"{MY} tpch -e \"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id INT PRIMARY KEY, v INT, committed DATETIME(6))\"")
    sh(f"rm -rf {d}/lake {d}/warehouse.duckdb")
    env = dict(os.environ, BENCH_MY_PASS="bench")
    sh(f"{SLUICE} --config {d}/sluice.toml sync", env=env)
    follower = subprocess.Popen(["/usr/bin/time", "-v", SLUICE, "--config", f"{d}/sluice.toml", "sync", "--follow"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    sluice_pid = subprocess.run(["pgrep", "-P", str(follower.pid)], text=True,
                                capture_output=True).stdout.split()[0]
    client = subprocess.Popen(f"{MY} tpch", shell=True, stdin=subprocess.PIPE, text=True)
    start, n, samples = time.time(), 0, []
    ticks_per_s = rate / 100
    for tick in range(int(secs * ticks_per_s)):
        rows = ",".join(f"({n + i}, {i}, NOW(6))" for i in range(100))
        client.stdin.write(f"INSERT INTO {table} VALUES {rows};\n")
        client.stdin.flush()
        n += 100
        if tick % int(5 * ticks_per_s) == 0:
            samples.append(rss_mib(sluice_pid))
        wait = start + (tick + 1) / ticks_per_s - time.time()
        if wait > 0:
            time.sleep(wait)
    client.stdin.close()
    client.wait()
    time.sleep(5)
    # SIGTERM to sluice itself (/usr/bin/time does not pass it on): it finishes its batch.
    subprocess.run(["pkill", "-TERM", "-P", str(follower.pid)])
    err = follower.communicate()[1]
    rss = next((int(l.split(":")[1]) // 1024 for l in err.splitlines() if "Maximum resident" in l), None)
    q = (f"SELECT count(*), quantile_disc(l, 0.5), quantile_disc(l, 0.99), max(l) FROM "
         f"(SELECT (epoch_us(_sluice_loaded_at) - epoch_us(committed)) / 1000.0 AS l FROM tpch.{table})")
    out = sh(f"{SLUICE} --config {d}/sluice.toml query --warehouse local --format csv \"{q}\"").strip().splitlines()[-1]
    got, p50, p99, mx = out.split(",")
    return {"rows": n, "rate": rate, "secs": secs, "loaded": int(got), "p50_ms": float(p50),
            "p99_ms": float(p99), "max_ms": float(mx), "peak_rss_mb": rss, "rss_every_5s_mb": samples}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--changes":
        write_changes(sys.argv[2])
        return
    env = harness.load_env()
    build()
    ensure_lineitem(env)
    ensure_string_keyed(env)
    base = os.path.join(env["SCRATCH"], "sluice-mysql")
    snap = project(base, "snapshot", "snapshot", ["lineitem"], 'load = "append"')
    snap_s = project(base, "snapshot_s", "snapshot", ["lineitem_s"], 'load = "append"')
    cdc = project(base, "cdc", "cdc", ["cdc_bench"], 'load = "append"')
    lat = project(base, "latency", "cdc", ["lat"], 'load = "append"\nbatch_max_ms = 500')
    big = project(base, "big_txn", "cdc", ["big_txn"], 'load = "append"')
    os.environ["BENCH_MY_PASS"] = "bench"

    def tools(_env):
        out = [harness.measure("mariadb --quick scan (raw limit)",
                               f"{MY} --quick -N -e 'select * from tpch.lineitem' > /dev/null", ROWS)]
        count = (f"{SLUICE} --config {snap}/sluice.toml query --format csv "
                 f"'SELECT count(*) AS n FROM tpch.lineitem__changes' | tail -1")
        out.append(harness.measure("sluice snapshot -> lake", f"{SLUICE} --config {snap}/sluice.toml sync --lake-only",
                                   ROWS, setup=f"rm -rf {snap}/lake {snap}/warehouse.duckdb", verify=count))
        out.append(harness.measure("sluice snapshot -> lake -> DuckDB", f"{SLUICE} --config {snap}/sluice.toml sync",
                                   ROWS, setup=f"rm -rf {snap}/lake {snap}/warehouse.duckdb", verify=count))
        scount = (f"{SLUICE} --config {snap_s}/sluice.toml query --format csv "
                  f"'SELECT count(*) AS n FROM tpch.lineitem_s__changes' | tail -1")
        out.append(harness.measure("sluice snapshot -> lake, VARCHAR key (one chunk)",
                                   f"{SLUICE} --config {snap_s}/sluice.toml sync --lake-only",
                                   ROWS, setup=f"rm -rf {snap_s}/lake", verify=scount))
        ccount = (f"{SLUICE} --config {cdc}/sluice.toml query --format csv "
                  f"'SELECT count(*) AS n FROM tpch.cdc_bench__changes' | tail -1")
        out.append(harness.measure("sluice CDC 500k row changes -> lake",
                                   f"{SLUICE} --config {cdc}/sluice.toml sync --lake-only", 500_000,
                                   setup=cdc_setup(cdc, "cdc_bench"), verify=ccount))
        tcount = (f"{SLUICE} --config {big}/sluice.toml query --format csv "
                  f"'SELECT count(*) AS n FROM tpch.big_txn__changes' | tail -1")
        out.append(harness.measure("sluice CDC one 2M-row transaction -> lake",
                                   f"{SLUICE} --config {big}/sluice.toml sync --lake-only", BIG_TXN_ROWS,
                                   setup=big_txn_setup(big), verify=tcount))
        return out

    if os.environ.get("LATENCY_ONLY") != "1":
        harness.series("sluice_mysql", tools)
    res = latency(lat, int(os.environ.get("LATENCY_SECS", "60")), int(os.environ.get("LATENCY_RATE", "2000")))
    print(json.dumps({"series": "sluice_mysql_latency", **res}))


if __name__ == "__main__":
    main()
