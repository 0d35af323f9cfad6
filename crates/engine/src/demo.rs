//! `sluice demo`: the whole flow on generated TPC-H data, with no server and no download.
//!
//! Day 1 drops `supplier` (10,000 rows, scale factor 1) and `nation` as `.tbl` files; sluice
//! lands them in the lake and loads DuckDB (`supplier` merged by key, and appended with load
//! timestamps to `supplier_append`, like seed 002's stage and history pair), and a transform
//! keeps the balance by nation. Day 2 changes some suppliers' balances; the second sync lands
//! only the new folder, merges the changes, and lands the nations whose balance moved.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tpchgen::generators::{NationGenerator, SupplierGenerator};

use crate::sync::{sync, SyncOptions};
use crate::{query, EngineError, Project};

pub const DAY1: &str = "20260101";
pub const DAY2: &str = "20260102";
/// Every this-many-th supplier changes its balance on day 2.
pub const CHANGE_EVERY: i64 = 20;
/// How much a changed balance moves, in cents.
pub const CHANGE_CENTS: i64 = 10_000;

const CONFIG: &str = r#"# Written by `sluice demo`. Paths are relative to this file.
[lake]
url = "lake"

[warehouses.local]
kind = "duckdb"
path = "warehouse.duckdb"

# Nightly TPC-H supplier drops in date folders (seed 002): .tbl, '|'-delimited, no header.
[sources.suppliers]
kind = "files"
url = "drops/supplier/{date}/"
format = "csv"
delimiter = "|"
header = false
table = "supplier"
columns = ["s_suppkey bigint", "s_name text", "s_address text", "s_nationkey int",
           "s_phone text", "s_acctbal decimal(15,2)", "s_comment text"]
load = ["merge", "append"]      # supplier (current state) and supplier_append (every load)

[sources.suppliers.tables.supplier]
primary_key = ["s_suppkey"]

[sources.nation]
kind = "files"
url = "drops/nation/"
delimiter = "|"
header = false
columns = ["n_nationkey int", "n_name text", "n_regionkey int", "n_comment text"]

[sources.nation.tables.nation]
primary_key = ["n_nationkey"]

# A transform: SQL over lake tables, kept as a lake table of its own and loaded like a source
# table (warehouse table transforms.balance_by_nation). It runs after the sources it reads;
# each run lands only the nations whose figures changed.
[transforms.balance_by_nation]
sql = """SELECT n.n_name AS nation, count(*) AS suppliers, sum(s.s_acctbal) AS total_balance
FROM suppliers.supplier s JOIN nation.nation n ON s.s_nationkey = n.n_nationkey
GROUP BY n.n_name"""
primary_key = ["nation"]
"#;

const JOIN: &str =
    "SELECT n.n_name AS nation, count(*) AS suppliers, sum(s.s_acctbal) AS total_balance
FROM suppliers.supplier s JOIN nation.nation n ON s.s_nationkey = n.n_nationkey
GROUP BY n.n_name ORDER BY total_balance DESC LIMIT 5";

const BY_NATION: &str =
    "SELECT * FROM transforms.balance_by_nation ORDER BY total_balance DESC LIMIT 5";

fn io(context: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { context, source }
}

fn write_file(path: &Path, text: &str) -> Result<(), EngineError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))?;
    }
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// `5755.94` plus `cents`, as TPC-H formats money.
fn add_cents(amount: &str, cents: i64) -> String {
    let (neg, body) = amount
        .strip_prefix('-')
        .map(|b| (true, b))
        .unwrap_or((false, amount));
    let (i, f) = body.split_once('.').unwrap_or((body, "0"));
    let v =
        i.parse::<i64>().unwrap_or(0) * 100 + format!("{f:0<2}")[..2].parse::<i64>().unwrap_or(0);
    let v = if neg { -v } else { v } + cents;
    format!(
        "{}{}.{:02}",
        if v < 0 { "-" } else { "" },
        v.abs() / 100,
        v.abs() % 100
    )
}

/// Day 1 and day 2 supplier drops as `.tbl` text.
pub fn supplier_drops() -> (String, String) {
    let mut day1 = String::new();
    let mut day2 = String::new();
    for s in SupplierGenerator::new(1.0, 1, 1).iter() {
        let line = s.to_string();
        let _ = writeln!(day1, "{line}");
        if s.s_suppkey % CHANGE_EVERY == 0 {
            let mut fields: Vec<String> = line.split('|').map(String::from).collect();
            fields[5] = add_cents(&fields[5], CHANGE_CENTS);
            let _ = writeln!(day2, "{}", fields.join("|"));
        }
    }
    (day1, day2)
}

pub fn nation_drop() -> String {
    NationGenerator::new(1.0, 1, 1)
        .iter()
        .map(|n| format!("{n}\n"))
        .collect()
}

pub async fn demo(dir: &Path, quiet: bool) -> Result<PathBuf, EngineError> {
    let say = |s: &str| {
        if !quiet {
            println!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let config = dir.join("sluice.toml");
    if config.exists() {
        return Err(EngineError::Usage(format!(
            "{} already holds a demo; remove the folder or pass --dir to use another",
            dir.display()
        )));
    }
    write_file(&config, CONFIG)?;
    let (day1, day2) = supplier_drops();
    write_file(
        &dir.join(format!("drops/supplier/{DAY1}/supplier.tbl")),
        &day1,
    )?;
    write_file(&dir.join("drops/nation/nation.tbl"), &nation_drop())?;
    say(&format!(
        "Wrote {} with TPC-H supplier (10,000 rows) and nation drops for day {DAY1}.\n",
        config.display()
    ));

    let project = Project::open(&config)?;
    let sync_day = |label: &'static str| {
        let project = &project;
        async move {
            say(&format!("$ sluice sync            # {label}"));
            let r = sync(
                project,
                &[],
                SyncOptions {
                    progress: !quiet,
                    ..SyncOptions::default()
                },
            )
            .await?;
            say(&r.render());
            if r.exit_code() != 0 {
                return Err(EngineError::Internal(format!(
                    "the demo's sync ({label}) failed (see above)"
                )));
            }
            Ok(())
        }
    };
    sync_day("day 1").await?;
    write_file(
        &dir.join(format!("drops/supplier/{DAY2}/supplier.tbl")),
        &day2,
    )?;
    say(&format!(
        "Day {DAY2} arrives: {} suppliers changed their balance.",
        10_000 / CHANGE_EVERY
    ));
    sync_day("day 2: only the new folder is read").await?;

    say(&format!("$ sluice query \"{}\"", JOIN.replace('\n', " ")));
    let batches = query::query_lake(&project, JOIN, None).await?;
    say(&query::render(&batches, query::OutputFormat::Table)?);
    say(&format!(
        "$ sluice query --warehouse local \"{}\"      # the transform, loaded",
        BY_NATION
    ));
    let batches = query::query_warehouse(&project, "local", BY_NATION)?;
    say(&query::render(&batches, query::OutputFormat::Table)?);

    let c = config.display();
    say(&format!(
        "\nLook further:
  sluice status --config {c}
  sluice query --config {c} \"SELECT _sluice_op, count(*) FROM suppliers.supplier__changes GROUP BY 1\"
  sluice query --config {c} --warehouse local \"SELECT s_suppkey, s_acctbal, _sluice_loaded_at FROM suppliers.supplier_append WHERE s_suppkey = 20\"
  duckdb {}/warehouse.duckdb     # the warehouse; the lake is Delta Lake under {}/lake",
        dir.display(),
        dir.display()
    ));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_arithmetic() {
        assert_eq!(add_cents("5755.94", 10_000), "5855.94");
        assert_eq!(add_cents("-50.00", 10_000), "50.00");
        assert_eq!(add_cents("-999.99", 100), "-998.99");
        assert_eq!(add_cents("0.5", 1), "0.51");
    }
}
