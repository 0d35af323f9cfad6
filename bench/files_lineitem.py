#!/usr/bin/env python3
"""TPC-H lineitem from files: sluice (.tbl -> Delta lake -> DuckDB) beside in-process references
on the same rows, measured in one run with ../shared/bench/harness.py (3 runs, median wall,
peak RSS from /usr/bin/time -v, a quiet-machine wait first).

Cases (rows = 6,001,215 at SF1):
  sluice .tbl -> lake -> DuckDB          `sluice sync`
  sluice .tbl -> lake                    `sluice sync --lake-only`
  sluice CSV  -> lake                    same input as the references below
  deltalake write_deltalake (CSV)        delta-rs from pyarrow's streaming CSV reader
  DuckDB read_csv CTAS (CSV)             DuckDB alone, no lake
  sluice .tbl SF0.1 and SF1 (and SF10 with BIG=1): peak RSS as the input grows 10x

Usage: bench/files_lineitem.py            (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench, BIG=0)
Needs: a release build of sluice (`cargo build --release`), python3 with venv.
Prints one JSON line and a Markdown table; appends the line to $RESULTS/sluice_files.jsonl.
"""
import os, subprocess

from common import GEN, SF1_ROWS, SHARED, SLUICE, build, lineitem_files_project, peers_python
import harness  # noqa: E402  (found through common's path)

ROWS = {"0.1": 600_572, "1": SF1_ROWS, "10": 59_986_052}


def project(base, kind):
    """A sluice project folder reading lineitem from base/drops (.tbl or .csv)."""
    return lineitem_files_project(os.path.join(base, f"proj-{kind}"), f"{base}/drops-{kind}", kind)


def main():
    env = harness.load_env()
    scratch = os.path.join(env["SCRATCH"], "sluice-files")
    os.makedirs(scratch, exist_ok=True)
    # The whole workspace, so features unify as in the tests and the cache is reused.
    build()
    sfs = ["0.1", "1"] + (["10"] if os.environ.get("BIG") == "1" else [])
    for sf in sfs:
        base = os.path.join(scratch, f"sf{sf}")
        tbl_dir = os.path.join(base, "drops-tbl", "20240101")
        csv_dir = os.path.join(base, "drops-csv", "20240101")
        os.makedirs(tbl_dir, exist_ok=True)
        os.makedirs(csv_dir, exist_ok=True)
        tbl, csv = os.path.join(tbl_dir, "lineitem.tbl"), os.path.join(csv_dir, "lineitem.csv")
        want_csv = sf == "1"  # the references read CSV at SF1 only
        if not os.path.exists(tbl) or (want_csv and not os.path.exists(csv)):
            harness.log(f"generating lineitem SF{sf}")
            subprocess.run([GEN, sf, tbl] + ([csv] if want_csv else []), check=True, stdout=subprocess.DEVNULL)
    py = peers_python(env)
    ref = os.path.join(SHARED, "peers", "ref_inproc.py")

    def tools(_env):
        out = []
        base = os.path.join(scratch, "sf1")
        rows = ROWS["1"]
        csv = os.path.join(base, "drops-csv", "20240101", "lineitem.csv")
        for kind, args, name in [("tbl", "sync", "sluice .tbl -> lake -> DuckDB"),
                                 ("tbl", "sync --lake-only", "sluice .tbl -> lake"),
                                 ("csv", "sync --lake-only", "sluice CSV -> lake")]:
            d = project(base, kind)
            count = (f"{SLUICE} --config {d}/sluice.toml query --format csv "
                     f"'SELECT count(*) AS n FROM tpch.lineitem__changes' | tail -1")
            out.append(harness.measure(name, f"{SLUICE} --config {d}/sluice.toml {args}", rows,
                                       setup=f"rm -rf {d}/lake {d}/warehouse.duckdb", verify=count))
        out.append(harness.measure("deltalake write_deltalake (CSV, pyarrow reader)",
                                   f"{py} {ref} delta {csv} {scratch}/ref", rows))
        out.append(harness.measure("DuckDB read_csv CTAS (CSV, no lake)",
                                   f"{py} {ref} duck {csv} {scratch}/ref", rows))
        for sf in sfs:
            if sf == "1":
                continue
            d = project(os.path.join(scratch, f"sf{sf}"), "tbl")
            out.append(harness.measure(f"sluice .tbl -> lake -> DuckDB (SF{sf})",
                                       f"{SLUICE} --config {d}/sluice.toml sync", ROWS[sf],
                                       setup=f"rm -rf {d}/lake {d}/warehouse.duckdb",
                                       runs=1 if sf == "10" else harness.RUNS))
        return out

    harness.series("sluice_files", tools)


if __name__ == "__main__":
    main()
