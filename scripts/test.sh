#!/usr/bin/env bash
# Runs every sluice test, first installing what the tests need when it is missing:
#   - python3 + pip, the `deltalake` package (a second Delta reader checks the lake),
#   - `moto[server]` (a local S3-compatible server on 127.0.0.1 for the S3 lake tests),
#   - MariaDB's server and client binaries (the MySQL tests start private servers from them),
#     and openssl (certificates for the TLS test),
#   - SecantusDB, a MongoDB wire-compatible server (GPL: a separate test tool in its own venv,
#     never a dependency of sluice), for the MongoDB tests,
#   - Debian's Chromium and ChromeDriver, for the web console's browser tests.
# Build artefacts go to $CARGO_TARGET_DIR (default ~/.cache/sluice-target), shared with CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update && apt-get install -y python3 python3-pip
fi
python3 -c "import deltalake, pyarrow" 2>/dev/null || python3 -m pip install --quiet deltalake pyarrow
command -v moto_server >/dev/null || python3 -m pip install --quiet "moto[server]"
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null; then
  apt-get update && apt-get install -y mariadb-server mariadb-client
fi
command -v openssl >/dev/null || { apt-get update && apt-get install -y openssl; }   # TLS test certificates
# MongoDB tests start private SecantusDB servers (SLUICE_TEST_MONGO_URL: a real replica set).
SECANTUS_VENV="${SECANTUS_VENV:-/opt/secantus-venv}"
if [ -z "${SLUICE_TEST_MONGO_URL:-}" ] && [ ! -x "$SECANTUS_VENV/bin/secantusd-py" ]; then
  python3 -m venv "$SECANTUS_VENV" 2>/dev/null || { apt-get update && apt-get install -y python3-venv && python3 -m venv "$SECANTUS_VENV"; }
  "$SECANTUS_VENV/bin/pip" install --quiet SecantusDB==0.7.0b3
fi
export SLUICE_SECANTUS="$SECANTUS_VENV/bin/secantusd-py"
# PostgreSQL warehouse tests start private servers from the installed binaries.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && apt-get install -y postgresql; }
# The web console's tests drive headless Chromium through ChromeDriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update && apt-get install -y chromium chromium-driver
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One optimised profile serves tests, the demo and the benchmarks (see Cargo.toml).
cargo test --release --workspace --no-fail-fast
