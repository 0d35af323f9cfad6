//! Crash injection for the exactly-once tests: `SLUICE_FAILPOINT=<name>` makes the process abort
//! (no cleanup, no destructors, like `kill -9`) when it reaches that point. Unset, it costs one
//! environment lookup per commit.

/// After a lake commit, before the warehouse load.
pub const AFTER_LAKE_COMMIT: &str = "after-lake-commit";
/// After rows of an open source transaction were written into the lake ahead of its end.
pub const AFTER_TXN_PART: &str = "after-txn-part";
/// Inside the warehouse transaction, after the data is applied, before COMMIT.
pub const BEFORE_WAREHOUSE_COMMIT: &str = "before-warehouse-commit";

pub fn hit(name: &str) {
    if std::env::var("SLUICE_FAILPOINT").as_deref() == Ok(name) {
        eprintln!("sluice: failpoint {name} reached, aborting");
        std::process::abort();
    }
}
