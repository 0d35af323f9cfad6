//! Crash injection for the exactly-once tests: `SLUICE_FAILPOINT=<name>` (or `<name>@<n>`, at
//! its n-th hit) makes the process abort (no cleanup, no destructors, like `kill -9`) when it
//! reaches that point. Unset, it costs one environment lookup per commit.

/// After a lake commit, before the warehouse load.
pub const AFTER_LAKE_COMMIT: &str = "after-lake-commit";
/// After rows of an open source transaction were written into the lake ahead of its end.
pub const AFTER_TXN_PART: &str = "after-txn-part";
/// Inside the warehouse transaction, after the data is applied, before COMMIT.
pub const BEFORE_WAREHOUSE_COMMIT: &str = "before-warehouse-commit";

/// Aborts when `SLUICE_FAILPOINT` names this point: `name` at its first hit, `name@N` at its
/// N-th (a crash between the N-th commit and the next).
pub fn hit(name: &str) {
    let Ok(set) = std::env::var("SLUICE_FAILPOINT") else {
        return;
    };
    let (point, nth) = match set.split_once('@') {
        Some((p, n)) => (p, n.parse::<usize>().unwrap_or(1)),
        None => (set.as_str(), 1),
    };
    if point != name {
        return;
    }
    static HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let hits = HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if hits >= nth {
        eprintln!("sluice: failpoint {name} reached (hit {hits}), aborting");
        std::process::abort();
    }
}
