"""Transforms over 1,000,000 orders, each run three times: the first run, a run with nothing
new, and a run after 1,000 new orders. `by_customer` aggregates (GROUP BY customer and
country: ~975,000 result rows, computed whole each run); `big_orders` maps each order (a
projection and a filter: incremental, reads only the new changes); `big_orders_whole` is the
same map written with DISTINCT, which makes it a full refresh: the same result, computed
whole. Prints each run's seconds and peak RSS (the sync loads DuckDB too).

    cd bench && python3 transform.py         # ROWS=… to change the input size
"""
import os, random, subprocess, tempfile, time

from common import SLUICE, build

ROWS = int(os.environ.get("ROWS", "1000000"))
CONFIG = """[sources.shop]
kind = "files"
url = "drops/{date}/"
table = "orders"
columns = ["id bigint", "customer bigint", "country text", "amount decimal(12,2)"]
[sources.shop.tables.orders]
primary_key = ["id"]

[transforms.by_customer]
sql = "SELECT customer, country, count(*) AS orders, sum(amount) AS total FROM shop.orders GROUP BY customer, country"
primary_key = ["customer", "country"]

[transforms.big_orders]
sql = "SELECT id AS order_id, customer, upper(country) AS country, amount FROM shop.orders WHERE amount >= 100"
primary_key = ["order_id"]

[transforms.big_orders_whole]
sql = "SELECT DISTINCT id AS order_id, customer, upper(country) AS country, amount FROM shop.orders WHERE amount >= 100"
primary_key = ["order_id"]
"""
TRANSFORMS = ["by_customer", "big_orders", "big_orders_whole"]


def drop(d, day, first, n, seed):
    rnd = random.Random(seed)
    path = os.path.join(d, "drops", day, "orders.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("id,customer,country,amount\n")
        for i in range(first, first + n):
            f.write(f"{i},{rnd.randrange(100000)},C{rnd.randrange(200)},{rnd.randrange(1, 100000) / 100:.2f}\n")
    old = time.time() - 600  # settled: files sources wait for a file left alone
    os.utime(path, (old, old))


def timed(d, what, *args):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", SLUICE, "--config", f"{d}/sluice.toml", *args],
                         capture_output=True, text=True, check=True)
    secs, kb = out.stderr.strip().splitlines()[-1].split()
    landed = out.stdout.splitlines()[0]
    print(f"| {what} | {float(secs):.2f} | {int(kb) // 1024} | {landed} |")


def main():
    build()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "sluice.toml"), "w") as f:
            f.write(CONFIG)
        drop(d, "20260101", 0, ROWS, 1)
        subprocess.run([SLUICE, "--config", f"{d}/sluice.toml", "sync", "shop"], check=True, capture_output=True)
        print("| run | seconds | peak RSS MiB | landed |\n|---|---:|---:|---|")
        for t in TRANSFORMS:
            timed(d, f"{t}: first", "sync", f"transforms.{t}")
        for t in TRANSFORMS:
            timed(d, f"{t}: nothing new", "sync", f"transforms.{t}")
        drop(d, "20260102", ROWS, 1000, 2)
        subprocess.run([SLUICE, "--config", f"{d}/sluice.toml", "sync", "shop"], check=True, capture_output=True)
        for t in TRANSFORMS:
            timed(d, f"{t}: 1,000 new orders", "sync", f"transforms.{t}")


if __name__ == "__main__":
    main()
