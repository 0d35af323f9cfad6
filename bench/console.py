#!/usr/bin/env python3
"""The web console on 1,000 tables: 1,000 files sources of 100 rows each synced into the lake
and DuckDB, then `sluice serve` answers the console. Measures what an operator waits for:
`GET /api/overview` computed afresh and served from its 2-second cache, one table's page
data, and the overview page in headless Chromium from navigation to rendered rows (the
rows counted). Peak RSS of serve is read from /proc. Compare rows with each other, not
seconds with another machine.

    python3 bench/console.py            # TABLES=... to change the count

Needs chromium and chromedriver (Debian: chromium chromium-driver) and the `selenium`
package (pip) for the page timing; without them that row is skipped.
"""
import json, os, re, shutil, socket, subprocess, tempfile, time, urllib.request

from common import SLUICE, build

TABLES = int(os.environ.get("TABLES", "1000"))
ROWS = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
    return time.perf_counter() - started, json.loads(body)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def page_seconds(base):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium not installed (pip install selenium)"
    if not shutil.which("chromedriver"):
        return None, "chromedriver not installed"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000"]:
        options.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            driver.get(f"{base}/?t={time.time()}#/")
            while driver.execute_script("return document.body.dataset.ready") != "overview":
                time.sleep(0.01)
            times.append(time.perf_counter() - started)
            rows = driver.execute_script("return document.querySelectorAll('tr[data-table]').length")
        return min(times), f"{rows} rows rendered"
    finally:
        driver.quit()


def main():
    build()
    work = tempfile.mkdtemp(prefix="sluice-console-bench-")
    config = []
    for i in range(TABLES):
        folder = os.path.join(work, "drops", f"t{i:04}")
        os.makedirs(folder)
        with open(os.path.join(folder, "a.csv"), "w") as f:
            f.write("id,name,amount\n")
            f.writelines(f"{r},name {r},{r * 1.5}\n" for r in range(ROWS))
        config.append(
            f'[sources.s{i:04}]\nkind = "files"\nurl = "drops/t{i:04}/"\ntable = "t"\n'
            f'schedule = "0 0 1 1 *"\n[sources.s{i:04}.tables.t]\nprimary_key = ["id"]\n'
        )
    port = free_port()
    config.append(f'[serve]\nlisten = "127.0.0.1:{port}"\n')
    with open(os.path.join(work, "sluice.toml"), "w") as f:
        f.write("\n".join(config))
    # Settled files: modified a while ago.
    old = time.time() - 600
    for root, _, files in os.walk(os.path.join(work, "drops")):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    started = time.perf_counter()
    subprocess.run([SLUICE, "--config", "sluice.toml", "sync"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    print(f"sync of {TABLES} tables x {ROWS} rows: {time.perf_counter() - started:.1f} s")

    serve = subprocess.Popen([SLUICE, "--config", "sluice.toml", "serve"], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        fresh, overview = get(base + "/api/overview")
        assert len(overview["tables"]) == TABLES, len(overview["tables"])
        assert all(t["changes"] == ROWS and t["targets"][0]["rows"] == ROWS for t in overview["tables"])
        cached, _ = get(base + "/api/overview")
        time.sleep(2.1)
        again, _ = get(base + "/api/overview")
        table, _ = get(base + "/api/tables/s0000.t")
        page, said = page_seconds(base)
        print(f"| what | seconds |")
        print(f"|---|---:|")
        print(f"| GET /api/overview, computed ({TABLES} tables, rows counted in DuckDB) | {fresh:.2f} |")
        print(f"| GET /api/overview, computed again | {again:.2f} |")
        print(f"| GET /api/overview, from the 2 s cache | {cached:.3f} |")
        print(f"| GET /api/tables/s0000.t (table page data) | {table:.3f} |")
        if page is None:
            print(f"| overview page in Chromium | skipped: {said} |")
        else:
            print(f"| overview page in Chromium, navigation to rendered ({said}) | {page:.2f} |")
        print(f"serve peak RSS: {peak_rss_mib(serve.pid):.0f} MiB")
    finally:
        serve.terminate()
        serve.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
