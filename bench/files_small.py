#!/usr/bin/env python3
"""Many small files beside one big file of the same rows, in one run (issue 25), measured with
../shared/bench/harness.py (RUNS runs, median wall, peak RSS, a quiet-machine wait first).

Input: the first 4,200,000 rows of TPC-H lineitem SF1, as
  - 2,100 `.tbl` files of 2,000 rows in 21 date folders (a nightly drop of many parts), and
  - one `.tbl` file of the same 4,200,000 rows.
Cases:
  sluice 2,100 small files -> lake      `sluice sync --lake-only`
  sluice one big file -> lake           `sluice sync --lake-only`
  sluice 100,000 tiny files, rerun      `sluice sync --lake-only` over a lake that holds them
                                        all: listed, checked, nothing read (first sync untimed)

Usage: bench/files_small.py        (env: RUNS=3, SCRATCH=/var/tmp/sluice-bench, TINY=100000)
Prints one JSON line and a Markdown table; appends the line to $RESULTS/sluice_files_small.jsonl.
"""
import os, subprocess

from common import COLUMNS, GEN, SLUICE, build
import harness  # noqa: E402  (found through common's path)

ROWS = 4_200_000
FILES = 2_100
PER_FILE = ROWS // FILES
FOLDERS = 21
TINY = int(os.environ.get("TINY", "100000"))


def project(d, drops):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[lake]
url = "lake"
[sources.tpch]
kind = "files"
url = "{drops}/{{date}}/"
format = "csv"
delimiter = "|"
header = false
settle_secs = 0
table = "lineitem"
columns = {COLUMNS}
load = "append"
""")
    return d


def generate(base):
    """The small files, the big file and the tiny files, unless already there."""
    small, big = os.path.join(base, "drops-small"), os.path.join(base, "drops-big")
    tiny = os.path.join(base, "drops-tiny")
    sf1 = os.path.join(base, "lineitem-sf1.tbl")
    if not os.path.exists(os.path.join(big, "20240101", "lineitem.tbl")):
        if not os.path.exists(sf1):
            harness.log("generating lineitem SF1")
            subprocess.run([GEN, "1", sf1], check=True, stdout=subprocess.DEVNULL)
        harness.log(f"splitting {ROWS:,} rows into {FILES:,} files and one")
        os.makedirs(os.path.join(big, "20240101"), exist_ok=True)
        with open(sf1) as src, open(os.path.join(big, "20240101", "lineitem.tbl"), "w") as one:
            for n in range(FILES):
                folder = os.path.join(small, f"2024-01-{n // (FILES // FOLDERS) + 1:02d}")
                os.makedirs(folder, exist_ok=True)
                lines = [src.readline() for _ in range(PER_FILE)]
                text = "".join(lines)
                with open(os.path.join(folder, f"part-{n:05d}.tbl"), "w") as part:
                    part.write(text)
                one.write(text)
    if not os.path.exists(os.path.join(tiny, "done")):
        harness.log(f"writing {TINY:,} tiny files")
        line = "1|155190|7706|1|17.00|21168.23|0.04|0.02|N|O|1996-03-13|1996-02-12|1996-03-22|DELIVER IN PERSON|TRUCK|tiny\n"
        for n in range(TINY):
            folder = os.path.join(tiny, f"2024-{n // 1000 // 28 + 1:02d}-{n // 1000 % 28 + 1:02d}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"t-{n:06d}.tbl"), "w") as f:
                f.write(line)
        open(os.path.join(tiny, "done"), "w").close()
    return small, big, tiny


def main():
    env = harness.load_env()
    base = os.path.join(env["SCRATCH"], "sluice-files-small")
    os.makedirs(base, exist_ok=True)
    build()
    small, big, tiny = generate(base)

    def tools(_env):
        out = []
        count = "{bin} --config {d}/sluice.toml query --format csv 'SELECT count(*) AS n FROM tpch.lineitem__changes' | tail -1"
        for name, drops in [(f"sluice {FILES:,} small files -> lake", small),
                            ("sluice one big file -> lake", big)]:
            d = project(os.path.join(base, "proj-" + os.path.basename(drops)), drops)
            out.append(harness.measure(name, f"{SLUICE} --config {d}/sluice.toml sync --lake-only", ROWS,
                                       setup=f"rm -rf {d}/lake", verify=count.format(bin=SLUICE, d=d)))
        d = project(os.path.join(base, "proj-tiny"), tiny)
        first = harness.measure(f"sluice {TINY:,} tiny files, first sync", f"{SLUICE} --config {d}/sluice.toml sync --lake-only",
                                TINY, setup=f"rm -rf {d}/lake", verify=count.format(bin=SLUICE, d=d), runs=1)
        out.append(first)
        out.append(harness.measure(f"sluice {TINY:,} tiny files, rerun (nothing new)",
                                   f"{SLUICE} --config {d}/sluice.toml sync --lake-only", TINY,
                                   verify=count.format(bin=SLUICE, d=d)))
        return out

    harness.series("sluice_files_small", tools)


if __name__ == "__main__":
    main()
