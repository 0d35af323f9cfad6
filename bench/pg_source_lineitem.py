#!/usr/bin/env python3
"""PostgreSQL -> sluice: TPC-H lineitem SF1 snapshot beside the raw scan limit
`COPY (SELECT * FROM lineitem_src) TO STDOUT (FORMAT binary)`, in one run through
../shared/bench/harness.py (3 runs, median wall, peak RSS).

Cases (6,001,215 rows, primary key (l_orderkey, l_linenumber)):
  reference  psql -c "COPY (SELECT * FROM lineitem_src) TO STDOUT (FORMAT binary)" > /dev/null
             (the server's fastest way out, over TCP, nothing decoded)
  (a)        sluice snapshot -> lake            `sluice sync --lake-only` (2 sessions in one
             exported snapshot, chunks of 100,000 rows on l_orderkey)
  (b)        sluice snapshot -> lake -> DuckDB  `sluice sync`

Uses the shared private PostgreSQL (servers.sh, 127.0.0.1:5433, bench/bench); loads
`lineitem_src` once from sluice's own generator (psql \\copy, untimed).
Usage: bench/pg_source_lineitem.py     (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench)
"""
import os, subprocess

from common import SF1_ROWS, SHARED, SLUICE, build, lineitem_csv
import harness  # noqa: E402  (found through common's path)

ROWS = SF1_ROWS
DDL = """CREATE TABLE lineitem_src (
    l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL, l_suppkey BIGINT NOT NULL, l_linenumber INT NOT NULL,
    l_quantity NUMERIC(15,2) NOT NULL, l_extendedprice NUMERIC(15,2) NOT NULL,
    l_discount NUMERIC(15,2) NOT NULL, l_tax NUMERIC(15,2) NOT NULL,
    l_returnflag CHAR(1) NOT NULL, l_linestatus CHAR(1) NOT NULL,
    l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL, l_receiptdate DATE NOT NULL,
    l_shipinstruct CHAR(25) NOT NULL, l_shipmode CHAR(10) NOT NULL, l_comment VARCHAR(44) NOT NULL,
    PRIMARY KEY (l_orderkey, l_linenumber))"""


def ensure_lineitem(env, psql):
    n = subprocess.run(f"{psql} -At -c \"SELECT count(*) FROM pg_tables WHERE tablename = 'lineitem_src'\"",
                       shell=True, check=True, capture_output=True, text=True).stdout.strip()
    if n == "1":
        rows = subprocess.run(f"{psql} -At -c 'SELECT count(*) FROM lineitem_src'", shell=True, check=True,
                              capture_output=True, text=True).stdout.strip()
        if rows == str(ROWS):
            return
    csv = lineitem_csv(env)
    harness.log("loading lineitem_src into PostgreSQL (untimed)")
    subprocess.run(f"{psql} -c 'DROP TABLE IF EXISTS lineitem_src' -c '{DDL}' "
                   f"-c \"\\copy lineitem_src FROM '{csv}' WITH (FORMAT csv, HEADER true)\" "
                   f"-c 'VACUUM ANALYZE lineitem_src'", shell=True, check=True)


def project(base, name, extra=""):
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[sources.tpch]
kind = "postgres"
url = "postgres://bench@127.0.0.1:5433/bench"
password = {{ env = "PGPASSWORD" }}
ssl_mode = "disable"
tables = ["lineitem_src"]
{extra}
""")
    return d


def main():
    env = harness.load_env()
    subprocess.run(f"{SHARED}/servers.sh start", shell=True, check=True)
    build()
    psql = env["PSQL"]
    ensure_lineitem(env, psql)
    base = os.path.join(env["SCRATCH"], "sluice-pg-source")
    snap = project(base, "snapshot")
    count = (f"{SLUICE} --config {snap}/sluice.toml query --format csv "
             f"'SELECT count(*) AS n FROM tpch.lineitem_src__changes' | tail -1")
    reset = f"rm -rf {snap}/lake {snap}/warehouse.duckdb"

    def tools(_env):
        return [
            harness.measure("reference: COPY (SELECT *) TO STDOUT (FORMAT binary) > /dev/null",
                            f"{psql} -c 'COPY (SELECT * FROM lineitem_src) TO STDOUT (FORMAT binary)' > /dev/null",
                            ROWS),
            harness.measure("sluice snapshot -> lake", f"{SLUICE} --config {snap}/sluice.toml sync --lake-only",
                            ROWS, setup=reset, verify=count),
            harness.measure("sluice snapshot -> lake -> DuckDB", f"{SLUICE} --config {snap}/sluice.toml sync",
                            ROWS, setup=reset, verify=count),
        ]

    harness.series("sluice_pg_source", tools)


if __name__ == "__main__":
    main()
