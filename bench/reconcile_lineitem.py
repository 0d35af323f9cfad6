#!/usr/bin/env python3
"""`sluice reconcile`: TPC-H lineitem SF1 (6,001,215 rows) in MariaDB against its copy loaded
into PostgreSQL by sluice, when equal and with 10 differing rows, beside a plain full scan of
both tables, in one run through ../shared/bench/harness.py.

Cases:
  reference  mariadb --quick scan of tpch.lineitem AND psql \\copy of rec.lineitem to
             /dev/null, one after the other (what comparing by reading every row costs
             before any comparing is done)
  (e)        sluice reconcile rec.lineitem, tables equal        (exit 0)
  (d)        sluice reconcile rec.lineitem, 10 rows corrupted in PostgreSQL beforehand
             (exit 1, the 10 keys named; the setup checks the report)

Source `rec` (PostgreSQL schema `rec`, apart from pg_lineitem.py's `tpch`). The table is
loaded into PostgreSQL once (snapshot -> lake -> merge table), untimed; the
corrupted rows are put back by a repair after the series, so a rerun starts equal.
Uses the shared private MariaDB (127.0.0.1:3307) and PostgreSQL (127.0.0.1:5433).
Usage: bench/reconcile_lineitem.py     (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench)
"""
import json, os, subprocess

from common import SF1_ROWS, SLUICE, build
from mysql_lineitem import MY, ensure_lineitem, sh
import harness  # noqa: E402  (found through common's path)

ROWS = SF1_ROWS
PSQL = "psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5433 -U bench -d bench"
# Ten rows spread over the table (l_orderkey, l_linenumber = 1 exists for these).
CORRUPT = [1, 600_000, 1_200_001, 1_800_002, 2_400_003, 3_000_004, 3_600_005, 4_200_006, 4_800_007, 5_999_970]


def project(base):
    d = os.path.join(base, "reconcile")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[lake]
url = "{d}/lake"
[warehouses.pg]
kind = "postgres"
url = "postgres://bench@127.0.0.1:5433/bench"
password = {{ env = "PGPASSWORD" }}
ssl_mode = "disable"
[sources.rec]
kind = "mysql"
url = "mysql://bench@127.0.0.1:3307/tpch"
password = {{ env = "BENCH_MY_PASS" }}
mode = "snapshot"
tables = ["lineitem"]
warehouse = "pg"
""")
    return d


def keys_of(orderkeys):
    """The first line of each order: keys that exist."""
    out = sh(f"{MY} -N tpch -e \"SELECT l_orderkey FROM lineitem WHERE l_orderkey >= {orderkeys} "
             "AND l_linenumber = 1 ORDER BY l_orderkey LIMIT 1\"")
    return int(out.strip())


def main():
    env = harness.load_env()
    build()
    ensure_lineitem(env)
    os.environ["BENCH_MY_PASS"] = "bench"
    os.environ["PGPASSWORD"] = "bench"
    d = project(os.path.join(env["SCRATCH"], "sluice-reconcile"))
    cfg = f"{SLUICE} --config {d}/sluice.toml"
    loaded = subprocess.run(f"{PSQL} -At -c 'SELECT count(*) FROM rec.lineitem'", shell=True,
                            capture_output=True, text=True).stdout.strip()
    if loaded != str(ROWS):
        harness.log("loading tpch.lineitem into PostgreSQL through sluice (untimed)")
        sh(f"{cfg} sync")
    keys = [keys_of(k) for k in CORRUPT]
    where = " OR ".join(f"(l_orderkey = {k} AND l_linenumber = 1)" for k in keys)
    corrupt = f"{PSQL} -c \"UPDATE rec.lineitem SET l_comment = l_comment || '!' WHERE {where}\""
    reconcile = f"{cfg} --json reconcile rec.lineitem --settle-secs 0 --rechecks 0"

    def tools(_env):
        out = [harness.measure(
            "mariadb --quick scan + psql \\copy to /dev/null (both tables read whole)",
            f"{MY} --quick -N -e 'select * from tpch.lineitem' > /dev/null && "
            f"{PSQL} -c '\\copy rec.lineitem to /dev/null'", ROWS)]
        out.append(harness.measure("sluice reconcile, equal", reconcile + " > /dev/null", ROWS,
                                   setup=f"{cfg} --json reconcile rec.lineitem --settle-secs 0 --rechecks 0 --repair > /dev/null"))
        # Exit 1 is the finding; the report must name exactly the 10 keys.
        check = (f"{reconcile} > {d}/differ.json; test $? -eq 1 && python3 -c \"import json,sys; r=json.load(open('{d}/differ.json')); "
                 f"k=sorted(int(x[0]) for x in r['different']); sys.exit(0 if k == {sorted(keys)} and not r['missing'] and not r['extra'] else 1)\"")
        out.append(harness.measure("sluice reconcile, 10 rows differ", check, ROWS,
                                   setup=f"{cfg} --json reconcile rec.lineitem --settle-secs 0 --rechecks 0 --repair > /dev/null && {corrupt}"))
        return out

    harness.series("sluice_reconcile", tools)
    # Put the rows back, and show the work a differing run did.
    sh(corrupt)
    r = json.loads(subprocess.run(reconcile, shell=True, capture_output=True, text=True).stdout)
    print(json.dumps({"series": "sluice_reconcile_work", **r["work"], "seconds": round(r["seconds"], 2)}))
    sh(f"{cfg} --json reconcile rec.lineitem --settle-secs 0 --rechecks 0 --repair > /dev/null")


if __name__ == "__main__":
    main()
