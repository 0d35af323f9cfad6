"""What the lineitem benchmarks share: where sluice, its TPC-H generator and the shared
harness are, lineitem's declared columns, and the build they run."""
import os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "bench")
sys.path.insert(0, SHARED)  # for `import harness`

TARGET = os.environ.setdefault("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sluice-target"))
# SLUICE_BIN runs another build (e.g. the one before a change, for before/after figures).
SLUICE = os.environ.get("SLUICE_BIN") or os.path.join(TARGET, "release", "sluice")
GEN = os.path.join(TARGET, "release", "examples", "tpch_lineitem")
SF1_ROWS = 6_001_215
# lineitem as a files source declares it (`columns = ...` in sluice.toml).
COLUMNS = """["l_orderkey bigint", "l_partkey bigint", "l_suppkey bigint", "l_linenumber int",
  "l_quantity decimal(15,2)", "l_extendedprice decimal(15,2)", "l_discount decimal(15,2)",
  "l_tax decimal(15,2)", "l_returnflag text", "l_linestatus text", "l_shipdate date",
  "l_commitdate date", "l_receiptdate date", "l_shipinstruct text", "l_shipmode text", "l_comment text"]"""


def lineitem_files_project(d, drops_url, kind="tbl", load="append", key=None):
    """A sluice project in folder d reading lineitem from drops_url/{date}/ (.tbl or CSV with
    a header), into the default lake and DuckDB, with `load` and optionally a key."""
    os.makedirs(d, exist_ok=True)
    header = "true" if kind == "csv" else "false"
    delim = "," if kind == "csv" else "|"
    keyed = f"[sources.tpch.tables.lineitem]\nprimary_key = {key}\n" if key else ""
    with open(os.path.join(d, "sluice.toml"), "w") as f:
        f.write(f"""[lake]
url = "lake"
[sources.tpch]
kind = "files"
url = "{drops_url}/{{date}}/"
format = "csv"
delimiter = "{delim}"
header = {header}
table = "lineitem"
columns = {COLUMNS}
load = "{load}"
{keyed}""")
    return d


def peers_python(env):
    """The python of a venv with the in-process references (DuckDB, pyarrow, delta-rs),
    created on first use."""
    venv = os.path.join(env["SCRATCH"], "venvs", "sluice-peers")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q",
                        "duckdb==2.0.0", "pyarrow==26.0.1", "deltalake==1.6.6"], check=True)
    return os.path.join(venv, "bin", "python")


def lineitem_csv(env):
    """lineitem SF1 as CSV with a header (and as .tbl beside it), generated once by sluice's
    own generator under $SCRATCH/sluice-files/sf1; returns the CSV's path."""
    csv = os.path.join(env["SCRATCH"], "sluice-files", "sf1", "drops-csv", "20240101", "lineitem.csv")
    if not os.path.exists(csv):
        os.makedirs(os.path.dirname(csv), exist_ok=True)
        tbl = csv.replace("drops-csv", "drops-tbl").replace(".csv", ".tbl")
        os.makedirs(os.path.dirname(tbl), exist_ok=True)
        subprocess.run([GEN, "1", tbl, csv], check=True, stdout=subprocess.DEVNULL)
    return csv


def build():
    """The release binary and the generator, as every benchmark runs them (nothing when
    SLUICE_BIN names the binary and the generator is built)."""
    if os.environ.get("SLUICE_BIN"):
        if not os.path.exists(GEN):
            subprocess.run(["cargo", "build", "--release", "--workspace", "--examples"], cwd=ROOT, check=True)
        return
    subprocess.run(["cargo", "build", "--release", "--workspace", "--examples", "--bins"], cwd=ROOT, check=True)
