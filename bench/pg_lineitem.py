#!/usr/bin/env python3
"""Lake -> PostgreSQL: TPC-H lineitem SF1 loaded from the sluice lake into PostgreSQL, beside
the raw limit `psql \\copy lineitem from 'lineitem.csv' csv` into a fresh table, in one run
through ../shared/bench/harness.py (3 runs, median wall, peak RSS).

Cases (6,001,215 rows):
  reference  psql \\copy lineitem FROM lineitem.csv (CSV, header) into a fresh table, no index
  (a)        sluice lake -> PostgreSQL, load = "merge"   (primary key l_orderkey, l_linenumber:
             the first load copied straight into the table, unique key index built, ledger,
             one transaction)
  (b)        sluice lake -> PostgreSQL, load = "append"  (binary COPY straight into the table)

The lake is written once, untimed (`sync --lake-only` from the CSV drop); each timed run
drops the warehouse schema and ledger rows first, so `sluice sync` loads all 6M changes.
Uses the shared private PostgreSQL (servers.sh, 127.0.0.1:5433, bench/bench).
Usage: bench/pg_lineitem.py     (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench)
"""
import os, subprocess

from common import COLUMNS, GEN, SF1_ROWS, SHARED, SLUICE, build
import harness  # noqa: E402  (found through common's path)

ROWS = SF1_ROWS
DDL = """CREATE TABLE lineitem (
    l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL, l_suppkey BIGINT NOT NULL, l_linenumber INT NOT NULL,
    l_quantity NUMERIC(15,2) NOT NULL, l_extendedprice NUMERIC(15,2) NOT NULL,
    l_discount NUMERIC(15,2) NOT NULL, l_tax NUMERIC(15,2) NOT NULL,
    l_returnflag TEXT NOT NULL, l_linestatus TEXT NOT NULL,
    l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL, l_receiptdate DATE NOT NULL,
    l_shipinstruct TEXT NOT NULL, l_shipmode TEXT NOT NULL, l_comment TEXT NOT NULL)"""


def project(base, csv_dir, load):
    d = os.path.join(base, f"proj-pg-{load}")
    os.makedirs(d, exist_ok=True)
    key = '[sources.tpch.tables.lineitem]\nprimary_key = ["l_orderkey", "l_linenumber"]\n' if load == "merge" else ""
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[lake]
url = "{base}/lake-pg"
[warehouses.pg]
kind = "postgres"
url = "postgres://bench@127.0.0.1:5433/bench"
password = {{ env = "PGPASSWORD" }}
ssl_mode = "disable"
[sources.tpch]
kind = "files"
url = "{csv_dir}/{{date}}/"
format = "csv"
header = true
table = "lineitem"
columns = {COLUMNS}
load = "{load}"
{key}""")
    return d


def main():
    env = harness.load_env()
    subprocess.run(f"{SHARED}/servers.sh start", shell=True, check=True)
    base = os.path.join(env["SCRATCH"], "sluice-files", "sf1")
    csv_dir = os.path.join(base, "drops-csv")
    csv = os.path.join(csv_dir, "20240101", "lineitem.csv")
    build()
    if not os.path.exists(csv):
        os.makedirs(os.path.dirname(csv), exist_ok=True)
        tbl = os.path.join(base, "drops-tbl", "20240101", "lineitem.tbl")
        os.makedirs(os.path.dirname(tbl), exist_ok=True)
        subprocess.run([GEN, "1", tbl, csv], check=True, stdout=subprocess.DEVNULL)
    psql = env["PSQL"]
    merge = project(base, csv_dir, "merge")
    append = project(base, csv_dir, "append")
    # The lake, once (both projects share it).
    if not os.path.exists(os.path.join(base, "lake-pg")):
        harness.log("writing the lake (untimed)")
        subprocess.run([SLUICE, "--config", f"{merge}/sluice.toml", "sync", "--lake-only"], check=True)
    reset = f"{psql} -c 'DROP SCHEMA IF EXISTS tpch CASCADE; DROP SCHEMA IF EXISTS _sluice CASCADE'"
    count = f"{psql} -At -c 'SELECT count(*) FROM tpch.lineitem'"

    def tools(_env):
        out = [harness.measure(
            "psql \\copy lineitem FROM csv (fresh table)",
            f"{psql} -c \"\\copy lineitem FROM '{csv}' WITH (FORMAT csv, HEADER true)\"", ROWS,
            setup=f"{psql} -c 'DROP TABLE IF EXISTS lineitem' -c '{DDL}'",
            verify=f"{psql} -At -c 'SELECT count(*) FROM lineitem'")]
        for name, d in [("sluice lake -> PostgreSQL (merge)", merge),
                        ("sluice lake -> PostgreSQL (append)", append)]:
            out.append(harness.measure(name, f"{SLUICE} --config {d}/sluice.toml sync", ROWS,
                                       setup=reset, verify=count))
        return out

    harness.series("sluice_pg_load", tools)


if __name__ == "__main__":
    main()
