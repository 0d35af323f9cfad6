#!/usr/bin/env python3
"""The warehouse half on the embedded DuckDB: TPC-H lineitem SF1 loaded from the lake into
DuckDB by one or more sluice builds, beside DuckDB's own `read_csv` CTAS and the raw
`mariadb --quick` scan, in one run through ../shared/bench/harness.py (3 runs, median wall,
peak RSS from /usr/bin/time -v, a quiet-machine wait first).

Cases, per build (rows = 6,001,215):
  .tbl -> lake -> DuckDB, append        `sluice sync` of a files source, `load = "append"`
  lake -> DuckDB, append                the same with the lake already written: the load alone
  lake -> DuckDB, merge                 `primary_key = [l_orderkey, l_linenumber]`, the load alone
  MariaDB snapshot -> lake -> DuckDB    `sluice sync`, `mode = "snapshot"`, append and merge
References: DuckDB 2.0 `read_csv` CTAS of the same rows (CSV), `mariadb --quick` scan.

Each build's loaded tables are checked value by value against the source's rows through a
fingerprint (count and the sum of a hash of every data column, over the warehouse table),
which must be the same for every build and both sources.

Usage: BUILDS="before=/path/to/sluice after=/path/to/sluice" bench/duckdb_load.py
       (default: the current release build only; env RUNS=3, SCRATCH=/var/tmp/sluice-bench,
        MYSQL=0 to leave out the MariaDB cases)
"""
import json, os, subprocess, sys

from common import GEN, SF1_ROWS, SHARED, SLUICE, build, lineitem_files_project, peers_python
import harness  # noqa: E402  (found through common's path)

import mysql_lineitem  # noqa: E402  (the MariaDB table and its loading)

ROWS = SF1_ROWS
KEY = '["l_orderkey", "l_linenumber"]'
DATA_COLUMNS = ["l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity", "l_extendedprice",
                "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate", "l_commitdate",
                "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment"]
# Every data column as text, so both sources (decimals as DECIMAL or text, dates) hash alike.
FINGERPRINT = ("SELECT count(*) || ':' || sum(hash(" +
               ", ".join(f"CAST({c} AS VARCHAR)" for c in DATA_COLUMNS) +
               ") % 1000000007) FROM tpch.lineitem")


def files_project(base, name, tbl_dir, load):
    key = KEY if load == "merge" else None
    return lineitem_files_project(os.path.join(base, name), tbl_dir, "tbl", load, key)


def mysql_project(base, name, load):
    extra = f'load = "{load}"'
    return mysql_lineitem.project(base, name, "snapshot", ["lineitem"], extra)


def main():
    env = harness.load_env()
    builds = [b.split("=", 1) for b in os.environ.get("BUILDS", "").split()] or [["current", SLUICE]]
    with_mysql = os.environ.get("MYSQL", "1") == "1"
    scratch = os.path.join(env["SCRATCH"], "sluice-duckdb")
    os.makedirs(scratch, exist_ok=True)
    if not os.environ.get("BUILDS"):
        build()
    tbl_root = os.path.join(env["SCRATCH"], "sluice-files", "sf1", "drops-tbl")
    tbl = os.path.join(tbl_root, "20240101", "lineitem.tbl")
    csv = os.path.join(env["SCRATCH"], "sluice-files", "sf1", "drops-csv", "20240101", "lineitem.csv")
    if not (os.path.exists(tbl) and os.path.exists(csv)):
        os.makedirs(os.path.dirname(tbl), exist_ok=True)
        os.makedirs(os.path.dirname(csv), exist_ok=True)
        harness.log("generating lineitem SF1")
        subprocess.run([GEN, "1", tbl, csv], check=True, stdout=subprocess.DEVNULL)
    if with_mysql:
        mysql_lineitem.ensure_lineitem(env)
        os.environ["BENCH_MY_PASS"] = "bench"
    py = peers_python(env)
    ref = os.path.join(SHARED, "peers", "ref_inproc.py")
    fingerprints = {}

    def tools(_env):
        out = [harness.measure("DuckDB read_csv CTAS (CSV, no lake)", f"{py} {ref} duck {csv} {scratch}/ref", ROWS)]
        if with_mysql:
            out.append(harness.measure("mariadb --quick scan (raw limit)",
                                       f"{mysql_lineitem.MY} --quick -N -e 'select * from tpch.lineitem' > /dev/null",
                                       ROWS))
        for label, exe in builds:
            base = os.path.join(scratch, label)
            cases = []
            for load in ["append", "merge"]:
                d = files_project(base, f"files-{load}", tbl_root, load)
                if load == "append":
                    cases.append((f"{label}: .tbl -> lake -> DuckDB, append", d, "rm -rf {d}/lake {d}/warehouse.duckdb"))
                # The lake once, untimed; each run loads it into a fresh DuckDB file.
                subprocess.run(f"rm -rf {d}/lake {d}/warehouse.duckdb && {exe} --config {d}/sluice.toml sync --lake-only",
                               shell=True, check=True, stdout=subprocess.DEVNULL)
                cases.append((f"{label}: lake -> DuckDB, {load}", d, "rm -f {d}/warehouse.duckdb"))
            if with_mysql:
                for load in ["append", "merge"]:
                    d = mysql_project(base, f"mysql-{load}", load)
                    cases.append((f"{label}: MariaDB snapshot -> lake -> DuckDB, {load}", d,
                                  "rm -rf {d}/lake {d}/warehouse.duckdb"))
            for name, d, setup in cases:
                count = (f"{exe} --config {d}/sluice.toml query --warehouse local --format csv "
                         f"'SELECT count(*) AS n FROM tpch.lineitem' | tail -1")
                out.append(harness.measure(name, f"{exe} --config {d}/sluice.toml sync", ROWS,
                                           setup=setup.format(d=d), verify=count))
                fp = subprocess.run(f"{exe} --config {d}/sluice.toml query --warehouse local --format csv "
                                    f"\"{FINGERPRINT}\" | tail -1", shell=True, text=True,
                                    capture_output=True).stdout.strip()
                fingerprints[name] = fp
        return out

    harness.series("sluice_duckdb_load", tools)
    distinct = sorted(set(fingerprints.values()))
    print(json.dumps({"series": "sluice_duckdb_load_fingerprints", "same": len(distinct) == 1,
                      "fingerprints": fingerprints}))
    if len(distinct) != 1:
        sys.exit("the warehouse tables differ between builds or sources: " + json.dumps(fingerprints))


if __name__ == "__main__":
    main()
