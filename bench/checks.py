#!/usr/bin/env python3
"""What data-quality checks cost a load: 1,000,000 orders synced (CSV -> lake -> DuckDB, merge
on id) into a fresh project, once without checks and once per set of checks (all `warn`, so
every row loads and the same work is done whatever fails). Then a second drop of 1,000 orders
on top of each, to show that row checks read only a load's new changes while `unique` reads
the whole table. Prints seconds and peak RSS per sync; compare the rows with each other, not
the seconds with another machine.

    python3 bench/checks.py          # ROWS=... to change the input size
"""
import os, random, subprocess, tempfile, time

from common import SLUICE, build

ROWS = int(os.environ.get("ROWS", "1000000"))
BASE = """[sources.crm]
kind = "files"
url = "crm/"
table = "customers"
columns = ["id bigint", "name text"]

[sources.shop]
kind = "files"
url = "drops/{date}/"
table = "orders"
columns = ["id bigint", "customer bigint", "status text", "amount decimal(12,2)", "email text"]
[sources.shop.tables.orders]
primary_key = ["id"]
"""
ROW_CHECKS = """
[[sources.shop.tables.orders.checks]]
kind = "not_null"
column = "customer"
[[sources.shop.tables.orders.checks]]
kind = "accepted_values"
column = "status"
values = ["new", "paid", "shipped"]
[[sources.shop.tables.orders.checks]]
kind = "range"
column = "amount"
min = 0
max = 1000
[[sources.shop.tables.orders.checks]]
kind = "pattern"
column = "email"
regex = "^[^@ ]+@[^@ ]+$"
[[sources.shop.tables.orders.checks]]
kind = "sql"
expr = "amount < 999 OR status = 'paid'"
"""
UNIQUE = """
[[sources.shop.tables.orders.checks]]
kind = "unique"
column = "email"
"""
REFERENCE = """
[[sources.shop.tables.orders.checks]]
kind = "reference"
column = "customer"
to = "crm.customers.id"
"""
CASES = [
    ("no checks", ""),
    ("5 row checks (not_null, accepted_values, range, pattern, sql)", ROW_CHECKS),
    ("unique (email)", UNIQUE),
    ("reference (customer -> crm.customers.id, 100,000 customers)", REFERENCE),
]


def settled(path):
    old = time.time() - 600  # files sources wait for a file left alone
    os.utime(path, (old, old))


def drop(d, day, first, n, seed):
    rnd = random.Random(seed)
    path = os.path.join(d, "drops", day, "orders.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    statuses = ["new", "paid", "shipped"]
    with open(path, "w") as f:
        f.write("id,customer,status,amount,email\n")
        for i in range(first, first + n):
            f.write(f"{i},{rnd.randrange(100000)},{rnd.choice(statuses)},"
                    f"{rnd.randrange(1, 100000) / 100:.2f},u{i}@example.com\n")
    settled(path)


def timed(d):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", SLUICE, "--config", f"{d}/sluice.toml", "sync"],
                         capture_output=True, text=True, check=True)
    secs, kb = out.stderr.strip().splitlines()[-1].split()
    return float(secs), int(kb) // 1024


def main():
    if not os.environ.get("SLUICE_BIN"):
        build()
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCRATCH")) as scratch:
        print(f"| checks | first sync of {ROWS:,} orders: s | MiB | then 1,000 more: s | MiB |")
        print("|---|---:|---:|---:|---:|")
        for name, checks in CASES:
            d = os.path.join(scratch, str(len(os.listdir(scratch))))
            os.makedirs(os.path.join(d, "crm"))
            with open(os.path.join(d, "crm", "customers.csv"), "w") as f:
                f.write("id,name\n" + "".join(f"{i},c{i}\n" for i in range(100000)))
            settled(os.path.join(d, "crm", "customers.csv"))
            with open(os.path.join(d, "sluice.toml"), "w") as f:
                f.write(BASE + checks)
            drop(d, "20240101", 0, ROWS, 1)
            first = timed(d)
            drop(d, "20240102", ROWS, 1000, 2)
            more = timed(d)
            print(f"| {name} | {first[0]:.2f} | {first[1]} | {more[0]:.2f} | {more[1]} |", flush=True)


if __name__ == "__main__":
    main()
